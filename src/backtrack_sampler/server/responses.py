"""Response bodies and stream chunks, shaped as OpenAI defines them for each endpoint.

A formatter turns the endpoint-neutral outputs of a generation
(``TextOut``, ``BacktrackOut``, ``ChoiceDone``) into the JSON objects of
``/v1/completions`` (``text_completion``) or ``/v1/chat/completions``
(``chat.completion`` / ``chat.completion.chunk``). Extension fields
(``backtrack_event``, ``backtrack_events``, ``backtrack_stats``) appear only
when the request asked for backtrack events.

Logprobs are those of the raw model (before logit bias, penalties, strategies
and temperature), like vLLM's default. For completions they follow vLLM's
shape: ``tokens``, ``token_logprobs``, ``top_logprobs`` (the chosen token
first, then the top N) and ``text_offset`` (where each token's text starts in
the generated text).
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from backtrack_sampler.provider.base_provider import BaseProvider
from backtrack_sampler.server.generation import BacktrackOut, ChoiceDone, Output, TextOut, stats_json
from backtrack_sampler.server.request_strategy import TokenRecord

LOGPROB_FLOOR = -9999.0  # what -inf is sent as (JSON has no infinity)


@dataclass
class ChoiceState:
    """What a non-streamed response collects for one choice."""

    text: list[str] = field(default_factory=list)
    tokens: list[TokenRecord] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    done: ChoiceDone | None = None


class Formatter:
    """Shared by both endpoints: ids, usage, token naming, and collecting a non-streamed response.

    Args:
        provider: the model (to name and spell tokens).
        model_name: the id put into every object.
        top_logprobs: how many alternatives to show per token; ``None`` when logprobs were not asked for.
        token_ids: name tokens ``"token_id:<id>"`` (vLLM's ``return_tokens_as_token_ids``).
        backtrack_events: add the extension fields.
        include_usage: streamed: end with a chunk that carries ``usage``.
        prompt_tokens: tokens of each distinct prompt (counted once each in ``usage``).
    """

    object_name = ""
    chunk_object_name = ""
    id_prefix = ""

    def __init__(
        self,
        provider: BaseProvider,
        model_name: str,
        top_logprobs: int | None,
        token_ids: bool,
        backtrack_events: bool,
        include_usage: bool,
        prompt_tokens: Iterable[int],
    ) -> None:
        self.provider = provider
        self.model_name = model_name
        self.top_logprobs = top_logprobs
        self.token_ids = token_ids
        self.backtrack_events = backtrack_events
        self.include_usage = include_usage
        self.prompt_tokens = sum(prompt_tokens)
        self.completion_tokens = 0
        self.id = f"{self.id_prefix}{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.choices: dict[int, ChoiceState] = {}

    # -- naming tokens ----------------------------------------------------------------
    def token_name(self, token: int, text: str | None = None) -> str:
        """How a token is written in logprobs: its text (or ``token_id:<id>``)."""
        if self.token_ids:
            return f"token_id:{token}"
        return text if text is not None else self.provider.decode([token])

    @staticmethod
    def logprob(value: float) -> float:
        return value if math.isfinite(value) else LOGPROB_FLOOR

    # -- shared pieces ----------------------------------------------------------------
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def envelope(self, choices: list[dict[str, Any]], chunk: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "object": self.chunk_object_name if chunk else self.object_name,
            "created": self.created,
            "model": self.model_name,
            "choices": choices,
        }
        if chunk and self.include_usage:
            body["usage"] = None
        return body

    def usage_chunk(self) -> dict[str, Any]:
        body = self.envelope([], chunk=True)
        body["usage"] = self.usage()
        return body

    # -- collecting a non-streamed response ---------------------------------------------
    def collect(self, item: Output) -> None:
        state = self.choices.setdefault(item.index, ChoiceState())
        if isinstance(item, TextOut):
            state.text.append(item.text)
            state.tokens.extend(item.tokens)
        elif isinstance(item, BacktrackOut):
            state.events.append(item.event)
        elif isinstance(item, ChoiceDone):
            state.done = item
            self.completion_tokens += item.completion_tokens

    def response(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            state = self.choices[index]
            choice = self.final_choice(index, "".join(state.text), state.tokens)
            choice["finish_reason"] = state.done.finish_reason if state.done else "length"
            if self.backtrack_events:
                choice["backtrack_events"] = state.events
                choice["backtrack_stats"] = stats_json(state.done.stats) if state.done else None
            choices.append(choice)
        body = self.envelope(choices, chunk=False)
        body["usage"] = self.usage()
        return body

    # -- streaming --------------------------------------------------------------------
    def chunks(self, item: Output) -> list[dict[str, Any]]:
        """The stream chunks for one output (none for a backtrack event nobody asked for)."""
        if isinstance(item, TextOut):
            return [self.envelope([self.text_choice(item)], chunk=True)]
        if isinstance(item, BacktrackOut):
            if not self.backtrack_events:
                return []
            choice = self.empty_choice(item.index)
            choice["backtrack_event"] = item.event
            return [self.envelope([choice], chunk=True)]
        self.completion_tokens += item.completion_tokens
        choice = self.empty_choice(item.index)
        choice["finish_reason"] = item.finish_reason
        if self.backtrack_events:
            choice["backtrack_stats"] = stats_json(item.stats)
        return [self.envelope([choice], chunk=True)]

    # -- endpoint-specific --------------------------------------------------------------
    def text_choice(self, item: TextOut) -> dict[str, Any]:
        raise NotImplementedError

    def empty_choice(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def final_choice(self, index: int, text: str, tokens: list[TokenRecord]) -> dict[str, Any]:
        raise NotImplementedError


class CompletionFormatter(Formatter):
    """``/v1/completions``: ``text_completion`` objects and chunks."""

    object_name = chunk_object_name = "text_completion"
    id_prefix = "cmpl-"

    def logprobs(self, tokens: Iterable[TokenRecord]) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for record in tokens:
            if record.token < 0:
                continue
            name = self.token_name(record.token, record.text)
            out["tokens"].append(name)
            out["text_offset"].append(record.offset)
            if record.logprob is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            chosen = self.logprob(record.logprob)
            out["token_logprobs"].append(chosen)
            top = {name: chosen}
            for token, value in record.top[: self.top_logprobs]:
                top.setdefault(self.token_name(token), self.logprob(value))
            out["top_logprobs"].append(top)
        return out

    def text_choice(self, item: TextOut) -> dict[str, Any]:
        return {"index": item.index, "text": item.text, "logprobs": self.logprobs(item.tokens), "finish_reason": None}

    def empty_choice(self, index: int) -> dict[str, Any]:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": None}

    def final_choice(self, index: int, text: str, tokens: list[TokenRecord]) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": self.logprobs(tokens), "finish_reason": None}


class ChatFormatter(Formatter):
    """``/v1/chat/completions``: ``chat.completion`` objects and ``chat.completion.chunk`` chunks."""

    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._started: set[int] = set()

    def logprobs(self, tokens: Iterable[TokenRecord]) -> dict[str, Any] | None:
        if self.top_logprobs is None:
            return None
        content = []
        for record in tokens:
            if record.token < 0:
                continue
            entry: dict[str, Any] = {
                "token": self.token_name(record.token, record.text),
                "logprob": LOGPROB_FLOOR if record.logprob is None else self.logprob(record.logprob),
                "bytes": list(self.provider.token_bytes(record.token)),
                "top_logprobs": [
                    {
                        "token": self.token_name(token),
                        "logprob": self.logprob(value),
                        "bytes": list(self.provider.token_bytes(token)),
                    }
                    for token, value in record.top[: self.top_logprobs]
                ],
            }
            content.append(entry)
        return {"content": content}

    def chunks(self, item: Output) -> list[dict[str, Any]]:
        chunks = []
        if item.index not in self._started:
            self._started.add(item.index)
            first = {"index": item.index, "delta": {"role": "assistant", "content": ""}, "logprobs": None}
            first["finish_reason"] = None
            chunks.append(self.envelope([first], chunk=True))
        return chunks + super().chunks(item)

    def text_choice(self, item: TextOut) -> dict[str, Any]:
        return {
            "index": item.index,
            "delta": {"content": item.text},
            "logprobs": self.logprobs(item.tokens),
            "finish_reason": None,
        }

    def empty_choice(self, index: int) -> dict[str, Any]:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": None}

    def final_choice(self, index: int, text: str, tokens: list[TokenRecord]) -> dict[str, Any]:
        return {
            "index": index,
            "message": {"role": "assistant", "content": text},
            "logprobs": self.logprobs(tokens),
            "finish_reason": None,
        }
