"""Values that used to crash ``backtrack-sampler``: absurd thread counts and contexts, prompts that are not UTF-8.

Each is one ``error:`` line naming the argument and the value, exit status 2,
before any model is loaded. The contexts run in a subprocess with its address
space capped, so a check that regressed fails fast instead of eating the
machine's memory.
"""

from __future__ import annotations

import pytest

from backtrack_sampler import cli, gguf_header, models
from cli_support import one_error_line, run_cli

run = run_cli


@pytest.fixture(scope="module")
def trained(smollm_path) -> int:
    """The embedded model's training context, from its header (8192)."""
    return gguf_header.training_context(gguf_header.read_metadata(smollm_path))


# -- --threads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["100000", "0", str(models.MAX_THREADS + 1)])
def test_threads_beyond_the_cpus_are_refused(value):
    one_error_line(run("generate", "hi", "--threads", value), "argument --threads", repr(value), "the CPUs here")


@pytest.mark.parametrize("command", [["serve"], ["batch", "in.jsonl", "-o", "out.jsonl"]])
def test_serve_and_batch_share_the_threads_bound(capsys, command):
    assert cli.main([*command, "--threads", "100000"]) == 2
    assert "argument --threads: must be in [1, " in capsys.readouterr().err


def test_help_says_the_bounds(capsys):
    assert cli.main(["generate", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"1 to the CPUs here ({models.MAX_THREADS})" in out and "--force-n-ctx" in out


# -- --n-ctx ---------------------------------------------------------------------------------------
@pytest.mark.llamacpp
def test_n_ctx_beyond_the_training_context_needs_force_n_ctx(trained):
    err = one_error_line(run("generate", "hi", "--n-ctx", "100000000000"), "argument --n-ctx", "100000000000")
    assert f"the {trained} positions the model was trained with" in err and "--force-n-ctx" in err


@pytest.mark.llamacpp
@pytest.mark.parametrize("value", ["1099511627776", "100000000000"])
def test_forced_n_ctx_beyond_llama_cpps_32_bits_is_refused(value):
    one_error_line(
        run("generate", "hi", "--n-ctx", value, "--force-n-ctx"), "argument --n-ctx", value, "llama.cpp's limit"
    )


@pytest.mark.llamacpp
def test_forced_n_ctx_beyond_the_memory_is_refused(smollm_path):
    per_position = gguf_header.kv_bytes_per_position(gguf_header.read_metadata(smollm_path))
    too_many = 2 * (models.available_memory() // per_position) + 1  # twice what fits
    err = one_error_line(
        run("generate", "hi", "--n-ctx", str(too_many), "--force-n-ctx"), "argument --n-ctx", str(too_many)
    )
    assert "of memory available; at most" in err


@pytest.fixture
def little_memory(monkeypatch, smollm_path):
    """1 GiB of memory available; returns how many positions of the embedded model's KV cache fit in it."""
    monkeypatch.setattr(models, "available_memory", lambda: 2**30)
    return 2**30 // gguf_header.kv_bytes_per_position(gguf_header.read_metadata(smollm_path))


@pytest.mark.llamacpp
def test_check_context(smollm_path, little_memory, trained):
    assert models.check_context(smollm_path, 0) == trained
    assert models.check_context(smollm_path, None) == models.DEFAULT_N_CTX
    assert models.check_context(smollm_path, 2048, n_slots=8) == 2048
    with pytest.raises(models.ModelLoadError, match=f"at most {little_memory} positions fit$"):
        models.check_context(smollm_path, little_memory + 1, force_n_ctx=True)
    assert models.check_context(smollm_path, little_memory, force_n_ctx=True) == little_memory
    with pytest.raises(models.ModelLoadError, match=r"8 sequences x 8192 positions need 1\.4 GiB of KV cache"):
        models.check_context(smollm_path, 0, n_slots=8)


@pytest.mark.llamacpp
def test_batch_concurrency_times_n_ctx_must_fit(tmp_path, capsys, little_memory):
    (tmp_path / "in.jsonl").write_text('{"id": 1, "prompt": "hi"}\n')
    args = ["batch", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--concurrency", "64"]
    assert cli.main([*args, "--n-ctx", "4096"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --n-ctx: 64 sequences x 4096 positions need") and err.count("\n") == 1
    assert "(or run fewer sequences at once)" in err
    assert not (tmp_path / "out.jsonl").exists()
    assert cli.main([*args, "--concurrency", "300"]) == 2
    assert (
        "argument --concurrency: llama.cpp decodes at most 256 sequences together, got 300" in capsys.readouterr().err
    )


@pytest.mark.llamacpp
def test_serve_parallel_times_n_ctx_must_fit(capsys, monkeypatch, little_memory):
    uvicorn = pytest.importorskip("uvicorn", reason="the server needs the extra: server")
    pytest.importorskip("fastapi", reason="the server needs the extra: server")

    def never(*args, **kwargs):
        raise AssertionError("the server must not start")

    monkeypatch.setattr(uvicorn, "run", never)
    assert cli.main(["serve", "--parallel", "64", "--n-ctx", "4096"]) == 2
    assert "error: argument --n-ctx: 64 sequences x 4096 positions need" in capsys.readouterr().err


# -- prompts that are not UTF-8 ----------------------------------------------------------------------
def test_a_prompt_argument_that_is_not_utf8_is_named():
    one_error_line(run("generate", b"caf\xe9 au lait"), "argument PROMPT: must be UTF-8 text", r"b'caf\xe9 au lait'")


def test_a_ban_that_is_not_utf8_is_named():
    one_error_line(run("generate", "hi", "--ban", b"\xff"), "argument --ban: must be UTF-8 text", r"b'\xff'")


def test_a_prompt_on_stdin_that_is_not_utf8_is_named():
    err = one_error_line(run("generate", "-", stdin=b"Once upon a \xff time\n"), "argument PROMPT (from stdin)")
    assert "must be UTF-8 text, got byte 'ff' at offset 12" in err


def test_utf8_on_stdin_is_read_whatever_the_locale(monkeypatch):
    import io

    from backtrack_sampler.cli.generate import read_prompt

    stdin = io.TextIOWrapper(io.BytesIO("Café ☕\n".encode()), encoding="ascii")
    assert read_prompt(cli.build_parser().parse_args(["generate", "-"]), stdin) == "Café ☕"


# -- the GGUF header, on small hand-written files ---------------------------------------------------
def write_gguf(path, metadata: dict) -> None:
    """A GGUF v3 file with ``metadata`` (ints as uint32, strings, lists of uint32 or of strings) and no tensors."""
    import struct

    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    def value(item) -> bytes:
        if isinstance(item, str):
            return struct.pack("<I", 8) + string(item)
        if isinstance(item, int):
            return struct.pack("<II", 4, item)
        kind = 8 if item and isinstance(item[0], str) else 4
        items = b"".join(string(i) if kind == 8 else struct.pack("<I", i) for i in item)
        return struct.pack("<IIQ", 9, kind, len(item)) + items

    body = b"".join(string(key) + value(item) for key, item in metadata.items())
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata)) + body)


SMALL = {
    "general.architecture": "llama",
    "tokenizer.ggml.tokens": [f"t{i}" for i in range(gguf_header.MAX_KEPT_ARRAY + 1)],  # skipped, not kept
    "llama.context_length": 1024,
    "llama.block_count": 2,
    "llama.embedding_length": 64,
    "llama.attention.head_count": 4,
    "llama.attention.head_count_kv": [2, 1],  # per layer
}


def test_gguf_header_sizes_the_kv_cache(tmp_path):
    write_gguf(tmp_path / "small.gguf", SMALL)
    metadata = gguf_header.read_metadata(tmp_path / "small.gguf")
    assert metadata["tokenizer.ggml.tokens"] is None and metadata["llama.block_count"] == 2
    assert gguf_header.training_context(metadata) == 1024
    assert gguf_header.kv_bytes_per_position(metadata) == (2 + 1) * (16 + 16) * 2  # heads x (key + value) x f16
    (tmp_path / "cut.gguf").write_bytes((tmp_path / "small.gguf").read_bytes()[:40])
    with pytest.raises(ValueError, match="ends early"):
        gguf_header.read_metadata(tmp_path / "cut.gguf")


def test_the_default_context_is_capped_by_a_shorter_training_context(tmp_path):
    write_gguf(tmp_path / "small.gguf", SMALL)
    assert models.check_context(tmp_path / "small.gguf", None) == 1024  # not DEFAULT_N_CTX
    assert models.check_context(tmp_path / "small.gguf", 0) == 1024
    with pytest.raises(models.ModelLoadError, match="argument --n-ctx: 2048 is more than the 1024 positions"):
        models.check_context(tmp_path / "small.gguf", 2048)
    assert models.check_context(tmp_path / "small.gguf", 2048, force_n_ctx=True) == 2048
    (tmp_path / "other.bin").write_bytes(b"not a gguf")  # unknown: llama.cpp will say what is wrong with it
    assert models.check_context(tmp_path / "other.bin", None) == models.DEFAULT_N_CTX
