"""Models by Hugging Face hub id (``hub.py``): ``org/repo``, ``org/repo:QUANT``, ``org/repo/FILE.gguf``.

Nothing here reaches the network: each test lays out a hub cache of its own in
huggingface_hub's format (``models--org--repo/{blobs,refs/main,snapshots/<commit>}``)
under ``HF_HOME`` with ``HF_HUB_OFFLINE=1``, holding the embedded GGUF (and, for
transformers, the HF export of ``models.embedded_hf_dir()``). In-process tests
also point huggingface_hub's constants (read once, at its import) at that cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from backtrack_sampler import BacktrackSampler, hub, models
from backtrack_sampler.cli import options, serve
from backtrack_sampler.hub import HubModel, HubModelError, parse_hub_id, pick_gguf
from cli_support import one_error_line, run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
N_TOKENS = 8


def lay_out_repo(cache: Path, repo_id: str, files: dict[str, Path | bytes]) -> Path:
    """A repo in the hub cache's format: each file a blob, linked from ``snapshots/COMMIT/`` and ``refs/main``."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(name.encode()).hexdigest()
        if isinstance(content, Path):
            blob.symlink_to(content.resolve())
        else:
            blob.write_bytes(content)
        link = repo / "snapshots" / COMMIT / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo / "snapshots" / COMMIT


@pytest.fixture()
def hub_cache(tmp_path, monkeypatch):
    """An empty offline hub cache: ``HF_HOME`` for subprocesses, huggingface_hub's constants for this one."""
    constants = pytest.importorskip("huggingface_hub.constants", reason="huggingface_hub is not installed")
    home = tmp_path / "hf-home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture()
def gguf_repo(hub_cache, smollm_path):
    """``org/repo`` holding the embedded GGUF under its own name, and a README."""
    lay_out_repo(hub_cache, "org/repo", {GGUF_NAME: smollm_path, "README.md": b"# SmolLM2\n"})
    return hub_cache


def greedy(provider, prompt: str = "Once upon a time") -> str:
    return BacktrackSampler(provider).generate_text(prompt, max_new_tokens=N_TOKENS, temperature=0).text


# -- parsing and picking: no cache, no model ------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("org/repo", HubModel("org/repo")),
        ("bartowski/SmolLM2-135M-Instruct-GGUF:Q4_K_M", HubModel("bartowski/SmolLM2-135M-Instruct-GGUF", "Q4_K_M")),
        ("org/repo:q4_1", HubModel("org/repo", quant="q4_1")),
        ("org/repo/model.Q4_1.gguf", HubModel("org/repo", filename="model.Q4_1.gguf")),
        ("org/repo/sub/dir/model.GGUF", HubModel("org/repo", filename="sub/dir/model.GGUF")),
        ("Org.name/re_po-1.5", HubModel("Org.name/re_po-1.5")),
    ],
)
def test_hub_ids_parse(text, expected):
    assert parse_hub_id(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize(
    "text", ["model.gguf", "/abs/org/repo", "./org/repo", "../org/repo", "~/org/repo", "models/model.gguf", "a\\b/c"]
)
def test_local_paths_are_not_hub_ids(text):
    assert parse_hub_id(text) is None


@pytest.mark.parametrize(
    "text",
    ["org/repo:", "org/repo:Q4:1", "org//repo", "org/repo/", "org/-repo", "org/re--po", "org/re..po",
     "org/repo/file.bin", "org/repo/file.gguf:Q4_1", "org/repo/../x.gguf", "org/repo:Q4 K", "o rg/repo"],
)  # fmt: skip
def test_malformed_hub_ids_name_the_argument_and_the_value(text):
    with pytest.raises(HubModelError) as caught:
        parse_hub_id(text)
    assert "argument --model" in str(caught.value) and repr(text) in str(caught.value)
    with pytest.raises(Exception, match="not a hub id") as caught:
        options.model_file(text)
    assert repr(text) in str(caught.value)


def test_a_quant_picks_the_one_file_that_names_it():
    files = ["README.md", "m.IQ4_0.gguf", "m.Q4_0.gguf", "m.Q4_K_M.gguf", "m.Q4_K_S.gguf", "mmproj-m-Q4_0.gguf"]
    assert pick_gguf(HubModel("o/r", quant="q4_0"), files) == "m.Q4_0.gguf"  # case-insensitive, not IQ4_0
    assert pick_gguf(HubModel("o/r", quant="IQ4"), files) == "m.IQ4_0.gguf"  # a mere substring when no word matches
    assert pick_gguf(HubModel("o/r"), files) == "m.Q4_K_M.gguf"  # llama.cpp's default among several
    assert pick_gguf(HubModel("o/r"), ["README.md", "only.gguf", "mmproj.gguf"]) == "only.gguf"


def test_a_split_gguf_counts_once_by_its_first_part():
    files = [f"big/m-Q8_0-0000{i}-of-00003.gguf" for i in (2, 1, 3)] + ["m-Q2_K.gguf"]
    assert pick_gguf(HubModel("o/r", quant="Q8_0"), files) == "big/m-Q8_0-00001-of-00003.gguf"


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (HubModel("o/r", quant="Q4_K"), ["'Q4_K' matches several", "m.Q4_K_M.gguf", "m.Q4_K_S.gguf", "o/r/FILE.gguf"]),
        (HubModel("o/r", quant="Q8_0"), ["no .gguf file of the hub repo o/r matches 'Q8_0'", "m.Q4_K_S.gguf"]),
    ],
)
def test_an_ambiguous_or_absent_quant_lists_the_files(model, named):
    with pytest.raises(HubModelError) as caught:
        pick_gguf(model, ["README.md", "m.Q4_K_M.gguf", "m.Q4_K_S.gguf"])
    message = str(caught.value)
    assert "\n" not in message and message.startswith("argument --model: ")
    assert all(part in message for part in named), message


