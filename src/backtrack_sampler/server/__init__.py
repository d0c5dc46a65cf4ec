"""An OpenAI-compatible server with a playground page (extra: ``server``).

``create_app(provider, model_name)`` builds the app; ``backtrack-sampler serve``
runs it with uvicorn. Importing this package imports neither FastAPI nor
uvicorn: ``create_app`` imports them when first used.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from backtrack_sampler.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
