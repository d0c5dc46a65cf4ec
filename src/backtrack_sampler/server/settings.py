"""The limits a server enforces on every request, fixed when the app is created."""

from __future__ import annotations

from dataclasses import dataclass, field

from backtrack_sampler.core.checks import check_int, check_optional_int


@dataclass(frozen=True)
class ServerSettings:
    """Settings of one server; every limit answers 400 when a request exceeds it.

    Args:
        model_name: the id the server lists in ``/v1/models`` and puts in every response.
        api_key: when set, every ``/v1/...`` request needs ``Authorization: Bearer <api_key>``.
        max_prompt_tokens: the most tokens a prompt may hold (``None``: the model's context minus one).
        max_tokens_limit: the largest ``max_tokens`` a request may ask for; also the default for
            chat requests that give none (generation still stops at the model's context).
        max_bans: the most entries in ``banned_strings`` and ``banned_regex`` together.
        max_logprobs: the largest ``logprobs`` (completions) or ``top_logprobs`` (chat).
        max_n: the largest ``n`` (the choices of a request run side by side on a batched model, else in turn).
        max_stop: the most stop strings.
        max_regex_length: the longest pattern accepted in ``banned_regex``.
    """

    model_name: str
    api_key: str | None = None
    # ``minimum`` marks a limit: ``serve`` offers it as ``--max-...`` (help from the Args above).
    max_prompt_tokens: int | None = field(default=None, metadata={"minimum": 1})
    max_tokens_limit: int = field(default=4096, metadata={"minimum": 1})
    max_bans: int = field(default=1000, metadata={"minimum": 0})
    max_logprobs: int = field(default=20, metadata={"minimum": 0})
    max_n: int = field(default=8, metadata={"minimum": 1})
    max_stop: int = field(default=16, metadata={"minimum": 0})
    max_regex_length: int = field(default=500, metadata={"minimum": 1})

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ValueError(f"model_name must be a non-empty string, got {self.model_name!r}")
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise ValueError("api_key must be a non-empty string or None, got an empty value")
        check_optional_int("max_prompt_tokens", self.max_prompt_tokens, low=1)
        for name in ("max_tokens_limit", "max_n", "max_regex_length"):
            check_int(name, getattr(self, name), low=1)
        for name in ("max_bans", "max_logprobs", "max_stop"):
            check_int(name, getattr(self, name))
