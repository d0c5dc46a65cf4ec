"""Where in the output bans apply: everywhere, only between two markers, or only outside them.

Reasoning models write their thoughts between ``<think>`` and ``</think>``
and the answer after; ``BanScope`` limits bans to one of the two (or to the
text between any other pair of markers).

The rules, for a match of a banned phrase or pattern spanning characters
``[start, end)`` of the generated text:

- the text is read from the beginning of the prompt, alternately looking for
  the start marker and, once inside, for the end marker (a stray end marker
  outside, or a second start marker inside, changes nothing); so a prompt
  that ends inside an open ``<think>`` (as the chat templates of reasoning
  models write it) starts the output inside;
- the match counts when the character ``start`` lies in the scoped region
  (inside the markers for ``inside=True``, outside them for ``inside=False``)
  and the matched text holds no part of a marker: a match that runs across
  ``</think>`` belongs to neither side, and a banned word inside a marker
  ("think" in ``<think>``) is not banned text;
- a marker may be split across tokens, and across the end of the prompt.

``ScopeTracker`` follows the markers along the generated text, token by
token, through rewinds (its state after each token is kept, so a rewind
that erases a marker erases it here too).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backtrack_sampler.core.context import GenerationContext

THINK_START = "<think>"
THINK_END = "</think>"
_OUTSIDE_PREFIX = "outside:"
_SHAPES = (
    "None, 'think', 'answer', 'START,END', 'outside:START,END', "
    "a BanScope or {'start': ..., 'end': ..., 'inside': true|false}"
)


@dataclass(frozen=True)
class BanScope:
    """The part of the output where bans apply: between ``start`` and ``end`` (``inside``) or outside them.

    Args:
        start: the marker that opens the region (non-empty).
        end: the marker that closes it (non-empty; may equal ``start``: then
            the markers alternate).
        inside: ``True`` bans only between the markers; ``False`` only outside them.

    Example:
        >>> BanScope.of("think")
        BanScope(start='<think>', end='</think>', inside=True)
        >>> BanScope.of("outside:<reasoning>,</reasoning>").inside
        False
        >>> BanScope.of({"start": "[", "end": "]"})
        BanScope(start='[', end=']', inside=True)
    """

    start: str
    end: str
    inside: bool = True

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ValueError(f"scope {name} must be a non-empty string, got {value!r}")
        if not isinstance(self.inside, bool):
            raise ValueError(f"scope inside must be True or False, got {self.inside!r}")

    @classmethod
    def of(cls, value: Any, name: str = "scope") -> BanScope | None:
        """A ``BanScope`` from any accepted form; ``None`` (bans everywhere) for ``None``.

        Accepted: ``None``; ``"think"`` (only inside ``<think>...</think>``);
        ``"answer"`` (only outside them); ``"START,END"`` (only between those
        markers, split at the first comma); ``"outside:START,END"``; a
        ``BanScope``; a mapping ``{"start", "end", "inside"}`` (``inside``
        defaults to true).

        Raises:
            ValueError: naming ``name`` and the value.
        """
        if value is None or isinstance(value, BanScope):
            return value
        try:
            if isinstance(value, str):
                return cls._parse(value)
            if isinstance(value, Mapping):
                return cls._from_mapping(value)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc} (got {value!r})") from None
        raise ValueError(f"{name} must be {_SHAPES}, got {value!r}")

    @classmethod
    def _parse(cls, text: str) -> BanScope:
        if text == "think":
            return cls(THINK_START, THINK_END, inside=True)
        if text == "answer":
            return cls(THINK_START, THINK_END, inside=False)
        inside = not text.startswith(_OUTSIDE_PREFIX)
        markers = text if inside else text[len(_OUTSIDE_PREFIX) :]
        start, comma, end = markers.partition(",")
        if not comma or not start or not end:
            raise ValueError(f"must be {_SHAPES}")
        return cls(start, end, inside)

    @classmethod
    def _from_mapping(cls, value: Mapping[Any, Any]) -> BanScope:
        unknown = sorted(map(repr, set(value) - {"start", "end", "inside"}))
        if unknown:
            raise ValueError(f"takes only 'start', 'end' and 'inside', got {unknown[0]}")
        missing = [key for key in ("start", "end") if key not in value]
        if missing:
            raise ValueError(f"needs {missing[0]!r}")
        return cls(value["start"], value["end"], value.get("inside", True))


def region_after(text: str, scope: BanScope, inside: bool = False) -> tuple[bool, int]:
    """Read ``text`` (starting inside the markers or not): whether it ends inside, and where its last marker ends.

    Example:
        >>> region_after("<|im_start|>assistant<think>", BanScope.of("think"))
        (True, 28)
    """
    pos, last_end = 0, 0
    while True:
        marker = scope.end if inside else scope.start
        found = text.find(marker, pos)
        if found < 0:
            return inside, last_end
        pos = last_end = found + len(marker)
        inside = not inside


class ScopeTracker:
    """Follows the markers of a ``BanScope`` along the generated text, and judges matches.

    ``start(prompt)`` once per generation, ``feed(ctx, final)`` after each
    token, ``truncate(position)`` after a rewind; then ``counts(start, end)``
    says whether a match there is banned text, ``undecided(end)`` whether a
    marker still being written may yet cover it, and ``region_open()``
    whether the text now ends in the scoped region.

    Offsets are characters of the generated text; a marker that began in the
    prompt starts at a negative offset.
    """

    def __init__(self, scope: BanScope) -> None:
        self.scope = scope
        self.start("")

    def start(self, prompt: str) -> None:
        """Begin a generation after ``prompt`` (its text: where it leaves the markers)."""
        inside, last_end = region_after(prompt, self.scope)
        self._inside_at_start = inside
        # A marker begun at the end of the prompt may end in the output: its first characters.
        self._lead = prompt[_partial_start(prompt, last_end, self.scope.end if inside else self.scope.start) :]
        self._starts: list[int] = []  # the markers found in the output: [start, end) each, in order
        self._ends: list[int] = []
        self._found: list[int] = []  # per token: how many markers end in the text up to it
        self._open: list[int] = []  # per token: where a marker still being written begins (n_chars if none)
        # A marker that ends in a token began in it, or where the text before it left one being written:
        # so each token's search reads only its own text and that unfinished marker.

    def truncate(self, position: int) -> None:
        """Keep the state of the first ``position`` tokens."""
        del self._found[position:], self._open[position:]
        kept = self._found[-1] if self._found else 0
        del self._starts[kept:], self._ends[kept:]

    def feed(self, ctx: GenerationContext, final: bool = False) -> None:
        """Advance over the latest token: find the markers that end in it (``final``: the text ends there)."""
        position = len(ctx.tokens) - 1
        self.truncate(position)  # entries past it remain only after a refused rewind
        n_chars = ctx.n_chars
        first = self._open[-1] if self._open else -len(self._lead)
        if first < 0:
            text = self._lead[len(self._lead) + first :] + ctx.text_from(0)
        elif first == ctx.char_start(position):
            text = ctx.text_from(position)
        else:
            token = ctx.token_at_char(first)
            text = ctx.text_from(token)[first - ctx.char_start(token) :]
        inside = self._inside(len(self._ends))
        pos = 0
        while True:
            marker = self.scope.end if inside else self.scope.start
            found = text.find(marker, pos)
            if found < 0:
                break
            pos = found + len(marker)
            self._starts.append(first + found)
            self._ends.append(first + pos)
            inside = not inside
        self._found.append(len(self._ends))
        self._open.append(n_chars if final else first + _partial_start(text, pos, marker))

    def _inside(self, n_markers: int) -> bool:
        """Whether the text after the first ``n_markers`` markers lies between the markers."""
        return self._inside_at_start != (n_markers % 2 == 1)

    def counts(self, start: int, end: int) -> bool:
        """Whether a match of characters ``[start, end)`` is in scope: it starts in the region, holds no marker."""
        before = bisect_right(self._ends, start)  # markers that end before the match starts
        if self._inside(before) != self.scope.inside:
            return False
        return before == len(self._starts) or self._starts[before] >= end

    def undecided(self, start: int, end: int) -> bool:
        """Whether a marker still being written may yet turn out to hold part of ``[start, end)``."""
        return bool(self._open) and self._open[-1] < end and self.counts(start, end)

    def region_open(self) -> bool:
        """Whether the text now ends in the scoped region (so a banned match may still begin there)."""
        return self._inside(len(self._ends)) == self.scope.inside


def _partial_start(text: str, pos: int, marker: str) -> int:
    """The first index >= ``pos`` where a proper prefix of ``marker`` ends ``text`` (``len(text)``: none)."""
    if not text or text[-1] not in marker:
        return len(text)
    for i in range(max(pos, len(text) - len(marker) + 1), len(text)):
        if marker.startswith(text[i:]):
            return i
    return len(text)
