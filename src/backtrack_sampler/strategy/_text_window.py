"""Helpers shared by strategies that look for strings in the generated text."""

from __future__ import annotations

from backtrack_sampler.core.context import GenerationContext


def holdback_for_chars(ctx: GenerationContext, n_chars: int) -> int:
    """Number of trailing tokens that spell the last ``n_chars`` characters (and any unfinished bytes)."""
    if n_chars <= 0:
        return 0
    first = ctx.token_at_char(max(0, ctx.n_chars - n_chars))
    return len(ctx.tokens) - first


def recent_window(ctx: GenerationContext, longest: int) -> tuple[str, int, int]:
    """The text in which a string of at most ``longest`` chars could end in the latest token.

    Returns ``(text, offset, new_from)``: the window text, the char offset at
    which it starts, and the char offset where the latest token's text starts
    (a match must end after it to be new).
    """
    new_from = ctx.char_start(len(ctx.tokens) - 1)
    start_char = max(0, new_from - longest + 1)
    first_token = ctx.token_at_char(start_char)
    offset = ctx.char_start(first_token)
    return ctx.text_from(first_token), offset, new_from
