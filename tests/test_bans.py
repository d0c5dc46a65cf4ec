"""Bans that cannot be evaded: every tokenization, whole words, case folding, regex, soft bans, the retry ladder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import regex as re_

from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    BanPhrase,
    BanRegex,
    ChainStrategy,
    Continue,
    Rewind,
    RewindBudget,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
    load_ban_list,
)
from backtrack_sampler.strategy.phrase_automaton import PhraseAutomaton
from scripted import EOS, Scripted, growing_ctx, ids, of, run, text_provider

# -- every tokenization, many seeds ---------------------------------------------------------------

SPLIT_VOCAB = [EOS, " the", ".", " ", "test", "ament", " testament", "testament", "Test", "TEST", "AMENT", "tes"]
SPLIT_VOCAB += ["tament", "t", "e", "s", "a", "m", "n", " tes", "Tes", "taMent", "ly"]
TARGET = " testament"


def spelling_rule(text: str) -> dict[str, float]:
    """Strongly prefer going on spelling " testament" (any case, any split), then ending the word."""
    low = text.lower()
    done = max(j for j in range(len(TARGET) + 1) if low.endswith(TARGET[:j]))
    if done == len(TARGET):
        return {".": 3.0, " the": 2.0, "ly": 1.0, EOS: 0.0}
    prefs = {EOS: -3.0, " the": 0.0, ".": 0.0}
    for token in SPLIT_VOCAB[1:]:
        if TARGET[done:].startswith(token.lower()):
            prefs[token] = 3.0 + 0.3 * len(token)
    return prefs


def whole_word_in(phrase: str, text: str) -> bool:
    """Reference: ``phrase`` occurs in ``text`` case-insensitively, as whole words at its word-character ends."""
    before = r"(?<!\w)" if re_.match(r"\w", phrase[0]) else ""
    after = r"(?!\w)" if re_.match(r"\w", phrase[-1]) else ""
    return re_.search(f"(?fi){before}{re_.escape(phrase)}{after}", text) is not None


@pytest.mark.parametrize(
    ("make", "leaked"),
    [
        (lambda p: AntiSlopStrategy(p, ["testament"]), lambda text: whole_word_in("testament", text)),
        (
            lambda p: AntiSlopStrategy(p, [], regex=[r"(?i)\btest\w*ment\b"]),
            lambda text: re_.search(r"(?i)\btest\w*ment\b", text),
        ),
        (
            lambda p: AntiSlopStrategy(p, [("testament", 0.0)], regex=[r"(?i)tes+ta"]),
            lambda text: whole_word_in("testament", text) or "testa" in text.lower(),
        ),
    ],
    ids=["phrase", "regex", "both"],
)
def test_no_leak_whatever_the_tokenization(make, leaked):
    splits = set()
    for seed in range(30):
        provider = text_provider(SPLIT_VOCAB, spelling_rule)
        budget = RewindBudget(per_position=50, per_generation=500)
        events = run(BacktrackSampler(provider, make(provider), budget), " the", max_new_tokens=25, seed=seed)
        text = events[-1].text
        assert not of(events, RewindRefusedEvent)
        assert not leaked(text)
        rewinds = of(events, RewindEvent)
        assert rewinds and all(r.ban_phrase and repr(r.ban_phrase) in r.reason for r in rewinds)
        splits |= {tuple(provider.vocab[t] for t in r.suppressed_tokens if t) for r in rewinds}
    assert len(splits) >= 5  # the phrase was spelled in many ways, and caught every time


# -- whole words and case ---------------------------------------------------------------------------

WORDS = [EOS, "D", "avid", " avid", "ly", " ", ".", "x", " Avid", "Stra", "ße", "STRASSE", " café", "s", "é", "caf"]
WORDS += ["e"]


def decisions_for(strategy, *pieces, prompt=".", provider=None):
    """Feed ``pieces`` of the vocabulary (WORDS unless ``provider``) one by one after ``prompt``;
    (ctx, the strategy's decision after each)."""
    provider = provider or text_provider(WORDS, lambda text: {})
    strategy.reset()
    ctx, append = growing_ctx(provider, prompt=ids(provider, prompt))
    decisions = []
    for token in ids(provider, *pieces):
        append(token)
        decisions.append(strategy.on_token(ctx, token))
    return ctx, decisions


@pytest.mark.parametrize(
    ("pieces", "rewinds_at"),
    [
        (("D", "avid", " "), None),  # inside "David"
        ((" avid", "ly", " "), None),  # inside "avidly"
        ((" avid", " "), 0),  # a whole word: found once the next character says the word is over
        ((" avid", "."), 0),
        (("x", " avid", " "), 1),
        (("x", "avid", " "), None),  # "xavid"
    ],
)
def test_whole_word_is_the_default(pieces, rewinds_at):
    _, decisions = decisions_for(AntiSlopStrategy(None, ["avid"]), *pieces)
    rewinds = [d for d in decisions if isinstance(d, Rewind)]
    if rewinds_at is None:
        assert not rewinds
    else:
        (rewind,) = rewinds
        assert isinstance(decisions[-1], Rewind)  # decided at the character after the word, not before
        assert rewind.position == rewinds_at and rewind.ban_phrase == "avid"


def test_a_whole_word_at_the_end_of_the_text_is_found_at_eos():
    table = {"": {" avid": 9.0}, " avid": {EOS: 9.0, "x": 1.0}}
    provider = text_provider(WORDS, lambda text: table.get(text[1:], {EOS: 9.0}))
    events = run(BacktrackSampler(provider, AntiSlopStrategy(provider, ["avid"])), ".", max_new_tokens=5, temperature=0)
    (rewind,) = of(events, RewindEvent)
    assert rewind.suppressed_text == " avid" and rewind.position == 0
    assert "avid" not in events[-1].text


def test_a_whole_word_at_the_length_limit_is_found():
    provider = text_provider(WORDS, lambda text: {"x": 9.0} if len(text) == 1 else {" avid": 9.0, ".": 1.0})
    events = run(BacktrackSampler(provider, AntiSlopStrategy(provider, ["avid"])), ".", max_new_tokens=2, temperature=0)
    assert events[-1].text == "x."  # " avid" was the last token: the end of the text ends the word
    assert len(of(events, RewindEvent)) == 1


def test_the_prompt_counts_for_word_boundaries():
    provider = text_provider(WORDS, lambda text: {"avid": 9.0} if len(text) == 1 else {EOS: 9.0})
    after_a_letter = BacktrackSampler(provider, AntiSlopStrategy(provider, ["avid"])).generate_text("D", temperature=0)
    after_a_dot = BacktrackSampler(provider, AntiSlopStrategy(provider, ["avid"])).generate_text(".", temperature=0)
    assert after_a_letter.text == "avid" and not after_a_letter.rewinds  # "Davidavid..." is one word
    assert after_a_dot.text != "avid" and len(after_a_dot.rewinds) == 1


def test_substring_matching_when_asked():
    for strategy in (
        AntiSlopStrategy(None, ["avid"], whole_words=False),
        AntiSlopStrategy(None, [BanPhrase("avid", whole_word=False)]),
    ):
        _, decisions = decisions_for(strategy, "D", "avid")
        assert decisions[-1] == Rewind(1, ban=(2,), reason="banned phrase 'avid'", match_end=1, ban_phrase="avid")


@pytest.mark.parametrize(
    ("phrase", "pieces", "found"),
    [
        ("STRASSE", ("Stra", "ße", " "), True),  # Unicode case folding: ß is ss
        ("straße", ("STRASSE", " "), True),
        ("STRASSE", ("Stra", "ße", "s", " "), False),  # "Straßes": not a whole word
        ("ss", ("Stra", "ße"), False),  # inside a word
        ("café", (" café", " "), True),
        ("CAFÉ", (" café", "s", " "), False),
        ("caf", (" café", " "), False),  # é is a letter: "caf" is not a word of "café"
        ("caf", ("caf", "é", " "), False),
        ("é", (" ", "é", " "), True),
    ],
)
def test_whole_words_and_case_in_non_ascii_text(phrase, pieces, found):
    _, decisions = decisions_for(AntiSlopStrategy(None, [phrase]), *pieces, prompt=".")
    assert any(isinstance(d, Rewind) for d in decisions) == found


def test_case_folding_of_a_substring_inside_a_character():
    # "ß" folds to "ss": "sse" matches "ße", but "se" does not match half of the "ß"
    _, decisions = decisions_for(AntiSlopStrategy(None, ["sse"], whole_words=False), "ße")
    assert isinstance(decisions[-1], Rewind) and decisions[-1].position == 0
    _, decisions = decisions_for(AntiSlopStrategy(None, ["se"], whole_words=False), "ße")
    assert all(isinstance(d, Continue) for d in decisions)
    _, decisions = decisions_for(AntiSlopStrategy(None, ["se"], whole_words=False), "s", "e")
    assert isinstance(decisions[-1], Rewind) and decisions[-1].position == 0


def test_case_sensitive_phrases():
    strategy = AntiSlopStrategy(None, [BanPhrase("Avid", ignore_case=False), "x"])
    _, lower = decisions_for(strategy, " avid", " ")
    _, upper = decisions_for(strategy, " Avid", " ")
    assert all(isinstance(d, Continue) for d in lower)
    assert isinstance(upper[-1], Rewind)
    _, lower = decisions_for(AntiSlopStrategy(None, ["Avid"], ignore_case=False), " avid", " ")
    assert all(isinstance(d, Continue) for d in lower)


def test_whole_word_matching_holds_back_only_what_could_still_match():
    strategy = AntiSlopStrategy(None, ["avid"])
    ctx, _ = decisions_for(strategy, "D", "avid")
    assert strategy.holdback(ctx) == 0  # "David": no word can begin inside it
    ctx, _ = decisions_for(strategy, "x", " avid")
    assert strategy.holdback(ctx) == 1  # " avid" may be whole, or become "avidly"
    ctx, _ = decisions_for(strategy, "x", " avid", "ly")
    assert strategy.holdback(ctx) == 0


def test_many_phrases_share_the_automaton_correctly():
    rng = np.random.default_rng(0)
    words = ["".join(rng.choice(list("abcd"), size=rng.integers(1, 5))) for _ in range(300)]
    automaton = PhraseAutomaton(words)
    text = "".join(rng.choice(list("abcd"), size=400))
    state, found = 0, set()
    for i, char in enumerate(text):
        state = automaton.step(state, ord(char))
        found |= {(i + 1 - len(words[k]), k) for k in automaton.ends(state)}
    expected = {(i, k) for k, w in enumerate(words) for i in range(len(text)) if text.startswith(w, i)}
    assert found == expected


# -- regex ----------------------------------------------------------------------------------------------


def test_regex_rewinds_to_the_token_where_the_match_began():
    vocab = [EOS, " not", " just", " X", ",", " but", " Y", "."]
    table = {"": {" not": 9.0}, " not": {" just": 9.0, " X": 1.0}, " not just": {" X": 9.0}}
    table |= {" not just X": {",": 9.0}, " not just X,": {" but": 9.0}, " not X": {".": 9.0}}
    provider = text_provider(vocab, lambda text: table.get(text[1:], {EOS: 9.0}))
    strategy = AntiSlopStrategy(provider, [], regex=[r"\bjust \w+, but\b"])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=10, temperature=0)
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.banned) == (1, (2,))
    assert rewind.suppressed_text == " just X, but" and rewind.ban_phrase == r"\bjust \w+, but\b"
    assert events[-1].text == " not X."
    # " not" streamed at once; from " just" on, the text was held back until the match was decided
    assert "".join(e.text for e in events[: events.index(rewind)] if isinstance(e, TextEvent)) == " not"


