"""TabbyAPI's model and token endpoints (SillyTavern's "TabbyAPI" mode generates through ``/v1/completions``).

- ``GET /v1/model``: the served model as TabbyAPI's ``ModelCard``.
- ``GET /v1/model/list``: the same card in a list (TabbyAPI lists its model folder).
- ``POST /v1/token/encode``: ``{"text": ..., "add_bos_token"?}`` -> ``{"tokens", "length"}``;
  ``text`` may be chat messages (rendered with the model's chat template).
- ``POST /v1/token/decode``: ``{"tokens": [...]}`` -> ``{"text"}``.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request

from backtrack_sampler.server.compat import tokens
from backtrack_sampler.server.compat.shapes import TabbyDecodeRequest, TabbyEncodeRequest
from backtrack_sampler.server.openapi import ROUTE_RESPONSES


def model_card(http: Request, created: int) -> dict[str, Any]:
    """The served model as TabbyAPI describes a loaded one."""
    provider = tokens.provider_of(http)
    template = tokens.chat_template(provider)
    context = provider.context_length
    return {
        "id": tokens.model_name(http),
        "object": "model",
        "created": created,
        "owned_by": "backtrack_sampler",
        "logging": None,
        "parameters": {
            "max_seq_len": context,
            "cache_size": context,
            "cache_mode": None,
            "rope_scale": None,
            "rope_alpha": None,
            "max_batch_size": tokens.slots(http),
            "chunk_size": None,
            "prompt_template": "chat_template" if template else None,
            "prompt_template_content": template or None,
            "use_vision": False,
            "draft": None,
        },
    }


def tabby_router() -> APIRouter:
    """TabbyAPI's routes (``RequestGuard`` checks the API key)."""
    router = APIRouter(tags=["TabbyAPI"])
    created = int(time.time())

    @router.get("/v1/model", response_model=None, responses=ROUTE_RESPONSES["tabby_model"])
    async def current_model(request: Request) -> dict[str, Any]:
        return model_card(request, created)

    @router.get("/v1/model/list", response_model=None, responses=ROUTE_RESPONSES["tabby_model_list"])
    async def list_models(request: Request) -> dict[str, Any]:
        return {"object": "list", "data": [model_card(request, created)]}

    @router.post("/v1/token/encode", response_model=None, responses=ROUTE_RESPONSES["tabby_encode"])
    async def encode(request: Request, body: TabbyEncodeRequest) -> dict[str, Any]:
        if isinstance(body.text, str):
            text = body.text
        else:
            messages = [{"role": m.role, "content": m.content} for m in body.text]
            text = tokens.render_chat(tokens.provider_of(request), messages, "text")
        ids = await tokens.encode(request, text, body.add_bos_token, "text")
        return {"tokens": ids, "length": len(ids)}

    @router.post("/v1/token/decode", response_model=None, responses=ROUTE_RESPONSES["tabby_decode"])
    async def decode(request: Request, body: TabbyDecodeRequest) -> dict[str, Any]:
        return {"text": tokens.decode(request, body.tokens, "tokens")}

    return router
