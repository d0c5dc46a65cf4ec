"""Bans that know their context: sparing the prompt's own words (``exempt_prompt_terms``), and scopes.

Exact cases on the scripted provider, then the real embedded model (SmolLM2).
"""

from __future__ import annotations

import re

import pytest

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    BanPhrase,
    ChainStrategy,
    Continue,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.strategy.ban_scope import BanScope
from backtrack_sampler.strategy.prompt_terms import PromptTerms, word_stem
from scripted import EOS, Scripted, growing_ctx, ids, of, random_provider, run, text_provider

VOCAB = [EOS, ".", " ", "?", "Q", ":", "\n", "[", "]", " x"]
VOCAB += ["<think>", "</think>", "<", ">", "<th", "ink>", "</", "thi", "nk>", "thin", "k>", "g", "think"]
VOCAB += [" tapestry", " tapestries", " cloth", " delve", " delving", " look", " rich", " old", " a"]
VOCAB += ["Describe", " the", " Tapestries", ","]


def scripted(script: list[str], swaps: dict[str, str] | None = None):
    """A provider that writes ``script`` (pieces of VOCAB, then EOS) after any prompt ending with "Q:".

    Where the script has a piece of ``swaps`` (default: " tapestry" -> " cloth"), the swap is the second
    choice; the script goes on after it as if the piece had been written.
    """
    swaps = {" tapestry": " cloth", " delve": " look"} if swaps is None else swaps
    pieces = [*script, EOS]

    def rule(text: str) -> dict[str, float]:
        written = text[text.rindex("Q:") + 2 :]
        for piece, swap in swaps.items():
            written = written.replace(swap, piece)
        at = 0
        for piece in pieces:
            if at == len(written):
                prefs = {piece: 9.0}
                if piece in swaps:
                    prefs[swaps[piece]] = 5.0
                return prefs
            at += len(piece)
        return {EOS: 9.0}

    return text_provider(VOCAB, rule)


def generate(strategy_of, prompt: str, script: list[str], swaps=None, **kwargs) -> tuple[str, list]:
    """Run the strategy on ``scripted(script, swaps)``, greedy; (the text, the events)."""
    provider = scripted(script, swaps)
    events = run(BacktrackSampler(provider, strategy_of(provider)), prompt, max_new_tokens=30, temperature=0, **kwargs)
    return events[-1].text, events


# -- exempt_prompt_terms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "exempt"),
    [
        ("Describe the tapestry.Q:", True),
        ("Describe the Tapestries.Q:", True),  # inflected, other case
        ("Describe the cloth.Q:", False),  # the prompt lacks it
        ("Describe the tapestryQ:", False),  # "tapestryQ" is another word
    ],
)
def test_a_phrase_the_prompt_uses_is_not_banned(prompt, exempt):
    script = [" a", " tapestry", "."]
    plain, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"]), prompt, script)
    spared, events = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], exempt_prompt_terms=True), prompt, script)
    assert plain == " a cloth."
    assert spared == (" a tapestry." if exempt else " a cloth.")
    assert bool(of(events, RewindEvent)) != exempt


def test_an_inflection_in_the_prompt_exempts_the_ban():
    script = [" delve", "."]
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["delve"], exempt_prompt_terms=True), " delving.Q:", script)
    assert text == " delve."
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["delve"], exempt_prompt_terms=True), " look.Q:", script)
    assert text == " look."


def test_a_multi_word_phrase_is_exempt_only_when_its_words_follow_each_other():
    script = [" rich", " tapestry", "."]
    swaps = {" rich": " old"}  # the ban rewinds to " rich": "old" comes next

    def make(p):
        return AntiSlopStrategy(p, ["rich tapestry"], exempt_prompt_terms=True)

    assert generate(make, " a rich, tapestries.Q:", script, swaps)[0] == " rich tapestry."  # punctuation between
    # "rich" and "tapestry" are in the prompt, but not one after the other
    assert generate(make, " rich old tapestry.Q:", script, swaps)[0] == " old tapestry."


def test_only_the_phrases_the_prompt_uses_are_exempt():
    script = [" delve", " tapestry", "."]
    make = lambda p: AntiSlopStrategy(p, ["tapestry", "delve"], exempt_prompt_terms=True)  # noqa: E731
    assert generate(make, " tapestry.Q:", script)[0] == " look tapestry."


