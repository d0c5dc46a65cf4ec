r"""Where words have edges: scripts written without spaces, and the form text is compared in.

Whole-word bans (``phrase_tracker``), the word assertions of regex bans
(``regex_tracker``) and LoopGuard's words follow one rule. A word character
(``core.text_units.is_word_char``) of a script that separates words with
spaces (Latin, Cyrillic, Greek, Hangul, ...) is *spaced*: a whole-word phrase
that begins or ends with one needs a word boundary there ("avid" is not in
"David"). A word character of a script written without spaces between words
(Han, Hiragana, Katakana, Bopomofo, Thai, Lao, Khmer, Myanmar) is *unspaced*:
any position next to one may be a word edge, so a phrase edge made of one
matches without a boundary ("村里" is found in "小村庄，村里住着"), and
LoopGuard counts each such character as a word. A mixed phrase gets the
rule of each edge: "iPhone用" needs a boundary before "i" only.

Text is compared under canonical equivalence (what NFC normalization makes
equal) and Unicode case folding: ``fold`` gives each character's canonical
decomposition, case-folded ("é" and "e" + U+0301 compare equal, "ß" as
"ss"), so a phrase matcher fed character by character still maps each match
back to the original characters; ``canonical`` gives the NFC form of words
and case-sensitive matches.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from backtrack_sampler.core.text_units import is_word_char

UNSPACED_SCRIPTS = ("Han", "Hiragana", "Katakana", "Bopomofo", "Thai", "Lao", "Khmer", "Myanmar")

# The code points of those scripts, and the marks used only with them ("ー", the kana voicing marks):
# (first, last), sorted. A code point is unspaced when it is also a word character, so the ranges may
# span punctuation and unassigned code points. tests/test_ban_scripts.py checks them against the
# Unicode Script and Script_Extensions properties (through the ``regex`` package).
UNSPACED_RANGES = (
    (0x0E01, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x3005, 0x302D),  # 々 〆 〇, Hangzhou numerals, ideographic tone marks
    (0x3031, 0x312F),  # kana repeat marks, Hiragana, Katakana, Bopomofo
    (0x3192, 0x3229),  # kanbun, Bopomofo extended, Katakana extension, parenthesized ideographs
    (0x3280, 0x3289),  # circled ideographs
    (0x3400, 0x9FFF),  # CJK unified ideographs and extension A
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF66, 0xFF9F),  # halfwidth Katakana
    (0x16FE3, 0x16FE3),  # old Chinese iteration mark
    (0x16FF0, 0x16FF1),  # Vietnamese alternate reading marks
    (0x1AFF0, 0x1B16F),  # Kana extended and supplement
    (0x1D360, 0x1D371),  # counting rod numerals
    (0x20000, 0x3FFFF),  # CJK ideographs of planes 2 and 3
)
_FIRSTS = [first for first, _ in UNSPACED_RANGES]


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


UNSPACED_CLASS = "[" + "".join(f"{_escape(a)}-{_escape(b)}" for a, b in UNSPACED_RANGES) + "]"
"""A character class (for ``re`` and ``regex``) of the ranges above; a match is unspaced when it is also ``\\w``."""
UNSPACED_CHAR = rf"(?:(?=\w){UNSPACED_CLASS})"
"""A pattern for one unspaced word character."""
SPACED_WORD_CHAR = rf"(?:(?!{UNSPACED_CLASS})\w)"
"""A pattern for one spaced word character."""

# Lookarounds: the character before / after is (or is not) a spaced word character, or is unspaced.
_SPACED_BEFORE = rf"(?<=\w)(?<!{UNSPACED_CLASS})"
_NOT_SPACED_BEFORE = rf"(?:(?<!\w)|(?<={UNSPACED_CLASS}))"
_SPACED_AFTER = rf"(?=\w)(?!{UNSPACED_CLASS})"
_NOT_SPACED_AFTER = rf"(?:(?!\w)|(?={UNSPACED_CLASS}))"
_UNSPACED_BEFORE = rf"(?<=\w)(?<={UNSPACED_CLASS})"
_UNSPACED_AFTER = rf"(?=\w)(?={UNSPACED_CLASS})"
_BOUNDARY = (
    f"(?:{_SPACED_BEFORE}{_NOT_SPACED_AFTER}|{_NOT_SPACED_BEFORE}{_SPACED_AFTER}|{_UNSPACED_BEFORE}|{_UNSPACED_AFTER})"
)
WORD_ASSERTIONS = {
    "b": _BOUNDARY,
    "B": f"(?!{_BOUNDARY})",
    "m": f"(?:{_NOT_SPACED_BEFORE}{_SPACED_AFTER}|{_UNSPACED_AFTER})",
    "M": f"(?:{_SPACED_BEFORE}{_NOT_SPACED_AFTER}|{_UNSPACED_BEFORE})",
}
r"""What the ``regex`` word assertions ``\b``, ``\B``, ``\m`` (word start) and ``\M`` (word end) become.

