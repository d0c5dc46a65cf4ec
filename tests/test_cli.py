"""The ``backtrack-sampler`` command line: real runs in a subprocess, and its pieces in-process."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler, ChainStrategy, cli, default_slop_list, models
from backtrack_sampler.provider.scripted_provider import ScriptedProvider
from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
from backtrack_sampler.strategy.replace_strategy import ReplaceStrategy

PROMPT = "What is the capital of France?"
RAW_PROMPT = "Once upon a time"
N_TOKENS = 24
# One thread on both sides: fast on a busy machine, and the same arithmetic in the CLI and the test.
THREADS = ["--threads", "1"]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONIOENCODING="utf-8")
    return subprocess.run(
        [sys.executable, "-m", "backtrack_sampler", "generate", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
    )


@pytest.fixture(scope="module")
def library():
    """The library's own greedy generation: ``(provider, greedy(prompt) -> GenerationResult)``."""
    pytest.importorskip("llama_cpp")
    try:
        models.default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    provider = LlamacppProvider(models.load_llama(n_threads=1, n_threads_batch=1))
    sampler = BacktrackSampler(provider)

    def greedy(prompt: str):
        return sampler.generate_text(prompt, max_new_tokens=N_TOKENS, temperature=0)

    return provider, greedy


def chat(provider, user: str, system: str | None = None) -> str:
    messages = [] if system is None else [{"role": "system", "content": system}]
    return provider.apply_chat_template([*messages, {"role": "user", "content": user}])


# -- real runs with the embedded model --------------------------------------------------------------
@pytest.mark.llamacpp
def test_streams_the_librarys_greedy_text(library):
    provider, greedy = library
    expected = greedy(chat(provider, PROMPT))
    assert expected.text.strip()

    done = run_cli(PROMPT, "--temperature", "0", "--max-new-tokens", str(N_TOKENS), *THREADS)

    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.text + "\n"
    sampling, summary = done.stderr.strip().split("\n")  # the sampling line, then the summary
    assert sampling.startswith("sampling: temperature 0, top_k 40, top_p 0.95, min_p 0.05 (--temperature given")
    assert "Traceback" not in summary
    assert f"finished ({expected.finish_reason})" in summary
    assert f"{len(expected.tokens)} tokens" in summary and "0 rewinds" in summary and "tokens/s" in summary