def test_the_exemption_is_read_again_for_every_generation():
    provider = scripted([" a", " tapestry", "."])
    strategy = AntiSlopStrategy(provider, ["tapestry"], exempt_prompt_terms=True)
    sampler = BacktrackSampler(provider, strategy)
    texts = []
    for prompt in ("Describe the tapestry.Q:", "Describe the cloth.Q:", "Describe the tapestries.Q:", ".Q:"):
        texts.append(sampler.generate_text(prompt, max_new_tokens=30, temperature=0).text)
        assert strategy.exempt == (frozenset({0}) if "tapestr" in prompt else frozenset())
    assert texts == [" a tapestry.", " a cloth.", " a tapestry.", " a cloth."]


def test_a_pattern_is_exempt_when_it_matches_the_prompt():
    script = [" a", " tapestry", "."]

    def make(p):
        return AntiSlopStrategy(p, [], regex=[r"(?i)\btapestr\w*"], exempt_prompt_terms=True)

    assert generate(make, "Describe the Tapestries.Q:", script)[0] == " a tapestry."
    assert generate(make, "Describe the cloth.Q:", script)[0] == " a cloth."


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("tapestries", "tapestry"),
        ("Tapestry", "tapestry"),
        ("delving", "delve"),
        ("delved", "delve"),
        ("delves", "delve"),
        ("boxes", "box"),
        ("classes", "class"),
        ("running", "run"),
        ("strings", "string"),  # -ing without a vowel before it is no ending
        ("focuses", "focus"),
        ("tried", "try"),
        ("feelings", "feel"),
    ],
)
def test_word_stems_meet_for_regular_inflections(a, b):
    assert word_stem(a) == word_stem(b)


@pytest.mark.parametrize(("a", "b"), [("tapestry", "tap"), ("string", "str"), ("class", "clas"), ("this", "thi")])
def test_word_stems_keep_different_words_apart(a, b):
    assert word_stem(a) != word_stem(b)


def test_prompt_terms_find_phrases_by_words():
    terms = PromptTerms(["tapestry", "a testament to", "—", "Delve", "rich tapestry"])
    assert terms.used_in("Testaments: a testament, to the rich — tapestries!") == {0, 1, 2, 4}
    assert terms.used_in("") == set()
    assert terms.used_in("delving into a testament") == {3}


def test_exempt_prompt_terms_is_checked():
    with pytest.raises(TypeError, match="exempt_prompt_terms must be True or False, got 'yes'"):
        AntiSlopStrategy(None, ["x"], exempt_prompt_terms="yes")


# -- scope -------------------------------------------------------------------------------------------

THINK_THEN_ANSWER = ["<think>", " tapestry", "</think>", " tapestry", "."]


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (None, "<think> cloth</think> cloth."),
        ("think", "<think> cloth</think> tapestry."),
        ("answer", "<think> tapestry</think> cloth."),
        (BanScope("<think>", "</think>", inside=False), "<think> tapestry</think> cloth."),
        ({"start": "<think>", "end": "</think>"}, "<think> cloth</think> tapestry."),
    ],
)
def test_scope_bans_only_in_its_part_of_the_output(scope, expected):
    text, events = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope=scope), "Q:", THINK_THEN_ANSWER)
    assert text == expected
    assert len(of(events, RewindEvent)) == expected.count("cloth")


def test_custom_markers():
    script = [" tapestry", "[", " tapestry", "]", " tapestry", "."]
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="[,]"), "Q:", script)
    assert text == " tapestry[ cloth] tapestry."
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="outside:[,]"), "Q:", script)
    assert text == " cloth[ tapestry] cloth."


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("<think>Q:", " cloth</think> tapestry."),  # the prompt opened <think>: the output starts inside
        ("<think></think>Q:", " tapestry</think> tapestry."),  # closed again: outside
        ("</think>Q:", " tapestry</think> tapestry."),  # a stray end marker changes nothing
        ("<think><think>Q:", " cloth</think> tapestry."),
    ],
)
def test_the_prompt_decides_where_the_output_starts(prompt, expected):
    script = [" tapestry", "</think>", " tapestry", "."]
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="think"), prompt, script)
    assert text == expected