def test_regex_match_touching_the_end_waits_for_the_next_character():
    strategy = AntiSlopStrategy(None, [], regex=[r"\bavid\b"])
    ctx, decisions = decisions_for(strategy, "x", " avid")
    assert all(isinstance(d, Continue) for d in decisions) and strategy.holdback(ctx) == 1
    _, decisions = decisions_for(strategy, "x", " avid", "ly")
    assert all(isinstance(d, Continue) for d in decisions)
    _, decisions = decisions_for(strategy, "x", " avid", ".")
    assert decisions[-1] == Rewind(
        1, ban=(3,), reason=r"banned pattern '\\bavid\\b'", match_end=1, ban_phrase=r"\bavid\b"
    )


def test_regex_sees_the_end_of_the_prompt():
    provider = text_provider(WORDS, lambda text: {"avid": 9.0} if len(text) == 1 else {EOS: 9.0})
    for prompt, banned in (("D", False), (".", True)):
        strategy = AntiSlopStrategy(provider, [], regex=[r"\bavid"])
        result = BacktrackSampler(provider, strategy).generate_text(prompt, temperature=0)
        assert bool(result.rewinds) == banned


def test_regex_holds_back_only_while_a_match_could_complete():
    strategy = AntiSlopStrategy(None, [], regex=["avid ly"])
    ctx, _ = decisions_for(strategy, "x", " avid", " ")
    assert strategy.holdback(ctx) == 2
    ctx, _ = decisions_for(strategy, "x", " avid", " ", "x")
    assert strategy.holdback(ctx) == 0


