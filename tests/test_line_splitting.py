"""Lines end at "\\n" only, wherever lines are read: batch inputs and outputs, ban lists, score and mine inputs.

``str.splitlines`` also splits at U+2028, U+2029, U+0085, \\v, \\f and \\x1c-\\x1e;
``json.dumps(..., ensure_ascii=False)`` writes the first three raw inside strings,
so one valid JSONL line became two bad ones and shifted every later line number.
No model is needed: the batch runs on a scripted provider.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from backtrack_sampler.batch import BatchDefaults, recover_jsonl, run_batch
from backtrack_sampler.cli.score import read_prompts
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.text_files import read_lines, split_lines
from backtrack_sampler.metrics.texts import load_texts
from backtrack_sampler.strategy.ban_rules import load_ban_list
from scripted import EOS, text_provider

# What str.splitlines splits at besides "\n" and "\r": json.dumps writes the first three raw.
SEPARATORS = ["\u2028", "\u2029", "\u0085", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]
RAW_IN_JSON = SEPARATORS[:3]


def scripted():
    provider = text_provider(
        [EOS, "a", "b", " ", *RAW_IN_JSON], lambda text: {EOS: 9.0} if len(text) > 4 else {"a": 2.0}
    )
    provider.apply_chat_template = functools.partial(BaseProvider.apply_chat_template, provider)
    return provider


def raw_line(job_id: str | int, prompt: str) -> str:
    """A JSON line with ``prompt`` as is inside its string, control characters too (``json.dumps`` escapes them)."""
    return f'{{"id": {json.dumps(job_id)}, "prompt": "{prompt}"}}'


def test_split_lines_splits_at_line_feeds_only_and_numbers_them():
    data = "".join(f"a{sep}b\n" for sep in SEPARATORS).encode() + b"crlf\r\n\nlast"
    for size in (1, 3, len(data)):  # a line split across reads is still one line
        chunks = [data[i : i + size] for i in range(0, len(data), size)]
        lines = list(split_lines(chunks))
        assert [line.text() for line in lines] == [f"a{sep}b" for sep in SEPARATORS] + ["crlf", "", "last"]
        assert [line.number for line in lines] == list(range(1, len(SEPARATORS) + 4))
        assert [line.ended for line in lines] == [True] * (len(SEPARATORS) + 2) + [False]
        assert all(data[line.offset :].startswith(line.data) for line in lines)


def test_read_lines_of_a_file(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes("x\u2028y\r\nz".encode())
    assert [(line.number, line.text(), line.ended) for line in read_lines(path)] == [
        (1, "x\u2028y", True),
        (2, "z", False),
    ]


def test_a_batch_input_line_holding_a_separator_stays_one_line_with_its_number(tmp_path):
    lines = [
        json.dumps({"id": f"raw{i}", "prompt": f"a{sep}b", "max_tokens": 2}, ensure_ascii=False)
        for i, sep in enumerate(RAW_IN_JSON)
    ]
    # Control characters are not allowed raw in a JSON string: each such line is one bad line, numbered right.
    lines += [raw_line(f"ctl{i}", f"a{sep}b") for i, sep in enumerate(SEPARATORS[3:])]
    lines.append(json.dumps({"id": "last", "prompt": "a", "max_tokens": 2}))
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    summary = run_batch(source, out, [scripted()], BatchDefaults(max_tokens=2, raw=True), progress=None)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert summary.total == len(lines) == len(records)
    by_line = {r["line"]: r for r in records}
    assert sorted(by_line) == list(range(1, len(lines) + 1))
    for number in range(1, len(RAW_IN_JSON) + 1):
        assert "error" not in by_line[number], by_line[number]
        assert by_line[number]["id"] == f"raw{number - 1}"
    for number in range(len(RAW_IN_JSON) + 1, len(lines)):
        assert by_line[number]["error"]["type"] == "invalid_line"
        assert f"line {number} is not valid JSON" in by_line[number]["error"]["message"]
    assert by_line[len(lines)]["id"] == "last" and "error" not in by_line[len(lines)]
    # Resuming reads the output back, with the same records: nothing runs twice.
    assert len(recover_jsonl(out, ("id", "line"))) == len(lines)
    again = run_batch(source, out, [scripted()], BatchDefaults(max_tokens=2, raw=True), progress=None)
    assert again.done_before == len(lines) and again.ran == 0


def test_a_resumed_output_keeps_records_holding_separators(tmp_path):
    out = tmp_path / "out.jsonl"
    records = [{"id": i, "line": i + 1, "text": f"a{sep}b"} for i, sep in enumerate(RAW_IN_JSON)]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records) + '{"id": 9, "li', "utf-8")
    assert recover_jsonl(out, ("id", "line")) == records
    assert out.read_text(encoding="utf-8").count("\n") == len(records)  # the partial last line was cut off


@pytest.mark.parametrize("suffix", [".txt", ".json"])
def test_a_ban_list_entry_holding_a_separator_is_one_phrase(tmp_path, suffix):
    phrases = [f"tap{sep}estry" for sep in SEPARATORS]
    path = tmp_path / f"bans{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(phrases, ensure_ascii=False), encoding="utf-8")
    else:
        path.write_text("# a comment\n" + "\r\n".join(phrases) + "\n", encoding="utf-8")
    assert [phrase.text for phrase in load_ban_list(path)] == phrases


def test_score_inputs_holding_separators_keep_their_lines(tmp_path):
    results = tmp_path / "results.jsonl"
    rows = [{"id": i, "line": i + 1, "text": f"one{sep}two"} for i, sep in enumerate(RAW_IN_JSON)]
    results.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    loaded = load_texts(results)
    assert loaded.texts == tuple(r["text"] for r in rows) and loaded.lines == (1, 2, 3)
    prompts = tmp_path / "prompts.jsonl"
    given = [raw_line(i, f"p{sep}q") for i, sep in enumerate(SEPARATORS)]
    prompts.write_text("\n".join(given) + "\n", encoding="utf-8")
    # Lines 1-3 are valid JSON; 4-8 hold raw control characters (bad lines, skipped) and keep their numbers.
    assert read_prompts(prompts) == {1: "p\u2028q", 2: "p\u2029q", 3: "p\u0085q"}


def test_a_line_that_is_not_utf8_is_named_by_its_byte_offset(tmp_path):
    from backtrack_sampler.batch import BatchError

    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": 1, "prompt": "a"}\n{"id": 2, "prompt": "\xff"}\n')
    with pytest.raises(BatchError, match=r"not UTF-8 text \(invalid start byte at byte 46\)"):
        run_batch(source, tmp_path / "out.jsonl", [scripted()], progress=None)
    assert not Path(tmp_path / "out.jsonl").exists()