@pytest.mark.parametrize(
    "script",
    [
        ["<th", "ink>", " tapestry", "</", "thi", "nk>", " tapestry", "."],
        ["<", "thi", "nk>", " tapestry", "</", "think", ">", " tapestry", "."],
    ],
    ids=["split-in-two", "split-in-three"],
)
def test_markers_split_across_tokens(script):
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="think"), "Q:", script)
    assert text == "<think> cloth</think> tapestry."
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="answer"), "Q:", script)
    assert text == "<think> tapestry</think> cloth."


def test_a_marker_split_across_the_end_of_the_prompt():
    script = ["<th", "ink>", " tapestry", "</think>", " tapestry", "."]  # "<th" ends the prompt
    text, _ = generate(lambda p: AntiSlopStrategy(p, ["tapestry"], scope="think"), "Q:<th", script)
    assert text == "ink> cloth</think> tapestry."


def test_a_rewind_that_erases_a_marker_erases_it_from_the_scope():
    # Another strategy rewinds over "<think>" and bans it: the text then never enters the think part.
    provider = scripted(["<think>", " x", " x", " x", " tapestry", "."], swaps={"<think>": " a", " tapestry": " cloth"})
    think = provider.vocab.index("<think>")

    def rewind_once(ctx, token):
        if ctx.text == "<think> x":
            return Rewind(0, ban=(think,), reason="no thinking")
        return Continue()

    other = Scripted(on_token=rewind_once, holdback=lambda ctx: len(ctx.tokens))
    antislop = AntiSlopStrategy(provider, ["tapestry"], scope="think")
    events = run(BacktrackSampler(provider, ChainStrategy([antislop, other])), "Q:", max_new_tokens=20, temperature=0)
    assert [e.reason for e in of(events, RewindEvent)] == ["no thinking"]
    assert events[-1].text == " a x x x tapestry."  # (" tapestry" starts after where "<think>" ended)


def test_a_match_that_holds_a_marker_is_not_banned():
    # Substring bans that are parts of the marker: found inside "<think>", which is not banned text.
    for slop in ("think", "<th", "ink>"):
        strategy = lambda p, s=slop: AntiSlopStrategy(p, [BanPhrase(s, whole_word=False)], scope="answer")  # noqa: E731
        text, events = generate(strategy, "Q:", ["<th", "ink>", " x", "</", "thi", "nk>", " x", "."])
        assert text == "<think> x</think> x." and not of(events, RewindEvent), slop


def test_a_match_waits_for_a_marker_still_being_written():
    # "thin" is found in "<thin" before the marker is complete: it waits, and the marker decides.
    vocab_tokens = ["<", "thin", "k>", " x"]
    provider = text_provider(VOCAB, lambda text: {})
    strategy = AntiSlopStrategy(provider, [BanPhrase("thin", whole_word=False)], scope="answer")
    strategy.reset()
    ctx, append = growing_ctx(provider, prompt=ids(provider, "Q", ":"))
    decisions = []
    for token in ids(provider, *vocab_tokens):
        append(token)
        decisions.append(strategy.on_token(ctx, token))
        if len(decisions) == 2:
            assert strategy.holdback(ctx) == 1  # "thin" may still be banned: its token is held back
    assert all(isinstance(d, Continue) for d in decisions)  # "<think>": a marker, not a banned "thin"
    assert strategy.holdback(ctx) == 0  # inside the think part, nothing is banned: all streams

    strategy.reset()
    ctx, append = growing_ctx(provider, prompt=ids(provider, "Q", ":"))
    decisions = []
    for token in ids(provider, "<", "thin", "g"):
        append(token)
        decisions.append(strategy.on_token(ctx, token))
    assert isinstance(decisions[1], Continue) and isinstance(decisions[2], Rewind)  # "<thing": no marker after all
    assert decisions[2].position == 1 and decisions[2].ban_phrase == "thin"


def test_text_outside_the_scope_streams_at_once():
    provider = text_provider(VOCAB, lambda text: {})
    for scope, held in (("answer", 0), ("think", 1), (None, 1)):
        strategy = AntiSlopStrategy(provider, ["tapestry cloth"], scope=scope)
        strategy.reset()
        ctx, append = growing_ctx(provider, prompt=ids(provider, "Q", ":"))
        for token in ids(provider, "<think>", " x", " tapestry"):
            append(token)
            assert isinstance(strategy.on_token(ctx, token), Continue)
        assert strategy.holdback(ctx) == held, scope  # " tapestry" may begin "tapestry cloth"


