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
