"""The ``backtrack-sampler`` command line: ``generate``, ``serve``, ``batch``, ``score`` and ``mine``.

- ``main``: the parser, ``main()`` and its error handling;
- ``options``: the value checks and the option groups the commands share;
- ``generate``, ``serve``, ``batch``, ``score``, ``mine``: one module per command.

Importing this package imports neither llama_cpp, torch nor FastAPI: a
command imports its backend when it runs.
"""

from backtrack_sampler.cli.generate import (
    GENERATE_EXAMPLES,
    STRATEGY_OPTIONS,
    build_strategy,
    check_prompt_options,
    format_prompt,
    format_rewind,
    format_summary,
    read_prompt,
    render,
    run_generate,
    strategy_names,
)
from backtrack_sampler.cli.main import MAIN_EXAMPLES, PROG, build_parser, main
from backtrack_sampler.cli.options import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CliError,
    add_model_options,
    load_provider,
    merged_bans,
)

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "GENERATE_EXAMPLES",
    "MAIN_EXAMPLES",
    "PROG",
    "STRATEGY_OPTIONS",
    "CliError",
    "add_model_options",
    "build_parser",
    "build_strategy",
    "check_prompt_options",
    "format_prompt",
    "format_rewind",
    "format_summary",
    "load_provider",
    "main",
    "merged_bans",
    "read_prompt",
    "render",
    "run_generate",
    "strategy_names",
]
