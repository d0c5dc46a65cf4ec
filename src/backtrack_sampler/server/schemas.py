r"""Request bodies of ``/v1/completions`` and ``/v1/chat/completions``, as pydantic models.

Types are strict (``"5"`` is not an integer, ``1`` is not a boolean) so that a
wrong type answers 400 instead of being guessed; an integral number such as
``1.0`` is an integer, as JSON Schema counts it. Text must be valid Unicode: a
lone surrogate (``"\ud800"`` in JSON), which no tokenizer can encode, answers
400 naming the field. Unknown fields are ignored, as OpenAI-compatible servers
do, so clients that send extra settings work.

These models accept exactly what the OpenAPI document (``/openapi.json``, made
from them) allows, the rules between fields included (``ban_scope`` needs bans,
``top_logprobs`` needs ``logprobs``, a ``tool`` message needs ``tool_call_id``:
JSON Schema ``if``/``then``). What a valid request may still be refused for
depends on the server and its model, and is checked later (``prepare``): a
limit (``code: "limit"``), the context (``"context_length_exceeded"``), an
unsupported feature (``"unsupported"``), a token id or a text the model does not
have, a strategy's parameters (``"invalid_value"``). ``tests/test_server_fuzz.py``
holds the two to this.

The fields after the OpenAI ones form the **extension block** (they ride in
the official client's ``extra_body``):

- ``top_k``, ``min_p``: more sampling controls.
- ``banned_strings``, ``banned_regex``: phrases and patterns to ban (AntiSlop);
  ``exempt_prompt_terms`` spares those the prompt uses, ``ban_scope`` bans only
  in the reasoning (``"think"``) or only in the answer (``"answer"``).
- ``strategy``: any built-in strategy with its parameters, or a chain of them.
- ``max_rewinds``, ``rewinds_per_position``: the rewind budget.
- ``backtrack_events``: the stream also carries rewinds and final statistics.
- ``return_tokens_as_token_ids``: logprobs name tokens ``"token_id:<id>"`` (as vLLM does).

Then the **dialect block**: what SillyTavern, KoboldCpp, TabbyAPI, llama.cpp and
vLLM clients send under their own names (``prepare`` resolves them):

- ``seed`` (and KoboldCpp's ``sampler_seed``): any negative seed means random.
- ``banned_strings`` may be one string; ``banned_tokens`` holds phrases (KoboldCpp)
  and token ids (TabbyAPI: integers, digit strings, or ``"1,2"``);
  ``custom_token_bans`` (``"1,2"`` or a list) bans token ids at every position.
- Aliases, read only when the OpenAI name is absent: ``stopping_strings`` and
  ``stop_sequence`` for ``stop``; ``max_new_tokens``, ``max_length`` and
  ``n_predict`` (-1: the server's limit) for ``max_tokens``; ``ban_eos_token``
  for ``ignore_eos``.
- ``ignore_eos``, ``min_tokens`` (vLLM's meaning), ``logit_bias`` keyed by text
  or as llama.cpp's ``[[id or text, bias or false], ...]``, and the ``dry_*``
  fields (a DRY repetition penalty).

Every other field these clients send is ignored; ``server.ignored_fields``
lists them.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError
from typing_extensions import TypeAliasType

from backtrack_sampler.strategy import registry

_CONFIG = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(text: str) -> str | None:
    """Where ``text`` holds a lone surrogate, in words, or ``None`` when it is valid Unicode text."""
    found = _LONE_SURROGATE.search(text)
    return None if found is None else f"U+{ord(found.group()):04X} at index {found.start()}"


def _unicode_text(value: str) -> str:
    where = _lone_surrogate(value)
    if where is not None:
        raise ValueError(f"must be valid Unicode text, got a lone surrogate ({where})")
    return value


def _non_empty_text(value: str) -> str:
    if not value:
        raise ValueError("must not be empty")
    return _unicode_text(value)


def _unicode_key(value: str) -> str:
    where = _lone_surrogate(value)
    if where is not None:
        raise ValueError(f"keys must be valid Unicode text, got a lone surrogate ({where}) in {value!r}")
    return value


def _unicode_json(value: Any) -> Any:
    """Check every string of a JSON value (keys included), without recursion (it may nest deeply)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            where = _lone_surrogate(item)
        elif isinstance(item, dict):
            pending.extend(item.values())
            where = next((w for w in map(_lone_surrogate, item) if w is not None), None)
        else:
            pending.extend(item if isinstance(item, list) else ())
            where = None
        if where is not None:
            raise ValueError(f"must hold valid Unicode text, got a lone surrogate ({where}) in {item!r}")
    return value