@pytest.mark.llamacpp
def test_raw_prompt_from_stdin_and_quiet(library):
    _, greedy = library
    expected = greedy(RAW_PROMPT)

    done = run_cli(
        "-",
        "--raw",
        "--quiet",
        "--temperature",
        "0",
        "--max-new-tokens",
        str(N_TOKENS),
        *THREADS,
        stdin=RAW_PROMPT + "\n",
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.text + "\n"
    assert done.stderr == ""


@pytest.mark.llamacpp
def test_system_message_goes_through_the_chat_template(library):
    provider, greedy = library
    system = "You are a pirate. Answer like one."
    expected = greedy(chat(provider, PROMPT, system))

    done = run_cli(PROMPT, "--system", system, "-q", "--temperature", "0", "--max-new-tokens", str(N_TOKENS), *THREADS)

    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.text + "\n"


@pytest.mark.llamacpp
def test_ban_erases_a_greedy_word_and_show_rewinds_reports_it(library):
    provider, greedy = library
    greedy_text = greedy(chat(provider, PROMPT)).text
    words = re.findall(r"[^\W\d_]{4,}", greedy_text)
    assert words, f"no word of 4+ letters in {greedy_text!r}"
    word = words[0]

    done = run_cli(
        PROMPT,
        "--ban",
        word,
        "--show-rewinds",
        "--temperature",
        "0",
        "--max-new-tokens",
        str(N_TOKENS),
        *THREADS,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert word.lower() not in done.stdout.lower()
    rewinds = [line for line in done.stderr.splitlines() if line.startswith("[rewind]")]
    assert rewinds, done.stderr
    assert word in rewinds[0] and "position" in rewinds[0] and "banned phrase" in rewinds[0]
    assert "Traceback" not in done.stderr
    assert re.search(r"\| [1-9]\d* rewinds? \|", done.stderr)


# -- bad input: one line, exit status 2, no traceback -----------------------------------------------
@pytest.mark.parametrize(
    ("args", "named", "value"),
    [
        (["hi", "--temperature", "-1"], "--temperature", "-1"),
        (["hi", "--top-p", "2"], "--top-p", "2"),
        (["hi", "--top-k", "many"], "--top-k", "many"),
        (["hi", "--min-p", "1"], "--min-p", "1"),
        (["hi", "--max-new-tokens", "0"], "--max-new-tokens", "0"),
        (["hi", "--model", "/no/such/model.gguf"], "--model", "/no/such/model.gguf"),
        (["", "--temperature", "0"], "PROMPT", "''"),
        (["hi", "--strategy", "sloppy"], "--strategy", "sloppy"),
        (["hi", "--top-p-flat", "0.5"], "--top-p-flat", "creative"),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_them(args, named, value):
    done = run_cli(*args)

    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert named in done.stderr and value in done.stderr


@pytest.mark.parametrize(
    "message",
    [
        f"the default model is not installed; install it with: {models.INSTALL_HINT}",
        "no model here",  # the CLI adds the hint when the message lacks it
    ],
)
def test_missing_default_model_prints_the_install_command(monkeypatch, capsys, message):
    def missing():
        raise FileNotFoundError(message)

    monkeypatch.setattr(models, "default_model_path", missing)

    assert cli.main(["generate", PROMPT, "--temperature", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert models.INSTALL_HINT in captured.err
    assert "Traceback" not in captured.err


def test_empty_prompt_from_stdin(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))

    assert cli.main(["generate", "-"]) == 2
    assert "error: argument PROMPT (from stdin): must not be empty" in capsys.readouterr().err


def test_help_carries_examples(capsys):
    assert cli.main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "--ban tapestry" in out and "--strategy creative" in out


def test_importing_the_cli_loads_no_backend():
    code = "import sys, backtrack_sampler.cli; print(sorted({'llama_cpp', 'torch'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# -- strategies and rendering, without a model ---------------------------------------------------
def parse(*args: str):
    return cli.build_parser().parse_args(["generate", "prompt", *args])


def scripted() -> ScriptedProvider:
    # Greedy always prefers "a", then "b", then "c".
    return ScriptedProvider(["<eos>", "a", "b", "c"], lambda tokens: [0.0, 3.0, 2.0, 1.0], 0)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        ([], []),
        (["--ban", "x"], ["antislop"]),
        (["--find", "x", "--replace", "y"], ["replace"]),
        (["--strategy", "creative", "--ban", "x"], ["creative", "antislop"]),
        (
            ["--strategy", "adaptive", "--ban", "x", "--find", "y", "--replace", ""],
            ["adaptive", "antislop", "replace"],
        ),
    ],
)
def test_strategy_names(args, names):
    assert cli.strategy_names(parse(*args)) == names


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--strategy", "antislop"], "--ban"),
        (["--strategy", "replace", "--find", "x"], "--replace"),
        (["--replace", "y"], "--find"),
        (["--eos-penalty", "0.5"], "--eos-penalty"),
        (["--strategy", "creative", "--debug-top-k", "3"], "--debug-top-k"),
    ],
)
def test_inconsistent_strategy_options(args, named):
    with pytest.raises(cli.CliError, match=re.escape(f"argument {named}")):
        cli.strategy_names(parse(*args))


def test_human_strategy_cannot_read_the_prompt_from_stdin():
    args = cli.build_parser().parse_args(["generate", "-", "--strategy", "human"])
    with pytest.raises(cli.CliError, match="PROMPT"):
        cli.strategy_names(args)


def test_build_strategy_passes_options_and_chains():
    provider = scripted()
    args = parse("--strategy", "creative", "--top-p-flat", "0.5", "--ban", "x", "--find", "a", "--replace", "b")
    strategy = cli.build_strategy(cli.strategy_names(args), args, provider)

    assert isinstance(strategy, ChainStrategy)
    creative, antislop, replace = strategy.strategies
    assert isinstance(creative, CreativeWritingStrategy) and creative.top_p_flat == 0.5
    assert isinstance(replace, ReplaceStrategy) and replace.find == ["a"] and replace.replace == "b"
    assert isinstance(antislop, AntiSlopStrategy) and antislop.slops == ["x"]
    assert cli.build_strategy([], parse(), provider) is None


@pytest.mark.parametrize(
    ("args", "kind"),
    [
        (["--strategy", "antislop", "--ban", "x", "--ban-case-sensitive"], "AntiSlopStrategy"),
        (["--strategy", "creative"], "CreativeWritingStrategy"),
        (["--strategy", "debug", "--debug-top-k", "2"], "DebugStrategy"),
        (["--strategy", "human", "--choices", "4", "--max-back", "2"], "HumanGuidanceStrategy"),
        (["--strategy", "adaptive", "--poly-coeffs", "1, -2,3"], "AdaptiveTemperatureStrategy"),
        (
            ["--strategy", "replace", "--find", "a", "--replace", "b", "--replace-within", "5"],
            "ReplaceStrategy",
        ),
    ],
)
def test_each_strategy_builds(args, kind):
    parsed = parse(*args)
    strategy = cli.build_strategy(cli.strategy_names(parsed), parsed, scripted())
    assert type(strategy).__name__ == kind
    if kind == "AdaptiveTemperatureStrategy":
        assert strategy.poly_coeffs == (1.0, -2.0, 3.0)
    if kind == "HumanGuidanceStrategy":
        assert (strategy.top_k, strategy.max_back, strategy.min_autopass) == (4, 2, 1.0)
    if kind == "ReplaceStrategy":
        assert strategy.max_new_tokens_for_replace == 5 and strategy.max_replacements == 1


def test_render_streams_text_rewinds_and_summary():
    provider = scripted()
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["a"], whole_words=False))
    out, err = io.StringIO(), io.StringIO()

    finish = cli.render(sampler.stream("c", max_new_tokens=3, temperature=0), out, err, show_rewinds=True, quiet=False)

    assert out.getvalue() == "bbb\n" == finish.text + "\n"
    lines = err.getvalue().splitlines()
    assert lines[:3] == [f"[rewind] position {i}: erased 'a' (banned phrase 'a'; AntiSlopStrategy)" for i in range(3)]
    assert lines[3].startswith("finished (length) | 3 tokens | 3 rewinds | ")
    assert len(lines) == 4


