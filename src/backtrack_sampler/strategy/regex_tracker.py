r"""Following banned regular expressions along the generated text, token by token, through rewinds.

Uses the ``regex`` package (extra ``regex``), imported when a tracker is
built. For each pattern the tracker keeps an anchor: the first character
where a match could still begin. After each token it searches from the
anchor with ``partial=True``:

- a complete match that ends before the end of the text is reported;
- a partial match (one that needs more text), or a complete one that
  touches the end of the text (``avid\b`` at the end may still become
  "avidly"), moves the anchor to where it starts: that text is held back;
- no match at all moves the anchor to the end of the text.

The word assertions ``\b``, ``\B``, ``\m`` and ``\M`` follow the script
rule of whole-word phrases (``word_scripts``): next to a character of a
script written without spaces (Han, Kana, Thai, ...) there is always a word
edge, so ``\b村里\b`` is found in "村里住着" and ``\biPhone`` in "我的iPhone";
between other characters they mean what ``regex`` means.

``regex`` reads ``\b`` and ``\B`` at the end of a partial string as if the
text ended there (`` \b`` fails on " ", though " b" matches). So a pattern
holding such an assertion is searched a second time, in the text with a
word character appended: a match that reaches that character is held back
too (see ``_boundary_anchor``).

So each search reads only the text from the anchor on (plus ``CONTEXT``
characters before it, for lookbehinds and ``\b``), never the whole text,
in NFC form (``word_scripts.CanonicalText``: "café" and "cafe" + U+0301 are
the same text; positions map back to the original characters).
A partial match older than ``window`` characters is given up on, so a
pattern like ``a.*b`` cannot hold the stream back forever; matches longer
than the window may then pass. At the end of the text (``final``) the
search is not partial, and matches touching the end count.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from backtrack_sampler.core.checks import check_int, is_number
from backtrack_sampler.strategy.ban_rules import MAX_PATTERN_LENGTH, BanRegex
from backtrack_sampler.strategy.phrase_tracker import PhraseMatch, prompt_tail
from backtrack_sampler.strategy.word_scripts import (
    SPACED_WORD_CHAR,
    WORD_ASSERTIONS,
    CanonicalText,
    canonical,
    combines,
)

if TYPE_CHECKING:
    from backtrack_sampler.core.context import GenerationContext

CONTEXT = 64
"""Characters before the earliest anchor given to the search, for lookbehinds and word boundaries
(at the start, the end of the prompt: a match never begins in the prompt, but may look at it)."""


# Assertions that ``regex`` decides too early at the end of a partial string (see the module docstring):
# after a non-word character, \b and \m fail there though a word character would satisfy them;
# after a word character, \B does.
AFTER_NON_WORD = (r"\b", r"\m")
AFTER_WORD = (r"\B",)


def compile_pattern(pattern: str, max_length: int = MAX_PATTERN_LENGTH) -> Any:
    """Compile a banned pattern with the ``regex`` package (its text in NFC form, word assertions by script).

    Raises:
        ImportError: when ``regex`` is not installed.
        ValueError: naming the pattern when it is too long, invalid, or
            matches the empty string.
    """
    try:
        import regex
    except ImportError:  # pragma: no cover - the extra is installed in the test environment
        raise ImportError("regex bans need the 'regex' package: pip install 'backtrack_sampler[regex]'") from None
    if len(pattern) > max_length:
        raise ValueError(f"regex {pattern[:40]!r}... is {len(pattern)} characters long; the limit is {max_length}")
    try:
        compiled = regex.compile(with_script_word_edges(canonical(pattern)))
    except regex.error as exc:
        raise ValueError(f"regex {pattern!r} is invalid: {exc}") from None
    if compiled.fullmatch("") is not None:
        raise ValueError(f"regex {pattern!r} matches the empty string, so it would ban nothing in particular")
    return compiled


def _joins_previous(ctx: GenerationContext, position: int) -> bool:
    """Whether token ``position`` begins with a character that NFC joins to the character before it."""
    start = ctx.char_start(position)
    if start == 0 or ctx.n_chars == start:
        return False
    first = ctx.token_at_char(start - 1)
    text = ctx.text_from(first)
    at = start - ctx.char_start(first)
    return combines(text[at - 1], text[at])


def with_script_word_edges(pattern: str) -> str:
    r"""``pattern`` with its word assertions (``\b``, ``\B``, ``\m``, ``\M``) following the script rule.

    Escapes and character classes (where ``\b`` is a backspace) are kept as written.

    Example:
        >>> with_script_word_edges(r"[\b]\\b") == r"[\b]\\b"
        True
    """
    out: list[str] = []
    nested = "V1" in pattern  # (?V1): a "[" inside a set opens a nested set
    depth = 0  # how deep inside character sets
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i : i + 2]
            out.append(WORD_ASSERTIONS[escape[1:]] if depth == 0 and escape[1:] in WORD_ASSERTIONS else escape)
            i += 2
            continue
        if char == "[":
            if depth and pattern.startswith("[:", i) and ":]" in pattern[i + 2 :]:  # a POSIX class [:alpha:]
                end = pattern.index(":]", i + 2) + 2
                out.append(pattern[i:end])
                i = end
                continue
            if depth == 0 or nested:
                depth += 1
                out.append(char)
                i += 1
                for literal in ("^", "]"):  # "[^]...]": a leading "^" negates, then a "]" is literal
                    if pattern.startswith(literal, i):
                        out.append(literal)
                        i += 1
                continue
        elif char == "]" and depth:
            depth -= 1
        out.append(char)
        i += 1
    return "".join(out)


class RegexTracker:
    """Finds banned patterns in the generated text as tokens arrive, and says what to hold back.

    Args:
        patterns: the patterns to ban.
        timeout: seconds one search may take; beyond it ``feed`` raises a
            ``ValueError`` naming the pattern.
        window: the longest text (in characters) a partial match may hold back.
        max_pattern_length: the longest pattern accepted.
    """

    def __init__(
        self,
        patterns: Sequence[BanRegex],
        timeout: float = 0.05,
        window: int = 256,
        max_pattern_length: int = MAX_PATTERN_LENGTH,
    ) -> None:
        if not is_number(timeout) or not timeout > 0:
            raise ValueError(f"regex_timeout must be a number of seconds > 0, got {timeout!r}")
        check_int("regex_window", window, low=1)
        self.patterns = list(patterns)
        self.timeout = float(timeout)
        self.window = window
        self._compiled = [compile_pattern(p.pattern, max_pattern_length) for p in self.patterns]
        self._probe_after = [
            (any(a in p.pattern for a in AFTER_NON_WORD), any(a in p.pattern for a in AFTER_WORD))
            for p in self.patterns
        ]
        self._word_char = compile_pattern(SPACED_WORD_CHAR) if self.patterns else None
        self.reset()

    def reset(self) -> None:
        self._anchors: list[tuple[int, ...]] = []  # per token: each pattern's anchor (a character offset)
        self._closed: list[int] = []
        self._prompt_tail = ""

    def truncate(self, position: int) -> None:
        """Keep the state of the first ``position`` tokens."""
        del self._anchors[position:], self._closed[position:]

    def feed(self, ctx: GenerationContext, final: bool = False) -> list[PhraseMatch]:
        """Advance over the latest token; return the matches found (``index`` into ``patterns``)."""
        position = len(ctx.tokens) - 1
        self.truncate(position)
        n_chars = ctx.n_chars
        anchors = self._anchors[-1] if self._anchors else (0,) * len(self.patterns)
        matches: list[PhraseMatch] = []
        if self.patterns:
            if position == 0:
                self._prompt_tail = prompt_tail(ctx)[-CONTEXT:]
            elif _joins_previous(ctx, position):
                # A mark that NFC joins to the character before changes text the anchors may have passed:
                # search again what is still held back (within the window).
                floor = max(ctx.char_start(min(ctx.committed, position)), ctx.char_start(position) - self.window)
                anchors = tuple(min(anchor, floor) for anchor in anchors)
            first = ctx.token_at_char(max(0, min(anchors) - CONTEXT))
            lead = self._prompt_tail if first == 0 else ""
            base = ctx.char_start(first) - len(lead)  # the text offset of text[0] (negative inside the prompt)
            form = CanonicalText(lead + ctx.text_from(first))  # searched in NFC form, offsets mapped back
            text = form.text
            probe = None if final else text + "a"
            after_word = bool(text) and self._word_char.match(text[-1]) is not None
            found: list[PhraseMatch] = []
            anchors = tuple(
                form.start(self._search(i, text, probe, after_word, form.index(anchor - base), found)) + base
                for i, anchor in enumerate(anchors)
            )
            matches = [PhraseMatch(base + form.start(m.start), base + form.end(m.end), m.index) for m in found]
        self._anchors.append(anchors)
        closed = not anchors or min(anchors) >= n_chars
        self._closed.append(position + 1 if closed else (self._closed[-1] if self._closed else 0))
        return matches

    def _search(
        self,
        index: int,
        text: str,
        probe: str | None,
        after_word: bool,
        pos: int,
        matches: list[PhraseMatch],
    ) -> int:
        """Report the matches of pattern ``index`` in ``text[pos:]``; return its new anchor (in ``text``).

        ``probe`` is ``text`` with a word character appended, or ``None`` at the end of the text
        (``final``); ``after_word`` tells whether ``text`` ends with a spaced word character.
        """
        final = probe is None
        end, first = len(text), pos
        anchor = end
        while pos <= end:
            match = self._find(index, text, pos, partial=not final)
            if match is None:
                break
            start, stop = match.span()
            if match.partial or (stop == end and not final):
                if end - start <= self.window:
                    anchor = start  # it may still complete (or be undone): hold it back
                    break
                pos = max(start + 1, end - self.window)  # too old: give it up
                continue
            if stop > start:
                matches.append(PhraseMatch(start, stop, index))
                pos = stop
            else:  # an empty match (a lookaround): nothing to ban here
                pos = start + 1
        if probe is not None and self._probe_after[index][after_word]:
            anchor = self._boundary_anchor(index, probe, max(first, end - self.window), anchor)
        return anchor

    def _boundary_anchor(self, index: int, probe: str, pos: int, anchor: int) -> int:
        """The start of the first match in ``probe[pos:anchor]`` that reaches its appended character, or ``anchor``."""
        end = len(probe) - 1
        while pos < anchor:
            match = self._find(index, probe, pos, partial=True)
            if match is None or match.start() >= anchor:
                break
            if match.partial or match.end() >= end:
                return match.start()
            pos = match.start() + 1
        return anchor

    def found_in(self, index: int, text: str) -> bool:
        """Whether pattern ``index`` matches a non-empty part of ``text`` (a whole text, not a stream; NFC)."""
        text = canonical(text)
        pos = 0
        while pos <= len(text):
            match = self._find(index, text, pos, partial=False)
            if match is None:
                return False
            if match.end() > match.start():
                return True
            pos = match.start() + 1
        return False

    def _find(self, index: int, text: str, pos: int, partial: bool) -> Any:
        try:
            return self._compiled[index].search(text, pos, partial=partial, timeout=self.timeout)
        except TimeoutError:
            pattern = self.patterns[index].pattern
            raise ValueError(
                f"regex {pattern!r} took longer than {self.timeout} s on {len(text) - pos} characters of text; "
                "simplify it (nested repeats like (a|aa)+ take exponential time)"
            ) from None

    def commit_boundary(self, upto: int) -> int:
        """The last boundary <= ``upto`` after which no pattern could still match."""
        if not self.patterns or upto <= 0:
            return upto
        return self._closed[min(upto, len(self._closed)) - 1] if self._closed else 0