def _integral(value: Any) -> Any:
    """``1.0`` -> ``1``: JSON Schema counts an integral number as an integer, so the server does too."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Text = Annotated[str, AfterValidator(_unicode_text)]
"""A string that is valid Unicode text (no lone surrogate)."""
Key = Annotated[str, AfterValidator(_unicode_key)]
"""A key of a JSON object that is valid Unicode text."""
JsonValue = Annotated[Any, AfterValidator(_unicode_json)]
"""Any JSON value whose strings are valid Unicode text."""
Integer = Annotated[int, BeforeValidator(_integral)]
"""An integer, written ``1`` or ``1.0`` (never ``"1"`` or ``true``)."""
# Bounds go inside, before the validator that turns 1.0 into 1: put after it (``Field(ge=1)`` on an
# ``Integer | None``), pydantic checks them but writes pydantic's "ge" into the JSON Schema, not "minimum".
Count = Annotated[int, Field(ge=1), BeforeValidator(_integral)]
"""An integer >= 1 (``Integer``'s forms)."""
NonNegative = Annotated[int, Field(ge=0), BeforeValidator(_integral)]
"""An integer >= 0 (``Integer``'s forms)."""
NonEmptyText = Annotated[str, AfterValidator(_non_empty_text), WithJsonSchema({"type": "string", "minLength": 1})]
"""``Text`` of at least one character (pydantic's own ``min_length`` would refuse a lone surrogate in other words)."""

_TOKEN_ID = re.compile("0|[1-9][0-9]*")
# "(?![\s\S])" ends a pattern where "$" would not: Python's "$" also matches before a final "\n".
TOKEN_ID_PATTERN = r"^(0|[1-9][0-9]*)(?![\s\S])"
"""A token id written as a ``logit_bias`` key: decimal ASCII digits, no sign, space or leading zero."""

# The patterns below are searched as JSON Schema does (``re.search``) and use only what Python and
# JSON Schema's regular expressions read alike (ASCII classes, no \d or \s outside "[\s\S]").
DIGITS_PATTERN = r"^[0-9]+(?![\s\S])"
"""A token id written as a string in ``banned_tokens``: ASCII digits."""
ID_LIST_PATTERN = r"^[ \t]*[0-9]+[ \t]*(,[ \t]*[0-9]+[ \t]*)*(?![\s\S])"
"""Token ids separated by commas (``"1,2"``, ``"1, 2"``), as TabbyAPI and KoboldCpp write them."""
ID_LIST_OR_NONE_PATTERN = r"^[ \t]*([0-9]+[ \t]*(,[ \t]*[0-9]+[ \t]*)*)?(?![\s\S])"
"""``ID_LIST_PATTERN``, or no id at all (``""``: SillyTavern's ``custom_token_bans`` when there are none)."""


def token_ids_in(text: str) -> list[int]:
    """The token ids of a string of ``ID_LIST_OR_NONE_PATTERN``: ``"1, 2"`` -> ``[1, 2]``."""
    return [int(part) for part in text.split(",") if part.strip()]


def banned_token_parts(value: str | list[int | str] | None) -> tuple[list[int], list[str]]:
    """``banned_tokens`` as (token ids, phrases).

    A string is a list of ids when it is one (``"1,2"``, TabbyAPI), else one phrase;
    in a list, integers and digit strings are ids, other strings phrases (KoboldCpp).
    """
    if value is None:
        return [], []
    if isinstance(value, str):
        return (token_ids_in(value), []) if re.search(ID_LIST_PATTERN, value) else ([], [value])
    ids = [int(v) for v in value if isinstance(v, int) or re.search(DIGITS_PATTERN, v)]
    phrases = [v for v in value if isinstance(v, str) and not re.search(DIGITS_PATTERN, v)]
    return ids, phrases


def _id_list(value: str) -> str:
    if not re.search(ID_LIST_OR_NONE_PATTERN, value):
        raise ValueError(f'must be token ids separated by commas ("1,2"), got {short_text(value)}')
    return value


def short_text(value: str, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


IdList = Annotated[
    str, AfterValidator(_id_list), WithJsonSchema({"type": "string", "pattern": ID_LIST_OR_NONE_PATTERN})
]
"""Token ids in one string, separated by commas; ``""`` is none."""

_BIAS_VALUE_SCHEMA = {"anyOf": [{"type": "number"}, {"const": False}]}


def _bias_value(value: Any) -> float | bool:
    """A number (as a float) or ``False``; one error for anything else ("a number or false")."""
    if value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
        raise PydanticCustomError("finite_number", "must be a finite number or false")
    raise PydanticCustomError("bias_type", "must be a number or false")


BiasValue = Annotated[float | bool, PlainValidator(_bias_value), WithJsonSchema(_BIAS_VALUE_SCHEMA)]
"""A bias: a number (clamped to [-100, 100]) or ``false``: never (llama.cpp's form)."""
LogitBias = Annotated[
    dict[Key, BiasValue],
    WithJsonSchema({"type": "object", "additionalProperties": _BIAS_VALUE_SCHEMA}),
]
"""``{key: bias}``: a key is a token id in decimal (``"1234"``) or a text whose tokens all get the bias.

A key that reads as a number but is no canonical token id (``" 1"``, ``"+1"``, ``"01"``,
``"1.0"``, ``"١"``) is refused by ``prepare``, so that no bias lands where the client did not mean it.
"""


def _pair(value: Any) -> Any:
    """A JSON array of ``logit_bias``'s list form, as the tuple it is validated as (strict mode wants one)."""
    if not isinstance(value, (list, tuple)):
        raise PydanticCustomError("pair_type", "must be [token id or text, bias]")
    return tuple(value)


LogitBiasPair = Annotated[tuple[NonNegative | NonEmptyText, BiasValue], BeforeValidator(_pair)]
"""``[token_id, bias]`` or ``["text", bias]`` (llama.cpp's list form); a bias of ``false`` bans."""


def _not_zero(value: int) -> int:
    if value == 0:
        raise ValueError("must be -1 (up to the server's limit) or at least 1, got 0")
    return value


NPredict = Annotated[
    int,
    Field(ge=-1),
    BeforeValidator(_integral),
    AfterValidator(_not_zero),
    WithJsonSchema({"type": "integer", "minimum": -1, "not": {"const": 0}}),
]
"""llama.cpp's ``n_predict``: -1 (up to the server's limit) or a count >= 1."""


_BAN_SCOPE_STRING = {
    "type": "string",
    # "think", "answer", "START,END" (split at the first comma) or "outside:START,END"; each marker non-empty.
    "pattern": r"^(think|answer|(?!outside:)[^,]+,[\s\S]+|outside:[^,]+,[\s\S]+)(?![\s\S])",
    "examples": ["think", "answer", "<reasoning>,</reasoning>", "outside:<think>,</think>"],
}
_BAN_SCOPE_OBJECT = {
    "type": "object",
    "properties": {
        "start": {"type": "string", "minLength": 1},
        "end": {"type": "string", "minLength": 1},
        "inside": {"type": "boolean"},
    },
    "required": ["start", "end"],
    "additionalProperties": False,
}
"""The forms of ``ban_scope``, for the OpenAPI document (``strategy.ban_scope.BanScope`` checks them)."""


def _given(field: str, value: dict[str, Any] | None = None) -> dict[str, Any]:
    """JSON Schema: ``field`` is present and not null (and fits ``value``, when given)."""
    return {"required": [field], "properties": {field: value or {"not": {"type": "null"}}}}


_NOT_DIGITS = {"type": "string", "not": {"pattern": DIGITS_PATTERN}}
_HAS_BANS = {
    "anyOf": [
        _given("banned_strings", {"anyOf": [{"type": "array", "minItems": 1}, {"type": "string"}]}),
        _given("banned_regex", {"type": "array", "minItems": 1}),
        _given(
            "banned_tokens",
            {
                "anyOf": [
                    {"type": "array", "contains": _NOT_DIGITS},
                    {"type": "string", "not": {"pattern": ID_LIST_PATTERN}},
                ]
            },
        ),
    ],
    "description": "The request has banned_strings, banned_regex, or phrases in banned_tokens.",
}


_SAMPLING_RULES = [
    {"if": _given("ban_scope"), "then": _HAS_BANS},
    {"if": _given("exempt_prompt_terms", {"const": True}), "then": _HAS_BANS},
    {"if": _given("stream_options"), "then": _given("stream", {"const": True})},
]
"""The rules between fields of ``SamplingRequest`` (its validators), for the OpenAPI document."""


class StreamOptions(BaseModel):
    """``stream_options`` of a streamed request."""

    model_config = _CONFIG

    include_usage: bool = Field(False, description="Send a last chunk with `usage` (and empty `choices`).")


class StrategySpec(BaseModel):
    """A built-in strategy and its constructor parameters.

    ``{"name": "creative_writing", "params": {"top_p_flat": 0.5}}``; a chain is
    ``{"name": "chain", "params": {"strategies": [spec, ...]}}`` (or simply a list
    of specs). The names are those of the strategy registry (see ``name``).
    """

    model_config = _CONFIG

    name: Text = Field(
        description="The strategy's name (aliases in parentheses): "
        + ", ".join(f"`{e.name}`" + "".join(f" (`{a}`)" for a in e.aliases) for e in registry.strategy_entries(False))
        + "."
    )
    params: dict[Key, JsonValue] = Field(default_factory=dict, description="Constructor parameters (JSON values).")


StrategyChain = TypeAliasType("StrategyChain", "list[StrategySpec | Text | StrategyChain]")
"""A chain: a list of strategies, each a spec, a name or a chain again."""
StrategyField = StrategySpec | Text | StrategyChain | None


class SamplingRequest(BaseModel):
    """The fields both endpoints share."""

    model_config = ConfigDict(**_CONFIG, json_schema_extra={"allOf": _SAMPLING_RULES})

    model: Text | None = Field(None, description="The served model's id (see `/v1/models`); may be left out.")
    max_tokens: Count | None = Field(
        None, description="The most tokens to generate (completions default: 16; chat: the server's limit)."
    )
    temperature: float = Field(1.0, ge=0, description="0 is greedy.")
    top_p: float = Field(
        1.0, ge=0, le=1, description="Nucleus mass in [0, 1]; 0 keeps only the most likely token (as llama.cpp)."
    )
    n: Count = Field(1, description="How many choices for each prompt.")
    stream: bool = Field(False, description="Answer with server-sent events ending with `data: [DONE]`.")
    stream_options: StreamOptions | None = Field(None, description="Only with `stream: true`.")
    stop: NonEmptyText | list[NonEmptyText] | None = Field(
        None, description="Text that ends the generation; it is not included in the output."
    )
    seed: Integer | None = Field(
        None, description="Makes sampling reproducible; choice i uses seed + i. Negative (`-1`): random."
    )
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Subtracted from logits of tokens already used.")
    frequency_penalty: float = Field(
        0.0, ge=-2, le=2, description="Subtracted from logits, times the number of uses so far."
    )
    logit_bias: LogitBias | list[LogitBiasPair] | None = Field(
        None,
        description="`{token_id: bias}` added to the logits; each bias is clamped to [-100, 100]. A key is a "
        'token id in decimal digits (`"1234"`; not `" 1"`, `"+1"` nor `"01"`) or, as llama.cpp takes it, a text '
        'whose every token gets the bias (`{"Hello": -5}`); llama.cpp\'s list form `[[15043, 1.0], ["Hello", '
        "false]]` too. A bias of `false` bans the token. A token named twice gets the sum of its biases.",
    )
    user: Text | None = Field(None, description="Accepted and ignored.")

    # -- the extension block --------------------------------------------------------------
    top_k: Annotated[int, Field(ge=-1), BeforeValidator(_integral)] | None = Field(
        None, description="Keep the k most likely tokens (0 or -1: off, the default)."
    )
    min_p: float | None = Field(None, ge=0, lt=1, description="Drop tokens below min_p times the best probability.")
    banned_strings: NonEmptyText | list[NonEmptyText] | None = Field(
        None,
        description="Phrases to ban (AntiSlop): erased as soon as they appear, and written differently. "
        "One string is one phrase.",
    )
    banned_regex: list[NonEmptyText] | None = Field(
        None, description="Regular expressions to ban (`regex` module syntax), like `banned_strings`."
    )
    banned_tokens: NonEmptyText | list[NonNegative | NonEmptyText] | None = Field(
        None,
        description="KoboldCpp's and TabbyAPI's bans: in a list, strings are phrases banned like "
        "`banned_strings` (KoboldCpp), integers and digit strings token ids banned at every position "
        '(TabbyAPI); one string is token ids if it is a list of them (`"1,2"`), else one phrase.',
    )
    custom_token_bans: IdList | list[NonNegative] | None = Field(
        None,
        description='Token ids banned at every position: `"1,2"` (SillyTavern, KoboldCpp; `""`: none) or `[1, 2]`.',
    )
    exempt_prompt_terms: bool = Field(
        False,
        description="Do not ban the `banned_strings` the prompt itself uses (compared as words, case folded, "
        "regular English inflections removed: a prompt about tapestries may get `tapestry`), nor the "
        "`banned_regex` that match the prompt. Needs `banned_strings` or `banned_regex`.",
    )
    ban_scope: JsonValue = Field(
        None,
        description='Where `banned_strings` and `banned_regex` apply: `"think"` (only inside '
        '`<think>...</think>`), `"answer"` (only outside them), `"START,END"` or `"outside:START,END"` '
        '(other markers), or `{"start": ..., "end": ..., "inside": true}`; default (or null): everywhere. A prompt '
        "that ends inside an open `<think>` starts the output inside. Needs `banned_strings` or `banned_regex`.",
        json_schema_extra={"anyOf": [_BAN_SCOPE_STRING, _BAN_SCOPE_OBJECT, {"type": "null"}]},
    )
    strategy: StrategyField = Field(
        None, description="A built-in strategy (a name, `{name, params}`, or a list of them for a chain)."
    )
    max_rewinds: NonNegative | None = Field(
        None, description="Rewinds allowed in one generation (at most the server's limit, its default)."
    )
    rewinds_per_position: NonNegative | None = Field(
        None, description="Rewinds allowed at one position (default 16; at most the server's limit)."
    )
    backtrack_events: bool = Field(
        False,
        description="Streams also carry `backtrack_event` (rewinds, with the erased text and the reason) "
        "and `backtrack_stats` at the end.",
    )
    return_tokens_as_token_ids: bool = Field(
        False, description='Logprobs name each token "token_id:<id>" instead of its text (as vLLM does).'
    )

    # -- the dialect block: other servers' names (SillyTavern, KoboldCpp, TabbyAPI, llama.cpp, vLLM) ------
    stopping_strings: NonEmptyText | list[NonEmptyText] | None = Field(
        None, description="`stop` under text-generation-webui's name (read when `stop` is absent)."
    )
    stop_sequence: NonEmptyText | list[NonEmptyText] | None = Field(
        None, description="`stop` under KoboldCpp's name (read when `stop` and `stopping_strings` are absent)."
    )
    max_new_tokens: Count | None = Field(None, description="`max_tokens` under text-generation-webui's name.")
    max_length: Count | None = Field(
        None, description="`max_tokens` under KoboldCpp's name: the most tokens to generate."
    )
    n_predict: NPredict | None = Field(
        None, description="`max_tokens` under llama.cpp's name; -1: up to the server's limit."
    )
    sampler_seed: Integer | None = Field(
        None, description="`seed` under KoboldCpp's name (read when `seed` is absent); negative: random."
    )
    ignore_eos: bool | None = Field(None, description="Never end at the end-of-sequence token (it is never sampled).")
    ban_eos_token: bool | None = Field(None, description="`ignore_eos` under TabbyAPI's name.")
    min_tokens: NonNegative | None = Field(
        None,
        description="As vLLM: neither the end-of-sequence token nor a stop string ends the generation before "
        "this many tokens (the end-of-sequence token is not sampled until then; a stop string counts "
        "only if it ends in a later token). At most the request's max_tokens.",
    )
    dry_multiplier: float | None = Field(
        None, ge=0, description="DRY repetition penalty (as llama.cpp's): its strength; 0 (the default): off."
    )
    dry_base: float | None = Field(
        None, ge=1, description="DRY: the penalty grows as base^(repeat length - allowed length); default 1.75."
    )
    dry_allowed_length: NonNegative | None = Field(
        None, description="DRY: repeats up to this many tokens are not penalized; default 2."
    )
    dry_sequence_breakers: Text | list[Text] | None = Field(
        None,
        description="DRY: texts that end a repeat: a list, or that list as a JSON string (as SillyTavern sends it). "
        "Default: newline, colon, double quote, asterisk.",
    )
    dry_penalty_last_n: Annotated[int, Field(ge=-1), BeforeValidator(_integral)] | None = Field(
        None,
        description="DRY: how many of the last tokens to scan; -1 or 0: all of them (0 as TabbyAPI and KoboldCpp).",
    )

    @field_validator("stop", "stopping_strings", "stop_sequence")
    @classmethod
    def _stop_strings(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [value] if isinstance(value, str) else value or None

    @field_validator("stream_options")
    @classmethod
    def _only_streamed(cls, value: StreamOptions | None, info: ValidationInfo) -> StreamOptions | None:
        if value is not None and not info.data.get("stream"):
            raise ValueError("only allowed when stream is true")
        return value

    @field_validator("exempt_prompt_terms", "ban_scope")
    @classmethod
    def _about_bans(cls, value: Any, info: ValidationInfo) -> Any:
        has_bans = info.data.get("banned_strings") or info.data.get("banned_regex")
        if value not in (None, False) and not has_bans and not banned_token_parts(info.data.get("banned_tokens"))[1]:
            raise ValueError(
                "applies to banned_strings, banned_regex and the phrases of banned_tokens, and the request has none "
                "(an antislop strategy takes it in its params: scope, exempt_prompt_terms)"
            )
        return value


TokenIds = Annotated[list[NonNegative], Field(min_length=1)]
"""One prompt as token ids (at least one)."""


class CompletionRequest(SamplingRequest):
    """``POST /v1/completions``."""

    prompt: (
        NonEmptyText
        | Annotated[list[NonEmptyText], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    ) = Field(description="Text, token ids, or a list of either (one choice per prompt and n); none empty.")
    logprobs: NonNegative | None = Field(
        None, description="The log-probabilities of the top N tokens at each position (and of the chosen one)."
    )
    echo: bool = Field(False, description="Only false is supported.")
    suffix: Text | None = Field(None, description="Not supported.")
    best_of: Count | None = Field(None, description="Only equal to n is supported.")

    def prompts(self) -> list[str | list[int]]:
        """The prompts, each a text or a list of token ids."""
        value = self.prompt
        if isinstance(value, str):
            return [value]
        if all(isinstance(v, int) for v in value):
            return [list(value)]
        return list(value)


class TextPart(BaseModel):
    """One part of a message's content list; only ``{"type": "text"}`` is supported."""

    model_config = _CONFIG

    type: Literal["text"] = Field(description="Only `text` parts are supported.")
    text: Text


class ChatMessage(BaseModel):
    """One chat message; a ``tool`` message needs ``content`` and ``tool_call_id`` (as OpenAI's API says)."""

    model_config = ConfigDict(
        **_CONFIG,
        json_schema_extra={
            "if": {"properties": {"role": {"const": "tool"}}},
            "then": {
                "required": ["content", "tool_call_id"],
                "properties": {"content": {"not": {"type": "null"}}, "tool_call_id": {"type": "string"}},
            },
        },
    )

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = Field(
        None, validate_default=True, description="The text (null or left out: none; a `tool` message needs it)."
    )
    name: Text | None = None
    tool_call_id: Text | None = Field(
        None, validate_default=True, description="The id of the tool call a `tool` message answers (it needs one)."
    )

    @field_validator("content", "tool_call_id")
    @classmethod
    def _tool_message_needs(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None and info.data.get("role") == "tool":
            raise ValueError(f"a tool message needs {info.field_name}")
        return value

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(SamplingRequest):
    """``POST /v1/chat/completions``."""

    model_config = ConfigDict(
        **_CONFIG,
        json_schema_extra={
            "allOf": [*_SAMPLING_RULES, {"if": _given("top_logprobs"), "then": _given("logprobs", {"const": True})}]
        },
    )

    messages: list[ChatMessage] = Field(min_length=1, description="The conversation; the assistant answers it.")
    max_completion_tokens: Count | None = Field(None, description="Same as max_tokens (the newer name).")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: NonNegative | None = Field(
        None, description="With `logprobs: true`: the N likeliest tokens at each position."
    )
    response_format: dict[Key, JsonValue] | None = Field(
        None, description='`{"type": "text"}` or `{"type": "json_object"}` (the output is kept valid JSON).'
    )
    tools: list[JsonValue] | None = Field(None, description="Not supported (must be empty).")

    @field_validator("top_logprobs")
    @classmethod
    def _with_logprobs(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and not info.data.get("logprobs"):
            raise ValueError("needs logprobs set to true")
        return value