def test_render_quiet_without_rewinds():
    provider = scripted()
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["a"], whole_words=False))
    out, err = io.StringIO(), io.StringIO()

    cli.render(sampler.stream("c", max_new_tokens=2, temperature=0), out, err, show_rewinds=False, quiet=True)

    assert out.getvalue() == "bb\n"
    assert err.getvalue() == ""


@pytest.mark.transformers
def test_transformers_backend_with_a_model_directory(hf_provider):
    pytest.importorskip("transformers")
    prompt = "Write a haiku about the sea."
    expected = BacktrackSampler(hf_provider).generate_text(
        hf_provider.apply_chat_template([{"role": "user", "content": prompt}]), max_new_tokens=N_TOKENS, temperature=0
    )
    directory = models.embedded_hf_dir()
    out = run_cli(prompt, "--backend", "transformers", "--model", str(directory), "--temperature", "0",
                  "--max-new-tokens", str(N_TOKENS), "--quiet")  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == expected.text + "\n"


def test_llamacpp_backend_refuses_a_directory(tmp_path, capsys):
    assert cli.main(["generate", "Hi", "--model", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "--model" in err and "directory" in err and "Traceback" not in err


# -- ban lists, regex bans, the slop list, JSON --------------------------------------------------
def test_ban_files_regex_and_slop_list_reach_antislop(tmp_path):
    (tmp_path / "bans.json").write_text('["tapestry", ["delve", 0.25]]')
    (tmp_path / "bans.txt").write_text("# comment\nshivers down\n\n  spaced phrase\n")
    args = parse(
        "--ban", "x", "--ban-file", str(tmp_path / "bans.json"), "--ban-file", str(tmp_path / "bans.txt"),
        "--ban-regex", r"(?i)\bnot \w+, but", "--slop", "--ban-substrings",
    )  # fmt: skip
    strategy = cli.build_strategy(cli.strategy_names(args), args, scripted())

    assert isinstance(strategy, AntiSlopStrategy)
    factors = {p.text: p.factor for p in strategy.phrases}
    # the user's own lists override the slop list's factors for the same phrase
    assert factors["x"] == 0 and factors["tapestry"] == 0 and factors["delve"] == 0.25
    assert "shivers down" in factors and "  spaced phrase" in factors
    slop = {p.text for p in default_slop_list()}
    assert slop < set(factors) and len(factors) == len(
        slop | {"x", "tapestry", "delve", "shivers down", "  spaced phrase"}
    )
    assert [p.pattern for p in strategy.patterns] == [r"(?i)\bnot \w+, but"]


def test_default_slop_list_is_packaged_with_factors():
    phrases = default_slop_list()
    assert len(phrases) >= 200
    assert all(0 <= p.factor < 1 for p in phrases)
    assert {p.text for p in phrases} >= {"a testament to", "delve", "tapestry"}
    assert len({p.text.casefold() for p in phrases}) == len(phrases)


@pytest.mark.parametrize(
    ("args", "named", "value"),
    [
        (["hi", "--ban-file", "/no/such/bans.json"], "--ban-file", "/no/such/bans.json"),
        (["hi", "--json-root", "list"], "--json-root", "list"),
        (["hi", "--strategy", "antislop"], "--ban", "--slop"),
        (["hi", "--json-root", "object"], "--json-root", "json"),
    ],
)
def test_bad_ban_and_json_arguments_exit_2(args, named, value):
    done = run_cli(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and named in done.stderr and value in done.stderr


def test_bad_ban_file_content_names_the_file_and_entry(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('["ok", ["delve", 3]]')
    done = run_cli("hi", "--ban-file", str(bad))
    assert done.returncode == 2 and "--ban-file" in done.stderr and "bad.json" in done.stderr and "3" in done.stderr


@pytest.mark.llamacpp
def test_invalid_regex_is_reported_with_the_pattern(library):
    done = run_cli("hi", "--ban-regex", "(unclosed", "--temperature", "0", "--max-new-tokens", "4")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "(unclosed" in done.stderr


@pytest.mark.llamacpp
def test_json_strategy_from_the_command_line_gives_valid_json(library):
    done = run_cli(
        "Give me a JSON object describing a cat, with its name and age.",
        "--strategy", "json", "--json-root", "object", "--temperature", "0.7", "--seed", "1",
        "--max-new-tokens", "200", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    value = json.loads(done.stdout)
    assert isinstance(value, dict) and value


@pytest.mark.llamacpp
def test_slop_list_on_the_real_model_leaves_no_hard_banned_phrase(library):
    done = run_cli(
        "Write a short story about a lighthouse keeper.", "--slop", "--temperature", "0.8", "--seed", "3",
        "--max-new-tokens", "160", "--quiet",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = done.stdout.casefold()
    hard = [p.text for p in default_slop_list() if p.factor == 0]
    assert not [p for p in hard if re.search(rf"\b{re.escape(p)}\b", text)]