SCOPE_VOCAB = [EOS, "Q", "<think>", "</think>", "<th", "ink>", "</", "nk>", "thi", " tap", "estry", " tapestry"]
SCOPE_VOCAB += [" x", "."]


def in_region(text: str, start: int, scope: BanScope) -> bool:
    """Reference: whether character ``start`` of ``text`` lies between the markers, read from the beginning."""
    inside, pos = False, 0
    while True:
        marker = scope.end if inside else scope.start
        found = text.find(marker, pos)
        if found < 0 or found + len(marker) > start:
            return inside
        pos, inside = found + len(marker), not inside


@pytest.mark.parametrize("scope", ["think", "answer"])
def test_random_text_keeps_bans_exact_in_scope_and_streams_what_it_keeps(scope):
    parsed = BanScope.of(scope)
    kept_outside = 0
    for seed in range(25):
        provider = random_provider(SCOPE_VOCAB, seed=seed, eos_bias=-3.0)
        strategy = AntiSlopStrategy(provider, ["tapestry"], scope=scope)
        budget = RewindBudget(per_position=40, per_generation=400)
        events = run(BacktrackSampler(provider, strategy, budget), "Q", max_new_tokens=40, seed=seed)
        text = events[-1].text
        assert "".join(e.text for e in of(events, TextEvent)) == text  # what streamed is the final text
        if of(events, RewindRefusedEvent):
            continue
        for match in re.finditer(r"(?<!\w)tapestry(?!\w)", text):
            assert in_region(text, match.start(), parsed) != parsed.inside, (seed, text)
            kept_outside += 1
    assert kept_outside >= 3  # the phrase was written, and left alone, outside the scope


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("reasoning", "scope: must be None, 'think', 'answer', 'START,END'"),
        (",</r>", "scope: must be"),
        (5, "scope must be None, 'think', 'answer'"),
        ({"start": "<r>"}, "scope: needs 'end'"),
        ({"start": "<r>", "end": "</r>", "side": 1}, "scope: takes only 'start', 'end' and 'inside', got 'side'"),
        ({"start": "<r>", "end": "", "inside": True}, "scope: scope end must be a non-empty string"),
        ({"start": "<r>", "end": "</r>", "inside": "yes"}, "scope: scope inside must be True or False"),
    ],
)
def test_a_bad_scope_is_refused_naming_it(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        AntiSlopStrategy(None, ["x"], scope=value)


# -- the command line ------------------------------------------------------------------------------


def test_cli_flags_reach_antislop():
    from backtrack_sampler import cli

    args = cli.build_parser().parse_args(
        ["generate", "prompt", "--ban", "tapestry", "--exempt-prompt-terms", "--ban-scope", "outside:[,]"]
    )
    strategy = cli.build_strategy(cli.strategy_names(args), args, scripted([]))
    assert isinstance(strategy, AntiSlopStrategy)
    assert strategy.exempt_prompt_terms and strategy.scope == BanScope("[", "]", inside=False)
    plain = cli.build_parser().parse_args(["generate", "prompt", "--ban", "tapestry"])
    strategy = cli.build_strategy(cli.strategy_names(plain), plain, scripted([]))
    assert not strategy.exempt_prompt_terms and strategy.scope is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ban", "x", "--ban-scope", "reasoning"], "argument --ban-scope: must be think, answer"),
        (["--ban", "x", "--ban-scope", ",</r>"], "argument --ban-scope: must be think, answer"),
        (["--ban-scope", "think"], "argument --ban-scope: only applies to --strategy antislop"),
        (["--exempt-prompt-terms"], "argument --exempt-prompt-terms: only applies to --strategy antislop"),
    ],
)
def test_cli_bad_ban_context_flags_exit_2_naming_them(capsys, args, message):
    from backtrack_sampler import cli

    assert cli.main(["generate", "hi", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    if "must be" in message:
        assert repr(args[-1]) in err  # the value


def test_batch_command_takes_the_flags():
    from backtrack_sampler import cli

    args = cli.build_parser().parse_args(
        ["batch", "in.jsonl", "-o", "out.jsonl", "--ban", "x", "--exempt-prompt-terms", "--ban-scope", "think"]
    )
    assert args.exempt_prompt_terms and args.ban_scope == BanScope("<think>", "</think>")


# -- batch lines -----------------------------------------------------------------------------------


def line(**fields) -> str:
    import json

    return json.dumps({"id": "a", "prompt": "Q:", **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"banned_strings": ["x"], "exempt_prompt_terms": "yes"}, "exempt_prompt_terms must be true or false, got"),
        ({"banned_strings": ["x"], "ban_scope": "middle"}, "ban_scope: must be None, 'think', 'answer'"),
        ({"banned_strings": ["x"], "ban_scope": 3}, "ban_scope must be None"),
        ({"banned_strings": ["x"], "ban_scope": {"start": "<r>"}}, "ban_scope: needs 'end'"),
        ({"ban_scope": "think"}, "ban_scope applies to banned_strings (or --ban) or an antislop strategy"),
        ({"exempt_prompt_terms": True}, "exempt_prompt_terms applies to banned_strings"),
    ],
)
def test_a_bad_batch_line_is_an_error_record_naming_the_field(fields, message):
    from backtrack_sampler.batch import BatchDefaults, parse_line
    from backtrack_sampler.batch.errors import LineError

    with pytest.raises(LineError, match=re.escape(message)) as caught:
        parse_line(line(**fields), 1, BatchDefaults())
    assert caught.value.kind == "invalid_params"


