"""``backtrack-sampler score``: measure one or two sets of texts and print the measures side by side.

The measures are in ``backtrack_sampler.metrics.report``; the inputs are read
by ``metrics.texts.load_texts``. A model is loaded only with ``--logprob``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from backtrack_sampler.cli.options import (
    CliError,
    add_model_options,
    ban_file,
    check_input_file,
    check_output_file,
    load_provider,
    one_line,
)
from backtrack_sampler.core.text_files import read_lines
from backtrack_sampler.metrics.texts import LoadedTexts, load_texts

SCORE_EXAMPLES = """\
examples:
  backtrack-sampler score results.jsonl
  backtrack-sampler score plain.jsonl antislop.jsonl --plot compare.png
  backtrack-sampler score stories/ --ban-file bans.json --json
  backtrack-sampler score plain.jsonl antislop.jsonl --logprob --prompts prompts.jsonl

An input is the results JSONL of `batch` (error records are skipped and counted),
a text file (one text), or a folder of .txt files (one text each).
The texts that are empty, and the batch results that ended at once (no token: an EOS
first, as an instruction sent without the chat template often gets), are counted in
the table and the JSON, and named on stderr.

Measures (the slop-score leaderboard's definitions where it has one): ban-list hits
per 1,000 words (the default slop list, or --ban-file), "not X, but Y" contrasts per
1,000 characters, trigrams repeated 3+ times per 1,000 words, MATTR over 500-word
windows, distinct-2 and distinct-3, the share of texts that loop (a 4-word run 3+
times), and with --logprob the mean log-probability per token under the model.
--plot needs matplotlib: pip install 'backtrack_sampler[score]'.
"""


def add_score_command(commands: argparse._SubParsersAction) -> None:
    """Add ``score`` to the ``backtrack-sampler`` subcommands."""
    score = commands.add_parser(
        "score",
        help="measure texts (slop hits, contrasts, diversity, loops, fluency); two inputs side by side",
        description="Measure FIRST (and SECOND) and print one markdown table: measures as rows, inputs as columns.",
        epilog=SCORE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    score.add_argument("first", type=Path, metavar="FIRST", help="batch results (.jsonl), a text file or a folder")
    score.add_argument("second", type=Path, nargs="?", metavar="SECOND", help="a second input to compare with")
    score.add_argument(
        "--ban-file",
        action="append",
        type=ban_file,
        metavar="PATH",
        help="count the hits of this list instead of the default slop list (repeatable; the --ban-file format)",
    )
    score.add_argument("--json", action="store_true", help="print the measures as JSON instead of a table")
    score.add_argument("--plot", type=Path, metavar="PATH", help="also draw the measures (.png, .svg, .pdf, .html)")
    g = score.add_argument_group("fluency (loads a model)")
    g.add_argument("--logprob", action="store_true", help="add the mean log-probability per token under the model")
    g.add_argument(
        "--prompts",
        type=Path,
        metavar="PATH",
        help="the batch INPUT the results came from: each text is scored after its prompt (default: after BOS)",
    )
    add_model_options(g)
    score.set_defaults(handler=run_score)


def _load(path: Path, argument: str) -> LoadedTexts:
    check_input_file(argument, path, folder=True)
    try:
        return load_texts(path)
    except ValueError as exc:
        raise CliError(f"argument {argument}: {one_line(exc)}") from None


def _names(paths: list[Path]) -> list[str]:
    """Column names: the file names, or the paths when the names are the same."""
    names = [p.name or str(p) for p in paths]
    return [str(p) for p in paths] if len(set(names)) < len(names) else names


def read_prompts(path: Path) -> dict[int, Any]:
    """``{line number: "prompt" text or "messages" list}`` of a batch input file."""
    prompts = {}
    try:
        for line in read_lines(path):  # numbered as batch numbers them: split at line feeds only
            try:
                data = json.loads(line.text()) if line.data.strip() else None
            except json.JSONDecodeError:
                continue  # a bad line of the input has an error record, not a text
            if isinstance(data, dict):
                prompt = data.get("prompt") if data.get("prompt") is not None else data.get("messages")
                if prompt is not None:
                    prompts[line.number] = prompt
    except OSError as exc:
        raise CliError(f"argument --prompts: cannot read {str(path)!r}: {exc.strerror or one_line(exc)}") from None
    except UnicodeDecodeError as exc:
        raise CliError(f"argument --prompts: cannot read {str(path)!r}: {one_line(exc)}") from None
    return prompts


def _logprob(provider: Any, loaded: LoadedTexts, prompts: dict[int, Any] | None) -> float:
    from backtrack_sampler.metrics.logprob import mean_logprob

    if not prompts or not loaded.lines:
        return mean_logprob(provider, loaded.texts)
    modes = loaded.prompt_modes or (None,) * len(loaded.lines)
    chosen = [
        _prompt_text(provider, prompts.get(line) if line is not None else None, mode)
        for line, mode in zip(loaded.lines, modes, strict=True)
    ]
    return mean_logprob(provider, loaded.texts, chosen)


def _prompt_text(provider: Any, prompt: Any, mode: str | None) -> str | None:
    """The text the model was given: ``messages``, or a prompt the result says went through the chat template.

    A result without ``prompt_mode`` is older than it: its ``prompt`` was sent as it is.
    """
    if isinstance(prompt, str) and mode == "chat":
        prompt = [{"role": "user", "content": prompt}]
    return provider.apply_chat_template(prompt) if isinstance(prompt, list) else prompt


def _empty_note(name: str, loaded: LoadedTexts) -> str | None:
    """A line for stderr when some texts are empty (``None`` when none is)."""
    empty = sum(1 for text in loaded.texts if not text.strip())
    if not empty:
        return None
    note = f"{name}: {empty} of {len(loaded.texts)} texts are empty"
    if loaded.ended_at_once:
        note += f" ({loaded.ended_at_once} ended at once, before their first token)"
    return note


def run_score(args: argparse.Namespace) -> int:
    """The ``score`` command: read the inputs, measure them, print the table (or JSON), draw the plot."""
    from backtrack_sampler.metrics.report import markdown_table, measure_texts, top_lists

    if args.prompts is not None and not args.logprob:
        raise CliError("argument --prompts: only applies with --logprob")
    if args.prompts is not None:
        check_input_file("--prompts", args.prompts)
    if args.plot is not None:
        _check_plot(args.plot)
    paths = [args.first] + ([args.second] if args.second is not None else [])
    inputs = {
        name: _load(path, arg)
        for name, path, arg in zip(_names(paths), paths, ("FIRST", "SECOND")[: len(paths)], strict=True)
    }
    for name, loaded in inputs.items():
        if loaded.skipped:
            print(f"{name}: skipped {loaded.skipped} error record(s)", file=sys.stderr)
        note = _empty_note(name, loaded)
        if note is not None:
            print(note, file=sys.stderr)
    bans = [phrase for phrases in args.ban_file for phrase in phrases] if args.ban_file else None
    fluency: dict[str, float | None] = dict.fromkeys(inputs)
    if args.logprob:
        prompts = read_prompts(args.prompts) if args.prompts is not None else None
        provider = load_provider(args)
        fluency = {name: _logprob(provider, loaded, prompts) for name, loaded in inputs.items()}
    reports = {
        name: measure_texts(loaded.texts, bans, fluency[name], loaded.ended_at_once) for name, loaded in inputs.items()
    }
    if args.json:
        out = {
            name: {"path": str(path), "skipped_errors": inputs[name].skipped, **reports[name].as_dict()}
            for name, path in zip(inputs, paths, strict=True)
        }
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        print(markdown_table(reports))
        print()
        print(top_lists(reports))
    if args.plot is not None:
        from backtrack_sampler.metrics.plot import plot_reports

        print(f"plot: {plot_reports(reports, args.plot)}", file=sys.stderr)
    return 0


def _check_plot(path: Path) -> None:
    """The plot can be written, in a format we draw, and matplotlib is there: checked before any work."""
    from backtrack_sampler.metrics.plot import PLOT_SUFFIXES, load_pyplot

    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise CliError(f"argument --plot: must end in {', '.join(PLOT_SUFFIXES)}, got {str(path)!r}")
    if path.is_dir() or not path.parent.is_dir():
        raise CliError(f"argument --plot: cannot write {str(path)!r}: not a file in an existing folder")
    check_output_file("--plot", path)
    try:
        load_pyplot()
    except ImportError as exc:
        raise CliError(f"argument --plot: {exc}") from None
