"""``RemotePool``: N concurrent sequences on one remote engine, as a server's ``SequencePool``.

The server (``server.worker.ModelWorker``) runs one worker thread per slot of
a sequence pool, each with the provider that ``provider()`` gave it. Here
every slot is an ``OpenAICompatibleProvider`` spawned from one base: the same
engine, tokenizer and plugin answer, an HTTP client of its own. The engine
does the batching (vLLM's continuous batching); the pool only bounds how many
generations this process sends at once.

Nothing outlives a generation: a provider keeps no state of one request for
the next (``begin_generation`` closes any stream left open, ``prefill``
starts from the prompt's token ids alone) and the engine keeps only its own
prefix cache, which changes speed, never the answer. So any number of
servers over one engine (replicas behind a load balancer) answer a request
alike, whichever served the client's previous one.

Example:
    >>> base = OpenAICompatibleProvider(url, "smollm2", tokenizer="SmolLM2.gguf")  # doctest: +SKIP
    >>> app = create_app(RemotePool(base, n_slots=16), "smollm2")  # doctest: +SKIP
"""

from __future__ import annotations

import threading

from backtrack_sampler.core.checks import check_int
from backtrack_sampler.provider.remote.provider import OpenAICompatibleProvider


class RemotePool:
    """``n_slots`` sequences at once on the engine of ``base`` (the server's ``SequencePool`` protocol).

    Args:
        base: the provider on the engine; the pool spawns its slots' providers
            from it and closes them, and ``base`` itself, in ``close``.
        n_slots: how many generations may run at once.
    """

    def __init__(self, base: OpenAICompatibleProvider, n_slots: int) -> None:
        self.n_slots = check_int("n_slots", n_slots, low=1)
        self.base = base
        self._spawned: list[OpenAICompatibleProvider] = []
        self._lock = threading.Lock()

    @property
    def context_length(self) -> int | None:
        """The engine's context length (``max_model_len``), or ``None`` when it does not say."""
        return self.base.context_length

    def provider(self) -> OpenAICompatibleProvider:
        """A provider of its own for one generation at a time (the server also plans requests with one)."""
        spawned = self.base.spawn()
        with self._lock:
            self._spawned.append(spawned)
        return spawned

    def close(self) -> None:
        """Close every provider's HTTP client (open streams included)."""
        with self._lock:
            providers, self._spawned = [*self._spawned, self.base], []
        for provider in providers:
            provider.close()
