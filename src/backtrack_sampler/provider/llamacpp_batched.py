"""Many sequences in one llama.cpp context: one ``llama_decode`` per step for all of them.

``BatchedLlamacpp`` owns a llama.cpp context with ``n_slots`` sequence slots
and a scheduler thread. Each generation gets a ``SlotProvider`` (a plain
``BaseProvider``) from ``provider()``: the engine drives it as it drives any
provider, one generation per thread, and stays the only place that decides
what to rewind. The slot provider blocks in ``forward`` while the scheduler
gathers the pending work of every slot into one batch:

1. Wait for work, then for every slot that was in the last batch to ask
   again (they are sampling and deciding in their own threads), at most
   ``gather_s`` seconds.
2. Before a slot's tokens go in, drop its KV cells from the position the
   engine rewound to (``llama_memory_seq_rm`` on that sequence only).
3. Fill one batch: the next token of every running sequence first, then
   chunks of at most ``prefill_chunk`` tokens of the prompts of sequences
   that join (a long prompt does not stall the others), ``n_batch`` in all,
   ordered by sequence id (llama.cpp splits an unordered batch further).
4. ``llama_decode`` once (the GIL is released meanwhile); hand each finished
   request the logits of its last position.

A slot is taken when a generation's prompt arrives (in arrival order, the
free slot whose cached tokens share the longest prefix with the prompt) and
given back when the generation ends (``end_generation``); it keeps its cells
as a cache for the next prompt. A prompt that shares a longer prefix with
another slot's cells copies them (``llama_memory_seq_cp``) instead of
evaluating them again. Each sequence has its own KV stream of ``n_ctx``
cells: a prompt that cannot fit is refused by the engine before the first
token, with the context length in the message.

Example:
    >>> llm = load_llama(n_ctx=2048)  # doctest: +SKIP
    >>> with BatchedLlamacpp(llm, n_slots=8) as batched:  # doctest: +SKIP
    ...     def make_sampler():
    ...         provider = batched.provider()
    ...         return BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))
    ...     results = run_concurrently(make_sampler, prompts, concurrency=8, max_new_tokens=200)
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.checks import check_int, check_number
from backtrack_sampler.core.kv_snapshots import common_prefix
from backtrack_sampler.provider.llamacpp_context import batched_context_params
from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

MIN_COPY = 32
"""Copy another slot's cells only when that saves evaluating at least this many prompt positions."""


@dataclass(eq=False)
class _Request:
    """Tokens one slot wants evaluated after position ``start``; answered with the last position's logits."""

    seq: int
    start: int
    tokens: list[int]
    prefill: bool
    done: threading.Event = field(default_factory=threading.Event)
    logits: np.ndarray | None = None
    error: BaseException | None = None
    evaluated: int = 0
    placed: bool = False  # its cells were made ready (prefix found, stale cells dropped)


@dataclass
class BatchStats:
    """Counters of the scheduler, for benchmarks: decodes, tokens decoded, and the most sequences in one step."""

    decodes: int = 0
    tokens: int = 0
    max_sequences: int = 0
    copies: int = 0
    positions_copied: int = 0
    decode_s: float = 0.0  # seconds spent inside llama_decode
    wait_s: float = 0.0  # seconds the scheduler waited for the slots of the last batch to ask again