def test_batch_lines_apply_the_options_to_their_bans(tmp_path):
    import json

    from backtrack_sampler.batch import BatchDefaults, run_batch

    lines = [
        {"id": "plain", "prompt": " tapestry.Q:", "banned_strings": ["tapestry"]},
        {"id": "exempt", "prompt": " tapestry.Q:", "banned_strings": ["tapestry"], "exempt_prompt_terms": True},
        {"id": "think", "prompt": "Q:", "banned_strings": ["tapestry"], "ban_scope": "think"},
        {
            "id": "answer",
            "prompt": "Q:",
            "banned_strings": ["tapestry"],
            "ban_scope": {"start": "<think>", "end": "</think>", "inside": False},
        },
        {
            "id": "spec",
            "prompt": "Q:",
            "strategy": {"name": "antislop", "params": {"slops": ["tapestry"], "scope": "think"}},
        },
        {
            "id": "default",
            "prompt": " tapestry.Q:",
            "strategy": {"name": "antislop", "params": {"slops": ["tapestry"]}},
        },
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    defaults = BatchDefaults(max_tokens=20, temperature=0, exempt_prompt_terms=True, raw=True)  # --exempt-prompt-terms
    provider = scripted(THINK_THEN_ANSWER)
    run_batch(source, out, [provider], defaults, progress=None)
    texts = {r["id"]: r.get("text", r.get("error")) for r in map(json.loads, out.read_text().splitlines())}
    assert texts == {
        "plain": "<think> tapestry</think> tapestry.",  # the command line's default spares the prompt's words
        "exempt": "<think> tapestry</think> tapestry.",
        "think": "<think> cloth</think> tapestry.",
        "answer": "<think> tapestry</think> cloth.",
        "spec": "<think> cloth</think> tapestry.",
        "default": "<think> tapestry</think> tapestry.",
    }
    run_batch(
        source,
        tmp_path / "strict.jsonl",
        [provider],
        BatchDefaults(max_tokens=20, temperature=0, raw=True),
        progress=None,
    )
    strict = {r["id"]: r["text"] for r in map(json.loads, (tmp_path / "strict.jsonl").read_text().splitlines())}
    assert strict["plain"] == "<think> cloth</think> cloth." and strict["exempt"] == texts["exempt"]


# -- the server ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http():
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    from server_support import scripted_client

    return scripted_client()


def server_text(http, prompt="Hi", **fields) -> str:
    from server_support import MODEL

    body = {"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0, **fields}
    response = http.post("/v1/completions", json=body)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["text"]


def test_server_extension_fields(http):
    # The scripted model writes "The ocean is a vast and mysterious sea" (see server_support.py).
    greedy = server_text(http)
    assert greedy.startswith("The ocean is") and "ocean" not in server_text(http, banned_strings=["ocean"])
    assert server_text(http, "Oceans?", banned_strings=["ocean"], exempt_prompt_terms=True) == greedy
    assert "ocean" not in server_text(http, "Seas?", banned_strings=["ocean"], exempt_prompt_terms=True)
    # A prompt that ends inside <think>: the output is reasoning.
    assert server_text(http, "Hi <think>", banned_strings=["ocean"], ban_scope="answer") == greedy
    assert "ocean" not in server_text(http, "Hi <think>", banned_strings=["ocean"], ban_scope="think")
    assert server_text(http, banned_strings=["ocean"], ban_scope={"start": "<think>", "end": "</think>"}) == greedy
    assert server_text(http, "Hi <think>", banned_regex=[r"oc\w+"], ban_scope="outside:<think>,</think>") == greedy


def test_server_strategy_spec_takes_json_forms(http):
    def spec(**params):
        return {"name": "antislop", "params": {"slops": ["ocean"], **params}}

    greedy = server_text(http)
    assert server_text(http, "Oceans?", strategy=spec(exempt_prompt_terms=True)) == greedy
    assert server_text(http, "Hi <think>", strategy=spec(scope="answer")) == greedy
    assert "ocean" not in server_text(http, "Hi <think>", strategy=spec(scope={"start": "<think>", "end": "</think>"}))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"banned_strings": ["x"], "ban_scope": "middle"}, "ban_scope"),
        ({"banned_strings": ["x"], "ban_scope": 5}, "ban_scope"),
        ({"banned_strings": ["x"], "ban_scope": {"start": "<r>", "end": "</r>", "inside": "no"}}, "ban_scope"),
        ({"ban_scope": "think"}, "ban_scope"),
        ({"banned_strings": ["x"], "exempt_prompt_terms": "yes"}, "exempt_prompt_terms"),
        ({"exempt_prompt_terms": True}, "exempt_prompt_terms"),
        ({"strategy": {"name": "antislop", "params": {"slops": ["x"], "scope": "middle"}}}, "strategy.params.scope"),
        (
            {"strategy": {"name": "antislop", "params": {"slops": ["x"], "exempt_prompt_terms": 1}}},
            "strategy.params.exempt_prompt_terms",
        ),
    ],
)
def test_server_bad_values_are_400_naming_the_param(http, fields, param):
    from server_support import MODEL

    response = http.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 4, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"].startswith(param.split(".")[0]), error