def test_regex_window_gives_up_on_old_partial_matches():
    strategy = AntiSlopStrategy(None, [], regex=["D.*Z"], regex_window=4)
    ctx, _ = decisions_for(strategy, "D", "x", "x")
    assert strategy.holdback(ctx) == 3
    ctx, _ = decisions_for(strategy, "D", "x", "x", "x", "x")
    assert strategy.holdback(ctx) == 0


def test_regex_errors_name_the_pattern():
    with pytest.raises(ValueError, match=r"regex '\(' is invalid"):
        AntiSlopStrategy(None, [], regex=["("])
    with pytest.raises(ValueError, match=r"regex 'a\*' matches the empty string"):
        AntiSlopStrategy(None, [], regex=["a*"])
    with pytest.raises(ValueError, match=r"regex 'aaaa.*1001 characters long; the limit is 1000"):
        AntiSlopStrategy(None, [], regex=["a" * 1001])
    with pytest.raises(ValueError, match=r"20 characters long; the limit is 10"):
        AntiSlopStrategy(None, [], regex=["b" * 20], max_pattern_length=10)
    with pytest.raises(ValueError, match=r"regex\[1\]"):
        AntiSlopStrategy(None, [], regex=["a", ""])
    with pytest.raises(ValueError, match="regex_timeout"):
        AntiSlopStrategy(None, [], regex=["a"], regex_timeout=0)
    with pytest.raises(TypeError, match="string"):
        AntiSlopStrategy(None, [], regex="abc")


