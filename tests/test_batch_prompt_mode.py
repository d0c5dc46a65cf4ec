"""A batch line's "prompt" means what ``generate PROMPT`` means (issue 23, item 3).

It goes through the model's chat template as a user message, unless the line
says ``"raw": true`` or the run says raw (``--raw``, as ``generate --raw``);
``messages`` are the chat form either way. Each result records its
``prompt_mode``, and a run that would send an answered line's prompt the other
way is refused before it writes anything (older files, whose ``prompt`` lines
were raw, included). A model without a chat template refuses non-raw prompt
lines up front, as ``generate`` refuses a PROMPT without ``--raw``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from backtrack_sampler.batch import BatchDefaults, SettingsError, plan_batch, run_batch
from backtrack_sampler.cli import main
from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.provider.scripted_provider import CHAT_END, CHAT_START
from scripted import EOS, text_provider

VOCAB = [EOS, CHAT_START, CHAT_END, "user", "assistant", "\n", "a", "c", "r", "w", " "]


def chat_model():
    """Writes "c" after a chat template's markers and "r" after raw text, four times, then ends."""

    def rule(text: str) -> dict[str, float]:
        written = text.rsplit("\n", 1)[-1] if CHAT_START in text else text.split(" ", 1)[-1]
        if len(written) >= 4:
            return {EOS: 9.0}
        return {"c": 5.0} if CHAT_START in text else {"r": 5.0}

    return text_provider(VOCAB, rule)


def base_model():
    """The same model without a chat template (as Gemma 3 270M, a base model)."""
    provider = chat_model()
    provider.apply_chat_template = functools.partial(BaseProvider.apply_chat_template, provider)
    return provider


def write_lines(path: Path, lines: list) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def results(path: Path) -> dict:
    return {r["id"]: r for r in read_records(path)}


LINES = [
    {"id": "plain", "prompt": "aw "},
    {"id": "raw", "prompt": "aw ", "raw": True},
    {"id": "not-raw", "prompt": "aw ", "raw": False},
    {"id": "chat", "messages": [{"role": "user", "content": "aw"}]},
]


