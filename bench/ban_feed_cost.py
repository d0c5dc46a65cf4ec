"""AntiSlop's own per-token cost (no model, no engine): phrases 10 to 50,000, regex 1 to 50 patterns.

A long text is tokenized by the embedded model's tokenizer and fed token by
token to ``AntiSlopStrategy.on_token`` (as the engine would), after each
token asking for the commit boundary. The phrases are pairs of words from
the model's vocabulary, none of which occurs in the text, so no rewind
changes the work. Each size is measured in interleaved rounds; the table
gives the median microseconds per token and the ratio to the smallest list.

    python bench/ban_feed_cost.py [--tokens 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import tracemalloc
from pathlib import Path

from backtrack_sampler import AntiSlopStrategy
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.token_text import TokenText
from backtrack_sampler.strategy.phrase_tracker import _automata

ROOT = Path(__file__).resolve().parent.parent


def load_tokenizer():
    from backtrack_sampler.models import default_model_path, load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    return LlamacppProvider(load_llama(default_model_path(), n_ctx=512))


def vocabulary_words(provider) -> list[str]:
    words = set()
    for token in range(provider.vocab_size):
        piece = provider.token_bytes(token).decode("utf-8", errors="ignore")
        if piece.startswith(" ") and piece[1:].isalpha() and len(piece) >= 4:
            words.add(piece[1:].lower())
    return sorted(words)


def phrases_not_in(words: list[str], n: int, text: str, seed: int = 0) -> list[str]:
    rng, folded, found = random.Random(seed), text.casefold(), set()
    while len(found) < n:
        phrase = f"{rng.choice(words)} {rng.choice(words)}"
        if phrase not in folded:
            found.add(phrase)
    return sorted(found)


def per_token_us(strategy: AntiSlopStrategy, provider, tokens: list[int]) -> float:
    text = TokenText(provider.token_bytes)
    held: list[int] = []
    ctx = GenerationContext(provider, [1], held, text, {})
    strategy.reset()
    started = time.perf_counter()
    for token in tokens:
        held.append(token)
        text.append(token)
        strategy.on_token(ctx, token)
        strategy.commit_boundary(ctx, len(held))
    return (time.perf_counter() - started) / len(tokens) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    provider = load_tokenizer()
    # Our own prose: the README and the documentation pages (the README alone held all of it until issue 23).
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    source = "".join(page.read_text(encoding="utf-8") for page in pages)
    long_text = (source * (1 + args.tokens * 4 // len(source)))[: args.tokens * 5]
    tokens = provider.encode(long_text, add_bos=False)[: args.tokens]
    text = provider.decode(tokens)
    words = vocabulary_words(provider)

    strategies: dict[str, AntiSlopStrategy] = {}
    for n in (10, 1000, 10000, 50000):
        phrases = phrases_not_in(words, n, text)
        started = time.perf_counter()
        strategies[f"{n} phrases"] = AntiSlopStrategy(provider, phrases)
        build = time.perf_counter() - started
        _automata.cache_clear()  # a second build from scratch, traced (tracing slows it down)
        tracemalloc.start()
        kept = AntiSlopStrategy(provider, phrases)
        memory = tracemalloc.get_traced_memory()[0] / 1e6
        tracemalloc.stop()
        del kept
        print(f"{n:>6} phrases: built in {build:.2f} s, {memory:.1f} MB")
    for n in (1, 50):
        pairs = phrases_not_in(words, n, text, seed=1)
        patterns = [r"\b" + pair.replace(" ", r"\s+") + r"\b" for pair in pairs]
        strategies[f"{n} regex"] = AntiSlopStrategy(provider, [], regex=patterns)

    timings: dict[str, list[float]] = {name: [] for name in strategies}
    for _ in range(args.rounds):
        for name, strategy in strategies.items():
            timings[name].append(per_token_us(strategy, provider, tokens))
    medians = {name: statistics.median(values) for name, values in timings.items()}
    print(f"\n{len(tokens)} tokens ({len(text)} characters), median of {args.rounds} interleaved rounds\n")
    print("| ban list | µs per token | vs smallest |")
    print("|---|---|---|")
    for name, value in medians.items():
        reference = medians["10 phrases"] if "phrases" in name else medians["1 regex"]
        print(f"| {name} | {value:.1f} | {value / reference:.2f}x |")


if __name__ == "__main__":
    main()