def test_a_catastrophic_regex_times_out_with_an_error_naming_it():
    provider = text_provider([EOS, "a"], lambda text: {"a": 9.0})
    strategy = AntiSlopStrategy(provider, [], regex=["(a|aa)+b"], regex_timeout=0.01)
    with pytest.raises(ValueError, match=r"regex '\(a\|aa\)\+b' took longer than 0.01 s"):
        BacktrackSampler(provider, strategy).generate_text("a", max_new_tokens=200, temperature=0)


# -- soft bans ---------------------------------------------------------------------------------------

SOFT_VOCAB = [EOS, " I", " cannot", " can", " will", "."]


def soft_rule(gap: float):
    """ " I" then " cannot" (logit gap ``gap`` over " will"), then "."."""
    table = {"": {" I": 9.0}, " I": {" cannot": gap, " will": 0.0}}
    return lambda text: table.get(text[1:], {".": 9.0} if not text.endswith(".") else {EOS: 9.0})


@pytest.mark.parametrize(
    ("factor", "kept"),
    [(0.5, True), (0.3, False), (0.0, False), (1.0, True)],  # log(0.5) = -0.69 > -1 > log(0.3) = -1.2
)
def test_soft_ban_multiplies_the_probability_of_the_first_token(factor, kept):
    provider = text_provider(SOFT_VOCAB, soft_rule(gap=1.0))
    strategy = AntiSlopStrategy(provider, [BanPhrase("cannot", factor)])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=5, temperature=0)
    assert ("cannot" in events[-1].text) == kept
    rewinds = of(events, RewindEvent)
    cannot = provider.vocab.index(" cannot")
    if factor == 1.0:
        assert not rewinds  # a factor of 1 changes nothing
    elif factor == 0.0:
        assert [(r.banned, r.penalized) for r in rewinds] == [((cannot,), ())]
    else:  # one rewind: the same token came back (the phrase stays), or another one did
        assert [(r.banned, r.penalized) for r in rewinds] == [((), ((cannot, factor),))]
        assert "soft-banned phrase 'cannot' (factor" in rewinds[0].reason


