"""Mining a ban list: over-used terms rise to the top, get hard then soft factors, and the file feeds ``--ban-file``."""

from __future__ import annotations

import builtins
import json
import random
import re

import pytest

from backtrack_sampler import cli, models
from backtrack_sampler.metrics.mining import FLOOR, is_candidate, mine_terms, soft_factor, wordfreq_frequency
from backtrack_sampler.strategy.ban_rules import load_ban_list

pytest.importorskip("wordfreq", reason="wordfreq is not installed (extra: score)")

FILLER = (
    "the old man walked along the road and saw a river near the village where children played "
    "in the morning light while a dog sat by the gate and the baker sold warm bread"
).split()


def corpus(n_texts: int = 12, seed: int = 0) -> list[str]:
    """Common words (each once per text, frequent in English), and "tapestry" and "testament to" twice per text."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n_texts):
        words = FILLER[:]
        rng.shuffle(words)
        half = len(words) // 2
        texts.append(
            f"{' '.join(words[:half])}. Her life was a tapestry, a testament to courage. "
            f"{' '.join(words[half:])}. The tapestry of the town stood as a testament to its people."
        )
    return texts


def write_results(path, texts):
    records = [{"id": i, "line": i, "text": t, "finish_reason": "length", "stats": {}} for i, t in enumerate(texts, 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_over_used_terms_come_first_hard_then_soft():
    terms = mine_terms(corpus(), wordfreq_frequency(), top=8, hard=2)
    assert [t.term for t in terms[:2]] == ["tapestry", "testament to"]
    assert [t.factor for t in terms[:2]] == [0.0, 0.0]
    soft = [t.factor for t in terms[2:]]
    assert soft[0] == 0.2 and soft[-1] == 0.8 and soft == sorted(soft) and all(0 < f < 1 for f in soft)
    assert terms[0].count == 24 and terms[0].texts == 12
    assert all(a.ratio >= b.ratio for a, b in zip(terms, terms[1:], strict=False))
    # "a testament to", "testament", "the tapestry" overlap a term taken before them: left out
    assert not {"testament", "a testament to", "the tapestry"} & {t.term for t in terms}


def test_min_count_and_min_texts_keep_one_offs_out():
    texts = corpus(4) + ["Zorblax the zorblax met a zorblax and another zorblax."]
    mined = {t.term for t in mine_terms(texts, wordfreq_frequency(), top=40, hard=0)}
    assert "zorblax" not in mined  # 4 times, but in one text only
    assert "zorblax" in {t.term for t in mine_terms(texts, wordfreq_frequency(), top=40, min_texts=1)}
    assert "courage" not in {t.term for t in mine_terms(texts, wordfreq_frequency(), top=40, min_count=5)}


def test_candidates_and_factors():
    assert is_candidate(("tapestry",)) and is_candidate(("testament", "to"))
    assert not is_candidate(("the",)) and not is_candidate(("of", "the")) and not is_candidate(("the", "tapestry"))
    assert not is_candidate(("in", "2024")) and not is_candidate(("it's",)) and not is_candidate(("ox",))
    assert [soft_factor(i, 4) for i in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert soft_factor(0, 1) == 0.2


def test_a_word_wordfreq_does_not_know_gets_the_floor():
    texts = ["The glimmerwax shone. Glimmerwax again, and glimmerwax."] * 3
    (term,) = mine_terms(texts, wordfreq_frequency(), top=1)
    assert term.term == "glimmerwax" and term.human_share == FLOOR


def test_mine_refuses_bad_arguments():
    with pytest.raises(ValueError, match="top must be an integer >= 1, got 0"):
        mine_terms(corpus(), wordfreq_frequency(), top=0)
    with pytest.raises(ValueError, match=r"orders must be n-gram orders in \[1, 5\], got \[0\]"):
        mine_terms(corpus(), wordfreq_frequency(), orders=(0,))


def test_cli_writes_a_list_the_ban_file_loader_reads_and_the_same_twice(tmp_path, capsys):
    results = write_results(tmp_path / "results.jsonl", corpus())
    first, second = tmp_path / "bans.json", tmp_path / "again.json"
    argv = ["mine", str(results), "--top", "6", "--hard", "2", "--ngrams", "1,2"]
    assert cli.main([*argv, "-o", str(first)]) == 0
    out = capsys.readouterr().out
    assert "| 1 | tapestry | 24 | 12 |" in out and "0 (hard)" in out and "wrote 6 terms (2 hard)" in out
    assert cli.main([*argv, "-o", str(second)]) == 0
    assert first.read_bytes() == second.read_bytes()
    phrases = load_ban_list(first)
    assert [(p.text, p.factor) for p in phrases[:2]] == [("tapestry", 0.0), ("testament to", 0.0)]
    assert len(phrases) == 6 and all(0 < p.factor < 1 for p in phrases[2:])


def test_cli_without_output_prints_the_list_on_stdout(tmp_path, capsys):
    results = write_results(tmp_path / "results.jsonl", corpus())
    assert cli.main(["mine", str(results), "--top", "3", "--hard", "1"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)[0] == ["tapestry", 0.0]
    assert "| 1 | tapestry |" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "bans.txt"], "argument --output: must be a .json file"),
        (["--ngrams", "1,9"], "argument --ngrams: must be comma-separated integers in [1, 5], got '1,9'"),
        (["--top", "0"], "argument --top: must be an integer >= 1, got '0'"),
        (["--min-count", "1000"], "argument INPUT: no term occurs --min-count 1000 times"),
    ],
)
def test_cli_errors_exit_2(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    results = write_results(tmp_path / "results.jsonl", corpus())
    assert cli.main(["mine", str(results), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_missing_wordfreq_names_the_extra(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def no_wordfreq(name, *args, **kwargs):
        if name == "wordfreq":
            raise ImportError("No module named 'wordfreq'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wordfreq)
    assert cli.main(["mine", str(write_results(tmp_path / "r.jsonl", corpus()))]) == 2
    assert "install it with: pip install 'backtrack_sampler[score]'" in capsys.readouterr().err


@pytest.mark.llamacpp
def test_the_mined_list_feeds_generate_ban_file(tmp_path, capsys):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    try:
        models.default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    bans = tmp_path / "bans.json"
    assert cli.main(["mine", str(write_results(tmp_path / "r.jsonl", corpus())), "-o", str(bans), "--hard", "2"]) == 0
    prompt = "Write one sentence about a tapestry."
    common = ["generate", prompt, "--temperature", "0", "--max-new-tokens", "40", "--threads", "1", "--quiet"]
    assert cli.main(common) == 0
    plain = capsys.readouterr().out
    assert re.search(r"(?i)\btapestry\b", plain)  # the model writes it unprompted by bans
    assert cli.main([*common, "--ban-file", str(bans)]) == 0
    banned = capsys.readouterr().out
    assert banned.strip() and not re.search(r"(?i)\btapestry\b|\btestament to\b", banned)


def test_terms_with_a_word_the_prompts_use_are_not_mined():
    frequency = wordfreq_frequency()
    texts = corpus()
    plain = [t.term for t in mine_terms(texts, frequency, (1, 2), top=6, hard=2)]
    assert plain[:2] == ["tapestry", "testament to"]
    asked = [t.term for t in mine_terms(texts, frequency, (1, 2), top=6, hard=2, prompts=["Tell me about tapestries."])]
    assert "tapestry" not in asked and not any("tapestry" in term for term in asked)
    assert asked[0] == "testament to"


def test_cli_prompts_keep_the_topics_out(tmp_path, capsys):
    results = write_results(tmp_path / "results.jsonl", corpus())
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": 1, "messages": [{"role": "user", "content": "A story about a tapestry"}]})
        + "\n"
        + json.dumps({"id": 2, "prompt": "Courage, please"})
        + "\n",
        encoding="utf-8",
    )
    bans = tmp_path / "bans.json"
    argv = ["mine", str(results), "--top", "6", "--hard", "2", "--ngrams", "1,2", "--prompts", str(prompts)]
    assert cli.main([*argv, "-o", str(bans)]) == 0
    terms = [p.text for p in load_ban_list(bans)]
    assert terms[0] == "testament to"
    assert not any("tapestry" in t or "courage" in t for t in terms)
    capsys.readouterr()
    assert cli.main(["mine", str(results), "--prompts", str(tmp_path / "missing.jsonl")]) == 2
    assert "--prompts" in capsys.readouterr().err