def test_a_repo_without_gguf_says_so():
    with pytest.raises(HubModelError, match="has no .gguf file .*--backend transformers.*config.json"):
        pick_gguf(HubModel("o/r", quant="Q4_1"), ["config.json", "model.safetensors"])


def test_serve_names_a_hub_model_by_its_id():
    assert serve._default_name("org/repo:Q4_1") == "org/repo:Q4_1"


# -- the offline cache --------------------------------------------------------------------------
@pytest.mark.llamacpp
@pytest.mark.parametrize("model_id", ["org/repo:Q4_1", "org/repo:q4_1", f"org/repo/{GGUF_NAME}", "org/repo"])
def test_load_provider_by_hub_id_loads_and_generates(gguf_repo, provider, model_id):
    pytest.importorskip("llama_cpp")
    expected = greedy(provider)
    by_id = models.load_provider(model_id)
    assert greedy(by_id) == expected
    assert by_id.llm.model_path == str(gguf_repo / f"models--org--repo/snapshots/{COMMIT}/{GGUF_NAME}")


@pytest.mark.llamacpp
def test_cli_generate_by_hub_id_in_a_subprocess(gguf_repo, provider):
    pytest.importorskip("llama_cpp")
    prompt = "Write a haiku about the sea."
    expected = greedy(provider, provider.apply_chat_template([{"role": "user", "content": prompt}]))
    done = run_cli("generate", prompt, "--model", "org/repo:Q4_1", "--temperature", "0",
                   "--max-new-tokens", str(N_TOKENS), "--quiet")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.decode() == expected + "\n"


@pytest.mark.parametrize("model_id", ["org/absent:Q4_1", "org/absent", "org/absent/m.gguf"])
def test_not_cached_offline_is_one_error_line_naming_the_repo(hub_cache, model_id):
    done = run_cli("generate", "hi", "--model", model_id)
    err = one_error_line(
        done, "argument --model", "org/absent", "HF_HUB_OFFLINE", "huggingface-cli download org/absent"
    )
    assert str(hub_cache) in err
    with pytest.raises(models.ModelLoadError, match="org/absent.*HF_HUB_OFFLINE"):
        models.load_provider(model_id)


def test_a_cached_repo_without_the_named_file_is_not_cached_offline(gguf_repo):
    with pytest.raises(models.ModelLoadError, match="'other.gguf' of the hub repo org/repo is not in the hub cache"):
        models.load_provider("org/repo/other.gguf")


def test_an_ambiguous_quant_in_the_cache_lists_its_files(hub_cache):
    lay_out_repo(hub_cache, "org/multi", {"m.Q4_K_M.gguf": b"GGUF", "m.Q4_K_S.gguf": b"GGUF"})
    with pytest.raises(models.ModelLoadError, match="'Q4_K' matches several .*m.Q4_K_M.gguf, m.Q4_K_S.gguf"):
        models.load_provider("org/multi:Q4_K")
    done = run_cli("generate", "hi", "--model", "org/multi:Q8_0")
    one_error_line(done, "no .gguf file of the hub repo org/multi matches 'Q8_0'", "m.Q4_K_M.gguf, m.Q4_K_S.gguf")


