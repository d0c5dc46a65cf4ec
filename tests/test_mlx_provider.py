"""The MLX provider (mlx-lm) on the embedded model's safetensors export, on the CPU here (Metal on a Mac).

MLX on this CPU runs a few tokens a second: every generation is at most 12 tokens.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, CreativeWritingStrategy, RewindEvent, TextEvent
from backtrack_sampler.strategy.registry import build_strategy
from cli_support import run_cli
from scripted import RewindOnce

mx = pytest.importorskip("mlx.core", reason="mlx is not installed (extra: mlx)")
mlx_lm = pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (extra: mlx)")
pytest.importorskip("transformers", reason="the safetensors export of the embedded model needs transformers")
pytestmark = pytest.mark.mlx
STORY = [{"role": "user", "content": "Write a short story about a dog."}]
N = 12  # tokens per generation: MLX is slow on this CPU


@pytest.fixture(scope="module")
def mlx_dir():
    """The embedded model in HF format (safetensors), exported once and shared with the other backends' tests."""
    from backtrack_sampler.models import embedded_hf_dir

    return embedded_hf_dir()


@pytest.fixture(scope="module")
def mlx_model(mlx_dir):
    from backtrack_sampler.models import load_mlx

    return load_mlx(mlx_dir)


@pytest.fixture()
def mlx_provider(mlx_model):
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    return MlxProvider(*mlx_model)


@pytest.fixture()
def story(mlx_provider):
    return mlx_provider.encode(mlx_provider.apply_chat_template(STORY))


def test_metadata_and_tokens(mlx_provider, story):
    assert mlx_provider.vocab_size == 49152 and mlx_provider.context_length == 8192
    assert 2 in mlx_provider.eos_token_ids
    assert mlx_provider.encode("<|im_start|>user") == [1, 4093]  # as llama.cpp tokenizes it
    assert story[0] == 1 and story[1] != 1
    text = "Héllo, wörld — ünïcode ✓"
    assert mlx_provider.decode(mlx_provider.encode(text)) == text


def test_greedy_noop_equals_mlx_lm_generate(mlx_model, mlx_provider, story):
    model, tokenizer = mlx_model
    ours = BacktrackSampler(mlx_provider).generate_text(story, max_new_tokens=N, temperature=0)
    theirs = [r.token for r in mlx_lm.stream_generate(model, tokenizer, prompt=story, max_tokens=N)]
    assert list(ours.tokens) == theirs and len(ours.tokens) == N


def test_rewind_replays_identically_without_reprefill(mlx_provider, story):
    plain = BacktrackSampler(mlx_provider).generate_text(story, max_new_tokens=N, temperature=0)
    before = mlx_provider.positions_evaluated
    replayed = BacktrackSampler(mlx_provider, RewindOnce(after=9, to=3)).generate_text(
        story, max_new_tokens=N, temperature=0
    )
    assert replayed.tokens == plain.tokens and replayed.text == plain.text
    assert replayed.stats.rewinds == 1 and replayed.stats.tokens_rewound == 6
    # Positions 4..8 fed again (position 3 re-sampled from the cached logits); the prompt not at all.
    assert replayed.stats.positions_evaluated == plain.stats.positions_evaluated + 5
    assert mlx_provider.positions_evaluated - before == replayed.stats.positions_evaluated


def test_trimmed_cache_gives_the_logits_of_a_fresh_one(mlx_model, mlx_provider, story):
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    more = mlx_provider.encode(" Once upon a time", add_bos=False)
    first = mlx_provider.prefill(story)
    mlx_provider.forward(more)
    mlx_provider.rewind(len(story) + 1)
    again = mlx_provider.forward(more[1:])
    fresh = MlxProvider(*mlx_model)
    fresh.prefill(story + more[:1])
    np.testing.assert_allclose(again, fresh.forward(more[1:]), rtol=1e-4, atol=1e-4)
    assert again.dtype == np.float32 and again.shape == (mlx_provider.vocab_size,)
    np.testing.assert_array_equal(mlx_provider.prefill(story), first)  # the memoized prompt


