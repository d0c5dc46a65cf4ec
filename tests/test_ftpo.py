"""FTPO records: the likely tokens of a rewind's position (opt-in), and ``batch --events-format ftpo``."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, ChainStrategy, RewindEvent
from backtrack_sampler.batch import BatchDefaults, BatchError, plan_batch, recover_jsonl, run_batch
from backtrack_sampler.batch.ftpo import FtpoSettings, ftpo_records
from backtrack_sampler.cli import main
from backtrack_sampler.core.candidates import min_p_candidates
from scripted import EOS, Scripted, of, random_provider, run, text_provider

# -- the engine: candidates at the rewind position -------------------------------------------------------

VOCAB = [EOS, " tapestry", " tap", "estry", " cloth", " rug", " ta", " tapping", " Tap", ".", " the"]
FIRST = {" tapestry": 5.0, " tap": 4.0, " cloth": 3.5, " rug": 3.0, " tapping": 2.9, " Tap": 2.85, " ta": 2.8}
FIRST |= {EOS: 2.75, " the": 0.0}  # EOS is above a 0.1 cutoff (5 + ln 0.1 = 2.70), " the" below it


def tapestry_rule(text: str) -> dict[str, float]:
    """Greedy: " tapestry" first, then " tap" + "estry"; once both are banned, " cloth."."""
    text = text[1:]  # the prompt is "."
    if text == "":
        return FIRST
    if text.endswith((" tap", " ta", " Tap")):
        return {"estry": 9.0}
    return {EOS: 9.0} if text.endswith(".") else {".": 9.0}


def tapestry_run(**kwargs) -> tuple:
    provider = text_provider(VOCAB, tapestry_rule)
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))
    return provider, run(sampler, ".", max_new_tokens=6, temperature=0, **kwargs)


def expected_survivors(prefs: dict[str, float], min_p: float, default: float = -30.0) -> list[tuple[int, float]]:
    """The reference: softmax of the logits over the whole vocabulary, kept at >= min_p x the best, best first."""
    logits = np.array([prefs.get(v, default) for v in VOCAB], dtype=np.float32).astype(np.float64)  # as the provider
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    kept = [(i, float(p)) for i, p in enumerate(probs) if p >= min_p * probs.max()]
    return sorted(kept, key=lambda item: (-item[1], item[0]))


def test_candidates_are_the_min_p_survivors_of_the_rewind_position():
    provider, events = tapestry_run(candidates_min_p=0.1)
    first, second = of(events, RewindEvent)
    assert events[-1].text == " cloth."
    expected = expected_survivors(FIRST, 0.1)
    assert [VOCAB[t] for t, _ in expected] == [" tapestry", " tap", " cloth", " rug", " tapping", " Tap", " ta", EOS]
    for event, rejected in ((first, " tapestry"), (second, " tap")):
        assert event.position == 0 and event.suppressed_tokens[0] == VOCAB.index(rejected)
        assert [t for t, _ in event.candidates] == [t for t, _ in expected]
        np.testing.assert_allclose([p for _, p in event.candidates], [p for _, p in expected], rtol=1e-9)
        assert event.suppressed_probability == pytest.approx(dict(expected)[VOCAB.index(rejected)], rel=1e-9)


def test_no_candidates_when_not_asked():
    provider, events = tapestry_run()
    rewinds = of(events, RewindEvent)
    assert len(rewinds) == 2
    assert all(e.candidates == () and e.suppressed_probability is None for e in rewinds)
    assert ftpo_records(".", ".", events[-1], rewinds, provider, [AntiSlopStrategy(provider, ["tapestry"])]) == []


@pytest.mark.parametrize("seed", range(6))
def test_asking_for_candidates_changes_nothing_else(seed):
    vocab = [EOS, " the", " tap", "estry", " cloth", " rug", " ta", " tapping", ".", " a", "b"]
    provider = random_provider(vocab, seed=seed, eos_bias=-3.0)
    plain, asked = (
        run(BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry", "the", "a b"])), ".", **kwargs)
        for kwargs in (
            {"max_new_tokens": 24, "seed": seed},
            {"max_new_tokens": 24, "seed": seed, "candidates_min_p": 0.02},
        )
    )
    assert plain[-1].tokens == asked[-1].tokens
    bare = [dataclasses.replace(e, candidates=(), suppressed_probability=None) for e in of(asked, RewindEvent)]
    assert bare == of(plain, RewindEvent)
    assert all(e.candidates and e.suppressed_probability is not None for e in of(asked, RewindEvent))


def test_the_suppressed_token_has_its_probability_even_below_the_cutoff():
    logits = np.log(np.array([0.6, 0.3, 0.08, 0.02]))
    survivors, probability = min_p_candidates(logits, 0.4, 3)
    assert [t for t, _ in survivors] == [0, 1] and probability == pytest.approx(0.02)
    assert min_p_candidates(np.array([0.0, -np.inf]), 1.0, 1) == (((0, 1.0),), 0.0)


@pytest.mark.parametrize("value", [0, -0.1, 1.5, float("nan"), True])
def test_candidates_min_p_is_checked_at_the_door(value):
    provider = text_provider(VOCAB, tapestry_rule)
    with pytest.raises(ValueError, match=re.escape(f"candidates_min_p must be in (0, 1], got {value!r}")):
        BacktrackSampler(provider).stream(".", max_new_tokens=2, candidates_min_p=value)


# -- FTPO records: which candidates are chosen -----------------------------------------------------------


def test_chosen_excludes_the_bans_the_phrase_starters_and_the_end_of_text():
    provider, events = tapestry_run(candidates_min_p=0.1)
    rewinds = of(events, RewindEvent)
    records = ftpo_records(".", ".", events[-1], rewinds, provider, [AntiSlopStrategy(provider, ["tapestry"])])
    probability = dict(expected_survivors(FIRST, 0.1))
    assert [r["rejected"]["text"] for r in records] == [" tapestry", " tap"]
    for record, event in zip(records, rewinds, strict=True):
        # " tapestry" and " tap" were banned there; " Tap" and " ta" begin "tapestry" (case-insensitively);
        # EOS is no alternative; " tapping" is a word of its own
        assert [c["text"] for c in record["chosen"]] == [" cloth", " rug", " tapping"]
        assert record["multi_chosen_decoded"] == [" cloth", " rug", " tapping"]
        assert all(c["prob"] == pytest.approx(probability[c["id"]], rel=1e-9) for c in record["chosen"])
        assert record["rejected"]["prob"] == event.suppressed_probability
        assert record["rejected_decoded"] == record["rejected"]["text"]
        assert record["generation_raw"] == "" and record["generation_token_ids"] == []
        assert record["context_with_chat_template"] == "." and record["prompt_token_ids"] == provider.encode(".")
        meta = record["metadata"]
        assert (meta["position"], meta["ban_phrase"], meta["escalation"]) == (0, "tapestry", "")
        assert meta["banned_token_ids"] == sorted(VOCAB.index(t) for t in (" tapestry", " tap"))
        assert meta["candidates"] == len(event.candidates) == 8
    capped = ftpo_records(".", ".", events[-1], rewinds, provider, [AntiSlopStrategy(provider, ["tapestry"])], 2)
    assert [[c["text"] for c in r["chosen"]] for r in capped] == [[" cloth", " rug"]] * 2


def test_substring_bans_follow_the_strategy_rules():
    provider, events = tapestry_run(candidates_min_p=0.1)
    rewinds = of(events, RewindEvent)
    substring = AntiSlopStrategy(provider, ["tap"], whole_words=False)  # now " tapping" holds "tap"
    records = ftpo_records(".", ".", events[-1], rewinds, provider, [substring])
    assert [c["text"] for c in records[0]["chosen"]] == [" cloth", " rug"]
    # with no ban strategy to ask, only the bans of the position are excluded (and the end of text)
    records = ftpo_records(".", ".", events[-1], rewinds, provider, [])
    assert [c["text"] for c in records[0]["chosen"]] == [" cloth", " rug", " tapping", " Tap", " ta"]


LADDER_VOCAB = [EOS, "Oh", "Well", " no", " well", ",", " I", " cannot", " will", ".", " shall"]
LADDER = {
    "": {"Oh": 9.0},
    "Oh": {" no": 9.0},
    "Oh no": {",": 9.0},
    "Oh no,": {" I": 9.0},
    "Oh no, I": {" cannot": 9.0, " will": 7.0, " shall": 6.5},
}


def test_the_retry_ladder_gives_a_record_aligned_with_its_own_position():
    # " I" is the only token after "Oh no,": the ladder keeps it and bans " cannot" after it (more_of_match)
    rule = lambda text: LADDER.get(text[1:]) or ({EOS: 9.0} if text.endswith(".") else {".": 9.0})  # noqa: E731
    provider = text_provider(LADDER_VOCAB, rule, default=-np.inf)
    strategy = AntiSlopStrategy(provider, ["I cannot", "I shall"])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=8, temperature=0, candidates_min_p=0.05)
    (rewind,) = of(events, RewindEvent)
    assert (rewind.position, rewind.escalation) == (4, "more_of_match")
    assert events[-1].text == "Oh no, I will."
    # the candidates are those of position 4 (after "Oh no, I"), not of position 3 where the match began
    probs = np.exp(np.array([9.0, 7.0, 6.5]) - 9.0)
    probs /= probs.sum()
    ids = [LADDER_VOCAB.index(t) for t in (" cannot", " will", " shall")]
    assert [t for t, _ in rewind.candidates] == ids
    np.testing.assert_allclose([p for _, p in rewind.candidates], probs, rtol=1e-9)
    (record,) = ftpo_records(
        ".", ".", events[-1], [rewind], provider, [AntiSlopStrategy(provider, ["I cannot", "I shall"])]
    )
    assert record["generation_raw"] == "Oh no, I" and len(record["generation_token_ids"]) == 4
    assert record["generation_token_ids"] == list(events[-1].tokens[:4])
    assert record["rejected"]["text"] == " cannot"
    # " shall" goes on with "I shall" from the context: not chosen
    assert [c["text"] for c in record["chosen"]] == [" will"]
    assert record["metadata"]["escalation"] == "more_of_match"


def test_a_deeper_rewind_takes_the_records_of_the_context_it_erased():
    vocab = [EOS, "A", "B", "C", " x", " y", " z", " w", "."]
    table = {"": {"A": 5.0, "B": 4.0, "C": 3.0}, "A": {" x": 9.0, " z": 8.0}, "A x": {" y": 9.0}, "A z": {" w": 9.0}}
    rule = lambda text: table.get(text[1:]) or ({EOS: 9.0} if text.endswith(".") else {".": 9.0})  # noqa: E731
    provider = text_provider(vocab, rule, default=-np.inf)
    bans = ["x y", "A z w"]
    events = run(
        BacktrackSampler(provider, AntiSlopStrategy(provider, bans)),
        ".",
        max_new_tokens=6,
        temperature=0,
        candidates_min_p=0.1,
    )
    first, second = of(events, RewindEvent)
    assert (first.position, first.suppressed_text, second.position, second.suppressed_text) == (1, " x y.", 0, "A z w.")
    assert events[-1].text == "B."
    assert [vocab[t] for t, _ in first.candidates] == [" x", " z"]  # position 1, after "A"
    assert [vocab[t] for t, _ in second.candidates] == ["A", "B", "C"]  # position 0
    # the rewind at position 1 was erased by the one to position 0: its context is not in the final text
    (record,) = ftpo_records(".", ".", events[-1], [first, second], provider, [AntiSlopStrategy(provider, bans)])
    assert record["metadata"]["rewind_index"] == 1 and record["rejected"]["text"] == "A"
    assert [c["text"] for c in record["chosen"]] == ["B", "C"]


def test_previous_word_rewinds_and_soft_bans_give_no_record():
    vocab = [EOS, "Oh", "Well", " no", " well", ",", "."]
    table = {"": {"Oh": 9.0, "Well": 1.0}, "Oh": {" no": 9.0, " well": 1.0}, "Oh no": {",": 9.0}}
    rule = lambda text: table.get(text[1:]) or ({EOS: 9.0} if text.endswith(".") else {".": 9.0})  # noqa: E731

    def mask(ctx, logits):  # a dead end at position 1: the ladder goes back to the previous word
        if len(ctx.tokens) == 1 and ctx.tokens[0] == vocab.index("Oh"):
            logits[vocab.index(" well")] = -np.inf
        return logits

    provider = text_provider(vocab, rule, default=-np.inf)
    strategy = ChainStrategy([AntiSlopStrategy(provider, ["no"]), Scripted(holdback=100, adjust=mask)])
    events = run(BacktrackSampler(provider, strategy), ".", max_new_tokens=6, temperature=0, candidates_min_p=0.001)
    rewinds = of(events, RewindEvent)
    assert [r.escalation for r in rewinds] == ["", "previous_word"]
    assert all(r.candidates for r in rewinds)
    assert ftpo_records(".", ".", events[-1], rewinds, provider, [AntiSlopStrategy(provider, ["no"])]) == []
    soft = text_provider(VOCAB, tapestry_rule)
    events = run(
        BacktrackSampler(soft, AntiSlopStrategy(soft, [("tapestry", 0.5)])),
        ".",
        max_new_tokens=6,
        temperature=0,
        candidates_min_p=0.1,
    )
    assert of(events, RewindEvent) and not ftpo_records(".", ".", events[-1], of(events, RewindEvent), soft)


def test_settings_are_checked():
    with pytest.raises(ValueError, match=re.escape("ftpo min_p must be in (0, 1], got 2")):
        FtpoSettings(min_p=2)
    with pytest.raises(ValueError, match=re.escape("ftpo max_chosen must be an integer >= 1, got 0")):
        FtpoSettings(max_chosen=0)


# -- batch: records written, resumed without duplicates ---------------------------------------------------

BATCH_VOCAB = [EOS, " ab", " ba", " cd", " a", "b", "."]


def batch_provider():
    """Writes " ab ab ab ab" then ends (greedy); bans make it write other words."""
    prefs = {" ab": 3.0, " ba": 2.5, " cd": 2.0, " a": 1.8, "b": 1.0}
    return text_provider(BATCH_VOCAB, lambda text: {EOS: 9.0} if len(text) > 12 else prefs)


LINES = [
    {"id": "one", "prompt": "b", "banned_strings": ["ab"]},
    {"id": 2, "prompt": " ba", "banned_strings": ["ab", "ba"]},
    {"id": "three", "prompt": " cd"},
    {
        "id": "four",
        "prompt": ".",
        "banned_strings": ["ab"],
        "strategy": {"name": "antislop", "params": {"slops": ["cd"]}},
    },
]


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read_records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_batch_writes_ftpo_records_and_resumes_without_duplicates(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", LINES)
    out, events = tmp_path / "out.jsonl", tmp_path / "ftpo.jsonl"
    defaults = BatchDefaults(max_tokens=10, temperature=0, raw=True)  # prompts to continue
    settings = FtpoSettings(min_p=0.05)
    summary = run_batch(source, out, [batch_provider()], defaults, events_path=events, progress=None, ftpo=settings)
    complete, records = read_records(out), read_records(events)
    assert summary.pairs == len(records) > 0
    assert {r["id"] for r in records} <= {"one", 2, "four"}
    for record in records:
        assert {"id", "line", "prompt", "chosen", "rejected", "rejected_decoded", "metadata"} <= set(record)
        assert record["prompt"] == LINES[record["line"] - 1]["prompt"]
        assert record["rejected"]["id"] in record["metadata"]["banned_token_ids"]
        assert all(c["id"] not in record["metadata"]["banned_token_ids"] for c in record["chosen"])
        final = next(r["text"] for r in complete if r["id"] == record["id"])
        assert final.startswith(record["generation_raw"])
    # Killed after two results and half a third, with an FTPO record of a line whose result never came:
    out.write_text("".join(json.dumps(r) + "\n" for r in complete[:2]) + json.dumps(complete[2])[:15])
    orphans = [r for r in records if r["id"] not in {c["id"] for c in complete[:2]}]
    assert orphans, "a record of a line not yet answered is on disk"
    events.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"id": "fo')
    assert plan_batch(source, out, defaults, events).done_before == 2
    assert all(r["id"] in {c["id"] for c in complete[:2]} for r in recover_jsonl(events))
    summary = run_batch(source, out, [batch_provider()], defaults, events_path=events, progress=None, ftpo=settings)
    assert summary.done_before == 2 and summary.ran == 2
    again = read_records(events)
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, records))  # deterministic: the same, once each


def test_an_events_file_of_the_other_kind_is_refused_untouched(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", LINES[:2])
    out, events = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    defaults = BatchDefaults(max_tokens=10, temperature=0, raw=True)  # prompts to continue
    run_batch(source, out, [batch_provider()], defaults, events_path=events, progress=None)  # DPO pairs
    before = events.read_bytes()
    assert before
    out.unlink()
    with pytest.raises(BatchError, match="holds DPO pairs; write FTPO records to another file") as caught:
        run_batch(source, out, [batch_provider()], defaults, events_path=events, progress=None, ftpo=FtpoSettings())
    assert caught.value.path == events and events.read_bytes() == before
    ftpo_path = tmp_path / "ftpo.jsonl"
    run_batch(source, out, [batch_provider()], defaults, events_path=ftpo_path, progress=None, ftpo=FtpoSettings())
    out.unlink()
    with pytest.raises(BatchError, match="holds FTPO records; write DPO pairs to another file"):
        run_batch(source, out, [batch_provider()], defaults, events_path=ftpo_path, progress=None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--events-out", "{e}", "--events-format", "ftpo", "--ftpo-min-p", "2"], "--ftpo-min-p: must be in (0, 1]"),
        (["--events-out", "{e}", "--events-format", "ftpo", "--ftpo-min-p", "0"], "got '0'"),
        (["--events-out", "{e}", "--events-format", "ftpo", "--ftpo-max-chosen", "0"], "--ftpo-max-chosen: must be"),
        (["--events-out", "{e}", "--events-format", "csv"], "--events-format: invalid choice: 'csv'"),
        (["--events-format", "ftpo"], "--events-format: ftpo records are written to --events-out PATH"),
        (["--events-out", "{e}", "--ftpo-min-p", "0.1"], "--ftpo-min-p: only applies with --events-format ftpo"),
    ],
)
def test_bad_ftpo_arguments_exit_2_naming_the_flag(tmp_path, capsys, args, message):
    source = write_lines(tmp_path / "in.jsonl", LINES[:1])
    out = tmp_path / "out.jsonl"
    args = [a.replace("{e}", str(tmp_path / "ftpo.jsonl")) for a in args]
    assert main(["batch", str(source), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument ") and message in err and err.count("\n") == 1, err
    assert not out.exists()


# -- the real model, through the command ----------------------------------------------------------------

STORY_BANS = ["dragon", "dragons", "library", "books", "once"]


def starts_phrase(context: str, token: str, phrase: str) -> bool:
    """Reference check: a whole-word, case-insensitive match of ``phrase`` could begin in ``token`` after ``context``.

    Some word start at or inside the token (or the word the context ends with, when the token goes on with
    it) begins a text that is a prefix of the phrase, or that holds the whole phrase ending at a word end.
    """
    word = re.search(r"\w*$", context).group()
    text, phrase = (word + token).casefold(), phrase.casefold()
    for i in range(len(word) + len(token)):
        if not re.match(r"\w", text[i]) or (i > 0 and re.match(r"\w", text[i - 1])):
            continue  # not a word start
        rest = text[i:]
        if phrase.startswith(rest) and len(rest) + i > len(word):
            return True
        if rest.startswith(phrase) and i + len(phrase) > len(word) and not re.match(r"\w", rest[len(phrase) :]):
            return True
    return False


@pytest.mark.llamacpp
def test_batch_ftpo_on_the_embedded_model(tmp_path, smollm_path, provider, capsys):
    topics = ["a dragon", "a library", "a dragon who reads books", "an old library"]
    lines = [
        {"id": f"s{i}", "messages": [{"role": "user", "content": f"Write a short story about {t}."}], "seed": i}
        for i, t in enumerate(topics)
    ]
    source = write_lines(tmp_path / "in.jsonl", lines)
    out, events = tmp_path / "out.jsonl", tmp_path / "ftpo.jsonl"
    args = ["batch", str(source), "-o", str(out), "--events-out", str(events), "--events-format", "ftpo"]
    args += ["--model", str(smollm_path), "--concurrency", "1", "--threads", "1", "--max-tokens", "48"]
    args += ["--temperature", "0.7", *(a for b in STORY_BANS for a in ("--ban", b))]
    assert main(args) == 0, capsys.readouterr().err
    assert "FTPO records" in capsys.readouterr().err
    results = {r["id"]: r for r in read_records(out)}
    records = read_records(events)
    assert sum(r["stats"]["rewinds"] for r in results.values()) > 0 and records
    for record in records:
        meta, rejected, chosen = record["metadata"], record["rejected"], record["chosen"]
        phrase = meta["ban_phrase"]
        prompt_text = provider.apply_chat_template(record["prompt"])
        # the context: the prompt, then the final text up to the rewind point, in text and in token ids
        assert record["prompt"] == lines[int(record["id"][1:])]["messages"]
        assert results[record["id"]]["text"].startswith(record["generation_raw"])
        assert record["context_with_chat_template"] == prompt_text + record["generation_raw"]
        assert record["prompt_token_ids"] == provider.encode(prompt_text)
        assert len(record["generation_token_ids"]) == meta["position"]
        assert provider.decode(record["generation_token_ids"]) == record["generation_raw"]
        # the rejected token begins the phrase (or goes on with it, after the ladder kept its start)
        if meta["escalation"] == "":
            assert starts_phrase(record["generation_raw"], rejected["text"], phrase), record
        else:
            assert meta["escalation"] == "more_of_match"
            assert phrase.casefold() in (record["generation_raw"][-len(phrase) :] + rejected["text"]).casefold()
        assert rejected["id"] in meta["banned_token_ids"] and 0 < rejected["prob"] <= 1
        assert rejected["text"] == record["rejected_decoded"]
        # no chosen token begins (or goes on with) a banned phrase; each is likely enough under the model
        assert 1 <= len(chosen) <= 20 and record["multi_chosen_decoded"] == [c["text"] for c in chosen]
        for candidate in chosen:
            assert candidate["id"] not in meta["banned_token_ids"]
            assert not any(starts_phrase(record["generation_raw"], candidate["text"], b) for b in STORY_BANS), record
        # the model's distribution there, evaluated as the run did (token by token; llama.cpp's logits move a
        # little with how tokens are grouped into decodes, and rewinds re-evaluate a few at once)
        logits = provider.prefill(record["prompt_token_ids"])
        for token in record["generation_token_ids"]:
            logits = provider.forward([token])
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        for candidate in [rejected, *chosen]:
            assert 0 < candidate["prob"] <= 1
            assert candidate["prob"] == pytest.approx(probs[candidate["id"]], rel=0.1, abs=1e-3)
        assert all(c["prob"] >= 0.01 * probs.max() * 0.9 for c in chosen)
        assert [c["prob"] for c in chosen] == sorted((c["prob"] for c in chosen), reverse=True)

    # Killed after the first result: the same command finishes the rest, no record twice.
    first = read_records(out)[0]
    out.write_text(json.dumps(first) + "\n" + '{"id": "s')
    with events.open("a") as handle:
        handle.write('{"id": "s1", "prompt": "half')
    assert main(args) == 0, capsys.readouterr().err
    resumed = read_records(events)
    keys = [(r["id"], r["metadata"]["rewind_index"]) for r in resumed]
    assert len(keys) == len(set(keys))
    assert [r for r in resumed if r["id"] == first["id"]] == [r for r in records if r["id"] == first["id"]]
    assert {r["id"] for r in read_records(out)} == {line["id"] for line in lines}