# -- the real model (SmolLM2 through llama.cpp) ------------------------------------------------------

TAPESTRY = [{"role": "user", "content": "Describe a medieval tapestry in two sentences."}]
SKY = "<|im_start|>user\nWhy is the sky blue?<|im_end|>\n<|im_start|>assistant\n<think>\n"
"""A raw prompt that leaves the model inside <think>: what it writes is reasoning."""


def greedy(provider, prompt, strategy=None):
    return BacktrackSampler(provider, strategy).generate_text(prompt, max_new_tokens=40, temperature=0)


@pytest.mark.llamacpp
def test_real_model_keeps_the_word_the_prompt_asks_about(provider):
    prompt = provider.apply_chat_template(TAPESTRY)
    plain = greedy(provider, prompt)
    assert "tapestry" in plain.text.lower()  # greedy writes the word the user asked about
    banned = greedy(provider, prompt, AntiSlopStrategy(provider, ["tapestry"]))
    assert not re.search(r"(?i)\btapestry\b", banned.text) and banned.rewinds
    spared = greedy(provider, prompt, AntiSlopStrategy(provider, ["tapestry"], exempt_prompt_terms=True))
    assert spared.text == plain.text and not spared.rewinds


@pytest.mark.llamacpp
@pytest.mark.parametrize(
    ("prompt", "banned_in"),
    [
        (SKY, "think"),  # the prompt opened <think>: the output is reasoning
        (SKY + "Light scatters in the air.\n</think>\n", "answer"),  # closed: the output is the answer
    ],
    ids=["inside-think", "after-think"],
)
def test_real_model_bans_only_in_scope(provider, prompt, banned_in):
    plain = greedy(provider, prompt)
    # The ban: a word the control run (no ban) writes, in the scope it is written in, whatever this CPU picked.
    words = re.findall(r"[A-Za-z]{5,}", plain.text.split("</think>")[0])
    assert words, plain.text
    word = words[0]
    for scope in ("think", "answer"):
        result = greedy(provider, prompt, AntiSlopStrategy(provider, [word], scope=scope))
        if scope == banned_in:
            assert not re.search(rf"(?i)(?<!\w){word}(?!\w)", result.text) and result.rewinds, (scope, word)
        else:
            assert result.text == plain.text and not result.rewinds, (scope, word)
