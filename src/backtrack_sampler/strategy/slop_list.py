"""The default English slop list that the project curates (see ``backtrack_sampler/data/README.md``)."""

from __future__ import annotations

from pathlib import Path

from backtrack_sampler.strategy.ban_rules import BanPhrase, load_ban_list

DEFAULT_SLOP_FILE = Path(__file__).resolve().parent.parent / "data" / "slop_en.json"


def default_slop_list() -> list[BanPhrase]:
    """Over-used words and phrases of LLM prose, each with a factor (0: hard ban; (0, 1): soft ban).

    Example:
        >>> strategy = AntiSlopStrategy(provider, default_slop_list())  # doctest: +SKIP
    """
    return load_ban_list(DEFAULT_SLOP_FILE)
