"""The decoded text of the generated tokens, kept incrementally.

Appending a token or truncating to a position costs O(1) amortized; text
never splits a multi-byte UTF-8 character: a token that ends mid-character
contributes its characters to the token that completes them. The bytes of a
character that the last token leaves unfinished are in no piece
(``unfinished_end`` finds them); invalid bytes elsewhere read as U+FFFD.
"""

from __future__ import annotations

import bisect
import codecs
from collections.abc import Callable


class TokenText:
    """Per-token decoded pieces of a token sequence."""

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pieces: list[str] = []
        self._char_ends: list[int] = []
        self._pending: list[bool] = []  # token left bytes of an unfinished character
        self._states: list[tuple[bytes, int]] = []

    def __len__(self) -> int:
        """Number of tokens."""
        return len(self.pieces)

    @property
    def n_chars(self) -> int:
        return self._char_ends[-1] if self._char_ends else 0

    def append(self, token: int) -> str:
        """Add one token; return the characters it completed."""
        piece = self._decoder.decode(self._token_bytes(token))
        state = self._decoder.getstate()
        self.pieces.append(piece)
        self._char_ends.append(self.n_chars + len(piece))
        self._pending.append(bool(state[0]))
        self._states.append(state)
        return piece

    def truncate(self, n_tokens: int) -> None:
        """Keep the first ``n_tokens`` tokens."""
        del self.pieces[n_tokens:], self._char_ends[n_tokens:]
        del self._pending[n_tokens:], self._states[n_tokens:]
        self._decoder.setstate(self._states[-1] if self._states else (b"", 0))

    def ends_mid_character(self, position: int) -> bool:
        """Whether token ``position`` left bytes of a character that a later token completes."""
        return self._pending[position]

    def unfinished_end(self) -> tuple[int, int]:
        """The bytes of a character that the last token leaves unfinished: ``(first token, bytes)``.

        ``first token`` is where the trailing tokens that carry nothing but
        those bytes begin (``len(self)`` when there are none: the last token
        also completed characters, or the text ends between characters);
        ``bytes`` counts the unfinished character's bytes so far (0 when the
        text ends between characters). A token that completes characters and
        then begins the unfinished one is not counted among those tokens: a
        token cannot be split.
        """
        n_tokens = len(self.pieces)
        if not n_tokens or not self._pending[-1]:
            return n_tokens, 0
        first = n_tokens
        while first > 0 and self._pending[first - 1] and not self.pieces[first - 1]:
            first -= 1
        return first, len(self._states[-1][0])

    def char_start(self, position: int) -> int:
        """Index of the first character completed by token ``position``."""
        return self._char_ends[position - 1] if position > 0 else 0

    def text_from(self, position: int) -> str:
        """Text of the tokens from ``position`` on."""
        return "".join(self.pieces[position:])

    def token_at_char(self, char_index: int) -> int:
        """The token in which the bytes of character ``char_index`` began."""
        token = bisect.bisect_right(self._char_ends, char_index)
        if token >= len(self.pieces) or char_index != self.char_start(token):
            return token
        # The character opens this token's text: its first bytes may lie in
        # earlier tokens that left it unfinished.
        while token > 0 and self._pending[token - 1]:
            token -= 1
            if self.pieces[token]:
                break
        return token
