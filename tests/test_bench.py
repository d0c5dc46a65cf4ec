"""The benchmark scripts run, and the invariants they report hold (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
pytestmark = pytest.mark.llamacpp


def run(script: str, *args: str) -> list[dict[str, str]]:
    """The rows of the first markdown table the script prints."""
    return run_tables(script, *args)[0]


def run_tables(script: str, *args: str) -> list[list[dict[str, str]]]:
    """The rows of every markdown table the script prints, in order."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    out = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600, cwd=BENCH
    )
    assert out.returncode == 0, out.stderr[-2000:]
    blocks: list[list[str]] = [[]]
    for line in out.stdout.splitlines():
        if line.startswith("|"):
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    tables = []
    for lines in (b for b in blocks if b):
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]]
        tables.append(rows)
    return tables


def test_overhead_reports_a_ratio_for_equal_token_counts():
    (row,) = run("overhead.py", "--backends", "llamacpp", "--lengths", "12", "--repeats", "1")
    assert row["new tokens"] == "12"  # raw and generate produced the same number of tokens
    assert float(row["ratio"]) > 0


@pytest.mark.mlx
def test_overhead_on_mlx_rows_for_each_provider_and_antislop():
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (extra: mlx)")
    pytest.importorskip("transformers", reason="the safetensors export of the embedded model needs transformers")
    args = ("--backends", "mlx", "--lengths", "4", "--repeats", "1", "--antislop", "20", "--mlx-build-ahead", "both")
    rows = run("overhead.py", *args)
    assert [r["backend"] for r in rows] == ["mlx", "mlx, no build-ahead", "mlx + AntiSlop 20"]
    assert all(r["new tokens"] == "4" and float(r["ratio"]) > 0 for r in rows)


def test_rewind_cost_never_re_evaluates_the_prompt():
    (row,) = run("rewind_cost.py", "--tokens", "24", "--seeds", "1")
    assert int(row["rewinds"]) > 0
    assert row["prompt re-evaluated"] == "0"
    assert int(row["positions evaluated"]) <= int(row["ideal (emitted + rewound)"])
    assert row["forward passes"].endswith("(one per position evaluated)")


def test_ban_scaling_replays_without_rewinds():
    rows = run("ban_scaling.py", "--sizes", "10", "200", "--regex", "5", "--tokens", "24", "--repeats", "1")
    assert [r["bans"] for r in rows[:4]] == ["none", "10 phrases", "200 phrases", "5 regex"]
    assert all(float(r["mean chars held back"]) >= 0 for r in rows[:4])


def test_memory_measures_each_side_in_its_own_process():
    (row,) = run("memory.py", "--backends", "llamacpp", "--tokens", "8", "--repeats", "1")
    assert 50 < float(row["raw peak RSS MiB"]) < 4000 and 50 < float(row["generate peak RSS MiB"]) < 4000


def test_banning_the_models_own_favourite_terms_leaks_nothing():
    rows = run("slop_experiment.py", "--tokens", "64", "--seeds", "1", "--no-score")
    plain, banned = rows
    assert plain["run"] == "no bans" and int(plain["leaks"]) > 0  # the terms are ones the model does write
    assert banned["run"] == "20 terms banned" and int(banned["rewinds"]) > 0
    assert banned["leaks"] == "0"


def test_batched_throughput_compares_the_plain_loop_ours_and_antislop():
    args = ("--sequences", "2", "--tokens", "10", "--n-ctx", "128", "--repeats", "1")
    (row,), steps = run_tables("batched_throughput.py", *args)
    assert row["sequences"] == "2"
    assert float(row["plain loop tok/s, flash attn off"]) > 0 and float(row["plain loop tok/s, auto"]) > 0
    assert float(row["ours / plain"]) > 0 and float(row["AntiSlop / plain"]) > 0
    assert int(row["rewinds"]) > 0  # the words the model wrote are banned: the bans fire
    assert [s["path"] for s in steps] == ["plain loop, auto", "ours", "ours + AntiSlop 1k"]
    for step in steps:  # the parts of a step add up to it, and llama_decode is a part of every one
        parts = [float(step[k]) for k in ("in llama_decode", "waiting for the slowest sequence", "other")]
        assert parts[0] > 0 and all(p >= 0 for p in parts[1:])
        assert abs(sum(parts) - float(step["ms/step"])) <= 0.15


def test_sampling_overhead_covers_every_setting():
    rows = run("sampling_overhead.py", "--tokens", "12", "--repeats", "1")
    assert [r["setting"] for r in rows] == [
        "top_p 0.9, top_k 0",
        "top_k 50",
        "min_p 0.05, top_k 0",
        "top_k 40, top_p 0.95",
    ]
    assert all(float(r["ratio"]) > 0 for r in rows)


def test_slop_loop_mines_bans_that_then_leave_no_hit():
    pytest.importorskip("wordfreq", reason="wordfreq is not installed (extra: score)")
    args = ["--prompts", "6", "--tokens", "64", "--top", "5", "--hard", "5", "--min-count", "2", "--no-score"]
    before, after, guarded = run("slop_loop.py", *args)
    assert before["run"] == "before (no bans)" and after["run"].startswith("after (")
    assert guarded["run"] == "after, + loop guard"
    assert float(before["mined-list hits / 1k words"]) > 0  # mined from these very texts
    assert after["mined-list hits / 1k words"] == "0.00" and int(after["rewinds"]) > 0  # all hard bans: none left
    assert guarded["mined-list hits / 1k words"] == "0.00"  # the guard chained after AntiSlop keeps the bans
    assert before["texts"] == after["texts"] == guarded["texts"] == "6"
    assert 0 < float(after["MATTR-500"]) <= 1 and after["mean log-prob / token"] == "not scored"


def test_loop_guard_compares_llamacpp_penalties_and_loop_guard():
    rows = run("loop_guard.py", "--tokens", "32", "--prompts", "2", "--min-length", "2")
    assert [r["method"] for r in rows] == [
        "llama.cpp, no penalty",
        "llama.cpp repeat_penalty 1.1 (last 64)",
        "llama.cpp DRY 0.8/1.75/2",
        "DRY (ours, this strategy) 0.8/1.75/2",
        "ours + LoopGuard (2 words)",
    ]
    assert all(r["texts"] == "2" for r in rows) and rows[0]["drop vs plain"] == "0"
    assert all(0 < float(r["distinct-2"]) <= 1 and float(r["mean log-prob / token"]) < 0 for r in rows)
    guard = rows[-1]
    if guard["refused"] == "0":  # no word is followed twice by the same word
        assert int(guard["longest repeat (words)"]) < 2
