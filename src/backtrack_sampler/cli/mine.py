"""``backtrack-sampler mine``: a ban list of the words and n-grams a model over-uses (see ``metrics.mining``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from backtrack_sampler.cli.options import (
    CliError,
    OutputError,
    check_input_file,
    check_output_file,
    int_at_least,
    one_line,
)
from backtrack_sampler.cli.score import read_prompts
from backtrack_sampler.metrics.texts import load_texts

MINE_EXAMPLES = """\
examples:
  backtrack-sampler mine results.jsonl -o bans.json
  backtrack-sampler mine results.jsonl -o bans.json --top 30 --hard 5 --ngrams 1,2
  backtrack-sampler mine results.jsonl -o bans.json --prompts prompts.jsonl   # not the prompts' topics
  backtrack-sampler batch prompts.jsonl -o after.jsonl --ban-file bans.json

INPUT is the results JSONL of `batch` (error records are skipped), a text file, or a
folder of .txt files. Each term's share of the model's words (or n-grams) is compared
with its frequency in English from the wordfreq package; the terms the model writes
most often beyond it, seen --min-count times in --min-texts texts, are kept. The
first --hard become hard bans (factor 0), the rest soft bans (factors 0.2 to 0.8).
The list is JSON ([["term", factor], ...]) that --ban-file reads; without -o it goes
to stdout and the table to stderr. Needs wordfreq: pip install 'backtrack_sampler[score]'.
"""


def orders(text: str) -> tuple[int, ...]:
    """Comma-separated n-gram orders in [1, 5]: ``"1,2,3"``."""
    try:
        values = tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers in [1, 5], got {text!r}") from None
    if not values or not all(1 <= n <= 5 for n in values):
        raise argparse.ArgumentTypeError(f"must be comma-separated integers in [1, 5], got {text!r}")
    return values


def add_mine_command(commands: argparse._SubParsersAction) -> None:
    """Add ``mine`` to the ``backtrack-sampler`` subcommands."""
    mine = commands.add_parser(
        "mine",
        help="mine a ban list (hard and soft bans) of what a model over-uses compared with human text",
        description="Find the words and n-grams INPUT over-uses against English word frequencies; "
        "write them as a ban list.",
        epilog=MINE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mine.add_argument("input", type=Path, metavar="INPUT", help="batch results (.jsonl), a text file or a folder")
    mine.add_argument("-o", "--output", type=Path, metavar="PATH", help="where to write the list (.json)")
    mine.add_argument("--top", type=int_at_least(1), default=40, metavar="N", help="terms to keep (default: 40)")
    mine.add_argument("--hard", type=int_at_least(0), default=10, metavar="N", help="hard bans (default: 10)")
    mine.add_argument(
        "--min-count", type=int_at_least(1), default=3, metavar="N", help="fewest occurrences (default: 3)"
    )
    mine.add_argument(
        "--min-texts", type=int_at_least(1), default=2, metavar="N", help="fewest texts holding it (default: 2)"
    )
    mine.add_argument(
        "--ngrams", type=orders, default=(1, 2, 3), metavar="N,N", help="n-gram orders, 1 = words (default: 1,2,3)"
    )
    mine.add_argument(
        "--prompts",
        type=Path,
        metavar="PATH",
        help="the batch INPUT the results came from: terms with a word the prompts use are not mined",
    )
    mine.set_defaults(handler=run_mine)


def prompt_texts(prompts: Iterable[Any]) -> list[str]:
    """The text of each batch prompt: a ``"prompt"`` string, or the contents of its ``"messages"``."""
    texts = []
    for prompt in prompts:
        if isinstance(prompt, str):
            texts.append(prompt)
        elif isinstance(prompt, list):
            texts += [m["content"] for m in prompt if isinstance(m, dict) and isinstance(m.get("content"), str)]
    return texts


def format_terms(terms: list) -> str:
    """The mined terms as a markdown table."""
    lines = [
        "| # | term | count | texts | per 1k (model) | per 1k (English) | ratio | factor |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for rank, t in enumerate(terms, 1):
        lines.append(
            f"| {rank} | {t.term} | {t.count} | {t.texts} | {t.model_share * 1000:.3f} | "
            f"{t.human_share * 1000:.5f} | {t.ratio:.0f} | {t.factor:g}{' (hard)' if t.factor == 0 else ''} |"
        )
    return "\n".join(lines)


def run_mine(args: argparse.Namespace) -> int:
    """The ``mine`` command: read the texts, mine the terms, write the list and print the table."""
    from backtrack_sampler.metrics.mining import ban_list_json, mine_terms, wordfreq_frequency

    output: Path | None = args.output
    if output is not None and (output.suffix.lower() != ".json" or output.is_dir() or not output.parent.is_dir()):
        raise CliError(
            f"argument --output: must be a .json file in an existing folder (a text list cannot hold factors), "
            f"got {str(output)!r}"
        )
    if output is not None:
        check_output_file("--output", output)
    check_input_file("INPUT", args.input, folder=True)
    if args.prompts is not None:
        check_input_file("--prompts", args.prompts)
    try:
        frequency = wordfreq_frequency()
    except ImportError as exc:
        raise CliError(one_line(exc)) from None
    try:
        loaded = load_texts(args.input)
    except ValueError as exc:
        raise CliError(f"argument INPUT: {one_line(exc)}") from None
    prompts = prompt_texts(read_prompts(args.prompts).values()) if args.prompts is not None else []
    terms = mine_terms(
        loaded.texts,
        frequency,
        args.ngrams,
        args.top,
        args.hard,
        min_count=args.min_count,
        min_texts=args.min_texts,
        prompts=prompts,
    )
    if not terms:
        raise CliError(
            f"argument INPUT: no term occurs --min-count {args.min_count} times in --min-texts {args.min_texts} "
            f"texts of {len(loaded.texts)}; lower them or give more text"
        )
    listing = ban_list_json(terms)
    table = sys.stdout if output is not None else sys.stderr
    if loaded.skipped:
        print(f"skipped {loaded.skipped} error record(s)", file=sys.stderr)
    print(format_terms(terms), file=table)
    if output is None:
        sys.stdout.write(listing)
    else:
        try:
            output.write_text(listing, encoding="utf-8")
        except OSError as exc:
            raise OutputError(f"argument --output: cannot write {str(output)!r}: {exc.strerror or exc}") from None
        print(f"\nwrote {len(terms)} terms ({sum(t.factor == 0 for t in terms)} hard) to {output}", file=table)
    return 0
