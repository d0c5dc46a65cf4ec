"""The interface every model backend implements.

A provider tokenizes, decodes, and evaluates tokens on a KV cache that the
engine can rewind. The base class keeps the list of tokens held in that cache,
so a subclass only implements the two primitive operations ``_forward`` and
``_rewind``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field

import numpy as np

from backtrack_sampler.core.kv_snapshots import MIN_GAIN, KVSnapshots, common_prefix
from backtrack_sampler.core.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationSetup:
    """What the engine tells a provider before each generation (``BaseProvider.begin_generation``).

    Attributes:
        params: the generation's sampling settings.
        rng: the generation's random generator; a provider that samples
            remotely draws its request seeds from it.
        remote_sampling: whether the engine will take the tokens ``propose``
            returns (the provider proposes tokens and the strategy leaves the
            distribution alone).
        max_length: the most positions (prompt included) the generation can
            reach, or ``None``.
    """

    params: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0))
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    remote_sampling: bool = False
    max_length: int | None = None


class BackendError(RuntimeError):
    """The model backend itself failed while generating (a remote engine out of reach or refusing).

    Not the request's fault and not a bug here: the server answers it with 502
    (Bad Gateway) and the message, where any other exception is a 500.
    """


class BaseProvider(ABC):
    """A model backend whose logits the engine reads and whose KV cache it rewinds.

    Attributes:
        eos_token_ids: ids that end a generation.
        context_length: the most positions (prompt included) the model holds,
            or ``None`` when unbounded.
        gives_full_logits: ``True`` when ``forward`` returns logits for the whole
            vocabulary (strategies that reshape the distribution need that).
        proposes_tokens: ``True`` when the backend samples by itself (a remote
            engine): the engine then takes ``propose``'s token wherever the
            strategy leaves the distribution alone.
    """

    eos_token_ids: frozenset[int] = frozenset()
    context_length: int | None = None
    gives_full_logits: bool = True
    proposes_tokens: bool = False

    def __init__(self) -> None:
        self._kv_tokens: list[int] = []
        self._prompt_memo: tuple[list[int], np.ndarray] | None = None
        self.positions_evaluated = 0
        self.snapshots: KVSnapshots | None = None

    # -- what a backend implements -------------------------------------------------
    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of token ids (the length of a logits vector)."""

    @abstractmethod
    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        """Token ids of ``text``; special tokens written as text are parsed.

        With ``add_bos`` the model's BOS is prepended if the model wants one
        and the text does not already start with it; never twice.
        """

    @abstractmethod
    def token_bytes(self, token: int) -> bytes:
        """The UTF-8 bytes that ``token`` contributes to the text (b"" for control tokens)."""

    @abstractmethod
    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Append ``tokens`` to the KV cache; return the last position's logits, shape (vocab,), a copy."""

    @abstractmethod
    def _rewind(self, n_tokens: int) -> None:
        """Drop every KV position from ``n_tokens`` on."""

    def _save_state(self) -> tuple[object, int]:
        """The KV cache's state as a blob and its size in bytes (a backend that can save it overrides this)."""
        raise NotImplementedError

    def _load_state(self, blob: object, tokens: Sequence[int]) -> None:
        """Replace the KV cache by a state ``_save_state`` returned while it held ``tokens``.

        Raises ``RuntimeError`` when the backend refuses the state, leaving its cache empty.
        """
        raise NotImplementedError

    # -- shared behaviour -------------------------------------------------------------
    @property
    def eos_token_id(self) -> int | None:
        """The main EOS id (the smallest), for code written against a single id."""
        return min(self.eos_token_ids) if self.eos_token_ids else None

    def decode(self, tokens: Sequence[int] | int) -> str:
        """Text of ``tokens`` (an id or a sequence of ids); invalid UTF-8 becomes U+FFFD."""
        if isinstance(tokens, (int, np.integer)):
            tokens = [int(tokens)]
        return b"".join(self.token_bytes(t) for t in tokens).decode("utf-8", errors="replace")

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        """Render chat ``messages`` with the model's template, ending with the assistant turn."""
        raise NotImplementedError(f"{type(self).__name__} has no chat template")

    @property
    def n_past(self) -> int:
        """Number of positions held in the KV cache."""
        return len(self._kv_tokens)

    def forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Evaluate ``tokens`` after the cached positions; logits of the last one, shape (vocab,)."""
        if not tokens:
            raise ValueError("tokens must not be empty")
        logits = self._forward(tokens)
        self._kv_tokens.extend(tokens)
        self.positions_evaluated += len(tokens)
        return logits

    def rewind(self, n_tokens: int) -> None:
        """Keep only the first ``n_tokens`` cached positions."""
        if not 0 <= n_tokens <= len(self._kv_tokens):
            raise ValueError(f"n_tokens must be in [0, {len(self._kv_tokens)}], got {n_tokens}")
        if n_tokens < len(self._kv_tokens):
            self._rewind(n_tokens)
            del self._kv_tokens[n_tokens:]

    def begin_generation(self, setup: GenerationSetup) -> None:  # noqa: B027 - optional hook
        """Called by the engine before each generation's ``prefill``; local backends ignore it."""

    def end_generation(self) -> None:  # noqa: B027 - optional hook
        """Called by the engine when a generation ends, also when its stream is closed early.

        A provider that holds a shared resource for one generation at a time
        (a slot of a batched backend) gives it back here.
        """

    def propose(
        self, prefix: Sequence[int], banned: Set[int], penalties: Mapping[int, float] | None = None
    ) -> int | None:
        """The token the backend itself samples after ``prefix`` (never one of ``banned``), or ``None``.

        Called (when ``proposes_tokens``) after the logits of that position
        were read, with the whole sequence so far (prompt and generated), the
        tokens banned there and the penalized ones (token -> the log of its
        factor, added to its logit). ``None`` lets the engine sample locally;
        a backend that cannot apply the penalties returns it.
        """
        return None

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the cache hold exactly ``tokens``, reusing the longest cached prefix.

        Returns the logits of the position after ``tokens``. Backends compute
        slightly different logits for a position evaluated alone than within a
        batch, so the logits of the last prompt are memoized: running the same
        prompt again reuses its cache and gives bit-identical results.
        """
        if not tokens:
            raise ValueError("the prompt must hold at least one token")
        tokens = list(tokens)
        n = len(tokens)
        common = common_prefix(self._kv_tokens, tokens)
        if self.snapshots is not None and common < n - 1:
            common = self._switch_state(tokens, common)
        if common == n and self._prompt_memo is not None and self._prompt_memo[0] == tokens:
            self.rewind(n)
            return self._prompt_memo[1].copy()
        self.rewind(min(common, n - 1))  # re-evaluate at least one position for its logits
        logits = self.forward(tokens[self.n_past :])
        self._prompt_memo = (tokens, logits.copy())
        return logits

    def keep_snapshots(self, max_count: int, max_bytes: int = 512 << 20) -> None:
        """Save the KV state of up to ``max_count`` earlier sequences (``max_bytes`` in all).

        A server whose clients take turns then restores a client's state
        instead of re-evaluating its prefix. Raises ``NotImplementedError`` on a
        backend that cannot save its state.
        """
        if type(self)._save_state is BaseProvider._save_state:
            raise NotImplementedError(f"{type(self).__name__} cannot save its KV state")
        self.snapshots = KVSnapshots(max_count, max_bytes)

    def _switch_state(self, tokens: list[int], common: int) -> int:
        """Save the live state if a long part of it is about to go; restore a saved one that fits better.

        Returns the prefix of ``tokens`` the cache now holds.
        """
        assert self.snapshots is not None
        held = len(self._kv_tokens)
        if held - common >= MIN_GAIN and not self.snapshots.covers(self._kv_tokens):
            self.snapshots.add(self._kv_tokens, *self._save_state())
        found = self.snapshots.best(tokens)
        if found is None or found[1] < common + MIN_GAIN:
            return common
        snapshot, shared = found
        self.snapshots.discard(snapshot)
        self._prompt_memo = None
        try:
            self._load_state(snapshot.blob, snapshot.tokens)
        except RuntimeError:  # the backend refused the state: its cache is now empty
            self._kv_tokens = []
            return 0
        self.snapshots.keep(snapshot)
        self._kv_tokens = list(snapshot.tokens)
        self.snapshots.restores += 1
        return shared
