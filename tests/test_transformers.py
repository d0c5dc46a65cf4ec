"""The transformers provider: a tiny random model for exact checks, the embedded model for equivalence."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from backtrack_sampler.strategy.base_strategy import BaseStrategy
from scripted import RewindOnce

torch = pytest.importorskip("torch", reason="torch is not installed (extra: transformers)")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (extra: transformers)")
pytestmark = pytest.mark.transformers
ROOT = Path(__file__).resolve().parent.parent
STORY = [{"role": "user", "content": "Write a short story about a dog."}]


@pytest.fixture(scope="module")
def tiny(hf_smollm):
    """A 2-layer random Llama with the embedded model's tokenizer, and two EOS ids."""
    _, tokenizer = hf_smollm
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = [2, 0]
    return model, tokenizer


@pytest.fixture()
def tiny_provider(tiny):
    from backtrack_sampler.provider.transformers_provider import TransformersProvider

    return TransformersProvider(*tiny)


def test_tiny_model_metadata_and_tokens(tiny_provider):
    assert tiny_provider.eos_token_ids == {0, 2}
    assert tiny_provider.context_length == 256 and tiny_provider.vocab_size == 49152
    assert tiny_provider.encode("<|im_start|>user\nHi") == [1, 4093, 198, 26843]  # as llama.cpp tokenizes it
    text = "Héllo, wörld — ünïcode ✓"
    assert tiny_provider.decode(tiny_provider.encode(text)) == text


def test_tiny_rewind_replay_and_raw_logits(tiny, tiny_provider):
    model, _ = tiny
    prompt = tiny_provider.encode("The cat sat on")
    first = tiny_provider.prefill(prompt)
    more = tiny_provider.encode(" the mat and looked around", add_bos=False)
    pass_one = [tiny_provider.forward([t]) for t in more]
    tiny_provider.rewind(len(prompt) + 2)
    pass_two = [tiny_provider.forward([t]) for t in more[2:]]
    for a, b in zip(pass_one[2:], pass_two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # raw logits: exactly a plain forward of the whole sequence
        full = model(torch.tensor([prompt + more])).logits[0, -1].numpy()
    np.testing.assert_allclose(pass_two[-1], full, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(tiny_provider.prefill(prompt), first)


def test_tiny_sequences_taking_turns_restore_their_saved_state(tiny, tiny_provider):
    from backtrack_sampler.provider.transformers_provider import TransformersProvider

    plain = TransformersProvider(*tiny)
    tiny_provider.keep_snapshots(4)
    a = tiny_provider.encode("The lighthouse keeper climbed the stairs every night, counting each step. " * 2)
    b = tiny_provider.encode("A recipe for bread: flour, water, salt and yeast, left to rise for hours. " * 2)
    tiny_provider.prefill(a)
    tiny_provider.prefill(b)
    evaluated = tiny_provider.positions_evaluated
    a_more = [*a, *tiny_provider.encode(" He", add_bos=False)]
    got = tiny_provider.prefill(a_more)
    assert tiny_provider.snapshots.restores == 1 and len(tiny_provider.snapshots) == 2
    assert tiny_provider.positions_evaluated - evaluated == len(a_more) - len(a)
    np.testing.assert_allclose(got, plain.prefill(a_more), rtol=1e-4, atol=1e-4)
    # The saved state of b survived the forwards on a's restored copy.
    b_more = [*b, *tiny_provider.encode(" Then", add_bos=False)]
    np.testing.assert_allclose(tiny_provider.prefill(b_more), plain.prefill(b_more), rtol=1e-4, atol=1e-4)
    assert tiny_provider.snapshots.restores == 2


def test_tiny_model_stops_on_either_eos(tiny, tiny_provider):
    class FavourEos(BaseStrategy):
        def __init__(self, eos):
            self.eos = eos

        def adjust_logits(self, ctx, logits):
            if len(ctx.tokens) == 3:
                logits[self.eos] = 1e4
            return logits

    for eos in (0, 2):
        result = BacktrackSampler(tiny_provider, FavourEos(eos)).generate_text("Hi", max_new_tokens=10, seed=1)
        assert result.finish_reason == "eos" and len(result.tokens) == 3


def test_cuda_device_falls_back_to_cpu_with_a_warning(tiny):
    from backtrack_sampler.provider.transformers_provider import TransformersProvider

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = TransformersProvider(*tiny, device=torch.device("cuda"))
    assert provider.device.type == "cpu" and any("CUDA" in str(w.message) for w in caught)


def test_greedy_noop_equals_generate_for_64_tokens(hf_smollm, hf_provider):
    model, _ = hf_smollm
    prompt = hf_provider.encode(hf_provider.apply_chat_template(STORY))
    ours = BacktrackSampler(hf_provider).generate_text(prompt, max_new_tokens=64, temperature=0)
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=64, do_sample=False)
    assert list(ours.tokens) == out[0, len(prompt) :].tolist() and len(ours.tokens) == 64


def test_rewind_and_replay_reproduce_logits_on_the_embedded_model(hf_provider):
    prompt = hf_provider.encode(hf_provider.apply_chat_template(STORY))
    plain = BacktrackSampler(hf_provider).generate_text(prompt, max_new_tokens=24, temperature=0)
    rewind_once = RewindOnce(after=12, to=4)
    replay = BacktrackSampler(hf_provider, rewind_once).generate_text(prompt, max_new_tokens=24, temperature=0)
    assert replay.tokens == plain.tokens and replay.stats.rewinds == 1
    assert replay.stats.positions_evaluated == plain.stats.positions_evaluated + 7


def test_llamacpp_and_transformers_agree(hf_provider, provider, record_property):
    """Same GGUF, two backends: Q4_1 kernels in llama.cpp, dequantized float32 in torch.

    The distributions agree closely; greedy paths part at the first near-tie,
    so the number of identical greedy tokens is reported, not required.
    """
    agreed = []
    for content in ("Write a short story about a dog.", "What is the capital of France?", "List three colors."):
        prompt = provider.apply_chat_template([{"role": "user", "content": content}])
        tokens = provider.encode(prompt)
        assert hf_provider.encode(prompt) == tokens
        la, lb = provider.prefill(tokens), hf_provider.prefill(tokens)
        assert np.corrcoef(la, lb)[0, 1] > 0.99
        assert len(set(np.argsort(-la)[:5]) & set(np.argsort(-lb)[:5])) >= 4
        a = BacktrackSampler(provider).generate_text(tokens, max_new_tokens=32, temperature=0).tokens
        b = BacktrackSampler(hf_provider).generate_text(tokens, max_new_tokens=32, temperature=0).tokens
        agreed.append(next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))))
    record_property("agreed_greedy_tokens", agreed)
    print("greedy tokens agreed before the first difference:", agreed)


def test_seed_transformers_example_runs_and_leaks_no_phrase():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "transformers_example.py")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout.rpartition("\nDuration: ")[0]
    assert text.strip()
    for phrase in ["**Warning", "I cannot", "I can't", "I can’t", "I can not"]:
        assert phrase.lower() not in text.lower()


def test_antislop_on_the_embedded_model(hf_provider):
    prompt = hf_provider.apply_chat_template(STORY)
    plain = BacktrackSampler(hf_provider).generate_text(prompt, max_new_tokens=32, temperature=0)
    word = next(w.strip(".,!?") for w in plain.text.split() if len(w.strip(".,!?")) >= 5)
    result = BacktrackSampler(hf_provider, AntiSlopStrategy(hf_provider, [word])).generate_text(
        prompt, max_new_tokens=32, temperature=0
    )
    assert word.lower() not in result.text.lower() and result.stats.rewinds >= 1
