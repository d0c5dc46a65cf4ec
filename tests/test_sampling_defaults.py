"""The sampling a model recommends, else llama.cpp's defaults (issue 23, item 2).

The mapping functions are pure (metadata dicts in, settings out); the file
readers are checked on a GGUF header and a ``generation_config.json`` written
in tmp_path, and on the embedded model's header (no weights loaded).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from backtrack_sampler import models
from backtrack_sampler.core.sampling_defaults import (
    LLAMA_CPP,
    LLAMA_CPP_SOURCE,
    SamplingDefaults,
    choose_defaults,
    from_generation_config,
    from_gguf_metadata,
)
from backtrack_sampler.model_sampling import model_file, recommended_for_path, recommended_sampling
from backtrack_sampler.provider.scripted_provider import ScriptedProvider


def scripted() -> ScriptedProvider:
    return ScriptedProvider(["<eos>", "a", "b"], lambda tokens: [0.0, 2.0, 1.0], 0)


LLAMA_LINE = "temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (llama.cpp's defaults; the model carries none)"


def test_a_model_that_recommends_nothing_gets_llama_cpps_defaults():
    chosen = choose_defaults({}, "anything")
    assert chosen == SamplingDefaults(0.8, 40, 0.95, 0.05, LLAMA_CPP_SOURCE)
    assert chosen.values() == LLAMA_CPP
    assert chosen.describe() == LLAMA_LINE


def test_gguf_sampling_keys_map_to_our_fields():
    metadata = {
        "general.sampling.temp": 0.6,
        "general.sampling.top_k": 20,
        "general.sampling.top_p": 0.9,
        "general.sampling.min_p": 0.0,
        "general.sampling.penalty_repeat": 1.1,  # we have no repetition penalty: ignored
        "general.name": "x",
    }
    assert from_gguf_metadata(metadata) == {"temperature": 0.6, "top_k": 20, "top_p": 0.9, "min_p": 0.0}
    chosen = choose_defaults(from_gguf_metadata(metadata), "the GGUF's general.sampling.*")
    assert chosen.values() == {"temperature": 0.6, "top_k": 20, "top_p": 0.9, "min_p": 0.0}
    assert chosen.source == "the GGUF's general.sampling.*: temperature, top_k, top_p, min_p"


def test_a_partial_recommendation_is_completed_by_llama_cpps_defaults():
    chosen = choose_defaults(from_gguf_metadata({"general.sampling.temp": 0.3}), "the GGUF")
    assert chosen.values() == {**LLAMA_CPP, "temperature": 0.3}
    assert chosen.source == "the GGUF: temperature; llama.cpp's defaults for the rest"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("general.sampling.temp", -1.0),
        ("general.sampling.temp", float("nan")),
        ("general.sampling.top_k", -5),
        ("general.sampling.top_k", 2.5),
        ("general.sampling.top_p", 0.0),
        ("general.sampling.top_p", 1.5),
        ("general.sampling.min_p", 1.0),
        ("general.sampling.temp", "0.7"),
        ("general.sampling.temp", True),
    ],
)
def test_values_we_cannot_use_are_left_out(key, value):
    assert from_gguf_metadata({key: value}) == {}


def test_generation_config_keys_and_do_sample_false():
    config = {
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "min_p": 0.1,
        "repetition_penalty": 1.05,
        "bos_token_id": 1,
    }
    assert from_generation_config(config) == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.1}
    assert from_generation_config({"do_sample": False, "temperature": 0.7}) == {"temperature": 0.0}
    assert from_generation_config({"bos_token_id": 1, "eos_token_id": 2}) == {}


def test_choose_defaults_refuses_a_field_we_do_not_have():
    with pytest.raises(ValueError, match="recommended must hold only .*, got 'repetition_penalty'"):
        choose_defaults({"repetition_penalty": 1.1}, "x")


def test_a_transformers_directory_with_a_generation_config(tmp_path):
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.2, "top_p": 0.9}))
    chosen = recommended_for_path(tmp_path)
    assert chosen.values() == {**LLAMA_CPP, "temperature": 0.2, "top_p": 0.9}
    assert chosen.source == "generation_config.json of the model: temperature, top_p; llama.cpp's defaults for the rest"


@pytest.mark.parametrize("content", [None, "{not json", "[1, 2]", '{"bos_token_id": 1}'])
def test_a_directory_without_a_usable_generation_config_gets_llama_cpps(tmp_path, content):
    if content is not None:
        (tmp_path / "generation_config.json").write_text(content)
    assert recommended_for_path(tmp_path).describe() == LLAMA_LINE


def _gguf(path: Path, metadata: dict[str, float | int | str]) -> Path:
    """A GGUF (version 3) holding only ``metadata``: floats as float32, ints as int32, strings as strings."""

    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("<Q", len(data)) + data

    out = b"GGUF" + struct.pack("<IQQ", 3, 0, len(metadata))
    for key, value in metadata.items():
        if isinstance(value, float):
            out += string(key) + struct.pack("<If", 6, value)
        elif isinstance(value, int):
            out += string(key) + struct.pack("<Ii", 5, value)
        else:
            out += string(key) + struct.pack("<I", 8) + string(value)
    path.write_bytes(out)
    return path


def test_a_gguf_header_with_sampling_keys(tmp_path):
    path = _gguf(
        tmp_path / "m.gguf",
        {
            "general.name": "m",
            "general.sampling.temp": 0.3,
            "general.sampling.top_k": 64,
            "general.sampling.min_p": 0.0,
        },
    )
    chosen = recommended_for_path(path)
    assert chosen.values() == {"temperature": 0.3, "top_k": 64, "top_p": 0.95, "min_p": 0.0}  # float32 0.3 reads 0.3
    assert (
        chosen.source == "the GGUF's general.sampling.*: temperature, top_k, min_p; llama.cpp's defaults for the rest"
    )


def test_a_file_that_is_no_gguf_recommends_nothing(tmp_path):
    path = tmp_path / "broken.gguf"
    path.write_bytes(b"not a gguf")
    assert recommended_for_path(path).describe() == LLAMA_LINE
    assert recommended_for_path(None).describe() == LLAMA_LINE


def test_the_embedded_model_carries_no_sampling_keys():
    try:
        path = models.default_model_path()
    except FileNotFoundError:
        pytest.skip("the embedded model is not installed")
    assert recommended_for_path(path).describe() == LLAMA_LINE


def test_model_file_finds_the_file_behind_each_kind_of_provider(tmp_path):
    gguf = _gguf(tmp_path / "m.gguf", {"general.sampling.temp": 0.25})
    llamacpp = SimpleNamespace(llm=SimpleNamespace(model_path=str(gguf)))
    slot = SimpleNamespace(batched=SimpleNamespace(vocab=llamacpp))
    hf = SimpleNamespace(model=SimpleNamespace(name_or_path=str(tmp_path)))
    assert model_file(llamacpp) == gguf and model_file(slot) == gguf
    assert model_file(hf) == tmp_path
    assert recommended_sampling(slot).temperature == 0.25
    mlx_dir = tmp_path / "mlx"  # an MlxProvider that models.load_provider loaded knows its directory
    mlx_dir.mkdir()
    (mlx_dir / "generation_config.json").write_text(json.dumps({"do_sample": True, "temperature": 0.3}))
    mlx = SimpleNamespace(model=SimpleNamespace(), model_path=mlx_dir)
    assert model_file(mlx) == mlx_dir and recommended_sampling(mlx).temperature == 0.3
    assert model_file(SimpleNamespace(model=SimpleNamespace(), model_path=None)) is None
    # No file behind a scripted model or a remote engine (whose "model" is a name): llama.cpp's defaults.
    assert model_file(scripted()) is None
    assert model_file(SimpleNamespace(model="smollm2")) is None
    assert recommended_sampling(scripted()).describe() == LLAMA_LINE


def test_a_loaded_llama_gives_its_header_keys_as_text():
    """``Llama.metadata`` holds llama.cpp's text of each value; no second read of the file."""
    metadata = {"general.sampling.temp": "0.600000", "general.sampling.top_k": "20", "general.name": "x"}
    llamacpp = SimpleNamespace(llm=SimpleNamespace(metadata=metadata, model_path="/nonexistent.gguf"))
    chosen = recommended_sampling(llamacpp)
    assert chosen.values() == {**LLAMA_CPP, "temperature": 0.6, "top_k": 20}
    assert chosen.source == "the GGUF's general.sampling.*: temperature, top_k; llama.cpp's defaults for the rest"
    broken = SimpleNamespace(llm=SimpleNamespace(metadata={"general.sampling.temp": "hot", "general.name": "x"}))
    assert recommended_sampling(broken).describe() == LLAMA_LINE
