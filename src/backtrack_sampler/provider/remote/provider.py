"""``OpenAICompatibleProvider``: generate through a remote engine with an OpenAI-compatible ``/v1/completions``.

vLLM, SGLang and ``backtrack-sampler serve`` accept a prompt of token ids and
return, for every generated token, its id and the top-k log-probabilities
(``logprobs`` with ``return_tokens_as_token_ids``). This provider sends token
ids only, never text the server would re-tokenize, and gives the engine the
top-k log-probabilities as logits (every other entry is ``-inf``): it declares
``gives_full_logits = False``, so the sampler refuses strategies that reshape
the whole distribution.

Two ways to generate, chosen by ``mode``:

- **chunk**: the remote engine samples up to ``chunk_size`` tokens per
  request, streamed, with the generation's sampling settings. The engine takes
  them one by one (``propose``) while the strategy checks each. On a rewind the
  stream is closed (the server stops generating) and the next request starts
  from the kept prefix, which the server's prefix cache makes cheap. For
  strategies that detect and rewind (AntiSlop, Replace, regex).
- **step**: one token per request. For strategies that adjust the logits: the
  engine samples locally from the top-k.

``"auto"`` (default) picks chunk mode when the strategy leaves the
distribution alone and step mode otherwise.

A position with banned tokens (after a rewind) is sampled remotely, under
its bans only. vLLM's ``logit_bias`` would weigh on every position of a
request, so without help the provider spends a one-token request on that
position (``logit_bias`` -100 on each banned id), then a new chunk. With our
logits processor loaded in vLLM (``--logits-processors
backtrack_sampler.vllm_plugin:PositionBans``), the bans travel in the next
chunk request itself, scoped to its first position (``position_rules``): one
request per rewind. ``position_bans="auto"`` (default) asks the server once
whether it has the plugin (``capability``) and falls back to ``logit_bias``
when it has not.

The plugin also applies soft bans (a factor on a token's probability at one
position): ``propose`` takes a position's penalties and sends them with its
bans, so the remote engine samples it over the whole distribution; without
the plugin it returns ``None`` for such a position. (The engine itself samples
a penalized position locally, from the top-k it already has, and sends no
request for it: a soft-banned rewind costs one request either way.)

Which strategies run in chunk mode (the remote engine samples, the strategy
checks): those that only watch the text and rewind with bans or penalties:
AntiSlop (hard and soft bans, phrases and regex), LoopGuard, Replace, JSON
without its prefilter, and chains of them. Those that adjust the logits at every position
(JSON with its prefilter, the server's ``logit_bias`` and presence/frequency
penalties, a strategy's own ``adjust_logits``) run in step mode: their
adjustment depends on the text so far, so no rule sent ahead can replace it.
Those that reshape the whole distribution (creative writing, adaptive
temperature, human guidance, debug) need full logits and are refused.

Example:
    >>> provider = OpenAICompatibleProvider(  # doctest: +SKIP
    ...     "http://127.0.0.1:8000/v1", "SmolLM2", tokenizer="SmolLM2-135M-Instruct.Q4_1.gguf"
    ... )
    >>> sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence, Set
from typing import Any, Literal

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider, GenerationSetup
from backtrack_sampler.core.checks import check_int, is_number
from backtrack_sampler.provider.remote import http, wire
from backtrack_sampler.provider.remote.capability import PositionRulesSupport, Setting
from backtrack_sampler.provider.remote.position_rules import PositionRules
from backtrack_sampler.provider.remote.stream import Chunk
from backtrack_sampler.provider.remote.tokenizer import Tokenizer, load_tokenizer
from backtrack_sampler.provider.remote.wire import RemoteError

Mode = Literal["auto", "step", "chunk"]
MODES = ("auto", "step", "chunk")


class OpenAICompatibleProvider(BaseProvider):
    """Generate through a remote OpenAI-compatible engine, with a local tokenizer.

    Args:
        base_url: the server's URL, with or without the trailing ``/v1``
            (``http://127.0.0.1:8000`` or ``http://127.0.0.1:8000/v1``).
        model: the model name the server serves.
        api_key: sent as a bearer token when given.
        tokenizer: the served model's tokenizer: a path to its ``.gguf`` or HF
            directory, a ``transformers`` tokenizer, or a provider on the same
            model (see ``remote.tokenizer.load_tokenizer``).
        mode: ``"chunk"``, ``"step"`` or ``"auto"`` (see the module docstring).
        chunk_size: the most tokens per (streamed) request in chunk mode; the
            stream is closed as soon as a rewind makes the rest useless.
        top_logprobs: log-probabilities asked per position (vLLM caps it with
            ``--max-logprobs``, 20 by default).
        timeout: seconds to wait for one HTTP request.
        context_length: the served context length; ``None`` asks the server
            (vLLM lists ``max_model_len`` under ``/v1/models``).
        max_retries: retries of a request after a connection error, a 429 or a 5xx.
        client: an ``httpx.Client`` to use (and to share with ``spawn``'s
            providers); by default the provider makes its own, and each
            spawned provider too.
        sleep: waits the given seconds between retries (``time.sleep``; a test
            passes one that records the delays instead).
        position_bans: whether the server applies position-scoped bans (vLLM
            with ``backtrack_sampler.vllm_plugin:PositionBans``): ``True``,
            ``False``, or ``"auto"`` to ask it once, at the first position
            with bans (``uses_position_bans``).

    Raises:
        ValueError: a bad argument, or the server does not serve ``model``.
        RemoteError: the server cannot be reached.
    """

    gives_full_logits = False
    proposes_tokens = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        tokenizer: Any = None,
        mode: Mode = "auto",
        chunk_size: int = 64,
        top_logprobs: int = 20,
        timeout: float = 120.0,
        context_length: int | None = None,
        max_retries: int = 2,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
        position_bans: Setting = "auto",
    ) -> None:
        import httpx

        super().__init__()
        _check_arguments(base_url, model, tokenizer, mode)
        self.chunk_size = check_int("chunk_size", chunk_size, low=1)
        self.top_logprobs = check_int("top_logprobs", top_logprobs, low=1)
        if not is_number(timeout) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        self.retry = http.Retry(check_int("max_retries", max_retries), sleep=sleep)
        if context_length is not None:
            check_int("context_length", context_length, low=1, hint=" or None")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.model = model
        self.mode: Mode = mode
        self.position_rules = PositionRulesSupport(position_bans)  # shared with spawned providers
        self.tokenizer: Tokenizer = load_tokenizer(tokenizer)
        self.eos_token_ids = frozenset(self.tokenizer.eos_token_ids)
        self._owns_client = client is None
        self._client_settings = {
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        }
        self.client = client if client is not None else httpx.Client(**self._client_settings)
        if context_length is None:
            context_length = http.served_context_length(self.client, self.base_url, self.model)
        self.context_length = context_length
        self._setup = GenerationSetup()
        self._chunk: Chunk | None = None
        self.requests = 0
        """HTTP requests sent (counters for benchmarks: they never reset)."""
        self.remote_tokens = 0
        """Tokens the remote engine generated, those the engine discarded included."""

    def spawn(self) -> OpenAICompatibleProvider:
        """A new provider for another concurrent sequence: same server and tokenizer, state of its own.

        It gets an HTTP client of its own (a client passed to the constructor
        is shared instead): a stream a forgotten provider leaves open is then
        closed, when garbage-collected, in a connection pool nobody else is
        using (httpx's pool lock is not reentrant).
        """
        import httpx

        clone = copy.copy(self)
        BaseProvider.__init__(clone)  # an empty token list of its own
        if self._owns_client:
            clone.client = httpx.Client(**self._client_settings)
        clone._setup, clone._chunk = GenerationSetup(), None
        clone.requests = clone.remote_tokens = 0
        return clone

    def close(self) -> None:
        """Close the open stream, and the HTTP client if this provider made it."""
        self._drop_chunk()
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> OpenAICompatibleProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the tokenizer ------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_bos=add_bos)

    def token_bytes(self, token: int) -> bytes:
        return self.tokenizer.token_bytes(token)

    def apply_chat_template(self, messages: Sequence[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages)

    def uses_position_bans(self, prompt: Sequence[int]) -> bool:
        """Whether bans go to the server scoped to their position (its plugin).

        With ``position_bans="auto"`` the first call asks the server, with two
        greedy requests after ``prompt`` (token ids), and every provider
        spawned from the same one shares the answer (``capability``).
        """
        return self.position_rules.check(prompt, self._ask_greedy)

    # -- the engine's hooks -------------------------------------------------------------------
    def begin_generation(self, setup: GenerationSetup) -> None:
        self._drop_chunk()
        self._setup = setup

    def prefill(self, tokens: Sequence[int]) -> np.ndarray:
        # No memo: the first chunk of every generation is sampled afresh.
        if not tokens:
            raise ValueError("the prompt must hold at least one token")
        self._kv_tokens = []
        return self.forward(tokens)

    def propose(
        self, prefix: Sequence[int], banned: Set[int], penalties: Mapping[int, float] | None = None
    ) -> int | None:
        """The token the remote engine samples after ``prefix``, under the position's bans and penalties.

        ``penalties`` maps tokens to the log of their factor (the engine's
        record of soft bans); they are applied remotely only by a server with
        the plugin, else ``None`` lets the engine sample locally.
        """
        banned = frozenset(banned)
        penalties = dict(penalties or {})
        rules = None
        if banned or penalties:
            if not self.uses_position_bans(prefix):
                if penalties:
                    return None  # logit_bias cannot scale a probability at one position: sample locally
                # logit_bias would weigh on every token of a chunk: one banned position, one request.
                self._drop_chunk()  # the server stops the stream now, not after this request's round trip
                token = self._request(prefix, 1, sample=True, banned=banned).tokens[0]
                return None if token in banned else token
            # The next chunk, with the rules at its first position only.
            factors = {t: min(1.0, max(math.exp(log_factor), 1e-300)) for t, log_factor in penalties.items()}
            rules = PositionRules(bans={0: banned}, penalties={0: factors})
        chunk = self._chunk
        j = chunk.index_of(prefix) if chunk is not None else None
        if rules is not None or chunk is None or j is None or j < chunk.next_proposal:
            # Not generated yet, or proposed once already: a rewind without a ban asks for a fresh draw.
            chunk, j = self._fetch(prefix, sample=True, rules=rules)
        chunk.next_proposal = j + 1
        token = chunk.tokens[j]
        if token in banned:
            return None  # the server did not apply the bans: the engine samples locally
        end = self._setup.max_length
        if token in self.eos_token_ids or (end is not None and len(prefix) + 1 >= end):
            chunk.close()  # the generation ends here: free the connection (the tokens stay readable)
        return token

    # -- BaseProvider primitives ------------------------------------------------------------
    def _forward(self, tokens: Sequence[int]) -> np.ndarray:
        prefix = self._kv_tokens + list(tokens)
        chunk = self._chunk
        j = chunk.index_of(prefix) if chunk is not None else None
        if chunk is None or j is None:
            chunk, j = self._fetch(prefix, sample=self._setup.remote_sampling)
        return self._logits(chunk.top_logprobs[j])

    def _rewind(self, n_tokens: int) -> None:
        """Nothing to free here: the server keeps (and reuses) its own prefix cache."""

    # -- requests ---------------------------------------------------------------------------------
    @property
    def chunked(self) -> bool:
        """Whether this generation asks for chunks of tokens (else one token per request)."""
        return self.mode == "chunk" or (self.mode == "auto" and self._setup.remote_sampling)

    def _fetch(self, prefix: Sequence[int], sample: bool, rules: PositionRules | None = None) -> tuple[Chunk, int]:
        """A new chunk after ``prefix`` (closing the previous one), with its first position received."""
        self._drop_chunk()
        length = self.chunk_size if self.chunked else 1
        for limit in (self._setup.max_length, self.context_length):
            if limit is not None:
                length = min(length, limit - len(prefix))
        length = max(1, length)
        if length == 1:
            self._chunk = self._request(prefix, 1, sample=sample, rules=rules)
        else:
            self._chunk = self._stream(prefix, length, sample=sample, rules=rules)
        if self._chunk.index_of(prefix) != 0:
            raise RemoteError(f"the server returned no token after a prompt of {len(prefix)} tokens")
        return self._chunk, 0

    def _drop_chunk(self) -> None:
        if self._chunk is not None:
            self._chunk.close()
            self._chunk = None

    def _body(
        self,
        prefix: Sequence[int],
        max_tokens: int,
        sample: bool,
        banned: Set[int] = frozenset(),
        rules: PositionRules | None = None,
    ) -> dict:
        # Greedy when only the log-probabilities matter: cheapest, and no seed to spend.
        sampling = wire.sampling_fields(self._setup.params, self._setup.rng) if sample else wire.GREEDY
        xargs = rules.to_xargs() if rules else None
        return wire.completion_body(self.model, prefix, max_tokens, self.top_logprobs, sampling, banned, xargs)

    def _request(
        self,
        prefix: Sequence[int],
        max_tokens: int,
        sample: bool,
        banned: Set[int] = frozenset(),
        rules: PositionRules | None = None,
        answered: Callable[[], None] | None = None,
    ) -> Chunk:
        """One non-streamed completion of ``max_tokens`` after ``prefix``."""
        body = self._body(prefix, max_tokens, sample, banned, rules)
        response = self._post(body, stream=False, answered=answered)
        try:
            payload = response.json()
        except ValueError as exc:
            raise RemoteError(f"the server answered something that is not JSON: {response.text[:200]!r}") from exc
        tokens, tops, _ = wire.parse_choice(wire.first_choice(payload), self.vocab_size)
        if not tokens:
            raise RemoteError(f"the server returned no token after a prompt of {len(prefix)} tokens")
        if answered is None:
            self.remote_tokens += len(tokens)
        return Chunk(prefix, tokens, tops)

    def _ask_greedy(self, prompt: Sequence[int], max_tokens: int, rules: PositionRules | None) -> list[int]:
        """The greedy tokens after ``prompt``, for the probe (not counted in ``requests``)."""
        return self._request(prompt, max_tokens, sample=False, rules=rules, answered=lambda: None).tokens

    def _stream(self, prefix: Sequence[int], max_tokens: int, sample: bool, rules: PositionRules | None) -> Chunk:
        """A streamed completion of up to ``max_tokens`` after ``prefix``, received lazily."""
        body = self._body(prefix, max_tokens, sample, rules=rules)
        body["stream"] = True
        response = self._post(body, stream=True)
        return Chunk(prefix, pieces=self._pieces(response), close=response.close)

    def _pieces(self, response: Any) -> Iterator[wire.Piece]:
        """The pieces of a streamed answer, counted in ``remote_tokens``."""
        for payload in wire.sse_payloads(response.iter_bytes()):
            piece = wire.parse_choice(wire.first_choice(payload), self.vocab_size)
            self.remote_tokens += len(piece[0])
            yield piece

    def _post(self, body: dict[str, Any], stream: bool, answered: Callable[[], None] | None = None) -> Any:
        """POST to ``/completions`` (``http.post``); the response has status 200."""
        url = self.base_url + "/completions"
        return http.post(self.client, url, body, stream, self.retry, answered or self._answered)

    def _answered(self) -> None:
        self.requests += 1

    def _logits(self, top: dict[int, float]) -> np.ndarray:
        """Top-k log-probabilities as a logits vector, shape (vocab,): ``-inf`` outside the top-k."""
        logits = np.full(self.vocab_size, -np.inf, dtype=np.float32)
        if top:
            logits[list(top)] = list(top.values())
        return logits


def _check_arguments(base_url: Any, model: Any, tokenizer: Any, mode: Any) -> None:
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if tokenizer is None:
        raise ValueError(
            "tokenizer is required: pass the served model's .gguf file or HF directory (token ids are sent, never text)"
        )
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
