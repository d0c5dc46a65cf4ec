"""What the commands share: ``CliError``, the argparse value checks, and the option groups.

Every value is checked as it is parsed, so a bad one is reported with its
flag (``error: argument --top-p: must be in (0, 1], got '2'``). The option
groups (``add_model_options``, ``add_sampling_options``, ``add_ban_options``,
``add_budget_options``, ``add_api_key_option``) are written once here and
added by each command that takes them.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from backtrack_sampler import hub, models
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.sampling_defaults import LLAMA_CPP, SamplingDefaults
from backtrack_sampler.core.text_files import open_regular, what_is_there
from backtrack_sampler.strategy.ban_rules import BanPhrase, load_ban_list
from backtrack_sampler.strategy.ban_scope import BanScope
from backtrack_sampler.strategy.slop_list import default_slop_list

if TYPE_CHECKING:
    from backtrack_sampler.core.base_provider import BaseProvider
    from backtrack_sampler.provider.llamacpp_batched import BatchedLlamacpp

API_KEY_ENV = "BACKTRACK_SAMPLER_API_KEY"
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A problem with the user's input or setup: printed as one ``error:`` line, exit status 2."""


class OutputError(Exception):
    """The command's output could not be written (a full disk...): printed as one ``error:`` line, exit status 1."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise ``CliError`` (one line, no usage dump) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise CliError(message)


# -- value checks used as argparse types ----------------------------------------------------------
def number(text: str, kind: type) -> float | int:
    """``text`` as ``kind`` (int or float), finite."""
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def int_at_least(low: int) -> Callable[[str], int]:
    """A check for an integer >= ``low``."""

    def check(text: str) -> int:
        value = number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return value

    return check


def float_in(low: float, high: float | None, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """A check for a float in an interval such as (0, 1] (``high=None``: no upper bound)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    shown = f"must be >= {low:g}" if high is None else f"must be in {left}{low:g}, {high:g}{right}"

    def check(text: str) -> float:
        value = number(text, float)
        too_low = value <= low if low_open else value < low
        too_high = high is not None and (value >= high if high_open else value > high)
        if too_low or too_high:
            raise argparse.ArgumentTypeError(f"{shown}, got {text!r}")
        return value

    return check


def port(text: str) -> int:
    """A TCP port, in [0, 65535]."""
    value = number(text, int)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535], got {text!r}")
    return value


