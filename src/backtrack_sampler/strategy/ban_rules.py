"""What to ban: phrases and regular expressions, each with a factor, and loading them from files.

A factor of 0 is a hard ban (the token that began the match is banned
there); a factor in (0, 1) is a soft ban (that token's probability is
multiplied by the factor there, and the position is sampled again; if the
same token comes back, the text stays); 1 changes nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from backtrack_sampler.core.checks import is_number
from backtrack_sampler.core.text_files import read_lines, read_text

MAX_PATTERN_LENGTH = 1000
"""Default limit on the length of a regex ban, so a client cannot send a huge pattern."""


def _check_factor(factor: object, what: str) -> float:
    if not is_number(factor) or not 0 <= factor <= 1:
        raise ValueError(f"{what}: factor must be a number in [0, 1], got {factor!r}")
    return float(factor)


@dataclass(frozen=True)
class BanPhrase:
    """A phrase to ban, matched on the decoded text (canonically equivalent forms alike: "café" and "cafe" + U+0301).

    Args:
        text: the phrase (non-empty).
        factor: 0 bans it; a value in (0, 1) multiplies the probability of the
            token that began it (a soft ban); 1 allows it.
        ignore_case: compare with Unicode case folding ("STRASSE" matches
            "Straße"); ``None`` takes the list's setting.
        whole_word: at each end of the phrase that is a word character
            (a letter, digit, mark or underscore) of a script written with
            spaces between words, the text must not go on with such a
            character: "avid" is not found in "David" nor in "avidly". An
            end made of a character of a script without spaces (Han,
            Hiragana, Katakana, Thai, Lao, Khmer, Myanmar) matches without a
            boundary: "村里" is found in "村里住着", "iPhone用" in "我的iPhone用了"
            (see ``strategy.word_scripts``). ``False`` matches anywhere (plain
            substring); ``None`` takes the list's setting.
    """

    text: str
    factor: float = 0.0
    ignore_case: bool | None = None
    whole_word: bool | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text:
            raise ValueError(f"a banned phrase must be a non-empty string, got {self.text!r}")
        object.__setattr__(self, "factor", _check_factor(self.factor, f"phrase {self.text!r}"))
        for name in ("ignore_case", "whole_word"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"phrase {self.text!r}: {name} must be True, False or None, got {value!r}")


@dataclass(frozen=True)
class BanRegex:
    """A regular expression to ban (syntax of the ``regex`` package), searched in the decoded text.

    Args:
        pattern: the pattern, used as written (add ``(?i)`` or ``(?fi)`` to
            ignore case). It must not match the empty string.
        factor: as for ``BanPhrase``.
    """

    pattern: str
    factor: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.pattern, str) or not self.pattern:
            raise ValueError(f"a banned regex must be a non-empty string, got {self.pattern!r}")
        object.__setattr__(self, "factor", _check_factor(self.factor, f"regex {self.pattern!r}"))


def as_phrases(items: Iterable[object], name: str = "slops") -> list[BanPhrase]:
    """``BanPhrase`` objects from strings, ``(phrase, factor)`` pairs or ``BanPhrase`` objects."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{name} must be a list of phrases, got the string {items!r}")
    phrases = []
    for i, item in enumerate(items):
        if isinstance(item, BanPhrase):
            phrases.append(item)
        elif isinstance(item, str):
            if not item:
                raise ValueError(f"{name}[{i}]: each slop must be a non-empty string, got {item!r}")
            phrases.append(BanPhrase(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str):
            if not item[0]:
                raise ValueError(f"{name}[{i}]: each slop must be a non-empty string, got {item[0]!r}")
            phrases.append(BanPhrase(item[0], _check_factor(item[1], f"{name}[{i}] ({item[0]!r})")))
        else:
            raise ValueError(f"{name}[{i}]: expected a non-empty string or a (phrase, factor) pair, got {item!r}")
    return phrases


def as_patterns(items: Iterable[object], name: str = "regex") -> list[BanRegex]:
    """``BanRegex`` objects from strings, ``(pattern, factor)`` pairs or ``BanRegex`` objects."""
    if isinstance(items, (str, bytes)):
        raise TypeError(f"{name} must be a list of patterns, got the string {items!r}")
    patterns = []
    for i, item in enumerate(items):
        if isinstance(item, BanRegex):
            patterns.append(item)
        elif isinstance(item, str) and item:
            patterns.append(BanRegex(item))
        elif isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str) and item[0]:
            patterns.append(BanRegex(item[0], _check_factor(item[1], f"{name}[{i}] ({item[0]!r})")))
        else:
            raise ValueError(f"{name}[{i}]: expected a non-empty pattern or a (pattern, factor) pair, got {item!r}")
    return patterns


def load_ban_list(path: str | os.PathLike[str]) -> list[BanPhrase]:
    """Read banned phrases from a file.

    A ``.json`` file holds a list of phrases or of ``[phrase, factor]``
    pairs (the two may be mixed). Any other file holds one phrase per line;
    blank lines and lines starting with ``#`` are skipped, and the phrase is
    the line without its line break (spaces are kept).

    Raises:
        ValueError: naming the file and the entry or line that is wrong.

    Example:
        >>> load_ban_list("slop.json")  # doctest: +SKIP
        [BanPhrase(text='tapestry', factor=0.0, ...), BanPhrase(text='delve', factor=0.3, ...)]
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            return _from_json(read_text(path), path)
        return _from_lines(path)
    except OSError as exc:  # NotRegularFileError too: a directory or a device is no ban list
        raise ValueError(f"cannot read the ban list {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: the ban list is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _from_lines(path: Path) -> list[BanPhrase]:
    """One phrase per line (a line ends at a line feed only: see ``core.text_files``)."""
    phrases = []
    for line in read_lines(path):
        try:
            text = line.text()
        except UnicodeDecodeError as exc:
            at = line.offset + exc.start
            raise ValueError(f"{path}: the ban list is not UTF-8 text ({exc.reason} at byte {at})") from None
        if text.strip() and not text.lstrip().startswith("#"):
            phrases.append(BanPhrase(text))
    return phrases


def _from_json(content: str, path: Path) -> list[BanPhrase]:
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list):
        kind = type(data).__name__
        raise ValueError(f"{path}: expected a JSON list of phrases or [phrase, factor] pairs, got a {kind}")
    phrases = []
    for i, item in enumerate(data):
        where = f"{path}: entry {i}"
        if isinstance(item, str) and item:
            phrases.append(BanPhrase(item))
        elif isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and item[0]:
            phrases.append(BanPhrase(item[0], _check_factor(item[1], f"{where} ({item[0]!r})")))
        else:
            raise ValueError(f"{where}: expected a non-empty string or a [phrase, factor] pair, got {item!r}")
    return phrases