def test_soft_bans_of_pairs_and_sampled_rates():
    # uniform over " cannot" and " will": " cannot" comes first half the time; penalized by f, it comes again
    # with probability f / (1 + f) = 0.2; so it stays in 10% of the runs (50% without the ban)
    provider = text_provider(SOFT_VOCAB, soft_rule(gap=0.0))
    strategy = AntiSlopStrategy(provider, [("cannot", 0.25)])
    sampler = BacktrackSampler(provider, strategy)
    kept = sum("cannot" in sampler.generate_text(".", max_new_tokens=4, seed=s).text for s in range(400))
    assert 20 < kept < 60  # 40 expected; the standard deviation is 6


def test_soft_ban_is_forgotten_when_the_prefix_changes():
    provider = text_provider(SOFT_VOCAB, soft_rule(gap=1.0))
    ends = []

    def again(ctx, token):  # the second time the text ends with ".", rewind everything once (no ban)
        ends.append(ctx.text_from(0).endswith("."))
        return Rewind(0, reason="again") if sum(ends) == 2 and ends[-1] else Continue()

    strategy = ChainStrategy([AntiSlopStrategy(provider, [("cannot", 0.5)]), Scripted(again, holdback=100)])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=5, temperature=0)
    soft = "soft-banned phrase 'cannot' (factor 0.5)"
    # after the rewind to 0, "cannot" is soft-banned afresh, under a single penalty (0.25 would make " will" win)
    assert [r.reason for r in of(events, RewindEvent)] == [soft, "again", soft]
    assert events[-1].text == " I cannot."


# -- the retry ladder ------------------------------------------------------------------------------

LADDER_VOCAB = [EOS, "Oh", "Well", " no", " well", ",", " I", " cannot", " will", "."]


def ladder_rule(first=("Oh", "Well"), second=(" no",)):
    def rule(text):
        text = text[1:]
        if text == "":
            return dict(zip(first, (9.0, 1.0), strict=False))
        if text == "Oh":
            return dict(zip(second, (9.0, 1.0), strict=False))
        if text in ("Well", "Oh no", "Oh well"):
            return {",": 9.0}
        if text.endswith(","):
            return {" I": 9.0}
        if text.endswith(" I"):
            return {" cannot": 9.0} if text.startswith("Oh no") else {" will": 9.0, " cannot": 1.0}
        return {EOS: 9.0} if text.endswith(".") else {".": 9.0}

    return rule


def ladder_run(rule, budget=None, holdback=100):
    provider = text_provider(LADDER_VOCAB, rule, default=-np.inf)
    # a member that holds everything back, as a caller who only wants the final text may: the ladder reaches back
    strategy = ChainStrategy([AntiSlopStrategy(provider, ["I cannot"]), Scripted(holdback=holdback)])
    return run(BacktrackSampler(provider, strategy, budget), ".", max_new_tokens=8, temperature=0)


def test_ladder_bans_more_of_the_match_first():
    table = {"Oh no, I": {" cannot": 9.0, " will": 1.0}}
    provider = text_provider(LADDER_VOCAB, lambda t: table.get(t[1:]) or ladder_rule()(t), default=-np.inf)
    strategy = AntiSlopStrategy(provider, ["I cannot"])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=8, temperature=0)
    # only " I" can follow "Oh no,": it stays, and " cannot" is banned after it
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.escalation, rewind.ban_phrase) == (4, "more_of_match", "I cannot")
    assert rewind.banned == (LADDER_VOCAB.index(" cannot"),)
    assert events[-1].text == "Oh no, I will."


def test_ladder_rewinds_to_the_previous_word():
    events = ladder_run(ladder_rule(second=(" no", " well")))
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.escalation) == (1, "previous_word")
    assert rewind.suppressed_text == " no, I cannot." and "I cannot" in rewind.reason
    assert events[-1].text == "Oh well, I will."
    assert not of(events, RewindRefusedEvent)


