"""The strategy registry: names and aliases, specs and their error paths, limits, plugins in the CLI and the server."""

from __future__ import annotations

import importlib.metadata
import io
import re
from pathlib import Path

import pytest

from backtrack_sampler import (
    AdaptiveTemperatureStrategy,
    AntiSlopStrategy,
    BacktrackSampler,
    ChainStrategy,
    CreativeWritingStrategy,
    DebugStrategy,
    JsonStrategy,
    cli,
    models,
)
from backtrack_sampler.provider.scripted_provider import ScriptedProvider
from backtrack_sampler.strategy import registry
from backtrack_sampler.strategy.registry import SpecLimits, StrategySpecError, build_strategy, check_spec
from shout_strategy import ShoutStrategy

ROOT = Path(__file__).resolve().parent.parent
VOCAB = ["<eos>", "a", "b", "B", " "]


def scripted() -> ScriptedProvider:
    """Greedy prefers "a", then "b", then "B"; never ends by itself."""
    return ScriptedProvider(VOCAB, lambda tokens: [-9.0, 3.0, 2.0, 1.0, 0.0], 0)


@pytest.fixture
def fresh_registry(monkeypatch):
    """The registry as if nothing had been looked up yet; restored after the test."""
    monkeypatch.setattr(registry, "_entries", {})
    monkeypatch.setattr(registry, "_aliases", {})
    monkeypatch.setattr(registry, "_discovered", False)


def entry_points_with(monkeypatch, *extra: importlib.metadata.EntryPoint, builtins: bool = True) -> None:
    """Make the registry find ``extra`` (and the installed entry points unless ``builtins`` is False)."""
    real = importlib.metadata.entry_points

    def entry_points(group: str):
        found = list(real(group=group)) if builtins else []
        return [*found, *(e for e in extra if e.group == group)]

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", entry_points)


# -- names and aliases ------------------------------------------------------------------------------
def test_builtin_names_match_the_entry_points_declared_in_pyproject():
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split(f'[project.entry-points."{registry.ENTRY_POINT_GROUP}"]')[1].split("\n[")[0]
    declared = dict(re.findall(r'^(\w+) = "([^"]+)"$', section, re.MULTILINE))
    assert declared == {e.name: e.target for e in registry.BUILTINS}
    assert registry.strategy_names() == sorted(declared)
    assert registry.strategy_names(interactive=False) == sorted(set(declared) - {"debug", "human"})


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("creative", CreativeWritingStrategy),
        ("creative_writing", CreativeWritingStrategy),
        ("Creative-Writing", CreativeWritingStrategy),
        ("adaptive", AdaptiveTemperatureStrategy),
        (" ADAPTIVE_temperature ", AdaptiveTemperatureStrategy),
        ("json", JsonStrategy),
        ("debug", DebugStrategy),
    ],
)
def test_names_and_aliases_find_their_class(name, cls):
    assert registry.lookup(name).load() is cls
    assert type(build_strategy(name, scripted())) is cls


def test_unknown_name_is_none():
    assert registry.lookup("sloppy") is None


def test_builtins_without_package_metadata_fall_back_to_the_table(monkeypatch, fresh_registry):
    entry_points_with(monkeypatch, builtins=False)
    assert registry.strategy_names() == sorted(e.name for e in registry.BUILTINS)
    assert registry.lookup("creative").load() is CreativeWritingStrategy


# -- specs ------------------------------------------------------------------------------------------
def test_a_spec_with_params_reaches_the_constructor_and_the_provider_is_filled_in():
    provider = scripted()
    strategy = build_strategy({"name": "creative", "params": {"top_p_flat": 0.5, "eos_penalty": 0.1}}, provider)
    assert isinstance(strategy, CreativeWritingStrategy)
    assert (strategy.top_p_flat, strategy.eos_penalty) == (0.5, 0.1)
    assert strategy.provider is provider


def test_lists_and_chain_specs_build_chains_in_order():
    spec = [
        "json",
        {"name": "chain", "params": {"strategies": [{"name": "antislop", "params": {"slops": ["a"]}}, ["adaptive"]]}},
    ]
    strategy = build_strategy(spec, scripted())
    assert isinstance(strategy, ChainStrategy)
    json_strategy, inner = strategy.strategies
    assert isinstance(json_strategy, JsonStrategy) and isinstance(inner, ChainStrategy)
    antislop, nested = inner.strategies
    assert [p.text for p in antislop.phrases] == ["a"]
    assert isinstance(nested, ChainStrategy) and isinstance(nested.strategies[0], AdaptiveTemperatureStrategy)


def test_none_builds_nothing():
    assert build_strategy(None, scripted()) is None


