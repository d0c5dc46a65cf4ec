"""``backtrack-sampler score``: real files in, a table (or JSON, or a plot) out; bad inputs exit 2 naming it."""

from __future__ import annotations

import json
import math
import random

import pytest

from backtrack_sampler import cli, models
from backtrack_sampler.batch.errors import error_record
from backtrack_sampler.metrics.report import measure_texts

SLOPPY = [
    "It was not fear, but relief. The rich tapestry of the night was a testament to her courage.",
    "The forest whispered. It wasn't silence - it was a song. A tapestry of green and gold.",
]
PLAIN = ["The bus was late, so we walked to the market and bought bread and apples.", "Rain fell all day."]


def write_results(path, texts, errors=0):
    """A results file as ``batch`` writes it: result records (id, line, text, finish_reason, stats) and errors."""
    lines = []
    for i, text in enumerate(texts, 1):
        lines.append({"id": f"p{i}", "line": i, "text": text, "finish_reason": "length", "stats": {"tokens": 20}})
    for j in range(errors):
        lines.append(error_record(f"e{j}", len(texts) + j + 1, "invalid_line", "not a JSON object"))
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def test_two_inputs_side_by_side(tmp_path, capsys):
    results = write_results(tmp_path / "sloppy.jsonl", SLOPPY, errors=2)
    folder = tmp_path / "plain"
    folder.mkdir()
    for i, text in enumerate(PLAIN):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file: left out", encoding="utf-8")

    assert cli.main(["score", str(results), str(folder)]) == 0
    captured = capsys.readouterr()
    assert "sloppy.jsonl: skipped 2 error record(s)" in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == "| measure | sloppy.jsonl | plain | difference (2nd - 1st) |"
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines[2:] if "|" in line}
    assert rows["texts"] == ["2", "2", "+0"]
    expected = measure_texts(SLOPPY)
    assert rows["ban-list hits / 1k words (lower is better)"][0] == f"{expected.ban_hits_per_1k_words:.2f}"
    assert rows["ban-list hits / 1k words (lower is better)"][1] == "0.00"
    assert float(rows['"not X, but Y" / 1k chars (lower is better)'][0]) > 0
    assert "sloppy.jsonl: most frequent ban-list hits: tapestry (2)" in captured.out


