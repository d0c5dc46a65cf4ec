"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}``, for every failure.

Bad input is answered 400 and names the parameter (``param``) and the value;
FastAPI's own 422 for a body that fails validation is turned into that 400.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("backtrack_sampler.server")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    431: "invalid_request_error",
    501: "invalid_request_error",  # a transfer coding this server does not implement: the request's fault
}
# Names pydantic puts into an error location for the member of a union; they are not parameters.
_UNION_TAGS = ("str", "int", "float", "bool", "list", "dict", "none", "function")
# What a field that takes several shapes accepts, in words (by the field's name).
_UNION_SHAPES = {
    "prompt": "a string, a list of strings, a list of token ids, or a list of lists of token ids",
    "stop": "a string or a list of strings",
    "strategy": 'a strategy name, {"name": ..., "params": {...}}, or a list of them',
    "content": 'a string or a list of {"type": "text", "text": ...} parts',
    "logit_bias": "an object {token id or text: bias} or a list of [token id or text, bias]",
    "banned_strings": "a string or a list of strings",
    "banned_tokens": "a string or a list of strings and token ids",
    "custom_token_bans": 'token ids in a string ("1,2") or a list of them',
    "stopping_strings": "a string or a list of strings",
    "stop_sequence": "a string or a list of strings",
    "dry_sequence_breakers": "a list of strings or that list as a JSON string",
}
_TYPE_ERRORS = ("model_attributes_type", "is_instance_of", "union_tag_invalid")


class APIError(Exception):
    """An error answered with an OpenAI error body.

    Args:
        message: what went wrong, naming the value.
        param: the request parameter at fault (``"messages.0.content"``), or ``None``.
        status: the HTTP status.
        code: a short machine-readable code, or ``None``.
    """

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code

    @property
    def type(self) -> str:
        return _TYPE_BY_STATUS.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error, also sent as an SSE event when a stream fails.

    A lone surrogate that came with the request (in a parameter's name) is written
    as a backslash escape: UTF-8 cannot carry it, and the error must still be sent.
    """
    param = None if param is None else printable(param)
    return {"error": {"message": printable(message), "type": type_, "param": param, "code": code}}


def printable(text: str) -> str:
    """``text`` with lone surrogates (not valid Unicode text, not encodable in UTF-8) written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(error: APIError, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON response of ``error`` (401s also say how to authenticate), with ``headers`` added."""
    headers = dict(headers or {})
    if error.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(error.body(), status_code=error.status, headers=headers or None)


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)``, cut to ``limit`` characters (bad values are echoed in messages)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validation_error(exc: RequestValidationError) -> APIError:
    """The 400 for the first problem pydantic found in a request body."""
    errors = exc.errors()
    if not errors:  # pragma: no cover - FastAPI always gives at least one
        return APIError("the request body is invalid")
    first = errors[0]
    kind = first.get("type", "")
    loc = _without_key([part for part in first.get("loc", ()) if part != "body"])
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        suffix = f": {detail}" if detail else ""
        return APIError(f"the request body is not valid JSON{suffix}", code="json_invalid")
    if not loc:
        return APIError("the request body must be a JSON object", code="invalid_body")
    union = next((i for i, part in enumerate(loc) if _is_union_tag(part)), None)
    if union is not None:
        return _union_error(errors, loc[:union])
    return _field_error(first, loc)


def _field_error(error: dict[str, Any], loc: list[Any]) -> APIError:
    kind = error.get("type", "")
    loc = _without_key(loc)
    param = _param_name(loc)
    message = str(error.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if kind == "missing":
        return APIError(f"{param} is required", param=param, code="missing_parameter")
    if kind in ("value_error", "assertion_error"):
        return APIError(f"{param}: {message}", param=param, code="invalid_value")
    got = short_repr(error.get("input"))
    code = "invalid_type" if _is_type_error(error) else "invalid_value"
    return APIError(f"{param}: {message[:1].lower() + message[1:]}, got {got}", param=param, code=code)


def _union_error(errors: list[dict[str, Any]], prefix: list[Any]) -> APIError:
    """A value that fits no member of a union: report the member it came closest to, or list them."""
    members = []
    for error in errors:
        loc = [part for part in error.get("loc", ()) if part != "body"]
        if loc[: len(prefix)] == prefix and len(loc) > len(prefix) and _is_union_tag(loc[len(prefix)]):
            members.append((loc[len(prefix)], loc[len(prefix) + 1 :], error))
    # The member it came closest to: the deepest location, and there a wrong value rather than a wrong type
    # (a member whose type fits but whose value was refused: an empty list, a lone surrogate in a string).
    deepest = max(members, key=lambda m: (len(m[1]), not _is_type_error(m[2])), default=None)
    if deepest is not None and (deepest[1] or not _is_type_error(deepest[2])):
        return _field_error(deepest[2], [*prefix, *deepest[1]])
    param = _param_name(prefix)
    field = next((str(p) for p in reversed(prefix) if isinstance(p, str)), "")
    kinds = _UNION_SHAPES.get(field) or " or ".join(dict.fromkeys(_shown_type(t) for t, _, _ in members))
    got = short_repr(errors[0].get("input"))
    return APIError(f"{param}: must be {kinds}, got {got}", param=param, code="invalid_type")


def _without_key(loc: list[Any]) -> list[Any]:
    """The location of a bad key of a mapping is the mapping's: the key may be anything (not printable)."""
    return loc[: loc.index("[key]") - 1] if "[key]" in loc[1:] else loc


def _is_type_error(error: dict[str, Any]) -> bool:
    kind = error.get("type", "")
    return kind.endswith(("_type", "_parsing")) or kind in _TYPE_ERRORS


def _shown_type(tag: str) -> str:
    tag = str(tag)
    if tag.startswith("function-"):  # a validator wrapped around a type: "function-after[name(), str]"
        tag = tag.split(",", 1)[-1].rstrip("]").strip() if "," in tag else tag
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "a boolean"}.get(tag, tag)


def _param_name(loc: list[Any]) -> str:
    return ".".join(str(part) for part in loc if not _is_union_tag(part)) or "body"


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the member of a union in an error's location ("str", "list[int]", "StrategySpec")."""
    if not isinstance(part, str) or not part:
        return False
    return "[" in part or part.lower() in _UNION_TAGS or part[0].isupper() or part.startswith("function-")


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error with an OpenAI error body: 400 for bad input, never FastAPI's 422."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no route for {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(APIError(message, status=exc.status_code, code=None), exc.headers)  # 405: Allow

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return error_response(APIError(f"internal server error: {type(exc).__name__}", status=500))