@pytest.mark.parametrize(
    ("spec", "param", "shown"),
    [
        ({"name": "creative", "params": {"top_p_flat": 5}}, "strategy.params.top_p_flat", "5"),
        ({"name": "creative", "params": {"top_p_flt": 0.5}}, "strategy.params.top_p_flt", "'top_p_flt'"),
        (["json", "sloppy"], "strategy.1.name", "'sloppy'"),
        (["sloppy"], "strategy.0.name", "'sloppy'"),
        (
            {"name": "chain", "params": {"strategies": ["json", {"name": "antislop", "params": {"slops": "x"}}]}},
            "strategy.params.strategies.1.params.slops",
            "'x'",
        ),
        ({"name": "chain", "params": {"strategies": []}}, "strategy.params.strategies", "[]"),
        ({"name": "chain", "params": {"members": ["json"]}}, "strategy.params.members", "'members'"),
        ({"name": "json", "params": [1]}, "strategy.params", "[1]"),
        ({"name": "json", "parameters": {}}, "strategy.parameters", "'parameters'"),
        ({"params": {}}, "strategy.name", "None"),
        (5, "strategy", "5"),
        ({"name": "replace", "params": {"find": ["x"], "replace": 3}}, "strategy.params.replace", "3"),
    ],
)
def test_errors_name_the_path_and_the_bad_value(spec, param, shown):
    with pytest.raises(StrategySpecError) as caught:
        build_strategy(spec, scripted())
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.param == param
    assert param in str(error) and shown in str(error)


def test_unknown_names_list_every_name_and_carry_a_code():
    with pytest.raises(StrategySpecError) as caught:
        build_strategy("sloppy", scripted())
    assert caught.value.code == "unknown_strategy"
    assert all(name in str(caught.value) for name in registry.strategy_names())


def test_constructor_errors_keep_the_constructors_own_words_as_detail():
    with pytest.raises(StrategySpecError) as caught:
        build_strategy({"name": "creative", "params": {"top_p_flat": 5}}, scripted())
    assert caught.value.detail == "top_p_flat must be in (0, 1], got 5"


def test_check_spec_checks_names_and_params_without_a_provider():
    check_spec(["json", {"name": "creative", "params": {"top_p_flat": 0.5}}])
    with pytest.raises(StrategySpecError, match="strategy.1.params.x"):
        check_spec(["json", {"name": "creative", "params": {"x": 1}}])


# -- what a server (limits, no terminal) and batch (no terminal) are offered ------------------------
def test_terminal_bound_strategies_are_not_offered_without_a_terminal():
    assert isinstance(build_strategy("debug", scripted(), interactive=True), DebugStrategy)
    with pytest.raises(StrategySpecError) as caught:
        build_strategy(["json", "human"], scripted(), interactive=False)
    assert caught.value.param == "strategy.1.name" and caught.value.code == "unknown_strategy"
    assert "debug" not in str(caught.value).split("choose one of")[1]


def test_limits_bound_depth_count_and_bans():
    limits = SpecLimits(max_depth=2, max_strategies=3, max_bans=2, max_pattern_length=10)
    provider = scripted()

    def error(spec) -> StrategySpecError:
        with pytest.raises(StrategySpecError) as caught:
            build_strategy(spec, provider, limits=limits)
        return caught.value

    assert build_strategy([["json"]], provider) is not None  # unbounded without limits
    deep = error([[["json"]]])
    assert (deep.param, deep.code) == ("strategy.0.0", "limit")
    many = error(["json", "json", "json"])
    assert (many.param, many.code) == ("strategy.2", "limit")
    bans = error({"name": "antislop", "params": {"slops": ["a"], "regex": ["b", "c"]}})
    assert (bans.param, bans.code) == ("strategy.params", "limit") and "3" in str(bans)
    host = error({"name": "antislop", "params": {"slops": ["a"], "regex_timeout": 9.0}})
    assert host.param == "strategy.params.regex_timeout" and "set by the server" in str(host)
    long_pattern = {"name": "antislop", "params": {"slops": ["a"], "regex": ["x" * 11]}}
    assert build_strategy(long_pattern, provider) is not None
    assert error(long_pattern).param.startswith("strategy.params") and "10" in str(error(long_pattern))


def test_bans_given_elsewhere_add_up_with_those_in_the_spec():
    builder = registry.StrategyBuilder(scripted(), SpecLimits(max_bans=2), interactive=False)
    builder.build({"name": "antislop", "params": {"slops": ["a", "b"]}})
    with pytest.raises(StrategySpecError) as caught:
        builder.count_bans(1, "banned_strings")
    assert (caught.value.param, caught.value.code) == ("banned_strings", "limit")


# -- a strategy from outside the package ------------------------------------------------------------
def test_register_a_class_from_code(fresh_registry):
    registry.register("shout", ShoutStrategy, aliases=["loud"])
    assert "shout" in registry.strategy_names()
    strategy = build_strategy({"name": "LOUD", "params": {"keep": "b"}}, scripted())
    assert isinstance(strategy, ShoutStrategy) and strategy.keep == "b"
    text = BacktrackSampler(scripted(), strategy).generate_text("a", max_new_tokens=3, temperature=0).text
    assert text == "bbb"
    registry.unregister("shout")
    assert registry.lookup("loud") is None