def test_a_malformed_id_on_the_command_line_is_one_error_line(hub_cache):
    done = run_cli("generate", "hi", "--model", "org/repo:Q4:1")
    one_error_line(done, "argument --model", "not a hub id", "'org/repo:Q4:1'")


@pytest.mark.llamacpp
def test_a_local_path_shaped_like_an_id_wins(hub_cache, smollm_path, provider, tmp_path, monkeypatch):
    pytest.importorskip("llama_cpp")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "repo:Q4_1").symlink_to(smollm_path)  # the cache is empty: the hub would fail
    assert options.model_file("org/repo:Q4_1") == Path("org/repo:Q4_1")
    assert greedy(models.load_provider("org/repo:Q4_1")) == greedy(provider)


# -- online (huggingface_hub's calls replaced: there is no network here) ----------------------------
def listing(*names: str):
    """A stand-in for ``huggingface_hub.model_info``: a repo of these files."""
    return lambda repo_id, timeout: SimpleNamespace(siblings=[SimpleNamespace(rfilename=name) for name in names])


def test_online_lists_the_repo_and_downloads_the_pick(hub_cache, monkeypatch):
    import huggingface_hub as hf

    fetched = []
    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf, "model_info", listing("m.Q4_1.gguf", "m.Q8_0.gguf", "README.md"))
    monkeypatch.setattr(hf, "hf_hub_download", lambda repo_id, name, **kw: fetched.append(name) or f"/cache/{name}")
    assert hub.resolve(HubModel("org/repo", quant="Q8_0")) == Path("/cache/m.Q8_0.gguf")
    split = [f"m-0000{i}-of-00002.gguf" for i in (1, 2)]
    monkeypatch.setattr(hf, "model_info", listing(*split))
    assert hub.resolve(HubModel("org/repo")) == Path("/cache/m-00001-of-00002.gguf")
    assert fetched == ["m.Q8_0.gguf", *split]  # every part of a split GGUF


def test_online_refusals_and_an_unreachable_hub(hub_cache, smollm_path, monkeypatch):
    import httpx
    import huggingface_hub as hf

    monkeypatch.setattr(hf.constants, "HF_HUB_OFFLINE", False)
    response = httpx.Response(404, request=httpx.Request("GET", "https://huggingface.co/api/models/org/private"))

    def refuse(repo_id, timeout):
        raise hf.errors.RepositoryNotFoundError("404", response=response)

    monkeypatch.setattr(hf, "model_info", refuse)
    with pytest.raises(HubModelError, match="no hub repo org/private .*HF_TOKEN"):
        hub.resolve(HubModel("org/private", quant="Q4_1"))

    def unreachable(repo_id, timeout):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(hf, "model_info", unreachable)
    with pytest.raises(HubModelError, match=r"not in the hub cache .*cannot be reached \(no route to host\)"):
        hub.resolve(HubModel("org/absent", quant="Q4_1"))
    lay_out_repo(hub_cache, "org/repo", {GGUF_NAME: smollm_path})  # the cache answers when the hub does not
    assert hub.resolve(HubModel("org/repo", quant="Q4_1")).name == GGUF_NAME


# -- transformers: the repo's HF-format model ----------------------------------------------------
@pytest.mark.transformers
def test_transformers_backend_by_hub_id(hub_cache):
    pytest.importorskip("transformers")
    directory = models.embedded_hf_dir()
    files = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}
    lay_out_repo(hub_cache, "org/smol", files)
    expected = greedy(models.load_provider(str(directory), backend="transformers"))
    by_id = models.load_provider("org/smol", backend="transformers")
    assert greedy(by_id) == expected


# -- mlx: the repo's HF-format model through mlx-lm ----------------------------------------------
@pytest.mark.mlx
def test_mlx_backend_by_hub_id(hub_cache):
    pytest.importorskip("mlx_lm", reason="mlx-lm is not installed (extra: mlx)")
    directory = models.embedded_hf_dir()
    files = {p.relative_to(directory).as_posix(): p for p in directory.rglob("*") if p.is_file()}
    snapshot = lay_out_repo(hub_cache, "org/smol", files)
    expected = greedy(models.load_provider(str(directory), backend="mlx"))
    by_id = models.load_provider("org/smol", backend="mlx")
    assert by_id.model_path == snapshot  # loaded from the cache's snapshot, offline
    assert greedy(by_id) == expected
