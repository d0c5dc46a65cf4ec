"""The tokens of one completion, received as the server streams them (``Chunk``).

In chunk mode the remote engine samples many tokens per request; the engine
takes them one at a time while the strategy checks each, so a ``Chunk`` reads
the stream lazily, only as far as the engine has gone. Closing it closes the
connection, which tells the server to stop generating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from backtrack_sampler.provider.remote.wire import Piece


class Chunk:
    """Tokens the remote engine generates after ``start``, received as they come.

    Args:
        start: the token ids (prompt and generated) the request continued.
        tokens: tokens already received (a whole, non-streamed answer).
        top_logprobs: the top-k log-probabilities of each of ``tokens``.
        pieces: what the server sends, piece by piece; ``None`` when all of it
            is given as ``tokens`` and ``top_logprobs`` already.
        close: closes the connection, which tells the server to stop.
    """

    def __init__(
        self,
        start: Sequence[int],
        tokens: list[int] | None = None,
        top_logprobs: list[dict[int, float]] | None = None,
        pieces: Iterator[Piece] | None = None,
        close: Callable[[], None] | None = None,
    ) -> None:
        self.start = list(start)
        self.tokens = tokens or []
        self.top_logprobs = top_logprobs or []
        self.next_proposal = 0  # positions before this one were already proposed once
        self._pieces = pieces
        self._close = close

    def index_of(self, prefix: Sequence[int]) -> int | None:
        """Index into ``tokens`` of the position right after ``prefix``, or ``None`` if it is not covered.

        Receives more tokens when needed (blocking) while they agree with ``prefix``.
        """
        n = len(self.start)
        j = len(prefix) - n
        if j < 0 or list(prefix[:n]) != self.start:
            return None
        tail = list(prefix[n:])
        while True:
            received = min(j, len(self.tokens))
            if tail[:received] != self.tokens[:received]:
                return None
            if j < len(self.tokens):
                return j
            if not self._receive():
                return None

    def _receive(self) -> bool:
        """Take the next streamed piece; ``False`` once the stream has ended."""
        import httpx

        while self._pieces is not None:
            try:
                tokens, tops, finish = next(self._pieces)
            except StopIteration:
                self.close()
                return False
            except httpx.TransportError:
                # A broken stream ends the chunk; the next position asks again from its prefix.
                self.close()
                return False
            self.tokens.extend(tokens)
            self.top_logprobs.extend(tops)
            if finish is not None:
                self.close()  # free the connection now rather than at [DONE]
            if tokens:
                return True
        return False

    def close(self) -> None:
        """Stop receiving; the server sees the connection close and stops generating."""
        self._pieces = None
        if self._close is not None:
            close, self._close = self._close, None
            close()
