"""``generate`` and ``batch`` sample with the model's recommended settings, else llama.cpp's (issue 23, item 2).

No weights: the model is a scripted one, or a GGUF header written in tmp_path
that carries ``general.sampling.*`` keys (what ``batch`` reads through its
provider's ``Llama.model_path``). Explicit flags always win.
"""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

import pytest

import backtrack_sampler.batch as batch_package
from backtrack_sampler.cli import batch as batch_command
from backtrack_sampler.cli import main
from backtrack_sampler.cli.generate import describe_sampling, sampling_params
from backtrack_sampler.cli.main import build_parser
from backtrack_sampler.core.sampling_defaults import SamplingDefaults, choose_defaults
from test_sampling_defaults import _gguf

MODEL = SamplingDefaults(0.5, 10, 0.9, 0.0, "the GGUF's general.sampling.*: temperature, top_k, top_p, min_p")


def generate_args(*flags: str):
    return build_parser().parse_args(["generate", "x", *flags])


def test_flags_left_out_take_the_models_values_and_given_flags_win():
    params = sampling_params(generate_args(), MODEL)
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.5, 10, 0.9, 0.0)
    params = sampling_params(generate_args("--temperature", "0", "--min-p", "0.2"), MODEL)
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.0, 10, 0.9, 0.2)
    params = sampling_params(generate_args("--seed", "3", "--max-new-tokens", "7"))  # no model: llama.cpp's
    assert (params.temperature, params.top_k, params.top_p, params.min_p) == (0.8, 40, 0.95, 0.05)
    assert (params.seed, params.max_new_tokens) == (3, 7)


def test_the_sampling_line_names_the_source():
    llama = choose_defaults({}, "")
    assert describe_sampling(generate_args(), llama) == (
        "sampling: temperature 0.8, top_k 40, top_p 0.95, min_p 0.05 (llama.cpp's defaults; the model carries none)"
    )
    assert describe_sampling(generate_args("--top-k", "0"), MODEL) == (
        f"sampling: temperature 0.5, top_k 0, top_p 0.9, min_p 0 (--top-k given; the rest: {MODEL.source})"
    )
    every = generate_args("--temperature", "1", "--top-k", "5", "--top-p", "1", "--min-p", "0")
    assert describe_sampling(every, MODEL) == "sampling: temperature 1, top_k 5, top_p 1, min_p 0 (all from the flags)"


@pytest.mark.parametrize("command", ["generate", "batch"])
def test_help_says_where_the_defaults_come_from(command, capsys):
    argv = [command, "--help"]
    assert main(argv) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for flag, value in (("--temperature", "0.8"), ("--top-k", "40"), ("--top-p", "0.95"), ("--min-p", "0.05")):
        assert flag in help_text
        assert f"else llama.cpp's {value})" in help_text
    assert "general.sampling.*" in help_text and "generation_config.json" in help_text


def test_batch_lines_default_to_the_models_recommended_sampling(tmp_path, monkeypatch):
    gguf = _gguf(tmp_path / "m.gguf", {"general.sampling.temp": 0.3, "general.sampling.top_k": 7})
    provider = SimpleNamespace(llm=SimpleNamespace(model_path=str(gguf)))
    seen = {}

    @contextlib.contextmanager
    def providers(args):
        yield [provider]

    def run_batch(input_path, output_path, providers, defaults, **kwargs):
        seen["defaults"] = defaults
        return SimpleNamespace(ran=0, done_before=0, errors=0, pairs=0)

    monkeypatch.setattr(batch_command, "_open_providers", providers)
    monkeypatch.setattr(batch_package, "run_batch", run_batch)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": 1, "prompt": "Hi"}\n')
    base = ["batch", str(source), "-o", str(tmp_path / "out.jsonl"), "--no-progress"]

    assert main(base) == 0
    defaults = seen["defaults"]
    assert (defaults.temperature, defaults.top_k, defaults.top_p, defaults.min_p) == (0.3, 7, 0.95, 0.05)

    assert main([*base, "--top-k", "0", "--min-p", "0.1"]) == 0
    defaults = seen["defaults"]
    assert (defaults.temperature, defaults.top_k, defaults.top_p, defaults.min_p) == (0.3, 0, 0.95, 0.1)