def test_steps_built_ahead_give_the_logits_of_a_provider_that_never_builds_ahead(mlx_model, story):
    """Taken, undone by another token, a chunk, a rewind or another thread: the logits stay the same, bit for bit."""
    import threading

    from backtrack_sampler.provider.mlx_provider import MlxProvider

    ahead, plain = MlxProvider(*mlx_model), MlxProvider(*mlx_model, build_ahead=False)

    def both(call):
        got, expected = call(ahead), call(plain)
        np.testing.assert_array_equal(got, expected)
        return got

    def in_thread(call):
        def run(provider):
            box = []
            worker = threading.Thread(target=lambda: box.append(call(provider)))
            worker.start()
            worker.join()
            return box[0]

        return run

    logits = both(lambda p: p.prefill(story))
    ranked = np.argsort(-logits)
    logits = both(lambda p: p.forward([int(ranked[0])]))  # the most likely token: the step built ahead is taken
    assert (ahead.ahead_hits, ahead.ahead_misses) == (1, 0)
    logits = both(lambda p: p.forward([int(np.argsort(-logits)[1])]))  # the second: undone, built again
    assert (ahead.ahead_hits, ahead.ahead_misses) == (1, 1)
    top = int(np.argmax(logits))
    both(lambda p: p.forward([top, 42, 7]))  # a chunk starting with the guessed token
    assert ahead.ahead_misses == 2
    both(lambda p: (p.rewind(p.n_past - 2), p.forward([top]))[1])  # a rewind while a step is built ahead
    logits = both(in_thread(lambda p: p.forward([top])))  # taken by another thread: built again there
    assert (ahead.ahead_hits, ahead.ahead_misses) == (1, 3)
    logits = both(lambda p: p.forward([int(np.argmax(logits))]))  # built by the worker, taken here: again
    logits = both(lambda p: p.forward([int(np.argmax(logits))]))
    assert (ahead.ahead_hits, ahead.ahead_misses) == (2, 4)
    assert ahead.n_past == plain.n_past and ahead.positions_evaluated == plain.positions_evaluated
    sampled = [
        BacktrackSampler(p).generate_text(story, max_new_tokens=N, temperature=1.0, seed=3).tokens
        for p in (ahead, plain)
    ]
    assert sampled[0] == sampled[1]


def test_sequences_taking_turns_restore_their_saved_state(mlx_model, mlx_provider):
    from backtrack_sampler.provider.mlx_provider import MlxProvider

    plain = MlxProvider(*mlx_model)
    mlx_provider.keep_snapshots(4)
    a = mlx_provider.encode("The lighthouse keeper climbed the stairs every night, counting each step. " * 2)
    b = mlx_provider.encode("A recipe for bread: flour, water, salt and yeast, left to rise for hours. " * 2)
    mlx_provider.prefill(a)
    mlx_provider.prefill(b)
    evaluated = mlx_provider.positions_evaluated
    a_more = [*a, *mlx_provider.encode(" He", add_bos=False)]
    got = mlx_provider.prefill(a_more)
    assert mlx_provider.snapshots.restores == 1
    assert mlx_provider.positions_evaluated - evaluated == len(a_more) - len(a)
    np.testing.assert_allclose(got, plain.prefill(a_more), rtol=1e-4, atol=1e-4)
    b_more = [*b, *mlx_provider.encode(" Then", add_bos=False)]  # b's state survived the forwards on a's copy
    np.testing.assert_allclose(mlx_provider.prefill(b_more), plain.prefill(b_more), rtol=1e-4, atol=1e-4)
    assert mlx_provider.snapshots.restores == 2


def test_antislop_bans_a_phrase_split_over_tokens_and_streams_the_final_text(mlx_provider, story):
    control = BacktrackSampler(mlx_provider).generate_text(story, max_new_tokens=N, temperature=0)
    words = control.text.split()
    phrase = next(f"{a} {b}" for a, b in zip(words, words[1:], strict=False) if a.isalpha() and b.isalpha())
    assert len(mlx_provider.encode(" " + phrase, add_bos=False)) >= 2  # the phrase spans several tokens
    assert phrase.lower() in control.text.lower()  # the live control: unbanned, the model writes it
    sampler = BacktrackSampler(mlx_provider, AntiSlopStrategy(mlx_provider, [phrase.upper()]))
    events = list(sampler.stream(story, max_new_tokens=N, temperature=0))
    final = events[-1]
    rewinds = [e for e in events if isinstance(e, RewindEvent)]
    assert phrase.lower() not in final.text.lower()
    assert rewinds and any(phrase.split()[0].lower() in e.suppressed_text.lower() for e in rewinds)
    assert "".join(e.text for e in events if isinstance(e, TextEvent)) == final.text


