"""Flash attention as llama.cpp chooses it: ``auto`` by default in ``load_llama``, the CLI and the batched provider."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def llama_cpp():
    return pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra: llamacpp)")


def test_load_llama_asks_llama_cpp_for_auto_by_default_and_takes_on_or_off(llama_cpp, smollm_path):
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_context import flash_attn_name

    llm = load_llama(smollm_path, n_ctx=256)
    assert flash_attn_name(llm) == "auto"
    assert int(llm.context_params.flash_attn_type) == llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    for value, name in [("off", "off"), (False, "off"), ("on", "on"), (True, "on"), (None, "auto")]:
        assert flash_attn_name(load_llama(smollm_path, n_ctx=256, flash_attn=value)) == name


@pytest.mark.parametrize("value", ["yes", "AUTO", 1, 0.0])
def test_a_setting_llama_cpp_does_not_know_is_refused_before_the_model_loads(llama_cpp, value, tmp_path):
    from backtrack_sampler.models import load_llama

    expected = f"flash_attn must be one of 'auto', 'on', 'off', True, False or None, got {value!r}"
    with pytest.raises(ValueError) as caught:
        load_llama(tmp_path / "no-such-model.gguf", flash_attn=value)  # the model path is never read
    assert str(caught.value) == expected


def test_auto_computes_what_on_computes_on_a_cpu_and_the_context_works_after_the_rebuild(llama_cpp, smollm_path):
    """On a CPU llama.cpp's auto turns flash attention on: the same logits as on, bit for bit, other than off's."""
    from backtrack_sampler import BacktrackSampler
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    logits = {}
    for value in ("auto", "on", "off"):
        provider = LlamacppProvider(load_llama(smollm_path, n_ctx=512, flash_attn=value))
        prompt = provider.encode("The lighthouse keeper opened the door and")
        logits[value] = provider.prefill(prompt)
        result = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=8, temperature=0)
        assert len(result.tokens) > 0 and result.text.strip()
    np.testing.assert_array_equal(logits["auto"], logits["on"])
    assert not np.array_equal(logits["auto"], logits["off"])  # the setting reached llama.cpp
    assert int(np.argmax(logits["auto"])) == int(np.argmax(logits["on"]))


def test_set_flash_attn_rebuilds_only_when_the_setting_changes(llama_cpp, smollm_path):
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_context import flash_attn_name, set_flash_attn

    llm = load_llama(smollm_path, n_ctx=256, flash_attn="off")
    context = llm.ctx
    set_flash_attn(llm, "off")
    assert llm.ctx is context
    set_flash_attn(llm, "auto")
    assert flash_attn_name(llm) == "auto" and llm.ctx is not None and llm.n_ctx() >= 256


@pytest.mark.parametrize("flash", ["off", "on"])
def test_generate_takes_flash_attn(llama_cpp, flash):
    command = [sys.executable, "-m", "backtrack_sampler", "generate", "Name a colour.", "--max-new-tokens", "4"]
    command += ["--temperature", "0", "--quiet", "--flash-attn", flash]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_a_bad_flash_attn_flag_is_one_error_line_naming_it():
    command = [sys.executable, "-m", "backtrack_sampler", "generate", "Hi", "--flash-attn", "maybe"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "argument --flash-attn: invalid choice: 'maybe'" in done.stderr


def test_serve_over_a_remote_engine_refuses_flash_attn(smollm_path):
    command = [sys.executable, "-m", "backtrack_sampler", "serve", "--remote-url", "http://127.0.0.1:9"]
    command += ["--remote-model", "m", "--tokenizer", str(smollm_path), "--flash-attn", "off"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--flash-attn" in done.stderr.strip().splitlines()[-1]
