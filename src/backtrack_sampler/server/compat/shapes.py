"""The bodies of the other servers' endpoints, as pydantic models: what they take and what they answer.

Request models use the types of ``server.schemas`` (strict: ``"5"`` is no
integer; text must be valid Unicode) for the fields each dialect names its
own way; a generating endpoint also takes every field of ``/v1/completions``
(``extra="allow"``: they are passed on and checked there). Response models
only describe the JSON the routes build, for the OpenAPI document.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backtrack_sampler.server.schemas import Count, Integer, NonNegative, Text

_STRICT = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")
_OPEN = ConfigDict(strict=True, allow_inf_nan=False, extra="allow")
_MORE = " Every field of `/v1/completions` is taken too (bans, sampling, `stop`...)."

TokenList = Annotated[list[NonNegative], Field(description="Token ids of the served model.")]


# -- TabbyAPI --------------------------------------------------------------------------------
class TabbyChatMessage(BaseModel):
    """A chat message to tokenize (rendered with the model's chat template)."""

    model_config = _STRICT

    role: Text
    content: Text


class TabbyEncodeRequest(BaseModel):
    """``POST /v1/token/encode``."""

    model_config = _STRICT

    text: Text | list[TabbyChatMessage] = Field(description="Text, or chat messages.")
    add_bos_token: bool = Field(True, description="Start with the model's BOS token (when it uses one).")
    encode_special_tokens: bool = Field(True, description="Accepted; special tokens are always parsed.")
    decode_special_tokens: bool = Field(True, description="Accepted and ignored.")


class TabbyDecodeRequest(BaseModel):
    """``POST /v1/token/decode``."""

    model_config = _STRICT

    tokens: TokenList
    add_bos_token: bool = True
    encode_special_tokens: bool = True
    decode_special_tokens: bool = True


class TokensAndLength(BaseModel):
    """TabbyAPI's and text-generation-webui's encode answer."""

    tokens: list[int]
    length: int


class DecodedText(BaseModel):
    """TabbyAPI's and text-generation-webui's decode answer."""

    text: str


class TabbyModelParameters(BaseModel):
    """What TabbyAPI tells about a loaded model."""

    max_seq_len: int | None
    cache_size: int | None
    cache_mode: str | None
    rope_scale: float | None
    rope_alpha: float | None
    max_batch_size: int | None
    chunk_size: int | None
    prompt_template: str | None
    prompt_template_content: str | None
    use_vision: bool | None
    draft: dict[str, Any] | None


class TabbyModelCard(BaseModel):
    """TabbyAPI's ``ModelCard`` (``GET /v1/model``)."""

    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    logging: dict[str, Any] | None
    parameters: TabbyModelParameters | None


class TabbyModelList(BaseModel):
    """``GET /v1/model/list``."""

    object: Literal["list"]
    data: list[TabbyModelCard]


# -- text-generation-webui ---------------------------------------------------------------------
class OobaModelInfo(BaseModel):
    """``GET /v1/internal/model/info``."""

    model_name: str
    lora_names: list[str]
    loader: str


class OobaEncodeRequest(BaseModel):
    """``POST /v1/internal/encode`` and ``/v1/internal/token-count``."""

    model_config = _STRICT

    text: Text


class OobaDecodeRequest(BaseModel):
    """``POST /v1/internal/decode``."""

    model_config = _STRICT

    tokens: TokenList


class TokenCount(BaseModel):
    """``POST /v1/internal/token-count``."""

    length: int


# -- llama.cpp server --------------------------------------------------------------------------
class TokenizeRequest(BaseModel):
    """``POST /tokenize`` (llama.cpp; vLLM's ``prompt`` is taken for ``content``)."""

    model_config = _STRICT

    content: Text | None = Field(None, description="The text to tokenize (required, or `prompt`).")
    prompt: Text | None = Field(None, description="vLLM's name for `content`.")
    add_special: bool = Field(False, description="Start with the model's BOS token (when it uses one).")
    parse_special: bool = Field(True, description="Accepted; special tokens are always parsed.")
    with_pieces: bool = Field(False, description='Answer `{"id", "piece"}` objects instead of ids.')


class TokenPiece(BaseModel):
    """A token and its text (its bytes when they are not valid UTF-8 alone)."""

    id: int
    piece: str | list[int]


class TokenizeResponse(BaseModel):
    """``POST /tokenize``; `count` and `max_model_len` when asked with vLLM's `prompt`."""

    tokens: list[int] | list[TokenPiece]
    count: int | None = None
    max_model_len: int | None = None


class DetokenizeRequest(BaseModel):
    """``POST /detokenize``."""

    model_config = _STRICT

    tokens: TokenList = Field(default_factory=list)


class DetokenizeResponse(BaseModel):
    """``POST /detokenize``."""

    content: str


class GenerationSettings(BaseModel):
    """llama.cpp's ``generation_settings`` (the settings a completion ran with)."""

    model_config = ConfigDict(extra="allow")

    n_ctx: int
    params: dict[str, Any]


class Props(BaseModel):
    """``GET /props`` (llama.cpp; TabbyAPI answers a subset)."""

    default_generation_settings: GenerationSettings
    total_slots: int
    model_path: str
    chat_template: str = Field(description='The model\'s chat template (Jinja source), or "".')
    modalities: dict[str, bool]
    build_info: str


class LlamaCompletionRequest(BaseModel):
    """``POST /completion`` (llama.cpp)."""

    model_config = ConfigDict(**_OPEN, json_schema_extra={"description": "llama.cpp's /completion body." + _MORE})

    prompt: Text | Annotated[list[NonNegative], Field(min_length=1)] = Field(
        description="Text, or token ids (one prompt)."
    )
    n_predict: Integer | None = Field(
        None, description="The most tokens to generate; -1 (default): the server's limit."
    )
    max_tokens: Integer | None = Field(None, description="Same as `n_predict` (read when it is absent).")
    n_probs: NonNegative | None = Field(None, description="Show the N likeliest tokens at each position.")
    temperature: float | None = Field(None, description="Below 0: greedy, as 0.")
    stream: bool = Field(
        False, description="Answer with server-sent events (`data: {...}`; the last has `stop: true`)."
    )
    return_tokens: bool = Field(False, description="Fill `tokens` with the generated ids (always when streamed).")
    cache_prompt: bool = Field(True, description="Accepted and ignored (every request is evaluated whole).")


class TokenProbability(BaseModel):
    """A likely token at one position (llama.cpp's shape, with its older `tok_str`/`prob` names)."""

    id: int
    token: str
    logprob: float
    bytes: list[int]
    tok_str: str
    prob: float


class CompletionProbability(BaseModel):
    """One generated token, its logprob and the likeliest tokens at its position."""

    id: int
    token: str
    logprob: float
    bytes: list[int]
    top_logprobs: list[TokenProbability]
    content: str = Field(description="Same as `token` (older llama.cpp).")
    probs: list[TokenProbability] = Field(description="Same as `top_logprobs` (older llama.cpp).")


class LlamaCompletionResponse(BaseModel):
    """``POST /completion`` without ``stream`` (and the last event of a stream)."""

    model_config = ConfigDict(extra="allow")

    index: int
    content: str
    tokens: list[int]
    id_slot: int
    stop: bool
    model: str
    tokens_predicted: int
    tokens_evaluated: int
    generation_settings: GenerationSettings
    prompt: str
    has_new_line: bool
    truncated: bool
    stop_type: Literal["eos", "limit", "word", "none"]
    stopping_word: str
    tokens_cached: int
    timings: dict[str, float]
    completion_probabilities: list[CompletionProbability] | None = None


# -- KoboldCpp -----------------------------------------------------------------------------------
class KoboldGenerateRequest(BaseModel):
    """``POST /api/v1/generate`` and ``/api/extra/generate/stream`` (KoboldCpp)."""

    model_config = ConfigDict(**_OPEN, json_schema_extra={"description": "KoboldCpp's generate body." + _MORE})

    prompt: Text = Field(description="The text to continue.")
    memory: Text | None = Field(None, description="Put before the prompt.")
    max_length: Count | None = Field(None, description="The most tokens to generate (default 180, or the limit).")
    max_context_length: Integer | None = Field(None, description="Accepted and ignored (the model's is used).")
    sampler_seed: Integer | None = Field(None, description="The seed; -1: random.")
    stop_sequence: list[Text] | None = Field(None, description="Stop strings (left out of the text).")
    trim_stop: bool = Field(True, description="Accepted; stop strings are always left out.")
    genkey: Text | None = Field(None, description="A key `/api/extra/abort` may name to stop this generation.")
    n: Count = Field(1, description="How many results (not streamed).")


class KoboldResult(BaseModel):
    """One generated text."""

    text: str
    finish_reason: Literal["stop", "length"]


class KoboldResults(BaseModel):
    """``POST /api/v1/generate``."""

    results: list[KoboldResult]


class KoboldTokenCountRequest(BaseModel):
    """``POST /api/extra/tokencount``."""

    model_config = _STRICT

    prompt: Text = Field(description="The text to tokenize.")
    special: bool = Field(True, description="Start with the model's BOS token (when it uses one).")


class KoboldTokenCount(BaseModel):
    """``POST /api/extra/tokencount``."""

    value: int
    ids: list[int]


class KoboldAbortRequest(BaseModel):
    """``POST /api/extra/abort`` (the body may be left out)."""

    model_config = _STRICT

    genkey: Text | None = Field(None, description="Stop the generations sent with this genkey (none: those without).")


class KoboldAbort(BaseModel):
    """``POST /api/extra/abort``: strings, as KoboldCpp writes them."""

    success: Literal["true", "false"]
    done: Literal["true", "false"]


class KoboldValue(BaseModel):
    """``{"value": n}`` (``/api/v1/config/max_context_length``)."""

    value: int


class KoboldResult1(BaseModel):
    """``{"result": ...}`` (``/api/v1/model``, ``/api/v1/info/version``)."""

    result: str


class KoboldVersion(BaseModel):
    """``GET /api/extra/version``."""

    result: Literal["KoboldCpp"]
    version: str
    protected: bool
    txt2img: bool
    vision: bool
    transcribe: bool