def test_creative_writing_rewinds_without_evaluating_the_prompt_again(mlx_provider, story):
    calls = 0
    original = mlx_provider._forward

    def counting_forward(tokens):
        nonlocal calls
        calls += 1
        return original(tokens)

    mlx_provider._forward = counting_forward
    spec = {"name": "creative_writing", "params": {"top_p_flat": 0.9, "top_k_threshold_flat": 20}}
    sampler = BacktrackSampler(mlx_provider, build_strategy(spec, mlx_provider))  # through the registry
    rewinds = 0
    for seed in range(3):
        before, calls = mlx_provider.positions_evaluated, 0
        result = sampler.generate_text(story, max_new_tokens=N, temperature=1.0, seed=seed)
        stats = result.stats
        prompt = len(story) if seed == 0 else 0  # later runs reuse the cached prompt
        assert mlx_provider.positions_evaluated - before - stats.positions_evaluated == prompt
        assert calls - (1 if seed == 0 else 0) == stats.positions_evaluated  # one call per position, no re-prefill
        assert stats.positions_evaluated <= stats.tokens_emitted + stats.tokens_rewound
        rewinds += stats.rewinds
        if rewinds:
            break
    assert rewinds >= 1
    assert isinstance(sampler.strategy, CreativeWritingStrategy)


def test_untrimmable_cache_is_refused_at_construction(mlx_model):
    from mlx_lm.models.cache import ArraysCache

    from backtrack_sampler.provider.mlx_provider import MlxProvider

    class Recurrent:
        def make_cache(self):
            return [ArraysCache(size=2)]

    with pytest.raises(ValueError, match="cannot be trimmed"):
        MlxProvider(Recurrent(), mlx_model[1])


def test_cli_generate_with_the_mlx_backend(mlx_dir, mlx_provider):
    prompt = "Write a haiku about the sea."
    expected = BacktrackSampler(mlx_provider).generate_text(
        mlx_provider.apply_chat_template([{"role": "user", "content": prompt}]), max_new_tokens=8, temperature=0
    )
    out = run_cli("generate", prompt, "--backend", "mlx", "--model", str(mlx_dir), "--temperature", "0",
                  "--max-new-tokens", "8", "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.decode("utf-8") == expected.text + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--backend", "mlx", "--parallel", "4"], "argument --parallel: --backend mlx serves one sequence"),
        (
            ["batch", "IN", "-o", "OUT", "--backend", "mlx", "--concurrency", "4"],
            "argument --concurrency: --backend mlx",
        ),
    ],
)
def test_mlx_backend_runs_one_sequence_at_a_time(args, message, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prompt": "Hi"}\n')
    paths = {"IN": str(tmp_path / "in.jsonl"), "OUT": str(tmp_path / "out.jsonl")}
    done = run_cli(*(paths.get(a, a) for a in args))
    err = done.stderr.decode("utf-8")
    assert done.returncode == 2 and message in err and "Traceback" not in err


def test_a_gguf_file_is_refused_with_one_line(smollm_path):
    done = run_cli("generate", "Hi", "--backend", "mlx", "--model", str(smollm_path))
    err = done.stderr.decode("utf-8")
    assert done.returncode == 2 and err.startswith("error: argument --model: ") and err.count("\n") == 1
    assert "model directory" in err and "Traceback" not in err


def test_server_answers_on_the_mlx_backend(mlx_provider):
    pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
    from server_support import MODEL, in_process_client, make_app

    messages = [{"role": "user", "content": "Tell me about the ocean."}]
    prompt = mlx_provider.apply_chat_template(messages)
    expected = BacktrackSampler(mlx_provider).generate_text(prompt, max_new_tokens=8, temperature=0, top_k=0).text
    with in_process_client(make_app(mlx_provider)) as http:  # generations run on the server's worker thread
        reply = http.post(
            "/v1/chat/completions",
            json={"model": MODEL, "messages": messages, "max_tokens": 8, "temperature": 0, "top_k": 0},
        )
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"] == expected
