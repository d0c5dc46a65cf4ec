r"""``generate --show-rewinds`` on a terminal: the erased text shown in place, the replacement after it.

The engine emits a ``TextEvent`` only for text no strategy can rewind any
more, and a ``RewindEvent`` for text that was never emitted; so the erased
text of a rewind at token ``position`` belongs just before the emitted text
of token ``position``. ``InlineRewinds`` keeps each rewind's erased text
until the text of that position is emitted, and writes it there, marked:

- on a terminal, struck through and dimmed (``\x1b[9;2m ... \x1b[0m``);
- with ``NO_COLOR`` set (https://no-color.org), between plain markers ``[-`` and ``-]``.

A later rewind to an earlier position erases the text of the positions
after it, so the erased texts kept for those positions are dropped (the
new rewind's erased text holds what was written in their place).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from backtrack_sampler.core.events import RewindEvent, TextEvent
from backtrack_sampler.core.token_text import TokenText


@dataclass(frozen=True)
class Marks:
    """What goes around an erased text."""

    start: str
    end: str


STRUCK = Marks("\x1b[9;2m", "\x1b[0m")
PLAIN = Marks("[-", "-]")


def inline_marks(is_tty: bool, environ: Mapping[str, str] | None = None) -> Marks | None:
    """The marks for a terminal (``STRUCK``, or ``PLAIN`` under ``NO_COLOR`` or ``TERM=dumb``); ``None`` off one.

    Off a terminal the erased text stays out of stdout (it carries the
    generated text alone) and each rewind is a ``[rewind]`` line on stderr.
    """
    if not is_tty:
        return None
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return PLAIN
    return STRUCK


@dataclass
class InlineRewinds:
    """Turns text and rewind events into what stdout shows: text with each erased text in its place.

    Args:
        marks: what goes around an erased text.
        token_bytes: the model's bytes of a token (``Vocabulary.token_bytes``), to find where a
            position's text begins inside a ``TextEvent``.
    """

    marks: Marks
    token_bytes: Callable[[int], bytes]
    _emitted: TokenText = field(init=False)
    _erased: list[tuple[int, str]] = field(init=False, default_factory=list)  # (position, erased text)

    def __post_init__(self) -> None:
        self._emitted = TokenText(self.token_bytes)

    def rewind(self, event: RewindEvent) -> None:
        """Keep ``event``'s erased text for its position; drop those of the positions it erased."""
        self._erased = [(p, text) for p, text in self._erased if p <= event.position]
        if event.suppressed_text:
            self._erased.append((event.position, event.suppressed_text))

    def text(self, event: TextEvent) -> str:
        """``event.text`` with the erased texts of its positions written where they were."""
        first = len(self._emitted)
        for token in event.tokens:
            self._emitted.append(token)
        last = len(self._emitted)
        inside = [(p, text) for p, text in self._erased if first <= p < last]
        if not inside:
            return event.text
        self._erased = [(p, text) for p, text in self._erased if not first <= p < last]
        base = self._emitted.char_start(first)
        if self._emitted.n_chars - base != len(event.text):  # the decoding disagrees: mark before the event
            return "".join(self._mark(text) for _, text in inside) + event.text
        parts, at = [], 0
        for position, erased in inside:
            cut = self._emitted.char_start(position) - base
            parts += [event.text[at:cut], self._mark(erased)]
            at = cut
        parts.append(event.text[at:])
        return "".join(parts)

    def finish(self) -> str:
        """The erased texts no emitted text followed (a rewind at the very end)."""
        shown = "".join(self._mark(text) for _, text in self._erased)
        self._erased = []
        return shown

    def _mark(self, erased: str) -> str:
        """The erased text between the marks; its leading spaces stay outside, so the words keep their gaps.

        Erased white space alone shows nothing (it would only move the text).
        """
        body = erased.lstrip()
        lead = erased[: len(erased) - len(body)]
        return f"{lead}{self.marks.start}{body}{self.marks.end}" if body else ""
