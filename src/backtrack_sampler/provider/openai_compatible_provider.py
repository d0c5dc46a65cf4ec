"""A provider for engines reached over HTTP with an OpenAI-compatible ``/v1/completions``.

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

In both modes a position with banned tokens is sampled remotely by a one-token
request whose ``logit_bias`` puts -100 on each banned id, so positional bans
hold exactly. ``"auto"`` (default) picks chunk mode when the strategy leaves
the distribution alone and step mode otherwise.

Example:
    >>> provider = OpenAICompatibleProvider(  # doctest: +SKIP
    ...     "http://127.0.0.1:8000/v1", "SmolLM2", tokenizer="SmolLM2-135M-Instruct.Q4_1.gguf"
    ... )
    >>> sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Iterator, Sequence, Set
from typing import Any, Literal

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider, GenerationSetup
from backtrack_sampler.provider.remote_tokenizer import Tokenizer, load_tokenizer

Mode = Literal["auto", "step", "chunk"]
MODES = ("auto", "step", "chunk")
BAN_BIAS = -100.0  # the strongest bias the OpenAI API (and vLLM) accepts
_TOKEN_PREFIX = "token_id:"


class RemoteError(RuntimeError):
    """The remote engine refused a request or answered something this provider cannot use."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


# One streamed piece: token ids, the top-k log-probabilities of each position, the finish reason.
_Piece = tuple[list[int], list[dict[int, float]], "str | None"]