def test_ladder_rewinds_to_the_previous_sentence():
    events = ladder_run(ladder_rule())
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.escalation) == (0, "previous_sentence")
    assert events[-1].text == "Well, I will."


def test_ladder_reaches_only_into_text_not_yet_emitted():
    events = ladder_run(ladder_rule(second=(" no", " well")), holdback=0)
    assert events[-1].text == "Oh no, I cannot."  # "Oh no," was emitted before "I cannot" appeared
    (refusal,) = of(events, RewindRefusedEvent)
    assert refusal.cause == "all_banned" and "let through" in refusal.message


def test_ladder_with_no_rung_left_lets_the_text_through_and_says_so():
    events = ladder_run(ladder_rule(first=("Oh",)))
    assert events[-1].text == "Oh no, I cannot." and events[-1].reason == "eos"
    (refusal,) = of(events, RewindRefusedEvent)
    assert refusal.cause == "all_banned" and "retry ladder has no rung left; the text is let through" in refusal.message
    assert not of(events, RewindEvent)


def test_spent_budget_lets_the_text_through_and_says_so():
    events = ladder_run(ladder_rule(), budget=RewindBudget(per_generation=0))
    assert "I cannot" in events[-1].text
    (refusal,) = of(events, RewindRefusedEvent)
    assert refusal.cause == "generation_budget" and "let through" in refusal.message


def test_position_budget_climbs_the_ladder():
    # at position 0 the model insists on new spellings of a banned word; after 2 rewinds there, the ladder
    # bans the word's second token instead
    vocab = [EOS, "ab", "a", "x", "b", "c", "."]
    table = {"": {"ab": 9.0, "a": 8.0, "x": 7.0}, "a": {"b": 9.0, "c": 1.0}, "x": {"b": 9.0, "c": 1.0}}
    provider = text_provider(vocab, lambda t: table.get(t[1:], {EOS: 9.0}), default=-np.inf)
    strategy = AntiSlopStrategy(provider, ["ab", "xb"], whole_words=False)
    events = run(
        BacktrackSampler(provider, strategy, RewindBudget(per_position=2)), ".", max_new_tokens=4, temperature=0
    )
    assert [r.escalation for r in of(events, RewindEvent)] == ["", "", "more_of_match"]
    assert events[-1].text == "xc"
    assert not of(events, RewindRefusedEvent)


def test_dead_end_at_sampling_climbs_the_ladder():
    # the bans leave tokens the raw model allows, but the strategy's own mask removes them: a dead end at sampling
    def mask(ctx, logits):
        if len(ctx.tokens) == 1 and ctx.tokens[0] == LADDER_VOCAB.index("Oh"):
            logits[LADDER_VOCAB.index(" well")] = -np.inf
        return logits

    table = {"Oh": {" no": 9.0, " well": 1.0}, "Oh no": {" I": 9.0}, "Oh no I": {".": 9.0}}
    rule = lambda text: table.get(text[1:]) or ladder_rule()(text)  # noqa: E731
    provider = text_provider(LADDER_VOCAB, rule, default=-np.inf)
    strategy = ChainStrategy([AntiSlopStrategy(provider, ["no"]), Scripted(holdback=100, adjust=mask)])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=6, temperature=0)
    escalations = [r.escalation for r in of(events, RewindEvent)]
    assert escalations == ["", "previous_word"]
    assert not whole_word_in("no", events[-1].text) and events[-1].text.startswith("Well")


# -- ban lists ---------------------------------------------------------------------------------------


def test_slops_accept_strings_pairs_and_ban_phrases():
    strategy = AntiSlopStrategy(None, ["a", ("b", 0.5), ["c", 1], BanPhrase("d", 0.2, whole_word=False)])
    assert [(p.text, p.factor) for p in strategy.phrases] == [("a", 0.0), ("b", 0.5), ("c", 1.0), ("d", 0.2)]
    assert strategy.slops == ["a", "b", "c", "d"]


