"""Banning what the model over-writes: zero leaks, and what it costs in fluency.

1. Generate one story for each of 10 prompts with no strategy and count the
   words (4+ letters, not function words) and two-word phrases the model
   writes most; take the 20 most frequent.
2. Ban them (AntiSlop, whole words, case-insensitive) and generate 20
   stories (the 10 prompts, 2 seeds each), and the same 20 without bans.
3. Count leaks (a banned word or phrase in a final text) and score every
   final text under the unconstrained model: the mean log-probability per
   token of the banned run against the unbanned run is the fluency cost.

    python bench/slop_experiment.py [--tokens 128] [--seeds 2] [--no-score]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

import numpy as np

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from common import load_backend, machine, table

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Write a short story about a lost dog finding its way home.",
    "Write a short story about a girl who discovers a hidden garden.",
    "Write a short story about a robot learning to paint.",
    "Write a short story about two friends on a mountain hike.",
    "Write a short story about a baker who opens a shop in a small town.",
    "Write a short story about a storm at sea.",
    "Write a short story about an old man and his cat.",
    "Write a short story about a child's first day at school.",
    "Write a short story about a wizard who loses his magic.",
]
FUNCTION_WORDS = set(
    """the a an and or but if of to in on at by for with from into onto over under as is was were be been being
    are am it its it's he she they them their his her him we us our you your i me my this that these those there
    here then than so not no yes do did does done have has had will would could should can may might must
    what which who whom whose when where why how all any each every some such very just also only even
    said says one two out up down about after before again more most other own same too off through while""".split()
)
WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
HEADER = ["run", "stories", "tokens", "rewinds", "refused", "leaks", "mean log-prob / token"]


def frequent_terms(texts: list[str], n: int) -> list[str]:
    """The ``n`` most frequent content words (4+ letters) and two-word phrases with a content word."""
    counts: Counter[str] = Counter()
    for text in texts:
        words = [w.casefold() for w in WORD.findall(text)]
        counts.update(w for w in words if len(w) >= 4 and w not in FUNCTION_WORDS)
        for a, b in zip(words, words[1:], strict=False):
            if (a not in FUNCTION_WORDS or b not in FUNCTION_WORDS) and len(a + b) >= 6:
                counts[f"{a} {b}"] += 1
    return [term for term, _ in counts.most_common(n)]


def leaks(text: str, terms: list[str]) -> list[str]:
    folded = text.casefold()
    return [t for t in terms if re.search(rf"(?<!\w){re.escape(t)}(?!\w)", folded)]


def mean_logprob(provider, prompt_tokens: list[int], tokens: tuple[int, ...]) -> tuple[float, int]:
    """Sum of log-probabilities of ``tokens`` after the prompt under the raw model, and their count."""
    total = 0.0
    logits = provider.prefill(prompt_tokens)
    for token in tokens:
        top = float(np.max(logits))
        total += float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))
        logits = provider.forward([token])
    return total, len(tokens)


def run(n_tokens: int, seeds: int, n_terms: int = 20, score: bool = True) -> tuple[list[str], list[list]]:
    backend = load_backend("llamacpp")
    provider = backend.provider
    prompts = [provider.encode(provider.apply_chat_template([{"role": "user", "content": p}])) for p in PROMPTS]
    plain = BacktrackSampler(provider)
    survey = [plain.generate_text(p, max_new_tokens=n_tokens, temperature=0.8, seed=100).text for p in prompts]
    terms = frequent_terms(survey, n_terms)
    banned = BacktrackSampler(provider, AntiSlopStrategy(provider, terms))
    rows = []
    for name, sampler in (("no bans", plain), (f"{len(terms)} terms banned", banned)):
        logprob = count = rewinds = refused = leaked = 0
        for seed in range(seeds):
            for prompt in prompts:
                result = sampler.generate_text(prompt, max_new_tokens=n_tokens, temperature=0.8, seed=seed)
                rewinds += result.stats.rewinds
                refused += len(result.refusals)
                leaked += len(leaks(result.text, terms))
                lp, n = mean_logprob(provider, prompt, result.tokens) if score else (0.0, len(result.tokens))
                logprob, count = logprob + lp, count + n
        fluency = f"{logprob / count:.3f}" if score else "not scored"
        rows.append([name, seeds * len(prompts), count, rewinds, refused, leaked, fluency])
    return terms, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--no-score", action="store_true", help="skip the log-probability scoring")
    args = parser.parse_args()
    print(machine())
    terms, rows = run(args.tokens, args.seeds, score=not args.no_score)
    print("banned:", ", ".join(repr(t) for t in terms))
    print(table(HEADER, rows))


if __name__ == "__main__":
    main()
