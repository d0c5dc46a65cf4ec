"""The ``backtrack-sampler`` parser and ``main``: run a command, turn its errors into one ``error:`` line.

Exit status: 0 on success, 1 when the output cannot be written (stdout closed or
full, ``OutputError``), 2 on a bad argument or a missing model or backend
(``CliError``, ``ModelLoadError``, ``ValueError``...), 130 when interrupted.
Closed or failing standard streams are handled by ``cli.streams``.
"""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Sequence

from backtrack_sampler import __version__
from backtrack_sampler.cli.batch import add_batch_command
from backtrack_sampler.cli.generate import add_generate_command
from backtrack_sampler.cli.mine import add_mine_command
from backtrack_sampler.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    OutputError,
    Parser,
    one_line,
)
from backtrack_sampler.cli.score import add_score_command
from backtrack_sampler.cli.serve import add_serve_command
from backtrack_sampler.cli.streams import StdoutError, diagnostic_stdout, drop_stdout, guarded_streams
from backtrack_sampler.models import ModelLoadError

PROG = "backtrack-sampler"

MAIN_EXAMPLES = """\
examples:
  backtrack-sampler generate "Write a haiku about the sea"
  backtrack-sampler generate "Tell me a story" --ban tapestry --show-rewinds
  backtrack-sampler score plain.jsonl antislop.jsonl --plot compare.png
  backtrack-sampler mine results.jsonl -o bans.json
  backtrack-sampler generate --help
"""


def build_parser() -> argparse.ArgumentParser:
    """The ``backtrack-sampler`` parser with its ``generate``, ``serve``, ``batch``, ``score`` and ``mine`` commands."""
    parser = Parser(
        prog=PROG,
        description="Generate text with LLM sampling strategies that can backtrack.",
        epilog=MAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_generate_command(commands)
    add_serve_command(commands)
    add_batch_command(commands)
    add_score_command(commands)
    add_mine_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``backtrack-sampler``; returns the exit status."""
    with guarded_streams():
        try:
            status = _run(argv)
            sys.stdout.flush()  # what is still buffered fails here, where it can still be told
        except StdoutError as exc:
            drop_stdout()
            if exc.errno != errno.EPIPE:  # EPIPE: the reader went away (`| head`), nothing to tell
                print(f"error: {exc}", file=sys.stderr)
            return EXIT_FAILED
        return status


def _run(argv: Sequence[str] | None) -> int:
    """Parse ``argv`` and run the command; every error but a failing stdout becomes one ``error:`` line."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            diagnostic_stdout()  # the server writes only its access log there
        return args.handler(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (CliError, ModelLoadError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