def test_a_prompt_takes_the_chat_template_unless_the_line_or_the_run_says_raw(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", LINES)
    chat_out, raw_out = tmp_path / "chat.jsonl", tmp_path / "raw.jsonl"
    run_batch(source, chat_out, [chat_model()], BatchDefaults(temperature=0), progress=None)
    run_batch(source, raw_out, [chat_model()], BatchDefaults(temperature=0, raw=True), progress=None)
    chat, raw = results(chat_out), results(raw_out)
    # A line's "raw" wins over the run's; messages are the chat form either way.
    expected = {"plain": ("cccc", "rrrr"), "raw": ("rrrr", "rrrr"), "not-raw": ("cccc", "cccc"), "chat": ("cccc",) * 2}
    for job_id, (in_chat_run, in_raw_run) in expected.items():
        assert (chat[job_id]["text"], raw[job_id]["text"]) == (in_chat_run, in_raw_run), job_id
        for record, text in ((chat[job_id], in_chat_run), (raw[job_id], in_raw_run)):
            assert record["prompt_mode"] == ("chat" if text == "cccc" else "raw")


def test_the_chat_form_is_the_one_generate_uses(tmp_path):
    from backtrack_sampler.batch import parse_line, prepare

    provider = chat_model()
    job = parse_line(json.dumps({"id": 1, "prompt": "aw", "max_tokens": 2}), 1, BatchDefaults())
    prompt, events = prepare(job, provider)
    events.close()
    assert prompt == provider.apply_chat_template([{"role": "user", "content": "aw"}])


def test_resuming_with_the_other_meaning_is_refused_untouched(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", LINES[:1])
    out = tmp_path / "out.jsonl"
    run_batch(source, out, [chat_model()], BatchDefaults(temperature=0, raw=True), progress=None)
    write_lines(source, [*LINES[:1], {"id": "more", "prompt": "w "}])  # a line added since
    before = out.read_bytes()
    with pytest.raises(SettingsError) as caught:
        run_batch(source, out, [chat_model()], BatchDefaults(temperature=0), progress=None)
    message = str(caught.value)
    assert "line 1 (id 'plain') was answered with its prompt sent raw" in message
    assert "this run sends it through the chat template. Run with --raw" in message
    assert caught.value.path == out and out.read_bytes() == before
    # The same meaning as before finishes the file.
    summary = run_batch(source, out, [chat_model()], BatchDefaults(temperature=0, raw=True), progress=None)
    assert summary.done_before == 1 and summary.ran == 1
    assert {r["prompt_mode"] for r in read_records(out)} == {"raw"}
    # And the reverse: a file begun through the chat template, resumed with --raw.
    chat_out = tmp_path / "chat.jsonl"
    run_batch(write_lines(tmp_path / "one.jsonl", LINES[:1]), chat_out, [chat_model()], progress=None)
    with pytest.raises(SettingsError, match="through the model's chat template; this run sends it raw. Run without"):
        run_batch(source, chat_out, [chat_model()], BatchDefaults(raw=True), progress=None)


def test_an_output_written_when_prompts_were_raw_is_not_resumed_as_chat(tmp_path):
    source = write_lines(tmp_path / "in.jsonl", [LINES[0], LINES[3], {"id": "new", "prompt": "w "}])
    out = tmp_path / "out.jsonl"
    run_batch(source, out, [chat_model()], BatchDefaults(temperature=0, raw=True), progress=None)
    old = [{k: v for k, v in r.items() if k != "prompt_mode"} for r in read_records(out)[:2]]  # no field then
    write_lines(out, old)
    with pytest.raises(SettingsError) as caught:
        plan_batch(source, out, BatchDefaults())
    message = str(caught.value)
    assert "line 1 (id 'plain') was answered by an earlier version" in message
    assert 'sent a line\'s "prompt" as raw text; "prompt" now goes through the model\'s chat template' in message
    assert "run with --raw" in message and "and 1 more" not in message  # the messages line is chat, as it was
    plan = plan_batch(source, out, BatchDefaults(raw=True))
    assert plan.done_before == 2 and [job.id for job in plan.jobs] == ["new"]


def test_the_command_names_output_and_exits_2(tmp_path, capsys, monkeypatch):
    from backtrack_sampler.cli import batch as batch_command

    monkeypatch.setattr(batch_command, "load_provider", lambda args: chat_model())
    source, out = write_lines(tmp_path / "in.jsonl", LINES[:2]), tmp_path / "out.jsonl"
    args = ["batch", str(source), "-o", str(out), "--concurrency", "1", "--no-progress", "--temperature", "0"]
    assert main([*args, "--raw"]) == 0
    before = out.read_bytes()
    write_lines(source, [*LINES[:2], LINES[2]])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument --output: {str(out)!r} line 1 (id 'plain')") and err.count("\n") == 1
    assert out.read_bytes() == before
    assert main([*args, "--raw"]) == 0 and len(read_records(out)) == 3


def test_a_model_without_a_chat_template_needs_raw_as_generate_does(tmp_path, capsys, monkeypatch):
    from backtrack_sampler.cli import batch as batch_command

    source, out = write_lines(tmp_path / "in.jsonl", LINES[:2]), tmp_path / "out.jsonl"
    with pytest.raises(SettingsError) as caught:
        run_batch(source, out, [base_model()], progress=None)
    assert "has no chat template" in str(caught.value) and "(line 1, id 'plain'): run with --raw" in str(caught.value)
    assert not out.exists()  # nothing written
    monkeypatch.setattr(batch_command, "load_provider", lambda args: base_model())
    args = ["batch", str(source), "-o", str(out), "--concurrency", "1", "--no-progress"]
    assert main(args) == 2
    assert 'run with --raw to send the prompts as they are, or give such lines "raw": true' in capsys.readouterr().err
    assert main([*args, "--raw"]) == 0
    assert {r["prompt_mode"] for r in read_records(out)} == {"raw"}
    # Raw lines only: nothing needs the template, so the run goes on.
    raw_only, raw_out = write_lines(tmp_path / "raw.jsonl", LINES[1:2]), tmp_path / "raw_out.jsonl"
    assert run_batch(raw_only, raw_out, [base_model()], progress=None).ran == 1


# -- the real model -------------------------------------------------------------------------------------------
INSTRUCTION = "Describe a forest at night."
OPENING = "Once upon a time, in a small village,"


def generate_text(capsys, *args: str) -> str:
    """What ``generate`` writes on stdout (its text, and a final newline when the text has none)."""
    capsys.readouterr()
    assert main(["generate", *args, "--quiet"]) == 0
    out = capsys.readouterr().out
    return out


@pytest.mark.llamacpp
def test_a_batch_prompt_gives_what_generate_gives(tmp_path, smollm_path, capsys):
    model = ["--model", str(smollm_path), "--threads", "1", "--temperature", "0"]
    chat = generate_text(capsys, INSTRUCTION, *model, "--max-new-tokens", "24")
    raw = generate_text(capsys, OPENING, *model, "--max-new-tokens", "24", "--raw")
    lines = [{"id": "chat", "prompt": INSTRUCTION}, {"id": "raw", "prompt": OPENING, "raw": True}]
    source = write_lines(tmp_path / "in.jsonl", lines)
    batch = ["--concurrency", "1", "--no-progress", "--max-tokens", "24", *model]
    assert main(["batch", str(source), "-o", str(tmp_path / "out.jsonl"), *batch]) == 0
    records = results(tmp_path / "out.jsonl")
    # An instruction now gets an answer (the newcomer got empty texts: immediate EOS on raw text).
    assert records["chat"]["stats"]["tokens_emitted"] > 0 and records["chat"]["prompt_mode"] == "chat"
    assert chat in (records["chat"]["text"], records["chat"]["text"] + "\n")
    assert raw in (records["raw"]["text"], records["raw"]["text"] + "\n") and records["raw"]["prompt_mode"] == "raw"
    # A --raw run sends a line without "raw" as generate --raw does.
    source = write_lines(tmp_path / "in_raw.jsonl", [{"id": "raw", "prompt": OPENING}])
    assert main(["batch", str(source), "-o", str(tmp_path / "out_raw.jsonl"), *batch, "--raw"]) == 0
    assert results(tmp_path / "out_raw.jsonl")["raw"]["text"] == records["raw"]["text"]


@pytest.mark.llamacpp
def test_gemma_base_needs_raw_in_batch_as_in_generate(tmp_path, gemma_path, capsys):
    model = ["--model", str(gemma_path), "--threads", "1", "--temperature", "0", "--n-ctx", "512"]
    assert main(["generate", OPENING, *model, "--max-new-tokens", "4", "--quiet"]) == 2
    assert "(use --raw)" in capsys.readouterr().err
    source, out = write_lines(tmp_path / "in.jsonl", [{"id": 1, "prompt": OPENING}]), tmp_path / "out.jsonl"
    batch = ["batch", str(source), "-o", str(out), "--concurrency", "1", "--no-progress", "--max-tokens", "4", *model]
    assert main(batch) == 2
    err = capsys.readouterr().err
    assert "no tokenizer.chat_template" in err and "run with --raw" in err and not out.exists()
    assert main([*batch, "--raw"]) == 0
    assert results(out)[1]["prompt_mode"] == "raw" and results(out)[1]["stats"]["tokens_emitted"] > 0