Between two spaced characters they mean what ``regex`` means; next to an
unspaced word character there is always a word edge.
"""

_unspaced: dict[str, bool] = {}
_spaced: dict[str, bool] = {}


def is_unspaced(char: str) -> bool:
    """Whether ``char`` is a word character of a script written without spaces between words."""
    known = _unspaced.get(char)
    if known is None:
        code = ord(char)
        i = bisect_right(_FIRSTS, code) - 1
        known = i >= 0 and code <= UNSPACED_RANGES[i][1] and is_word_char(char)
        _unspaced[char] = known
    return known


def is_spaced_word_char(char: str) -> bool:
    """Whether ``char`` is a word character that needs a word boundary at a whole-word phrase's edge.

    Example:
        >>> [is_spaced_word_char(c) for c in "iP用 "]
        [True, True, False, False]
    """
    known = _spaced.get(char)
    if known is None:
        known = _spaced[char] = is_word_char(char) and not is_unspaced(char)
    return known


def word_spans(text: str, apostrophes: str = "") -> Iterator[tuple[int, int]]:
    """``(start, end)`` of each word of ``text``: each unspaced character, and each run of spaced word characters.

    A run goes on across one of ``apostrophes`` between two of its characters ("don't").

    Example:
        >>> [text[a:b] for text in ["我的iPhone, don't"] for a, b in word_spans(text, "'")]
        ['我', '的', 'iPhone', "don't"]
    """
    i, n = 0, len(text)
    while i < n:
        start, i = i, i + 1
        if is_unspaced(text[start]) or not is_word_char(text[start]):
            if is_word_char(text[start]):
                yield start, i
            continue
        while i < n:
            if is_spaced_word_char(text[i]):
                i += 1
            elif text[i] in apostrophes and i + 1 < n and is_spaced_word_char(text[i + 1]):
                i += 2
            else:
                break
        yield start, i


def canonical(text: str) -> str:
    """``text`` in NFC form: canonically equivalent texts are equal."""
    return unicodedata.normalize("NFC", text)


def fold(char: str) -> str:
    """``char`` decomposed (NFD) and case-folded: Unicode's canonical caseless form.

    Example:
        >>> fold("É") == fold("E\u0301") == "e\u0301"
        True
    """
    return unicodedata.normalize("NFD", unicodedata.normalize("NFD", char).casefold())


class CanonicalText:
    """A text in NFC form (``text``), and where each of its characters comes from in the original.

    The original is cut into pieces that NFC leaves apart (a character and the marks that combine with
    it); each piece is normalized alone, so a character of ``text`` maps back to its piece.

    Example:
        >>> form = CanonicalText("a cafe\u0301!")
        >>> form.text == "a café!", form.start(5), form.end(6), form.index(7)
        (True, 5, 7, 6)
    """

    def __init__(self, original: str) -> None:
        self.text = original
        self._length = len(original)
        self._starts: list[int] | None = None  # per character of text: where its piece begins (None: the same text)
        self._ends: list[int] = []
        if not unicodedata.is_normalized("NFC", original):
            self._split(original)

    def _split(self, original: str) -> None:
        pieces, starts, ends = [], [], []
        begin = 0
        for i in range(1, len(original) + 1):
            if i < len(original) and not _apart(original[begin:i], original[i]):
                continue
            piece = canonical(original[begin:i])
            pieces.append(piece)
            starts += [begin] * len(piece)
            ends += [i] * len(piece)
            begin = i
        self.text, self._starts, self._ends = "".join(pieces), starts, ends

    def start(self, i: int) -> int:
        """Where character ``i`` of ``text`` (or the end, for ``len(text)``) begins in the original."""
        if self._starts is None:
            return i
        return self._starts[i] if i < len(self._starts) else self._length

    def end(self, i: int) -> int:
        """Where a span of ``text`` ending at ``i`` ends in the original."""
        if self._starts is None:
            return i
        return self._ends[i - 1] if i > 0 else 0

    def index(self, offset: int) -> int:
        """The first character of ``text`` whose piece begins at ``offset`` of the original or later."""
        return offset if self._starts is None else bisect_left(self._starts, offset)


def combines(piece: str, char: str) -> bool:
    """Whether NFC joins ``char`` to the ``piece`` before it (a combining mark, a Hangul vowel after its consonant)."""
    return not _apart(piece, char)


def _apart(piece: str, char: str) -> bool:
    return unicodedata.combining(char) == 0 and canonical(piece + char) == canonical(piece) + canonical(char)
