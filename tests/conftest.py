"""Shared fixtures: the embedded model, loaded once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm_path():
    from backtrack_sampler.models import default_model_path

    return default_model_path()


@pytest.fixture(scope="session")
def llm(smollm_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    from backtrack_sampler.models import load_llama

    return load_llama(smollm_path, n_ctx=2048)


@pytest.fixture()
def provider(llm):
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    llm.reset()
    return LlamacppProvider(llm)


@pytest.fixture(scope="session")
def hf_smollm(smollm_path):
    """The embedded GGUF loaded by transformers (dequantized to float32)."""
    pytest.importorskip("transformers", reason="transformers is not installed (extra: transformers)")
    from backtrack_sampler.models import load_transformers

    return load_transformers(smollm_path)


@pytest.fixture()
def hf_provider(hf_smollm):
    from backtrack_sampler.provider.transformers_provider import TransformersProvider

    model, tokenizer = hf_smollm
    return TransformersProvider(model, tokenizer)


@pytest.fixture(scope="session")
def server_provider(smollm_path):
    """The embedded model for the server tests, on a Llama of its own.

    The server's worker thread may still be finishing a cancelled generation
    when the next test starts, so it must not share the ``llm`` fixture.
    """
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    return LlamacppProvider(load_llama(smollm_path, n_ctx=2048))


@pytest.fixture(scope="session")
def live_server(server_provider):
    """The app on uvicorn at http://127.0.0.1:<free port>, for the whole session (see server_support.py)."""
    from server_support import LiveServer, make_app

    with LiveServer(make_app(server_provider)) as server:
        yield server
