"""backtrack-sampler batch: bad lines reported, resumable after SIGKILL, preference pairs from ban rewinds."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backtrack_sampler.batch import (
    BatchDefaults,
    BatchError,
    comparable_continuation,
    parse_line,
    plan_batch,
    recover_jsonl,
    run_batch,
)
from backtrack_sampler.cli import main
from backtrack_sampler.core.base_provider import BaseProvider
from near_tie import Tracer, assert_same_or_near_tie
from scripted import EOS, text_provider

VOCAB = [EOS, "a", "b", "c", " ", "."]


def scripted():
    """Writes "ab ab ab." then ends; bans make it write other words. A model without a chat template."""
    provider = text_provider(
        VOCAB, lambda text: {EOS: 9.0} if len(text) > 12 else {"a": 3.0, "b": 2.0, " ": 1.5, "c": 1.0}
    )
    provider.apply_chat_template = functools.partial(BaseProvider.apply_chat_template, provider)
    return provider


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def read_records(path: Path) -> list[dict]:
    text = path.read_text()
    assert text == "" or text.endswith("\n"), "no half-written line"
    return [json.loads(line) for line in text.splitlines()]


def key(record: dict) -> tuple:
    kind = record.get("error", {}).get("type")
    return ("line", record["line"]) if kind in ("invalid_line", "duplicate_id") else ("id", record["id"])


GOOD = [
    {"id": "one", "prompt": "a", "max_tokens": 6},
    {"id": 2, "prompt": "b", "temperature": 0, "banned_strings": ["ab"]},
    {"id": "three", "prompt": "c", "seed": 4, "top_p": 0.9, "top_k": 3, "min_p": 0.01},
]
BAD = [
    ("not json at all", "invalid_line", "line 4 is not valid JSON"),
    ("[1, 2]", "invalid_line", "line 5 must be a JSON object, got list"),
    ({"prompt": "a"}, "invalid_line", "line 6: id must be a non-empty string or an integer, got None"),
    ({"id": "one", "prompt": "again"}, "duplicate_id", "duplicate id 'one' (first on line 1)"),
    ({"id": "t", "prompt": "a", "temprature": 1}, "invalid_params", "unknown field 'temprature'"),
    (
        {"id": "u", "prompt": "a", "temperature": -1},
        "invalid_params",
        "temperature must be a finite number >= 0, got -1",
    ),
    ({"id": "v", "prompt": "a", "messages": []}, "invalid_params", "give exactly one of prompt"),
    ({"id": "w", "prompt": "a", "top_p": 1.5}, "invalid_params", "top_p must be in (0, 1], got 1.5"),
    ({"id": "x", "prompt": "a", "strategy": "magic"}, "invalid_params", "strategy must be one of"),
    ({"id": "y", "messages": [{"role": "user", "content": "hi"}]}, "invalid_params", "has no chat template"),
    ({"id": "z", "prompt": "a", "strategy": "antislop"}, "invalid_params", "needs banned_strings"),
    ({"id": "zz", "prompt": "q"}, "invalid_params", "cannot be encoded"),
    ({"id": "r1", "prompt": "a", "raw": "yes"}, "invalid_params", "raw must be true or false, got 'yes'"),
    ({"id": "r2", "messages": [{"role": "user", "content": "a"}], "raw": True}, "invalid_params", "raw applies to"),
]
RAW = BatchDefaults(raw=True)  # the scripted model has no chat template: its lines' prompts are text to continue


def test_bad_lines_are_reported_and_the_run_goes_on(tmp_path):
    lines = [*GOOD, *(line for line, _, _ in BAD)]
    source = write_lines(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    summary = run_batch(source, out, [scripted()], BatchDefaults(max_tokens=10, raw=True), progress=None)
    records = read_records(out)
    assert summary.total == len(lines) and summary.ran == len(lines) and summary.errors == len(BAD)
    results = {r["id"]: r for r in records if "error" not in r}
    assert set(results) == {"one", 2, "three"}
    for result in results.values():
        assert result["finish_reason"] in ("eos", "length") and result["stats"]["tokens_emitted"] > 0
    assert results["one"]["stats"]["tokens_emitted"] <= 6
    assert {result["prompt_mode"] for result in results.values()} == {"raw"}
    errors = {r["line"]: r for r in records if "error" in r}
    for number, (_, kind, message) in enumerate(BAD, len(GOOD) + 1):
        assert errors[number]["error"]["type"] == kind
        assert message in errors[number]["error"]["message"], errors[number]
    assert len({key(r) for r in records}) == len(records)


def test_a_restart_skips_what_is_done_and_repairs_the_files(tmp_path):
    lines = [*GOOD, "broken", {"id": "one", "prompt": "dup"}, {"id": "four", "prompt": "ab", "banned_strings": ["ab"]}]
    source = write_lines(tmp_path / "in.jsonl", lines)
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    defaults = BatchDefaults(max_tokens=10, temperature=0, raw=True)
    run_batch(source, out, [scripted()], defaults, events_path=pairs, progress=None)
    complete = read_records(out)
    assert len(complete) == len(lines)
    # As if killed twice: once after three lines plus half of the fourth, once after writing pairs only.
    kept = complete[:3]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept) + json.dumps(complete[3])[:17])
    orphan = {"id": "nobody", "prompt": "p", "chosen": "c", "rejected": "r", "metadata": {}}
    with pairs.open("a") as handle:
        handle.write(json.dumps(orphan) + "\n" + '{"id": "half')
    plan = plan_batch(source, out, defaults, pairs)
    assert plan.done_before == 3 and len(plan.jobs) + len(plan.errors) == len(lines) - 3
    assert out.read_text().endswith("\n") and all(p["id"] != "nobody" for p in recover_jsonl(pairs))
    summary = run_batch(source, out, [scripted()], defaults, events_path=pairs, progress=None)
    assert summary.done_before == 3 and summary.ran == len(lines) - 3
    records = read_records(out)
    assert sorted(map(str, map(key, records))) == sorted(map(str, map(key, complete)))
    # Nothing left: a third run writes nothing.
    assert run_batch(source, out, [scripted()], defaults, events_path=pairs, progress=None).ran == 0
    assert read_records(out) == records
    done_ids = {r["id"] for r in records if "error" not in r}
    pair_records = read_records(pairs)
    assert all(p["id"] in done_ids for p in pair_records)
    assert len({(p["id"], p["metadata"]["rewind_index"]) for p in pair_records}) == len(pair_records)


def test_a_bug_stops_the_run_and_is_not_written_as_a_bad_line(tmp_path):
    def buggy(text):
        if text.startswith("c") and len(text) > 3:  # mid-generation, not at the prompt
            raise ValueError("a bug in the model")
        return {EOS: 9.0} if len(text) > 12 else {"a": 3.0, "b": 2.0, " ": 1.5, "c": 1.0}

    lines = [
        {"id": "bad", "prompt": "a", "top_k": -1},
        {"id": "ok", "prompt": "a", "max_tokens": 4},
        {"id": "bug", "prompt": "c"},
        {"id": "after", "prompt": "b"},
    ]
    source, out = write_lines(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match="a bug in the model") as info:
        run_batch(source, out, [text_provider(VOCAB, buggy)], RAW, progress=None)
    assert not isinstance(info.value, BatchError)
    assert "line 3 (id 'bug')" in "".join(getattr(info.value, "__notes__", ["line 3 (id 'bug')"]))
    records = {r["id"]: r for r in read_records(out)}
    assert set(records) == {"bad", "ok"}  # nothing for the bug's line, and the run did not go on
    assert records["bad"]["error"]["type"] == "invalid_params" and "top_k" in records["bad"]["error"]["message"]
    assert "error" not in records["ok"]
    # Fixed, the same command finishes the rest.
    assert run_batch(source, out, [scripted()], RAW, progress=None).ran == 2


def test_strategies_come_from_the_registry_and_the_bans_join_them(tmp_path):
    from backtrack_sampler import AdaptiveTemperatureStrategy, AntiSlopStrategy, ChainStrategy
    from backtrack_sampler.batch import build_strategy

    def strategy(spec, bans=("zz",)):
        line = json.dumps({"id": 1, "prompt": "a", "strategy": spec})
        return build_strategy(parse_line(line, 1, BatchDefaults(bans=bans)), scripted())

    antislop = strategy({"name": "antislop", "params": {"slops": ["ab"]}})
    assert isinstance(antislop, AntiSlopStrategy) and antislop.slops == ["zz", "ab"]  # one AntiSlop, bans first
    chained = strategy({"name": "adaptive", "params": {"poly_coeffs": [1.0]}})
    assert isinstance(chained, ChainStrategy)
    assert [type(s) for s in chained.strategies] == [AdaptiveTemperatureStrategy, AntiSlopStrategy]
    assert strategy("none", bans=()) is None and strategy(None, bans=()) is None

    lines = [
        {"id": "none", "prompt": "a", "strategy": "none", "banned_strings": ["ab"]},
        {"id": "param", "prompt": "a", "strategy": {"name": "creative", "params": {"nope": 1}}},
        {"id": "value", "prompt": "a", "strategy": {"name": "adaptive", "params": {"poly_coeffs": []}}},
        {"id": "human", "prompt": "a", "strategy": "human"},
        {"id": "chain", "prompt": "a", "strategy": ["adaptive_temperature", "json"], "banned_strings": ["ab"]},
    ]
    source, out = write_lines(tmp_path / "in.jsonl", lines), tmp_path / "out.jsonl"
    run_batch(source, out, [scripted()], BatchDefaults(max_tokens=3, temperature=0, raw=True), progress=None)
    records = {r["id"]: r for r in read_records(out)}
    assert "error" not in records["chain"], records["chain"]
    errors = {name: records[name]["error"]["message"] for name in ("none", "param", "value", "human")}
    assert "strategy 'none' cannot apply banned_strings" in errors["none"]
    assert errors["param"].startswith("strategy.params.nope: 'nope' is not a parameter of CreativeWritingStrategy")
    assert errors["value"].startswith("strategy.params.poly_coeffs: AdaptiveTemperatureStrategy: poly_coeffs must")
    assert "strategy must be one of none, adaptive_temperature, antislop" in errors["human"]


def test_parse_line_fills_in_the_defaults():
    job = parse_line('{"id": 7, "prompt": "x", "top_k": 0}', 3, BatchDefaults(max_tokens=9, seed=2, bans=("zz",)))
    assert job.id == 7 and job.line == 3 and job.prompt == "x" and job.bans == ("zz",)
    assert job.prompt_mode == "chat" and job.chat_messages == [{"role": "user", "content": "x"}]
    assert job.sampling == {
        "max_new_tokens": 9,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": None,
        "min_p": None,
        "seed": 2,
    }


@pytest.mark.parametrize(
    ("text", "length", "expected"),
    [
        (" a fine day. More here", 4, " a fine"),
        (" yes. And more words", 20, " yes."),
        (" one two three", 100, " one two three"),
        ("\n\nNew paragraph", 2, "\n\nNew"),
        (" end", 0, " end"),
    ],
)
def test_comparable_continuation(text, length, expected):
    assert comparable_continuation(text, length) == expected


# -- the real model ----------------------------------------------------------------------------------
STORY_BANS = ["dragon", "dragons", "library", "books"]


@pytest.mark.llamacpp
def test_events_out_gives_valid_preference_pairs(tmp_path, provider):
    topics = ["a dragon", "a library", "a dragon who reads books", "an old library"]
    lines = [
        {"id": f"s{i}", "messages": [{"role": "user", "content": f"Write a short story about {t}."}], "seed": i}
        for i, t in enumerate(topics)
    ]
    source = write_lines(tmp_path / "in.jsonl", lines)
    out, pairs_path = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    defaults = BatchDefaults(max_tokens=40, temperature=0.7, bans=tuple(STORY_BANS))
    summary = run_batch(source, out, [provider], defaults, events_path=pairs_path, progress=None)
    results = {r["id"]: r for r in read_records(out)}
    assert summary.rewinds > 0 and summary.pairs > 0
    banned = re.compile("|".join(rf"(?<!\w){b}(?!\w)" for b in STORY_BANS), re.IGNORECASE)
    pairs = read_records(pairs_path)
    assert len(pairs) == summary.pairs
    for pair in pairs:
        assert set(pair) == {"id", "line", "prompt", "chosen", "rejected", "metadata"}
        assert banned.search(pair["rejected"]), pair
        assert pair["metadata"]["ban_phrase"].lower() in pair["rejected"].lower()
        assert not banned.search(pair["chosen"]) and pair["chosen"].strip(), pair
        # prompt + chosen is where the final text went: the prompt, then the generated text.
        prompt_text = provider.apply_chat_template(lines[int(pair["id"][1:])]["messages"])
        assert pair["prompt"].startswith(prompt_text)
        assert (prompt_text + results[pair["id"]]["text"]).startswith(pair["prompt"] + pair["chosen"])


@pytest.mark.llamacpp
@pytest.mark.parametrize("concurrency", ["1", "4"])  # 4: the slots of one batched llama.cpp context
def test_sigkill_mid_run_then_the_same_command_finishes_with_one_line_per_id(tmp_path, smollm_path, concurrency):
    n = 14
    lines = [
        {"id": f"p{i}", "messages": [{"role": "user", "content": f"Tell me a fact about the number {i}."}]}
        for i in range(n)
    ]
    lines.insert(5, "{this line is broken")
    lines.insert(9, {"id": "p3", "prompt": "duplicate"})
    source = write_lines(tmp_path / "in.jsonl", lines)
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    command = [sys.executable, "-m", "backtrack_sampler", "batch", str(source), "-o", str(out)]
    command += ["--events-out", str(pairs), "--max-tokens", "32", "--seed", "1", "--ban", "number", "--no-progress"]
    # One llama.cpp thread: the test machine's cores are shared, and threads that wait on each other crawl then.
    command += ["--model", str(smollm_path), "--concurrency", concurrency, "--threads", "1"]

    kills = 0
    for target in (3, 7):  # kill -9 twice, at different points
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= target:
                break
            time.sleep(0.02)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            kills += 1
        process.wait(60)
    assert kills >= 1, "the run ended before it could be killed"
    assert out.read_bytes().count(b"\n") < len(lines)
    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    records = read_records(out)
    keys = [key(r) for r in records]
    assert len(keys) == len(set(keys)) == len(lines)
    assert {r["id"] for r in records if "error" not in r} == {f"p{i}" for i in range(n)}
    kinds = sorted(r["error"]["type"] for r in records if "error" in r)
    assert kinds == ["duplicate_id", "invalid_line"]
    done = {r["id"] for r in records if "error" not in r}
    pair_records = read_records(pairs)
    assert all(p["id"] in done for p in pair_records)
    assert len({(p["id"], p["metadata"]["rewind_index"]) for p in pair_records}) == len(pair_records)
    # Run again: nothing to do, nothing written.
    again = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and read_records(out) == records


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--concurrency", "2", "--backend", "transformers"],
            "argument --concurrency: --backend transformers runs one sequence at a time, got 2",
        ),
        (["--remote-url", "http://127.0.0.1:9/v1"], "argument --remote-model: --remote-url needs --remote-model"),
        (["--tokenizer", "{input}"], "argument --tokenizer: only applies with --remote-url"),
        (["--events-out", "{input}"], "three different files"),
        (["--max-tokens", "0"], "argument --max-tokens: must be an integer >= 1, got '0'"),
    ],
)
def test_bad_arguments_are_named(tmp_path, capsys, args, message):
    source = write_lines(tmp_path / "in.jsonl", GOOD)
    args = [a.replace("{input}", str(source)) for a in args]
    assert main(["batch", str(source), "-o", str(tmp_path / "out.jsonl"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_concurrency_defaults_to_8_except_on_transformers():
    from backtrack_sampler import cli
    from backtrack_sampler.cli.batch import _concurrency

    def concurrency(*flags):
        return _concurrency(cli.build_parser().parse_args(["batch", "in.jsonl", "-o", "out.jsonl", *flags]))

    assert concurrency() == 8  # llama.cpp batches the sequences
    assert concurrency("--remote-url", "http://127.0.0.1:9/v1") == 8
    assert concurrency("--backend", "transformers") == 1
    assert concurrency("--concurrency", "3") == 3


def test_a_missing_input_is_named(tmp_path, capsys):
    assert main(["batch", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert "argument INPUT: file not found" in capsys.readouterr().err


@pytest.mark.llamacpp
def test_batch_against_a_remote_engine_with_concurrency(tmp_path, smollm_path, capsys):
    pytest.importorskip("uvicorn", reason="the server needs the extra: server")
    pytest.importorskip("httpx", reason="the remote provider needs the extra: remote")
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider
    from remote_servers import our_server

    lines = [
        {"id": i, "messages": [{"role": "user", "content": f"Write about {t}."}]} for i, t in enumerate(STORY_BANS)
    ]
    source = write_lines(tmp_path / "in.jsonl", [*lines, "oops"])
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    with our_server(LlamacppProvider(load_llama(smollm_path, n_ctx=2048))) as url:
        args = ["batch", str(source), "-o", str(out), "--events-out", str(pairs), "--concurrency", "3"]
        args += ["--remote-url", url, "--remote-model", "smollm2", "--tokenizer", str(smollm_path)]
        args += ["--max-tokens", "24", "--seed", "2", *(a for b in STORY_BANS for a in ("--ban", b))]
        assert main(args) == 0, capsys.readouterr().err
    records = read_records(out)
    assert sorted(map(str, map(key, records))) == sorted([*(str(("id", i)) for i in range(4)), str(("line", 5))])
    banned = re.compile("|".join(rf"(?<!\w){b}(?!\w)" for b in STORY_BANS), re.IGNORECASE)
    for record in records:
        if "error" not in record:
            assert record["stats"]["tokens_emitted"] > 0 and not banned.search(record["text"])
    assert "[batch] 5/5 done" in capsys.readouterr().err


def comparable(record: dict) -> dict:
    """A record without its timings."""
    if "stats" not in record:
        return record
    stats = {k: v for k, v in record["stats"].items() if k not in ("elapsed_s", "tokens_per_second")}
    return {**record, "stats": stats}


@pytest.mark.llamacpp
@pytest.mark.parametrize("sampling", [["--temperature", "0"], ["--temperature", "0.8", "--seed", "5"]])
def test_local_concurrency_gives_each_line_the_result_it_gets_alone(
    tmp_path, smollm_path, capsys, sampling, monkeypatch
):
    # No two prompts share a prefix: llama.cpp's logits depend on how tokens are grouped into decodes, so a
    # prompt reusing another's cached prefix could flip a near-tie (see test_async_sampler).
    starts = ["Once upon a time, a dragon", "In the old library", "Dragons and books", "My story:", "Books", "Deep"]
    lines = [{"id": i, "prompt": start} for i, start in enumerate(starts)]
    lines[2]["max_tokens"] = 8  # ends early: its slot takes the next line while the others run
    lines[4]["seed"] = 11
    lines.insert(3, {"id": "bad", "prompt": "x", "top_p": 2})
    lines.insert(5, "not json")
    source = write_lines(tmp_path / "in.jsonl", lines)
    tracer = Tracer().install(monkeypatch)

    def run_batch(phase: str, concurrency: str, bans: list[str]) -> tuple[list, list]:
        tracer.phase = phase
        out, pairs = tmp_path / f"out{phase}.jsonl", tmp_path / f"pairs{phase}.jsonl"
        args = ["batch", str(source), "-o", str(out), "--events-out", str(pairs), "--model", str(smollm_path)]
        # --raw: the starts are texts to continue, and no two share a prefix (a chat template is one).
        args += ["--raw", "--concurrency", concurrency, "--threads", "1", "--max-tokens", "24", *sampling]
        args += [a for b in bans for a in ("--ban", b)]
        assert main(args) == 0, capsys.readouterr().err
        assert f"[batch] {len(lines)}/{len(lines)} done" in capsys.readouterr().err
        records = sorted((comparable(r) for r in read_records(out)), key=lambda r: r["line"])
        return records, sorted(read_records(pairs), key=lambda p: (p["line"], p["metadata"]["rewind_index"]))

    # The bans: a word of each text that a control run without bans wrote, so they fire on any CPU.
    control, _ = run_batch("control", "1", [])
    bans = sorted({w for r in control if "text" in r for w in re.findall(r"[A-Za-z]{5,}", r["text"])[:1]})
    assert bans, control
    results = {concurrency: run_batch(concurrency, concurrency, bans) for concurrency in ("1", "4")}
    records, pairs = results["1"]
    assert [r["line"] for r in records] == list(range(1, len(lines) + 1))  # one record per line
    assert [r["error"]["type"] for r in records if "error" in r] == ["invalid_params", "invalid_line"]
    assert sum(r["stats"]["rewinds"] for r in records if "error" not in r) > 0  # the bans were at work
    banned = re.compile("|".join(rf"(?<!\w){b}(?!\w)" for b in bans), re.IGNORECASE)
    parted = set()
    for alone, together in zip(records, results["4"][0], strict=True):
        if "text" not in alone:
            assert together == alone
            continue
        assert not banned.search(alone["text"]) and not banned.search(together["text"])
        line = lines[alone["line"] - 1]
        traces = (tracer.traces[tracer.key_of(c, line["prompt"])] for c in ("1", "4"))
        # Equal to the line run alone, or parted where rounding decides between two nearly tied tokens.
        if assert_same_or_near_tie(*traces, line, greedy=sampling[1] == "0") is None:
            assert together == alone
        else:
            parted.add(alone["line"])
    assert [p for p in results["4"][1] if p["line"] not in parted] == [p for p in pairs if p["line"] not in parted]


def test_slop_files_and_bans_merge_later_sources_winning(tmp_path):
    from backtrack_sampler import cli, default_slop_list

    soft = next(p for p in default_slop_list() if p.factor > 0)
    (tmp_path / "bans.txt").write_text("moonlight\n")
    args = cli.build_parser().parse_args(
        ["batch", "in.jsonl", "-o", "out.jsonl", "--slop", "--ban-file", str(tmp_path / "bans.txt"), "--ban", soft.text]
    )
    bans = {p.text: p.factor for p in cli.merged_bans(args)}
    assert len(bans) == len(default_slop_list()) + 1
    assert bans[soft.text] == 0 and bans["moonlight"] == 0  # --ban made the soft slop entry a hard ban
    assert not cli.merged_bans(cli.build_parser().parse_args(["batch", "in.jsonl", "-o", "out.jsonl"]))


# -- files that cannot be written: one error line, the documented status, nothing the user wrote lost ------------
def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_help_documents_the_exit_statuses(capsys):
    assert main(["batch", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Exit status: 0 when every line has its record" in out
    assert "1 when a file cannot be read or written during the run" in out and "2 on a bad argument" in out


@pytest.mark.parametrize("flag", ["-o", "--events-out"])
def test_an_output_that_is_a_directory_is_named(tmp_path, capsys, flag):
    source = write_lines(tmp_path / "in.jsonl", GOOD)
    (tmp_path / "dir").mkdir()
    paths = {
        "-o": str(tmp_path / "out.jsonl"),
        "--events-out": str(tmp_path / "pairs.jsonl"),
        flag: str(tmp_path / "dir"),
    }
    assert main(["batch", str(source), *(a for item in paths.items() for a in item)]) == 2
    named = "--output" if flag == "-o" else flag
    assert f"error: argument {named}: must be a file, got the directory {str(tmp_path / 'dir')!r}" in one_error_line(
        capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "in.jsonl"]  # nothing created


def test_an_output_in_a_missing_directory_is_named(tmp_path, capsys):
    source = write_lines(tmp_path / "in.jsonl", GOOD)
    assert main(["batch", str(source), "-o", str(tmp_path / "no" / "out.jsonl")]) == 2
    assert "argument --output: no directory" in one_error_line(capsys.readouterr().err)


@pytest.fixture
def read_only(monkeypatch, tmp_path):
    """``tmp_path`` as if on a read-only file system: opening a file there for writing fails with EROFS.

    (Tests run as root, where permission bits do not stop a write.)
    """
    import errno

    real_open = os.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def open_(path, flags, *args, **kwargs):
        if flags & writing and str(path).startswith(str(tmp_path)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    def on():
        monkeypatch.setattr(os, "open", open_)

    return on


def half_done(tmp_path: Path) -> tuple[Path, Path, Path, bytes, bytes]:
    """A run killed after two lines, in the middle of the third: (input, output, pairs, their bytes)."""
    source = write_lines(tmp_path / "in.jsonl", [*GOOD, {"id": "four", "prompt": "ab", "banned_strings": ["ab"]}])
    out, pairs = tmp_path / "out.jsonl", tmp_path / "pairs.jsonl"
    run_batch(source, out, [scripted()], BatchDefaults(max_tokens=10, raw=True), events_path=pairs, progress=None)
    records = out.read_text().splitlines(keepends=True)
    out.write_text("".join(records[:2]) + records[2][:20])
    return source, out, pairs, out.read_bytes(), pairs.read_bytes()


def test_resuming_on_a_read_only_file_system_is_one_line_and_changes_nothing(tmp_path, capsys, read_only):
    source, out, pairs, out_before, pairs_before = half_done(tmp_path)
    read_only()
    # The command: refused before any model is loaded.
    assert main(["batch", str(source), "-o", str(out), "--events-out", str(pairs), "--raw"]) == 2
    err = one_error_line(capsys.readouterr().err)
    assert f"error: argument --output: cannot write {str(out)!r}: Read-only file system" in err
    # The library: a BatchError naming the file.
    with pytest.raises(BatchError, match="Read-only file system") as caught:
        run_batch(source, out, [scripted()], BatchDefaults(max_tokens=10, raw=True), events_path=pairs, progress=None)
    assert caught.value.path == out
    assert out.read_bytes() == out_before and pairs.read_bytes() == pairs_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl", "pairs.jsonl"]


def test_a_write_failing_mid_run_exits_1_naming_the_output(tmp_path, capsys, monkeypatch):
    import errno

    from backtrack_sampler.cli import batch as batch_command

    source, out = write_lines(tmp_path / "in.jsonl", GOOD), tmp_path / "out.jsonl"
    monkeypatch.setattr(batch_command, "load_provider", lambda args: scripted())

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    args = ["batch", str(source), "-o", str(out), "--concurrency", "1", "--no-progress", "--max-tokens", "10", "--raw"]
    assert main(args) == 1
    err = one_error_line(capsys.readouterr().err)
    assert f"error: argument --output: cannot write {str(out)!r}: No space left on device" in err
    monkeypatch.undo()
    # Run again once the disk has room: the rest is done, one record per line.
    monkeypatch.setattr(batch_command, "load_provider", lambda args: scripted())
    assert main(args) == 0
    assert sorted(str(r["id"]) for r in read_records(out)) == ["2", "one", "three"]


@pytest.mark.parametrize(
    ("flag", "content"),
    [
        ("-o", b"my notes, not results\nthe last line without a newline"),
        ("-o", b'{"id": "mine", "prompt": "a prompt of my own"}\n'),
        ("--events-out", b'{"id": "one", "prompt": "a prompt of my own"}\n{"id": 2, "pro'),
    ],
)
def test_a_file_this_command_did_not_write_is_refused_untouched(tmp_path, flag, content):
    source = write_lines(tmp_path / "in.jsonl", GOOD)
    target = tmp_path / "mine.jsonl"
    target.write_bytes(content)
    out = target if flag == "-o" else tmp_path / "out.jsonl"
    events = target if flag == "--events-out" else None
    with pytest.raises(BatchError, match="the file was not written by this command") as caught:
        run_batch(source, out, [scripted()], BatchDefaults(max_tokens=10), events_path=events, progress=None)
    assert caught.value.path == target
    assert target.read_bytes() == content
