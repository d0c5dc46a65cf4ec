"""Input lines: reading one (``read_line``), checking its fields, and the ``Job`` it becomes (``make_job``).

Every check that needs no model is done here, when the run is planned, so a
bad line is reported before anything runs. Sampling fields are checked by
``SamplingParams`` and the strategy spec by the strategy registry
(``strategy.registry.check_spec``): the places that know their rules.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from backtrack_sampler.batch.errors import LineError
from backtrack_sampler.core.checks import check_int, is_int
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.ban_scope import BanScope

LINE_FIELDS = (
    "id",
    "prompt",
    "raw",
    "messages",
    "max_tokens",
    "temperature",
    "seed",
    "top_p",
    "top_k",
    "min_p",
    "banned_strings",
    "exempt_prompt_terms",
    "ban_scope",
    "strategy",
)
NO_STRATEGY = "none"  # a line's strategy that asks for none (not even the AntiSlop of the bans)

# How a job's prompt reaches the model (``Job.prompt_mode``, written in its result record): through the
# model's chat template as a user message (a ``messages`` line, or a ``prompt`` line, as ``generate`` does),
# or as it is (a ``prompt`` line with ``"raw": true``, or any ``prompt`` line of a ``--raw`` run).
CHAT, RAW = "chat", "raw"

# A line's sampling field -> the SamplingParams field it sets.
_SAMPLING_FIELDS = {
    "max_tokens": "max_new_tokens",
    "temperature": "temperature",
    "top_k": "top_k",
    "top_p": "top_p",
    "min_p": "min_p",
    "seed": "seed",
}


@dataclass(frozen=True)
class BatchDefaults:
    """Settings of lines that do not give their own (the command line's options)."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 50
    top_p: float | None = None
    min_p: float | None = None
    seed: int | None = None
    bans: tuple[Any, ...] = ()  # phrases for every line (str or BanPhrase), added to each line's own
    strategy: str | None = None
    exempt_prompt_terms: bool = False  # AntiSlop's options for the bans of lines that do not set them
    ban_scope: BanScope | None = None
    raw: bool = False  # send a line's prompt as it is, without the chat template (``--raw``; a line's "raw" wins)


@dataclass(frozen=True)
class Job:
    """One input line ready to run: checked, its defaults filled in."""

    id: str | int
    line: int
    prompt: str | None
    messages: list[dict[str, str]] | None
    params: SamplingParams
    bans: tuple[Any, ...]
    strategy: str | dict[str, Any] | None
    ban_options: dict[str, Any] = field(default_factory=dict)
    """AntiSlop's ``exempt_prompt_terms`` and ``scope`` for the bans, when set (an antislop spec's params win)."""
    raw: bool = False
    """Whether ``prompt`` goes to the model as it is; else through the chat template as a user message."""

    @property
    def prompt_mode(self) -> str:
        """``"raw"`` (the prompt as it is) or ``"chat"`` (through the model's chat template)."""
        return RAW if self.raw else CHAT

    @property
    def chat_messages(self) -> list[dict[str, str]] | None:
        """What goes through the chat template: the line's ``messages``, or its ``prompt`` as a user message."""
        if self.raw:
            return None
        return self.messages if self.messages is not None else [{"role": "user", "content": self.prompt or ""}]

    @property
    def sampling(self) -> dict[str, Any]:
        """The sampling settings as ``BacktrackSampler.stream`` keywords (``params`` as a dict)."""
        return {name: value for name, value in dataclasses.asdict(self.params).items() if name != "max_length"}


def read_line(text: str, line: int) -> tuple[dict[str, Any], str | int]:
    """The object on one input line and its id; raises ``LineError("invalid_line")``."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LineError("invalid_line", f"line {line} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LineError("invalid_line", f"line {line} must be a JSON object, got {type(data).__name__}")
    job_id = data.get("id")
    if not (is_int(job_id) or (isinstance(job_id, str) and job_id)):
        raise LineError("invalid_line", f"line {line}: id must be a non-empty string or an integer, got {job_id!r}")
    return data, job_id


def make_job(data: dict[str, Any], job_id: str | int, line: int, defaults: BatchDefaults) -> Job:
    """A ``Job`` from a line's object; raises ``LineError("invalid_params")`` naming the field."""
    unknown = sorted(set(data) - set(LINE_FIELDS))
    if unknown:
        raise LineError("invalid_params", f"unknown field {unknown[0]!r} (known: {', '.join(LINE_FIELDS)})")
    prompt, messages = _prompt_and_messages(data)
    raw = _raw(data, defaults)
    params = sampling_params(data, defaults)
    banned = data.get("banned_strings") or []
    if not isinstance(banned, list) or not all(isinstance(b, str) and b for b in banned):
        raise LineError("invalid_params", f"banned_strings must be a list of non-empty strings, got {banned!r}")
    bans = (*defaults.bans, *banned)
    strategy = data.get("strategy", defaults.strategy)
    check_strategy(strategy, bans)
    options = ban_options(data, defaults, bans, strategy)
    return Job(job_id, line, prompt, messages, params, bans, strategy, options, raw)


def ban_options(data: dict[str, Any], defaults: BatchDefaults, bans: tuple[Any, ...], strategy: Any) -> dict[str, Any]:
    """The line's ``exempt_prompt_terms`` and ``ban_scope`` over ``defaults``, as AntiSlop's keywords.

    Raises:
        LineError: naming the field, for a bad value, or for a line that sets one with nothing to ban.
    """
    exempt, scope = data.get("exempt_prompt_terms"), data.get("ban_scope")
    if exempt is not None and not isinstance(exempt, bool):
        raise LineError("invalid_params", f"exempt_prompt_terms must be true or false, got {exempt!r}")
    try:
        scope = BanScope.of(scope, "ban_scope")
    except ValueError as exc:
        raise LineError("invalid_params", str(exc)) from None
    if (exempt is not None or scope is not None) and not bans and not _is_antislop(strategy):
        name = "exempt_prompt_terms" if exempt is not None else "ban_scope"
        raise LineError("invalid_params", f"{name} applies to banned_strings (or --ban) or an antislop strategy")
    options: dict[str, Any] = {}
    if exempt if exempt is not None else defaults.exempt_prompt_terms:
        options["exempt_prompt_terms"] = True
    scope = scope if scope is not None else defaults.ban_scope
    if scope is not None:
        options["scope"] = scope
    return options


def _is_antislop(spec: Any) -> bool:
    """Whether ``spec`` names AntiSlop (by name or alias; a chain does not)."""
    name = spec.get("name") if isinstance(spec, dict) else spec
    entry = registry.lookup(name) if isinstance(name, str) else None
    return entry is not None and entry.name == "antislop"


def parse_line(text: str, line: int, defaults: BatchDefaults) -> Job:
    """A ``Job`` from one input line; raises ``LineError`` naming what is wrong."""
    data, job_id = read_line(text, line)
    return make_job(data, job_id, line, defaults)


def sampling_params(data: dict[str, Any], defaults: BatchDefaults) -> SamplingParams:
    """The line's ``SamplingParams``: its own fields over ``defaults``; raises ``LineError`` naming a bad one."""
    given = {name: data[name] for name in _SAMPLING_FIELDS if data.get(name) is not None}
    fields = {_SAMPLING_FIELDS[name]: getattr(defaults, name) for name in _SAMPLING_FIELDS}
    fields.update({_SAMPLING_FIELDS[name]: value for name, value in given.items()})
    try:
        if "max_tokens" in given:
            check_int("max_tokens", given["max_tokens"], low=1)
        return SamplingParams(**fields)
    except ValueError as exc:
        raise LineError("invalid_params", str(exc)) from None


def _prompt_and_messages(data: dict[str, Any]) -> tuple[str | None, list[dict[str, str]] | None]:
    prompt, messages = data.get("prompt"), data.get("messages")
    if (prompt is None) == (messages is None):
        raise LineError("invalid_params", "give exactly one of prompt (text) and messages (chat)")
    if prompt is not None and (not isinstance(prompt, str) or not prompt):
        raise LineError("invalid_params", f"prompt must be a non-empty string, got {prompt!r}")
    if messages is not None and not (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    ):
        raise LineError("invalid_params", "messages must be a non-empty list of {role, content} string objects")
    return prompt, messages


def _raw(data: dict[str, Any], defaults: BatchDefaults) -> bool:
    """Whether the line's prompt goes as it is: its ``raw``, else the run's; ``messages`` always take the template."""
    raw = data.get("raw")
    if raw is not None and not isinstance(raw, bool):
        raise LineError("invalid_params", f"raw must be true or false, got {raw!r}")
    if data.get("messages") is not None:
        if raw:
            raise LineError("invalid_params", "raw applies to prompt; messages always go through the chat template")
        return False
    return defaults.raw if raw is None else raw


def is_no_strategy(spec: Any) -> bool:
    """Whether a line's strategy spec is ``"none"`` (or ``{"name": "none"}``)."""
    name = spec.get("name") if isinstance(spec, dict) and set(spec) <= {"name", "params"} else spec
    return name == NO_STRATEGY


def check_strategy(spec: Any, bans: tuple[Any, ...]) -> None:
    """Check a line's strategy spec (names, shapes, parameter names); raises ``LineError`` naming the problem.

    The constructors check the parameters' values when the job runs (``job.prepare``).
    """
    if spec is None:
        return
    if is_no_strategy(spec):
        if bans:
            raise LineError("invalid_params", f"strategy {NO_STRATEGY!r} cannot apply banned_strings (or --ban)")
        return
    try:
        registry.check_spec(spec, interactive=False)
    except registry.StrategySpecError as exc:
        if exc.code == "unknown_strategy" and exc.param == "strategy.name":
            names = ", ".join([NO_STRATEGY, *registry.strategy_names(interactive=False)])
            message = f"strategy must be one of {names} (or {{name, params}}), got {spec!r}"
            raise LineError("invalid_params", message) from None
        raise LineError("invalid_params", str(exc)) from None
