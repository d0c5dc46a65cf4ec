"""The endpoints of other servers, so their clients (SillyTavern, KoboldAI Lite...) work unchanged.

One module per server, each an ``APIRouter`` factory and its answers' shapes:
``tabby`` (TabbyAPI), ``ooba`` (text-generation-webui), ``llamacpp_server``
(llama.cpp's server) and ``kobold`` (KoboldCpp). ``tokens`` tokenizes for all
of them, ``dialect`` turns a generating request into the ``/v1/completions``
request it means (the same checks, limits and engine), ``shapes`` holds the
bodies. ``create_app`` includes them all.
"""

from __future__ import annotations

from fastapi import FastAPI


def include_compat_routes(app: FastAPI) -> None:
    """Add every other server's routes to ``app`` (made by ``create_app``: it reads ``app.state``)."""
    # Imported here: ``openapi`` reads ``compat.shapes`` while the routers read ``openapi``.
    from backtrack_sampler.server.compat.kobold import kobold_router
    from backtrack_sampler.server.compat.llamacpp_server import llamacpp_router
    from backtrack_sampler.server.compat.ooba import ooba_router
    from backtrack_sampler.server.compat.tabby import tabby_router

    for router in (tabby_router(), ooba_router(), llamacpp_router(), kobold_router()):
        app.include_router(router)


__all__ = ["include_compat_routes"]
