"""The ``backtrack-sampler`` parser and ``main``: run a command, turn its errors into one ``error:`` line.

Exit status: 0 on success, 2 on a bad argument or a missing model or backend
(``CliError``, ``ModelLoadError``, ``ValueError``...), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from backtrack_sampler import __version__
from backtrack_sampler.cli.batch import add_batch_command
from backtrack_sampler.cli.generate import add_generate_command
from backtrack_sampler.cli.mine import add_mine_command
from backtrack_sampler.cli.options import EXIT_INTERRUPTED, EXIT_USAGE, CliError, Parser, one_line
from backtrack_sampler.cli.score import add_score_command
from backtrack_sampler.cli.serve import add_serve_command
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
    try:
        args = build_parser().parse_args(argv)
        return args.handler(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (CliError, ModelLoadError, ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(file=sys.stderr)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python from complaining at exit.
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