def test_register_refuses_what_is_not_a_strategy(fresh_registry):
    with pytest.raises(TypeError):
        registry.register("bad", dict)
    with pytest.raises(ValueError, match="module:Class"):
        registry.register("bad", "no_colon_here")


def test_an_entry_point_plugin_is_found_with_its_aliases(monkeypatch, fresh_registry):
    group = registry.ENTRY_POINT_GROUP
    entry_points_with(monkeypatch, importlib.metadata.EntryPoint("shout", "shout_strategy:ShoutStrategy", group))
    assert registry.lookup("loud").load() is ShoutStrategy
    assert registry.lookup("antislop").load() is AntiSlopStrategy  # the built-ins are still there


def test_a_broken_plugin_is_skipped_with_a_warning(monkeypatch, fresh_registry):
    group = registry.ENTRY_POINT_GROUP
    entry_points_with(monkeypatch, importlib.metadata.EntryPoint("broken", "no_such_module_xyz:Thing", group))
    with pytest.warns(UserWarning, match="broken"):
        names = registry.strategy_names()
    assert "broken" not in names and "antislop" in names


def test_the_cli_offers_registered_names(fresh_registry, capsys):
    registry.register("shout", "shout_strategy:ShoutStrategy")
    assert cli.main(["generate", "--help"]) == 0
    assert "shout" in capsys.readouterr().out
    args = cli.build_parser().parse_args(["generate", "hi", "--strategy", "shout"])
    assert cli.strategy_names(args) == ["shout"]
    assert isinstance(cli.build_strategy(["shout"], args, scripted()), ShoutStrategy)


def test_the_cli_takes_a_json_spec_chained_after_its_flags(fresh_registry, capsys):
    registry.register("shout", ShoutStrategy)
    spec = '{"name": "shout", "params": {"keep": "b"}}'
    args = cli.build_parser().parse_args(["generate", "hi", "--strategy", "creative", "--strategy-json", spec])
    strategy = cli.build_strategy(cli.strategy_names(args), args, scripted())
    assert isinstance(strategy, ChainStrategy)
    creative, shout = strategy.strategies
    assert isinstance(creative, CreativeWritingStrategy) and isinstance(shout, ShoutStrategy) and shout.keep == "b"

    assert cli.main(["generate", "hi", "--strategy-json", '["json", {"name": "shout", "params": {"x": 1}}]']) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: argument --strategy-json: strategy.1.params.x: 'x' is not a parameter")
    assert err.count("\n") == 1


@pytest.mark.llamacpp
def test_the_cli_runs_a_plugin_strategy_on_the_real_model(monkeypatch, fresh_registry, capsys):
    pytest.importorskip("llama_cpp")
    try:
        models.default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    group = registry.ENTRY_POINT_GROUP
    entry_points_with(monkeypatch, importlib.metadata.EntryPoint("shout", "shout_strategy:ShoutStrategy", group))
    provider = LlamacppProvider(models.load_llama(n_threads=1, n_threads_batch=1))
    prompt = provider.apply_chat_template([{"role": "user", "content": "Name a color."}])
    sampler = BacktrackSampler(provider, ShoutStrategy(provider))
    expected = sampler.generate_text(prompt, max_new_tokens=12, temperature=0).text
    plain = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=12, temperature=0).text
    assert expected != plain and not any(c.islower() for c in expected)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))

    code = cli.main(["generate", "Name a color.", "--strategy", "loud", "--temperature", "0",
                     "--max-new-tokens", "12", "--threads", "1", "--quiet"])  # fmt: skip

    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == expected + "\n"


def test_the_server_runs_a_registered_strategy_with_its_params(fresh_registry):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from backtrack_sampler.server import create_app

    registry.register("shout", ShoutStrategy)
    http = TestClient(create_app(scripted(), "scripted", allowed_hosts=["testserver"]))

    def complete(strategy) -> dict:
        body = {"model": "scripted", "prompt": "a", "max_tokens": 3, "temperature": 0, "strategy": strategy}
        return http.post("/v1/completions", json=body).json()

    assert complete(None)["choices"][0]["text"] == "aaa"
    assert complete("shout")["choices"][0]["text"] == "BBB"
    assert complete({"name": "shout", "params": {"keep": "b"}})["choices"][0]["text"] == "bbb"
    substring_ban = {"name": "antislop", "params": {"slops": ["B"], "whole_words": False}}
    assert complete(["shout", substring_ban])["choices"][0]["text"] == "   "
    error = complete({"name": "shout", "params": {"keep": 5}})["error"]
    assert error["param"] == "strategy.params.keep" and "5" in error["message"]
    error = complete(["json", {"name": "debug"}])["error"]
    assert error["param"] == "strategy.1.name" and error["code"] == "unknown_strategy"