@pytest.mark.parametrize(
    ("slops", "message"),
    [
        (["a", ""], r"slops\[1\]: each slop must be a non-empty string"),
        ([("a", 1.5)], r"slops\[0\] \('a'\): factor must be a number in \[0, 1\], got 1.5"),
        ([("a", "x")], r"factor must be a number in \[0, 1\], got 'x'"),
        ([3], r"slops\[0\]: expected a non-empty string or a \(phrase, factor\) pair, got 3"),
        ([BanPhrase("a", ignore_case=True), ("b", -0.1)], r"slops\[1\]"),
    ],
)
def test_slop_validation(slops, message):
    with pytest.raises(ValueError, match=message):
        AntiSlopStrategy(None, slops)


def test_ban_phrase_validation():
    with pytest.raises(ValueError, match="non-empty"):
        BanPhrase("")
    with pytest.raises(ValueError, match=r"phrase 'x': factor"):
        BanPhrase("x", 2)
    with pytest.raises(TypeError, match="whole_word"):
        BanPhrase("x", whole_word="yes")
    with pytest.raises(ValueError, match=r"regex 'x': factor"):
        BanRegex("x", -1)
    with pytest.raises(ValueError, match="penalize"):
        Rewind(0, penalize=((1, 0.0),))
    with pytest.raises(ValueError, match="match_end"):
        Rewind(3, match_end=2)
    with pytest.raises(TypeError, match="whole_words"):
        AntiSlopStrategy(None, [], whole_words="no")


def test_load_ban_list_json_and_text(tmp_path):
    (tmp_path / "slop.json").write_text(json.dumps(["tapestry", ["delve", 0.3], ["Straße", 0]]), encoding="utf-8")
    (tmp_path / "slop.txt").write_text("# a comment\n\ntapestry\n delve\n  # indented comment\n", encoding="utf-8")
    from_json = load_ban_list(tmp_path / "slop.json")
    assert from_json == [BanPhrase("tapestry"), BanPhrase("delve", 0.3), BanPhrase("Straße")]
    assert load_ban_list(str(tmp_path / "slop.txt")) == [BanPhrase("tapestry"), BanPhrase(" delve")]
    AntiSlopStrategy(None, from_json)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('["a", ', r"slop.json: invalid JSON at line 1, column 7"),
        ('{"a": 1}', r"slop.json: expected a JSON list .* got a dict"),
        ('["a", ["b", 2]]', r"slop.json: entry 1 \('b'\): factor must be a number in \[0, 1\], got 2"),
        ('["a", ""]', r"slop.json: entry 1: expected a non-empty string or a \[phrase, factor\] pair, got ''"),
        ('[["a", 0.5, 1]]', r"slop.json: entry 0: expected"),
    ],
)
def test_load_ban_list_errors_name_the_file_and_entry(tmp_path, content, message):
    (tmp_path / "slop.json").write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_ban_list(tmp_path / "slop.json")


def test_load_ban_list_unreadable(tmp_path):
    with pytest.raises(ValueError, match="cannot read the ban list .*missing.txt"):
        load_ban_list(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n")
    with pytest.raises(ValueError, match="bad.txt: the ban list is not UTF-8"):
        load_ban_list(tmp_path / "bad.txt")


# -- the embedded model ----------------------------------------------------------------------------------


@pytest.mark.llamacpp
@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "seed": 3}], ids=["greedy", "sampled"])
def test_embedded_model_honours_a_regex_and_a_whole_word_ban(provider, sampling):
    story = provider.encode(provider.apply_chat_template([{"role": "user", "content": "Write a story about a cat."}]))
    plain = BacktrackSampler(provider).generate_text(story, max_new_tokens=80, **sampling)
    counts: dict[str, int] = {}
    for word in re_.findall(r"\b[a-z]{4,}\b", plain.text.lower()):
        counts[word] = counts.get(word, 0) + 1
    word, other = sorted(counts, key=lambda w: -counts[w])[:2]  # the two words it writes most
    pattern = rf"(?i)\b{other[:3]}\w*"  # and every word that begins like the second one
    strategy = AntiSlopStrategy(provider, [word], regex=[pattern])
    events = run(BacktrackSampler(provider, strategy), story, max_new_tokens=80, **sampling)
    text = events[-1].text
    assert not whole_word_in(word, text) and not re_.search(pattern, text)
    rewinds = of(events, RewindEvent)
    assert rewinds and not of(events, RewindRefusedEvent)
    assert {r.ban_phrase for r in rewinds} <= {word, pattern}
