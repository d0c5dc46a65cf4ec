"""The layers of ARCHITECTURE.md hold: who may import whom, and no import cycle anywhere in src/.

The import graph comes from grimp (imports inside functions and under
``TYPE_CHECKING`` included), so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

PACKAGE = "backtrack_sampler"

# package -> the packages (besides itself) its modules may import; "" is the top-level modules
# (models, concurrency, async_sampler, the package's __init__). The cli package may import anything.
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "strategy": {"core"},
    "provider": {"core"},
    "metrics": {"core", "strategy"},
    "batch": {"core", "strategy", "provider", ""},
    "server": {"core", "strategy", "provider", ""},
}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(PACKAGE, include_external_packages=False)


def layer(module: str, packages: set[str]) -> str:
    """The sub-package a module belongs to (``core``, ``strategy``...), or "" for a top-level module."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in packages else ""


def subpackages(graph) -> set[str]:
    return {m.split(".")[1] for m in graph.modules if m.count(".") >= 2}


def test_each_layer_imports_only_the_layers_below(graph):
    illegal = []
    packages = subpackages(graph)
    assert set(ALLOWED) <= packages | {""}
    for module in sorted(graph.modules):
        own = layer(module, packages)
        if own not in ALLOWED:
            continue
        for imported in graph.find_modules_directly_imported_by(module):
            other = layer(imported, packages)
            if other != own and other not in ALLOWED[own]:
                illegal.append(f"{module} imports {imported}")
    assert not illegal, "\n".join(illegal)


def test_no_import_cycle_in_src(graph):
    cycles = set()
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            back = graph.find_shortest_chain(importer=imported, imported=module)
            if back:
                cycles.add(" -> ".join((module, *back)))
    assert not cycles, "\n".join(sorted(cycles))


def test_the_checks_see_a_cycle_and_an_illegal_import(graph):
    """The two tests above can fail: add a cycle and a core -> strategy import to a copy of the graph."""
    broken = grimp.build_graph(PACKAGE, include_external_packages=False)
    broken.add_import(importer=f"{PACKAGE}.core.decisions", imported=f"{PACKAGE}.strategy.chain_strategy")
    with pytest.raises(AssertionError, match="core.decisions imports"):
        test_each_layer_imports_only_the_layers_below(broken)
    with pytest.raises(AssertionError, match="core.decisions -> .*chain_strategy"):
        test_no_import_cycle_in_src(broken)


class WordVocabulary:
    """A Vocabulary that is not a provider: a list of words, no model behind it."""

    def __init__(self, words: list[str]) -> None:
        self.words = words

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return frozenset({0})

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        return [self.words.index(w) for w in text.split("|") if w]

    def decode(self, tokens) -> str:
        tokens = [tokens] if isinstance(tokens, int) else tokens
        return "".join(self.words[t] for t in tokens)

    def token_bytes(self, token: int) -> bytes:
        return b"" if token == 0 else self.words[token].encode()


def test_strategies_need_only_a_vocabulary():
    from backtrack_sampler import AntiSlopStrategy, CreativeWritingStrategy, GenerationContext, Rewind
    from backtrack_sampler.core.base_provider import BaseProvider
    from backtrack_sampler.core.token_text import TokenText
    from backtrack_sampler.core.vocabulary import Vocabulary

    vocab = WordVocabulary(["<eos>", "a", " tap", "estry", " cat"])
    assert isinstance(vocab, Vocabulary) and not isinstance(vocab, BaseProvider)
    strategy = AntiSlopStrategy(vocab, ["tapestry"])
    CreativeWritingStrategy(vocab)
    held: list[int] = []
    text = TokenText(vocab.token_bytes)
    ctx = GenerationContext(vocab, [1], held, text, {})
    decisions = []
    for token in (1, 2, 3, 4):  # "a tapestry cat": the word ends at " cat"
        held.append(token)
        text.append(token)
        decisions.append(strategy.on_token(ctx, token))
    assert isinstance(decisions[-1], Rewind) and decisions[-1].position == 1 and decisions[-1].ban == (2,)
    assert not any(isinstance(d, Rewind) for d in decisions[:-1])


def test_the_context_is_read_only():
    from backtrack_sampler import GenerationContext
    from backtrack_sampler.core.token_text import TokenText

    vocab = WordVocabulary(["<eos>", "a"])
    held = [1]
    ctx = GenerationContext(vocab, [1], held, TokenText(vocab.token_bytes), {})
    for name in ("tokens", "committed", "forced", "max_new_tokens", "provider", "prompt_tokens"):
        with pytest.raises(AttributeError):
            setattr(ctx, name, 0)
    assert not hasattr(ctx.tokens, "append") and ctx.tokens == [1]
    held.append(1)  # the engine's list changes: the view shows it
    assert len(ctx.tokens) == 2 and ctx.tokens[-1] == 1