def test_json_output_and_another_ban_list(tmp_path, capsys):
    text = tmp_path / "story.txt"
    text.write_text("The bus was late. The bus was red. A bus, a bus.", encoding="utf-8")
    bans = tmp_path / "bans.json"
    bans.write_text('[["bus", 0.5], "red"]', encoding="utf-8")

    assert cli.main(["score", str(text), "--ban-file", str(bans), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    report = data["story.txt"]
    assert report["texts"] == 1 and report["words"] == 12 and report["skipped_errors"] == 0
    assert report["ban_hits_per_1k_words"] == pytest.approx(5 * 1000 / 12)  # bus x4, red x1
    assert report["top_ban_hits"] == [["bus", 4], ["red", 1]]
    assert report["mean_logprob"] is None


def test_empty_texts_and_texts_that_ended_at_once_are_reported(tmp_path, capsys):
    # The newcomer: instructions sent as raw text, three answered by an EOS at once.
    records = [
        {"id": i, "line": i + 1, "text": "", "finish_reason": "eos", "stats": {"tokens_emitted": 0}} for i in range(3)
    ]
    records.append({"id": 3, "line": 4, "text": "\n\n", "finish_reason": "eos", "stats": {"tokens_emitted": 2}})
    for i, text in enumerate(PLAIN, 4):
        records.append(
            {"id": i, "line": i + 1, "text": text, "finish_reason": "length", "stats": {"tokens_emitted": 9}}
        )
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate([*PLAIN, " "]):
        (folder / f"{i}.txt").write_text(text, encoding="utf-8")

    assert cli.main(["score", str(results)]) == 0
    captured = capsys.readouterr()
    assert "results.jsonl: 4 of 6 texts are empty (3 ended at once, before their first token)" in captured.err
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip() for line in captured.out.splitlines()[2:] if "|" in line
    }
    assert (rows["texts"], rows["- empty"], rows["- ended at once (no token)"]) == ("6", "4", "3")
    assert cli.main(["score", str(results), str(folder), "--json"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert (data["results.jsonl"]["empty_texts"], data["results.jsonl"]["ended_at_once"]) == (4, 3)
    # Text files do not say how a text ended: only its emptiness is known.
    assert (data["texts"]["empty_texts"], data["texts"]["ended_at_once"]) == (1, None)
    assert "texts: 1 of 3 texts are empty\n" in captured.err
    # Side by side, the row that one input cannot fill is left out; nothing is said when nothing is empty.
    assert cli.main(["score", str(results), str(folder)]) == 0
    out = capsys.readouterr().out
    assert "| - empty | 4 | 1 | -3 |" in out and "ended at once" not in out
    assert cli.main(["score", str(write_results(tmp_path / "full.jsonl", PLAIN))]) == 0
    captured = capsys.readouterr()
    assert "empty" not in captured.err and "| - empty | 0 |" in captured.out


def test_prompts_are_scored_as_each_result_says_they_were_sent():
    from backtrack_sampler.cli.score import _prompt_text
    from backtrack_sampler.provider.scripted_provider import ScriptedProvider

    provider = ScriptedProvider(["<eos>", "a"], lambda tokens: [0.0, 0.0], 0)
    chat = provider.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert _prompt_text(provider, "Hi", "chat") == chat
    assert _prompt_text(provider, "Hi", "raw") == "Hi"
    assert _prompt_text(provider, "Hi", None) == "Hi"  # a result older than prompt_mode: prompt was raw text then
    assert _prompt_text(provider, [{"role": "user", "content": "Hi"}], "chat") == chat
    assert _prompt_text(provider, None, "chat") is None


def test_plot_writes_a_png_that_matplotlib_drew(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed (extra: score)")
    first = write_results(tmp_path / "a.jsonl", SLOPPY)
    second = write_results(tmp_path / "b.jsonl", PLAIN)
    png, page = tmp_path / "compare.png", tmp_path / "compare.html"

    assert cli.main(["score", str(first), str(second), "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000
    assert cli.main(["score", str(first), str(second), "--plot", str(page)]) == 0
    assert page.read_text().count("data:image/png;base64,iVBORw0KGgo") == 1  # the PNG inline
    assert "plot: " in capsys.readouterr().err


def test_same_file_names_are_told_apart_by_their_paths(tmp_path, capsys):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_results(tmp_path / "a" / "out.jsonl", SLOPPY)
    second = write_results(tmp_path / "b" / "out.jsonl", PLAIN)
    assert cli.main(["score", str(first), str(second)]) == 0
    assert f"| measure | {first} | {second} |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("make", "argument", "message"),
    [
        (lambda d: d / "missing.jsonl", "FIRST", "file not found"),
        (lambda d: (d / "bin.dat").write_bytes(b"\xff\xfe\x00binary") and d / "bin.dat", "FIRST", "neither"),
        (lambda d: (d / "empty.txt").write_text("  \n") and d / "empty.txt", "FIRST", "holds no text"),
        (lambda d: (d / "bad.jsonl").write_text('{"text": "a"}\n{oops\n') and d / "bad.jsonl", "FIRST", "line 2"),
        (lambda d: (d / "odd.jsonl").write_text('{"id": 1}\n') and d / "odd.jsonl", "FIRST", 'no "text"'),
        (lambda d: (d / "errs.jsonl").write_text(json.dumps(error_record(1, 1, "x", "y")) + "\n") and d / "errs.jsonl",
         "FIRST", "no result with a text"),
        (lambda d: (d / "none").mkdir() or d / "none", "FIRST", "no .txt file"),
    ],
)  # fmt: skip
def test_bad_inputs_exit_2_naming_the_argument(tmp_path, capsys, make, argument, message):
    path = make(tmp_path)
    assert cli.main(["score", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {argument}: ") and message in err and err.count("\n") == 1


def test_bad_second_input_and_bad_options_exit_2(tmp_path, capsys):
    good = write_results(tmp_path / "good.jsonl", PLAIN)
    assert cli.main(["score", str(good), str(tmp_path / "nope.txt")]) == 2
    assert "error: argument SECOND: file not found" in capsys.readouterr().err
    assert cli.main(["score", str(good), "--plot", str(tmp_path / "chart.gif")]) == 2
    assert "error: argument --plot: must end in .png" in capsys.readouterr().err
    assert cli.main(["score", str(good), "--prompts", str(good)]) == 2
    assert "error: argument --prompts: only applies with --logprob" in capsys.readouterr().err
    assert cli.main(["score", str(good), "--ban-file", str(tmp_path / "nope.json")]) == 2
    assert "error: argument --ban-file" in capsys.readouterr().err


def test_help_carries_examples(capsys):
    assert cli.main(["score", "--help"]) == 0
    assert "backtrack-sampler score plain.jsonl antislop.jsonl --plot compare.png" in capsys.readouterr().out


@pytest.fixture(scope="module")
def model_ready():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    try:
        models.default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))


@pytest.mark.llamacpp
def test_logprob_prefers_fluent_text_to_the_same_words_shuffled(tmp_path, capsys, model_ready):
    fluent = "The cat sat on the mat and looked out of the window at the rain. " * 2
    shuffled = fluent.split()
    random.Random(0).shuffle(shuffled)
    (tmp_path / "fluent.txt").write_text(fluent, encoding="utf-8")
    (tmp_path / "shuffled.txt").write_text(" ".join(shuffled), encoding="utf-8")

    argv = ["score", str(tmp_path / "fluent.txt"), str(tmp_path / "shuffled.txt"), "--logprob", "--json"]
    assert cli.main([*argv, "--threads", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    good, bad = data["fluent.txt"]["mean_logprob"], data["shuffled.txt"]["mean_logprob"]
    assert math.isfinite(good) and math.isfinite(bad) and bad < good < 0
    assert good - bad > 1.0  # nats per token: shuffling makes the same words far less likely


@pytest.mark.llamacpp
def test_logprob_of_real_batch_results_after_their_prompts(tmp_path, capsys, model_ready):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        json.dumps({"id": "a", "prompt": "Once upon a time"}) + "\n"
        + json.dumps({"id": "b", "messages": [{"role": "user", "content": "Name a colour."}]}) + "\n"
        + "not json\n",
        encoding="utf-8",
    )  # fmt: skip
    results = tmp_path / "results.jsonl"
    batch = ["batch", str(prompts), "-o", str(results), "--max-tokens", "16", "--temperature", "0"]
    assert cli.main([*batch, "--concurrency", "1", "--threads", "1", "--no-progress"]) == 0
    capsys.readouterr()

    assert cli.main(["score", str(results), "--logprob", "--prompts", str(prompts), "--json", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 error record(s)" in captured.err  # the line that is not JSON
    after_prompts = json.loads(captured.out)["results.jsonl"]
    assert after_prompts["texts"] == 2
    assert cli.main(["score", str(results), "--logprob", "--json", "--threads", "1"]) == 0
    alone = json.loads(capsys.readouterr().out)["results.jsonl"]
    # greedy text is the model's own choice after its prompt: more likely there than after BOS alone
    assert alone["mean_logprob"] < after_prompts["mean_logprob"] < 0
