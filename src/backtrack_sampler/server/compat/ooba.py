"""text-generation-webui's internal endpoints (SillyTavern's "Default (Oobabooga)" mode).

SillyTavern generates through ``/v1/completions`` in that mode; it asks these
for the model's name and to count tokens.

- ``GET /v1/internal/model/info``: ``{"model_name", "lora_names": [], "loader"}``.
- ``POST /v1/internal/encode``: ``{"text"}`` -> ``{"tokens", "length"}``.
- ``POST /v1/internal/decode``: ``{"tokens"}`` -> ``{"text"}``.
- ``POST /v1/internal/token-count``: ``{"text"}`` -> ``{"length"}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from backtrack_sampler.server.compat import tokens
from backtrack_sampler.server.compat.shapes import OobaDecodeRequest, OobaEncodeRequest
from backtrack_sampler.server.openapi import ROUTE_RESPONSES


def ooba_router() -> APIRouter:
    """text-generation-webui's routes (``RequestGuard`` checks the API key)."""
    router = APIRouter(prefix="/v1/internal", tags=["text-generation-webui"])

    @router.get("/model/info", response_model=None, responses=ROUTE_RESPONSES["ooba_model_info"])
    async def model_info(request: Request) -> dict[str, Any]:
        return {"model_name": tokens.model_name(request), "lora_names": [], "loader": "backtrack_sampler"}

    @router.post("/encode", response_model=None, responses=ROUTE_RESPONSES["ooba_encode"])
    async def encode(request: Request, body: OobaEncodeRequest) -> dict[str, Any]:
        ids = await tokens.encode(request, body.text, True, "text")
        return {"tokens": ids, "length": len(ids)}

    @router.post("/decode", response_model=None, responses=ROUTE_RESPONSES["ooba_decode"])
    async def decode(request: Request, body: OobaDecodeRequest) -> dict[str, Any]:
        return {"text": tokens.decode(request, body.tokens, "tokens")}

    @router.post("/token-count", response_model=None, responses=ROUTE_RESPONSES["ooba_token_count"])
    async def token_count(request: Request, body: OobaEncodeRequest) -> dict[str, Any]:
        return {"length": len(await tokens.encode(request, body.text, True, "text"))}

    return router