class _Chunk:
    """Tokens the remote engine generates after ``start``, received as they come.

    Args:
        start: the token ids (prompt and generated) the request continued.
        pieces: what the server sends, piece by piece; ``None`` when all of it
            is given as ``tokens`` and ``top_logprobs`` already.
        close: closes the connection, which tells the server to stop.
    """

    def __init__(
        self,
        start: Sequence[int],
        tokens: list[int] | None = None,
        top_logprobs: list[dict[int, float]] | None = None,
        pieces: Iterator[_Piece] | None = None,
        close: Any = None,
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


class OpenAICompatibleProvider(BaseProvider):
    """Generate through a remote OpenAI-compatible engine, with a local tokenizer.

    Args:
        base_url: the server's URL, with or without the trailing ``/v1``
            (``http://127.0.0.1:8000`` or ``http://127.0.0.1:8000/v1``).
        model: the model name the server serves.
        api_key: sent as a bearer token when given.
        tokenizer: the served model's tokenizer: a path to its ``.gguf`` or HF
            directory, a ``transformers`` tokenizer, or a provider on the same
            model (see ``remote_tokenizer.load_tokenizer``).
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
    ) -> None:
        import httpx

        super().__init__()
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if tokenizer is None:
            raise ValueError(
                "tokenizer is required: pass the served model's .gguf file or HF directory "
                "(token ids are sent, never text)"
            )
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        for name, value, low in (("chunk_size", chunk_size, 1), ("top_logprobs", top_logprobs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if context_length is not None and (
            isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1
        ):
            raise ValueError(f"context_length must be an integer >= 1 or None, got {context_length!r}")
        root = base_url.rstrip("/")
        self.base_url = root if root.endswith("/v1") else root + "/v1"
        self.model = model
        self.mode: Mode = mode
        self.chunk_size = chunk_size
        self.top_logprobs = top_logprobs
        self.max_retries = max_retries
        self.tokenizer: Tokenizer = load_tokenizer(tokenizer)
        self.eos_token_ids = frozenset(self.tokenizer.eos_token_ids)
        self._owns_client = client is None
        self._client_settings = {
            "timeout": timeout,
            "headers": {"Authorization": f"Bearer {api_key}"} if api_key else {},
        }
        self.client = client if client is not None else httpx.Client(**self._client_settings)
        self.context_length = context_length if context_length is not None else self._served_context_length()
        self._setup = GenerationSetup()
        self._chunk: _Chunk | None = None
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

    def propose(self, prefix: Sequence[int], banned: Set[int]) -> int | None:
        if banned:
            # logit_bias would weigh on every token of a chunk: one banned position, one request.
            token = self._request(prefix, 1, sample=True, banned=banned).tokens[0]
            return None if token in banned else token
        chunk = self._chunk
        j = chunk.index_of(prefix) if chunk is not None else None
        if chunk is None or j is None or j < chunk.next_proposal:
            # Not generated yet, or proposed once already: a rewind without a ban asks for a fresh draw.
            chunk, j = self._fetch(prefix, sample=True)
        chunk.next_proposal = j + 1
        token = chunk.tokens[j]
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

    def _fetch(self, prefix: Sequence[int], sample: bool) -> tuple[_Chunk, int]:
        """A new chunk after ``prefix`` (closing the previous one), with its first position received."""
        self._drop_chunk()
        length = self.chunk_size if self.chunked else 1
        for limit in (self._setup.max_length, self.context_length):
            if limit is not None:
                length = min(length, limit - len(prefix))
        length = max(1, length)
        if length == 1:
            self._chunk = self._request(prefix, 1, sample=sample)
        else:
            self._chunk = self._stream(prefix, length, sample=sample)
        if self._chunk.index_of(prefix) != 0:
            raise RemoteError(f"the server returned no token after a prompt of {len(prefix)} tokens")
        return self._chunk, 0

    def _drop_chunk(self) -> None:
        if self._chunk is not None:
            self._chunk.close()
            self._chunk = None

    def _body(self, prefix: Sequence[int], max_tokens: int, sample: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": [int(t) for t in prefix],
            "max_tokens": max_tokens,
            "logprobs": self.top_logprobs,
            "return_tokens_as_token_ids": True,
        }
        # Greedy when only the log-probabilities matter: cheapest, and no seed to spend.
        body.update(self._sampling_fields() if sample else {"temperature": 0.0})
        return body

    def _sampling_fields(self) -> dict[str, Any]:
        params = self._setup.params
        fields: dict[str, Any] = {"temperature": float(params.temperature)}
        if params.temperature > 0:
            if params.top_k:
                fields["top_k"] = int(params.top_k)
            if params.top_p is not None:
                fields["top_p"] = float(params.top_p)
            if params.min_p:
                fields["min_p"] = float(params.min_p)
            # A seed per request, drawn from the generation's generator: reproducible with a seed,
            # and a chunk asked again after a rewind is a fresh draw.
            fields["seed"] = int(self._setup.rng.integers(0, 2**31 - 1))
        return fields

    def _request(self, prefix: Sequence[int], max_tokens: int, sample: bool, banned: Set[int] = frozenset()) -> _Chunk:
        """One non-streamed completion of ``max_tokens`` after ``prefix``."""
        body = self._body(prefix, max_tokens, sample)
        if banned:
            body["logit_bias"] = {str(int(t)): BAN_BIAS for t in sorted(banned)}
        response = self._send(body, stream=False)
        try:
            payload = response.json()
        except ValueError as exc:
            raise RemoteError(f"the server answered something that is not JSON: {response.text[:200]!r}") from exc
        tokens, tops, _ = self._piece(_first_choice(payload))
        if not tokens:
            raise RemoteError(f"the server returned no token after a prompt of {len(prefix)} tokens")
        self.remote_tokens += len(tokens)
        return _Chunk(prefix, tokens, tops)

    def _stream(self, prefix: Sequence[int], max_tokens: int, sample: bool) -> _Chunk:
        """A streamed completion of up to ``max_tokens`` after ``prefix``, received lazily."""
        body = self._body(prefix, max_tokens, sample)
        body["stream"] = True
        response = self._send(body, stream=True)
        return _Chunk(prefix, pieces=self._pieces(response), close=response.close)

    def _pieces(self, response: Any) -> Iterator[_Piece]:
        """Parse server-sent events (``data: {json}`` lines, ending with ``data: [DONE]``)."""
        for line in response.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:") :].strip()
            if data == "[DONE]":
                return
            try:
                payload = json.loads(data)
            except ValueError as exc:
                raise RemoteError(f"the server streamed something that is not JSON: {data[:200]!r}") from exc
            piece = self._piece(_first_choice(payload))
            self.remote_tokens += len(piece[0])
            yield piece

    def _send(self, body: dict[str, Any], stream: bool) -> Any:
        """POST to ``/completions``, retrying connection errors, 429 and 5xx; the response is status 200."""
        import httpx

        url = self.base_url + "/completions"
        for attempt in range(self.max_retries + 1):
            retry = attempt < self.max_retries
            try:
                request = self.client.build_request("POST", url, json=body)
                response = self.client.send(request, stream=stream)
            except httpx.TransportError as exc:
                if retry:
                    time.sleep(0.5 * 2**attempt)
                    continue
                raise RemoteError(f"cannot reach {url}: {exc}") from exc
            self.requests += 1
            if response.status_code == 200:
                return response
            if stream:
                response.read()
                response.close()
            if retry and (response.status_code == 429 or response.status_code >= 500):
                time.sleep(0.5 * 2**attempt)
                continue
            raise RemoteError(
                f"{url} answered {response.status_code}: {_error_message(response)}", response.status_code
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def _served_context_length(self) -> int | None:
        import httpx

        url = self.base_url + "/models"
        try:
            response = self.client.get(url)
        except httpx.TransportError as exc:
            raise RemoteError(f"cannot reach {url}: {exc}") from exc
        if response.status_code != 200:
            return None  # not every server lists its models; the engine then needs max_new_tokens
        try:
            models = response.json().get("data") or []
        except (ValueError, AttributeError):
            return None
        for entry in models:
            if isinstance(entry, dict) and entry.get("id") == self.model:
                length = entry.get("max_model_len")
                return length if isinstance(length, int) and length > 0 else None
        served = ", ".join(repr(e.get("id")) for e in models if isinstance(e, dict))
        raise ValueError(f"model {self.model!r} is not served at {self.base_url} (served: {served or 'none'})")

    # -- parsing -------------------------------------------------------------------------------
    def _piece(self, choice: dict[str, Any]) -> _Piece:
        """Token ids and top-k log-probabilities of one (possibly streamed) choice."""
        finish = choice.get("finish_reason")
        logprobs = choice.get("logprobs")
        if not logprobs:
            if choice.get("text"):
                raise RemoteError(
                    "the server returned text without logprobs; it must support `logprobs` on /v1/completions"
                )
            return [], [], finish
        tokens = [self._token_id(t) for t in logprobs.get("tokens") or []]
        tops = logprobs.get("top_logprobs") or []
        chosen = logprobs.get("token_logprobs") or [None] * len(tokens)
        if len(tops) != len(tokens) or len(chosen) != len(tokens):
            raise RemoteError(
                f"the server returned {len(tokens)} tokens, {len(tops)} top_logprobs "
                f"and {len(chosen)} token_logprobs: they must match"
            )
        top_logprobs = []
        for token, top, logprob in zip(tokens, tops, chosen, strict=True):
            entry = {self._token_id(k): _finite(v) for k, v in (top or {}).items()}
            if token not in entry:
                entry[token] = _finite(logprob)
            top_logprobs.append(entry)
        return tokens, top_logprobs, finish

    def _token_id(self, key: Any) -> int:
        if not isinstance(key, str) or not key.startswith(_TOKEN_PREFIX):
            raise RemoteError(
                f"the server returned the token {key!r}, not 'token_id:N'; it must support "
                "`return_tokens_as_token_ids` (vLLM, SGLang, backtrack-sampler serve)"
            )
        try:
            token = int(key[len(_TOKEN_PREFIX) :])
        except ValueError:
            raise RemoteError(f"the server returned a malformed token id {key!r}") from None
        if not 0 <= token < self.vocab_size:
            raise RemoteError(
                f"the server returned token id {token}, outside the tokenizer's vocabulary of {self.vocab_size}; "
                "is the tokenizer the served model's?"
            )
        return token

    def _logits(self, top: dict[int, float]) -> np.ndarray:
        """Top-k log-probabilities as a logits vector, shape (vocab,): ``-inf`` outside the top-k."""
        logits = np.full(self.vocab_size, -np.inf, dtype=np.float32)
        if top:
            logits[list(top)] = list(top.values())
        return logits


def _first_choice(payload: Any) -> dict[str, Any]:
    if isinstance(payload, dict) and isinstance(payload.get("error"), (dict, str)):
        error = payload["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise RemoteError(f"the server reported an error: {message}")
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise RemoteError(f"the server's answer has no choices: {str(payload)[:200]!r}")
    return choices[0]


def _finite(value: Any) -> float:
    """A log-probability from JSON; ``None`` or ``-inf`` (an impossible token) becomes a very low number."""
    if value is None:
        return -1e30
    value = float(value)
    return value if math.isfinite(value) else -1e30


def _error_message(response: Any) -> str:
    try:
        error = response.json().get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
    except (ValueError, AttributeError):
        pass
    return response.text[:300] or response.reason_phrase