def utf8_text(text: str) -> str:
    """Text that is valid UTF-8 (argv holds bytes that are not as surrogate escapes, which no model can encode)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raw = text.encode("utf-8", "surrogateescape")
        raise argparse.ArgumentTypeError(
            f"must be UTF-8 text, got {raw!r} (byte {raw[exc.start : exc.start + 1].hex()!r} is not UTF-8)"
        ) from None
    return text


def non_empty(text: str) -> str:
    """Any UTF-8 text but the empty string."""
    if not text:
        raise argparse.ArgumentTypeError("must not be empty, got ''")
    return utf8_text(text)


def threads(text: str) -> int:
    """A thread count in [1, the CPUs here] (llama.cpp crashes with absurd counts)."""
    value = number(text, int)
    if not 1 <= value <= models.MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be in [1, {models.MAX_THREADS}] (the CPUs here), got {text!r}")
    return value


def coefficients(text: str) -> tuple[float, ...]:
    """Comma-separated finite numbers: ``"1, -2, 3"``."""
    parts = [p.strip() for p in text.split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, highest power first, got {text!r}"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"must be finite numbers, got {text!r}")
    return values


def ban_file(text: str) -> list[BanPhrase]:
    """The phrases of a ban list file (JSON or one phrase per line)."""
    try:
        return load_ban_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def ban_scope(text: str) -> BanScope:
    """``--ban-scope``: ``think``, ``answer``, ``START,END`` or ``outside:START,END``."""
    try:
        return BanScope.of(utf8_text(text))
    except ValueError:
        shapes = "think, answer, START,END or outside:START,END"
        raise argparse.ArgumentTypeError(f"must be {shapes}, got {text!r}") from None


def model_file(text: str) -> Path | str:
    """A path that exists (a model file, a regular one, or a directory), else a hub id kept as text.

    The hub id (``org/repo``, ``org/repo:QUANT``, ``org/repo/FILE.gguf``) is only
    checked for its shape here; ``models.load_provider`` fetches it (or finds it in
    the hub cache) when the model is loaded.
    """
    path = Path(text).expanduser()
    kind = what_is_there(path)
    if kind is not None and kind != "a directory":
        raise argparse.ArgumentTypeError(f"not a regular file ({kind}): {text!r}")
    if path.exists():
        return path
    try:
        if hub.parse_hub_id(text) is not None:
            return text
    except hub.HubModelError:
        raise argparse.ArgumentTypeError(f"no such file, and not a hub id ({hub.HUB_FORMS}): {text!r}") from None
    raise argparse.ArgumentTypeError(f"file not found: {text!r}")


# -- file arguments: regular files only (a device never ends, a FIFO blocks) ------------------------
def check_input_file(flag: str, path: Path, folder: bool = False) -> None:
    """``path`` is a regular file to read (or, with ``folder``, a directory); else ``CliError`` naming both."""
    kind = what_is_there(path)
    if kind == "a directory" and not folder:
        raise CliError(f"argument {flag}: is a directory, not a file: {str(path)!r}")
    if kind is not None and kind != "a directory":
        raise CliError(f"argument {flag}: not a regular file ({kind}): {str(path)!r}")
    if not path.exists():
        raise CliError(f"argument {flag}: file not found: {str(path)!r}")


def check_output_file(flag: str, path: Path) -> None:
    """``path`` is a regular file that can be appended to, or can be created; nothing is created or changed."""
    kind = what_is_there(path)
    if kind == "a directory":
        raise CliError(f"argument {flag}: must be a file, got the directory {str(path)!r}")
    if kind is not None:
        raise CliError(f"argument {flag}: not a regular file ({kind}): {str(path)!r}")
    parent = path.parent
    if not parent.is_dir():
        raise CliError(f"argument {flag}: no directory {str(parent)!r} to write {str(path)!r} in")
    if not path.exists():
        if not os.access(parent, os.W_OK):
            raise CliError(f"argument {flag}: cannot create {str(path)!r}: the directory is not writable")
        return
    try:
        os.close(open_regular(path, os.O_WRONLY | os.O_APPEND))
    except OSError as exc:
        raise CliError(f"argument {flag}: cannot write {str(path)!r}: {exc.strerror or exc}") from None


# -- helpers of the parsed arguments --------------------------------------------------------------
def dest(flag: str) -> str:
    """The ``args`` attribute of a flag: ``--top-p`` -> ``top_p``."""
    return flag.lstrip("-").replace("-", "_")


def given(args: argparse.Namespace, **params: str) -> dict:
    """``{parameter: args.<dest>}`` for the options the user gave; the others keep the library's defaults."""
    values = {param: getattr(args, dest) for param, dest in params.items()}
    return {param: value for param, value in values.items() if value is not None}


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (its type's name when it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


# -- option groups ---------------------------------------------------------------------------------
def add_model_options(g: argparse._ArgumentGroup, n_ctx: bool = True) -> None:
    """``--backend`` and ``--model`` (and ``--n-ctx``, ``--threads``): the commands that load a model."""
    g.add_argument(
        "--backend",
        choices=models.BACKENDS,
        default="llamacpp",
        help="llama.cpp (default), Hugging Face transformers (extra: transformers) or MLX (extra: mlx)",
    )
    g.add_argument(
        "--model",
        type=model_file,
        metavar="PATH|HUB_ID",
        help="a .gguf file, or a local model directory with --backend transformers (default: SmolLM2); or a "
        "Hugging Face hub id: org/repo:QUANT or org/repo/FILE.gguf (a GGUF), org/repo (transformers: its model), "
        "fetched into the hub cache (HF_HOME, HF_HUB_OFFLINE, HF_TOKEN apply). A local path wins",
    )
    g.add_argument("--verbose", action="store_true", help="llama.cpp's own log lines on stderr (default: errors only)")
    if not n_ctx:
        return
    g.add_argument(
        "--n-ctx",
        type=int_at_least(0),
        metavar="N",
        help=f"positions per sequence to load the model with; 0: the model's training context (default: "
        f"{models.DEFAULT_N_CTX}, or the training context when shorter). At most the training context (unless "
        "--force-n-ctx), and the KV cache of N positions per sequence must fit in the memory available",
    )
    g.add_argument(
        "--force-n-ctx",
        action="store_true",
        help="allow --n-ctx beyond the model's training context (the memory check still applies)",
    )
    g.add_argument(
        "--threads",
        type=threads,
        metavar="N",
        help=(
            f"CPU threads for llama.cpp, 1 to the CPUs here ({models.MAX_THREADS}) "
            f"(default: the physical cores here, {models.physical_cores()}, for one sequence; all CPUs for batches)"
        ),
    )

    g.add_argument(
        "--flash-attn",
        choices=("auto", "on", "off"),
        help="llama.cpp's flash attention (default: auto, llama.cpp's own default: on where the device supports "
        "it, every CPU included); off computes attention as llama-cpp-python's Llama does by default",
    )


def load_provider(args: argparse.Namespace) -> BaseProvider:
    """The model of ``--model``/``--backend``/``--n-ctx``/``--threads`` (see ``models.load_provider``)."""
    return models.load_provider(
        args.model,
        args.backend,
        n_ctx=args.n_ctx,
        threads=args.threads,
        force_n_ctx=args.force_n_ctx,
        verbose=args.verbose,
        flash_attn=getattr(args, "flash_attn", None) or "auto",
    )


def load_batched(args: argparse.Namespace, n_slots: int) -> BatchedLlamacpp:
    """``n_slots`` sequences of ``--n-ctx`` positions on one llama.cpp context (see ``models.load_batched``)."""
    return models.load_batched(
        args.model,
        n_ctx=args.n_ctx,
        threads=args.threads,
        n_slots=n_slots,
        force_n_ctx=args.force_n_ctx,
        verbose=args.verbose,
        flash_attn=getattr(args, "flash_attn", None) or "auto",
    )


DEFAULTS_HELP = (
    "default: the model's recommended value (a GGUF's general.sampling.* keys, a transformers directory's "
    "generation_config.json), else llama.cpp's {value}"
)


def add_sampling_options(g: argparse._ArgumentGroup) -> None:
    """``--temperature``, ``--top-k``, ``--top-p``, ``--min-p`` and ``--seed``.

    The four sampling flags default to ``None``: ``sampling_settings`` fills
    what the user left out from the model's recommended sampling.
    """
    llama = LLAMA_CPP
    g.add_argument(
        "--temperature",
        type=float_in(0, None),
        metavar="T",
        help=f"0 means greedy ({DEFAULTS_HELP.format(value=llama['temperature'])})",
    )
    g.add_argument(
        "--top-k",
        type=int_at_least(0),
        metavar="K",
        help=f"keep the K most likely tokens, 0 disables ({DEFAULTS_HELP.format(value=llama['top_k'])})",
    )
    g.add_argument(
        "--top-p",
        type=float_in(0, 1, low_open=True),
        metavar="P",
        help=f"nucleus mass in (0, 1], 1 disables ({DEFAULTS_HELP.format(value=llama['top_p'])})",
    )
    g.add_argument(
        "--min-p",
        type=float_in(0, 1, high_open=True),
        metavar="P",
        help="drop tokens below P times the best probability, in [0, 1), 0 disables "
        f"({DEFAULTS_HELP.format(value=llama['min_p'])})",
    )
    g.add_argument("--seed", type=int_at_least(0), metavar="N", help="makes sampling reproducible")


def sampling_settings(args: argparse.Namespace, defaults: SamplingDefaults) -> dict[str, float | int]:
    """``temperature``, ``top_k``, ``top_p`` and ``min_p``: the flags given, ``defaults`` for the others."""
    return {**defaults.values(), **given(args, temperature="temperature", top_k="top_k", top_p="top_p", min_p="min_p")}


def add_ban_options(g: argparse._ArgumentGroup, matching: bool = True) -> None:
    """``--ban``, ``--ban-file``, ``--slop`` (see ``merged_bans``), ``--exempt-prompt-terms``, ``--ban-scope``.

    ``matching`` adds regex and matching flags.

    Flags not given are ``None``, so a command can tell them from their defaults.
    """
    g.add_argument("--ban", action="append", type=non_empty, metavar="PHRASE", help="a phrase to ban (repeatable)")
    g.add_argument(
        "--ban-file",
        action="append",
        type=ban_file,
        metavar="PATH",
        help="phrases to ban from a file: JSON ['phrase', ...] or [['phrase', factor], ...], "
        "or text with one phrase per line (repeatable)",
    )
    if matching:
        g.add_argument(
            "--ban-regex",
            action="append",
            type=non_empty,
            metavar="PATTERN",
            help="a regular expression to ban (repeatable; syntax of the 'regex' package, (?i) to ignore case)",
        )
    g.add_argument(
        "--slop",
        action="store_true",
        default=None,
        help="ban the project's default English slop list (230 over-used words and phrases, most as soft bans)",
    )
    g.add_argument(
        "--exempt-prompt-terms",
        action="store_true",
        default=None,
        help="do not ban the phrases the prompt itself uses (a prompt about tapestries may get 'tapestry'; "
        "inflections count)",
    )
    g.add_argument(
        "--ban-scope",
        type=ban_scope,
        metavar="SCOPE",
        help="where bans apply: think (only inside <think>...</think>), answer (only outside them), "
        "START,END (only between other markers) or outside:START,END (default: everywhere)",
    )
    if not matching:
        return
    g.add_argument(
        "--ban-case-sensitive",
        action="store_true",
        default=None,
        help="match banned phrases case-sensitively (default: ignore case)",
    )
    g.add_argument(
        "--ban-substrings",
        action="store_true",
        default=None,
        help="match banned phrases anywhere, even inside words (default: whole words, so 'avid' spares 'David')",
    )


def merged_bans(args: argparse.Namespace) -> list[BanPhrase]:
    """``--slop``, ``--ban-file`` and ``--ban`` in one list; later sources override earlier ones for a phrase."""
    phrases: dict[str, BanPhrase] = {}
    sources = [default_slop_list() if args.slop else [], *(args.ban_file or []), [BanPhrase(b) for b in args.ban or []]]
    for source in sources:
        phrases.update((phrase.text, phrase) for phrase in source)
    return list(phrases.values())


def add_budget_options(g: argparse._ArgumentGroup) -> None:
    """``--max-rewinds`` and ``--rewinds-per-position`` (see ``budget``)."""
    g.add_argument(
        "--max-rewinds",
        type=int_at_least(0),
        metavar="N",
        help="rewinds allowed in one generation (default: max(64, 2 x max-new-tokens))",
    )
    g.add_argument(
        "--rewinds-per-position",
        type=int_at_least(0),
        metavar="N",
        help="rewinds allowed at one position (default: 16)",
    )


def budget(args: argparse.Namespace) -> RewindBudget:
    """The rewind budget of ``--max-rewinds`` and ``--rewinds-per-position`` (library defaults for the others)."""
    return RewindBudget(**given(args, per_position="rewinds_per_position", per_generation="max_rewinds"))


def add_api_key_option(g: argparse._ArgumentGroup, help: str) -> None:
    """``--api-key KEY``, by default from ``$BACKTRACK_SAMPLER_API_KEY``."""
    g.add_argument(
        "--api-key",
        type=non_empty,
        default=os.environ.get(API_KEY_ENV) or None,
        metavar="KEY",
        help=f"{help} (default: ${API_KEY_ENV})",
    )