class BatchedLlamacpp:
    """One llama.cpp context decoding up to ``n_slots`` sequences per step.

    Args:
        llm: a ``llama_cpp.Llama`` (its model weights, vocabulary and thread
            settings are shared; its own context is left alone).
        n_slots: sequences decoded together (``n_seq_max``).
        n_ctx: positions each sequence may hold, prompt included (default:
            the ``Llama``'s own ``n_ctx``). KV memory grows with
            ``n_slots * n_ctx``.
        n_batch: the most tokens in one decode.
        prefill_chunk: the most prompt tokens of one sequence in one decode.
        gather_s: how long a step waits for slots still sampling.
        flash_attn: llama.cpp's flash attention in this context: ``"auto"``
            (llama.cpp's default: on where the device supports it, every CPU
            included), ``"on"``/``True``, ``"off"``/``False``, or ``None``: the
            ``Llama``'s own setting (``load_llama`` gives ``"auto"``;
            llama-cpp-python's ``Llama`` alone has it off). Keep it as the
            single-sequence provider's ``Llama`` has it: with flash attention on
            one side only, greedy texts part from the single-sequence provider's
            sooner (92 of 128 tokens agreed before the first difference, against
            128 with both alike).
    """

    def __init__(
        self,
        llm: Any,
        n_slots: int = 8,
        n_ctx: int | None = None,
        n_batch: int = 512,
        prefill_chunk: int = 128,
        gather_s: float = 0.05,
        flash_attn: str | bool | None = None,
    ) -> None:
        import llama_cpp

        self.vocab = LlamacppProvider(llm)
        self.n_slots = check_int("n_slots", n_slots, low=1, high=256)
        n_ctx = self.vocab.context_length if n_ctx is None else check_int("n_ctx", n_ctx, low=16)
        self.n_batch = check_int("n_batch", n_batch, low=1)
        self.prefill_chunk = check_int("prefill_chunk", prefill_chunk, low=1)
        self.gather_s = check_number("gather_s", gather_s, low=0)
        self._lib = llama_cpp
        params = batched_context_params(llm, self.n_slots, n_ctx, self.n_batch, flash_attn)
        self._ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self._ctx:
            raise ValueError(
                f"llama.cpp could not create a context of {self.n_slots} slots x {n_ctx} positions; "
                "lower n_slots or n_ctx"
            )
        self._llm = llm  # keeps the model alive as long as the context
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(params.n_batch, 0, 1)
        self.context_length = llama_cpp.llama_n_ctx(self._ctx) // self.n_slots
        self.stats = BatchStats()
        self._cells: list[list[int]] = [[] for _ in range(self.n_slots)]  # tokens each sequence's KV holds
        self._free: list[int] = list(range(self.n_slots))
        self._queue: deque[object] = deque()  # generations waiting for a slot, in arrival order
        self._pending: list[_Request] = []
        self._expected: set[int] = set()  # slots in the last batch: they will ask again soon
        self._held: set[int] = set()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="llama-batch", daemon=True)
        self._thread.start()

    def provider(self) -> SlotProvider:
        """A provider for one generation at a time; it takes a slot when its prompt arrives."""
        if self._closed:
            raise RuntimeError("this BatchedLlamacpp is closed")
        return SlotProvider(self)

    def close(self) -> None:
        """Stop the scheduler and free the context (generations still running get a ``RuntimeError``)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(self._ctx)

    def __enter__(self) -> BatchedLlamacpp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- slots ------------------------------------------------------------------------------
    def acquire(self, tokens: Sequence[int]) -> int:
        """Wait for a free slot (first come, first served); the one whose cells share most of ``tokens``."""
        ticket = object()
        with self._cond:
            self._queue.append(ticket)
            while not self._closed and not (self._free and self._queue[0] is ticket):
                self._cond.wait()
            self._queue.remove(ticket)
            if self._closed:
                raise RuntimeError("this BatchedLlamacpp is closed")
            seq = max(self._free, key=lambda s: common_prefix(self._cells[s], tokens))
            self._free.remove(seq)
            self._held.add(seq)
            self._cond.notify_all()
            return seq

    def release(self, seq: int) -> None:
        """Give a slot back; its cells stay as a cache for the next prompt."""
        with self._cond:
            if seq in self._held:
                self._held.discard(seq)
                self._expected.discard(seq)
                self._free.append(seq)
                self._cond.notify_all()

    def evaluate(self, seq: int, start: int, tokens: Sequence[int], prefill: bool = False) -> tuple[np.ndarray, int]:
        """Evaluate ``tokens`` at positions ``start...`` of sequence ``seq``; (last logits, positions evaluated).

        With ``prefill``, ``tokens`` is the whole prompt (``start`` 0) and the
        longest cached prefix is reused.
        """
        request = _Request(seq, start, list(tokens), prefill)
        with self._cond:
            if self._closed:
                raise RuntimeError("this BatchedLlamacpp is closed")
            self._pending.append(request)
            self._cond.notify_all()
        request.done.wait()
        if request.error is not None:
            raise request.error
        assert request.logits is not None
        return request.logits, request.evaluated

    # -- the scheduler thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                # The slots of the last batch are sampling: from now on the scheduler waits for them.
                waiting_since = time.monotonic() if self._expected & self._held else None
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._fail(self._pending, RuntimeError("this BatchedLlamacpp is closed"))
                    return
                self._gather(time.monotonic() if waiting_since is None else waiting_since)
                work = self._plan()
            self._step(work)

    def _gather(self, waiting_since: float) -> None:
        """Step 1: wait (at most ``gather_s``) until every slot of the last batch has asked again."""
        deadline = time.monotonic() + self.gather_s
        while True:
            asking = {r.seq for r in self._pending}
            missing = (self._expected & self._held) - asking
            now = time.monotonic()
            if not missing or now >= deadline or self._closed:
                self.stats.wait_s += now - waiting_since
                return
            self._cond.wait(deadline - now)

    def _plan(self) -> list[tuple[_Request, list[int], int]]:
        """Steps 2-3: the requests of this batch, each with its chunk of tokens and first position."""
        budget = self.n_batch
        work = []
        for request in sorted(self._pending, key=lambda r: len(r.tokens) > 1):  # single tokens first
            if budget <= 0:
                break
            if not request.placed:
                error = self._place(request)
                if error is not None:
                    self._pending.remove(request)
                    self._fail([request], error)
                    continue
            chunk = request.tokens[: min(self.prefill_chunk, budget)] if len(request.tokens) > 1 else request.tokens
            budget -= len(chunk)
            work.append((request, chunk, request.start))
        # In sequence order: llama.cpp splits a batch whose sequences come out of order into more
        # micro-batches (measured: 16 single tokens took 220 ms shuffled against 140 ms in order).
        work.sort(key=lambda item: item[0].seq)
        return work

    def _place(self, request: _Request) -> ValueError | None:
        """Step 2: reuse the longest cached prefix (a prompt), drop the stale cells; an error if it cannot fit."""
        seq, tokens = request.seq, request.tokens
        if request.start + len(tokens) > self.context_length:
            return ValueError(
                f"sequence {seq} would hold {request.start + len(tokens)} positions; each slot holds "
                f"{self.context_length}"
            )
        if request.prefill:
            keep = self._reuse_prefix(seq, tokens)
            request.start, request.tokens = keep, tokens[keep:]
        cells = self._cells[seq]
        if len(cells) < request.start:
            return ValueError(f"sequence {seq} holds {len(cells)} positions, cannot continue at {request.start}")
        if len(cells) > request.start:
            self._lib.llama_memory_seq_rm(self._mem, seq, request.start, -1)
            del cells[request.start :]
        request.placed = True
        return None

    def _reuse_prefix(self, seq: int, tokens: list[int]) -> int:
        """How much of the prompt ``seq``'s cells will hold before evaluating: its own, or another slot's, copied."""
        limit = len(tokens) - 1  # evaluate at least the last position, for its logits
        own = min(common_prefix(self._cells[seq], tokens), limit)
        best, source = own, None
        for other in range(self.n_slots):
            if other != seq:
                shared = min(common_prefix(self._cells[other], tokens), limit)
                if shared > best:
                    best, source = shared, other
        if source is None or best - own < MIN_COPY:
            return own
        # Across KV streams llama.cpp copies a whole sequence; the cells past the prefix are dropped after.
        self._lib.llama_memory_seq_rm(self._mem, seq, -1, -1)
        self._lib.llama_memory_seq_cp(self._mem, source, seq, -1, -1)
        self._lib.llama_memory_seq_rm(self._mem, seq, best, -1)
        self._cells[seq] = list(tokens[:best])
        self.stats.copies += 1
        self.stats.positions_copied += best - own
        return best

    def _step(self, work: list[tuple[_Request, list[int], int]]) -> None:
        """Step 4: one decode for the batch; answer the requests whose tokens are all evaluated."""
        if not work:
            return
        batch = self._batch
        index = 0
        outputs = []
        for request, chunk, start in work:
            last = len(chunk) == len(request.tokens)
            for offset, token in enumerate(chunk):
                batch.token[index] = token
                batch.pos[index] = start + offset
                batch.n_seq_id[index] = 1
                batch.seq_id[index][0] = request.seq
                batch.logits[index] = last and offset == len(chunk) - 1
                index += 1
            if last:
                outputs.append((request, index - 1))
        batch.n_tokens = index
        started = time.perf_counter()
        code = self._lib.llama_decode(self._ctx, batch)
        self.stats.decode_s += time.perf_counter() - started
        with self._cond:
            if code != 0:
                reason = "no KV cells left" if code == 1 else f"llama_decode returned {code}"
                failed = [request for request, _, _ in work]
                for request in failed:
                    self._pending.remove(request)
                    self._cells[request.seq] = []
                    self._lib.llama_memory_seq_rm(self._mem, request.seq, -1, -1)
                self._fail(failed, RuntimeError(f"batched decode failed: {reason}"))
                return
            self._record(work, outputs, index)

    def _record(self, work: list[tuple[_Request, list[int], int]], outputs: list[tuple[_Request, int]], n: int) -> None:
        for request, chunk, start in work:
            self._cells[request.seq].extend(chunk)
            request.tokens = request.tokens[len(chunk) :]
            request.start = start + len(chunk)
            request.evaluated += len(chunk)
        for request, row in outputs:
            logits = self._lib.llama_get_logits_ith(self._ctx, row)
            request.logits = np.ctypeslib.as_array(logits, shape=(self.vocab.vocab_size,)).copy()
            self._pending.remove(request)
            request.done.set()
        self._expected = {request.seq for request, _ in outputs}
        self.stats.decodes += 1
        self.stats.tokens += n
        self.stats.max_sequences = max(self.stats.max_sequences, len(work))

    @staticmethod
    def _fail(requests: list[_Request], error: BaseException) -> None:
        for request in requests:
            request.error = error
            request.done.set()


class SlotProvider(BaseProvider):
    """A provider for one generation at a time, on a slot of a ``BatchedLlamacpp``.

    Its vocabulary and chat template are the ``Llama``'s; ``forward`` waits
    for the shared decode. The slot is taken at ``prefill`` and given back
    when the engine ends the generation (or by ``release``).
    """

    def __init__(self, batched: BatchedLlamacpp) -> None:
        super().__init__()
        self.batched = batched
        self.context_length = batched.context_length
        self.eos_token_ids = batched.vocab.eos_token_ids
        self.seq: int | None = None

    @property
    def vocab_size(self) -> int:
        return self.batched.vocab.vocab_size

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self.batched.vocab.encode(text, add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.batched.vocab.token_bytes(token)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.batched.vocab.apply_chat_template(messages)

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        tokens = [int(t) for t in tokens]
        if not tokens:
            raise ValueError("the prompt must hold at least one token")
        if self.seq is None:
            self.seq = self.batched.acquire(tokens)
        logits, evaluated = self.batched.evaluate(self.seq, 0, tokens, prefill=True)
        self._kv_tokens = tokens
        self.positions_evaluated += evaluated
        return logits

    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        if self.seq is None:
            raise RuntimeError("prefill a prompt first: it takes the slot")
        return self.batched.evaluate(self.seq, len(self._kv_tokens), tokens)[0]

    def _rewind(self, n_tokens: int) -> None:
        """Nothing to do now: the next evaluation tells the scheduler where the sequence continues."""

    def end_generation(self) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back (the engine does it when a generation ends)."""
        if self.seq is not None:
            self.batched.release(self.seq)
            self.seq = None
            self._kv_tokens = []
