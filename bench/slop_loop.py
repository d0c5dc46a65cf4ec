"""Closing the loop on the embedded model: generate, score, mine a ban list, generate again with it, score again.

1. Generate one text per prompt (creative and essay prompts, chat template,
   temperature 0.8, a seed per prompt) with no strategy: the "before" run.
2. Mine a ban list from those texts (``metrics.mining``: over-use against
   English word frequencies from wordfreq; hard bans for the worst, soft for
   the rest; no term with a word the prompts use), as ``backtrack-sampler
   mine --prompts`` does.
3. Generate again with AntiSlop and that list, the same prompts and seeds:
   the "after" run; then once more with ``LoopGuardStrategy`` chained after
   AntiSlop (bans can push a small model into loops; the guard rewinds them).
4. Score both runs (``metrics.report``): hits of the mined list and of the
   default slop list per 1,000 words, "not X, but Y" per 1,000 characters,
   MATTR-500, distinct-2, looping texts, and the mean log-probability per
   token under the unconstrained model (fluency; each text after its prompt).

The generations run one after another on one llama.cpp context, so the two
runs differ only by the bans (batched decoding would change the logits with
the batch's make-up); tok/s is each run's rate on this machine, measured
under whatever else runs on it.

    python bench/slop_loop.py [--prompts 24] [--tokens 256] [--top 40] [--hard 10]
"""

from __future__ import annotations

import argparse
import time

from backtrack_sampler import AntiSlopStrategy, BacktrackSampler
from backtrack_sampler.metrics.logprob import mean_logprob
from backtrack_sampler.metrics.mining import mine_terms, wordfreq_frequency
from backtrack_sampler.metrics.report import measure_texts
from backtrack_sampler.models import load_provider
from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.chain_strategy import ChainStrategy
from backtrack_sampler.strategy.loop_guard_strategy import LoopGuardStrategy
from backtrack_sampler.strategy.slop_list import default_slop_list
from common import machine, table

CREATIVE = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a short story about a girl who discovers a hidden garden behind her school.",
    "Write a short story about a robot learning to paint.",
    "Write a short story about two friends lost on a mountain at night.",
    "Write a short story about a baker who opens a shop in a small town.",
    "Write a short story about a storm at sea.",
    "Write a short story about an old man and his cat.",
    "Write a short story about a wizard who loses his magic.",
    "Write a short story about a musician playing her last concert.",
    "Write a short story about a child's first day at a new school.",
    "Write a short story about a traveller arriving in a city at dawn.",
    "Write a short story about a letter that arrives fifty years late.",
]
ESSAYS = [
    "Write a short essay on why people should read more books.",
    "Write a short essay on the importance of sleep.",
    "Write a short essay on how technology changes friendship.",
    "Write a short essay on the value of learning a second language.",
    "Write a short essay on why cities need parks.",
    "Write a short essay on the benefits and costs of working from home.",
    "Write a short essay on what makes a good teacher.",
    "Write a short essay on the role of failure in success.",
    "Write a short essay on why history matters.",
    "Write a short essay on protecting the oceans.",
    "Write a short essay on the meaning of home.",
    "Write a short essay on kindness between strangers.",
]
HEADER = [
    "run",
    "texts",
    "tokens",
    "rewinds",
    "tok/s",
    "mined-list hits / 1k words",
    "slop-list hits / 1k words",
    '"not X, but Y" / 1k chars',
    "MATTR-500",
    "distinct-2",
    "looping",
    "mean log-prob / token",
]
TEMPERATURE = 0.8


def prompt_list(n: int) -> list[str]:
    """``n`` prompts, creative and essay in turn."""
    mixed = [p for pair in zip(CREATIVE, ESSAYS, strict=True) for p in pair]
    if not 1 <= n <= len(mixed):
        raise SystemExit(f"--prompts must be in [1, {len(mixed)}], got {n}")
    return mixed[:n]


def generate(
    provider, prompts: list[str], bans: list[BanPhrase] | None, n_tokens: int, loop_guard: bool = False
) -> tuple[list, float]:
    """One text per prompt (its seed: the prompt's index), one after another; the results and the wall time."""
    members = [AntiSlopStrategy(provider, bans)] if bans else []
    if loop_guard:
        members.append(LoopGuardStrategy(provider))
    strategy = members[0] if len(members) == 1 else ChainStrategy(members) if members else None
    sampler = BacktrackSampler(provider, strategy)
    started = time.perf_counter()
    results = [
        sampler.generate_text(prompt, max_new_tokens=n_tokens, temperature=TEMPERATURE, seed=index)
        for index, prompt in enumerate(prompts)
    ]
    return results, time.perf_counter() - started


def row(name: str, results: list, elapsed: float, prompts: list[str], mined: list[BanPhrase], provider, score: bool):
    texts = [r.text for r in results]
    tokens = sum(r.stats.tokens_emitted for r in results)
    by_mined = measure_texts(texts, mined)
    by_slop = measure_texts(texts, default_slop_list())
    logprob = f"{mean_logprob(provider, texts, prompts):.3f}" if score else "not scored"
    return [
        name,
        len(texts),
        tokens,
        sum(r.stats.rewinds for r in results),
        f"{tokens / elapsed:.1f}",
        f"{by_mined.ban_hits_per_1k_words:.2f}",
        f"{by_slop.ban_hits_per_1k_words:.2f}",
        f"{by_slop.contrasts_per_1k_chars:.3f}",
        f"{by_slop.mattr_500:.4f}",
        f"{by_slop.distinct_2:.4f}",
        f"{by_slop.looping_texts:.0%}",
        logprob,
    ]


def run(
    n_prompts: int, n_tokens: int, top: int, hard: int, min_count: int = 3, score: bool = True
) -> tuple[list, list[list]]:
    """The mined terms and the table's rows (before, after, after with the loop guard too)."""
    frequency = wordfreq_frequency()
    provider = load_provider(n_ctx=n_tokens + 128)
    asked = prompt_list(n_prompts)
    prompts = [provider.apply_chat_template([{"role": "user", "content": p}]) for p in asked]
    before, before_s = generate(provider, prompts, None, n_tokens)
    texts = [r.text for r in before]
    # The prompts' own words (their topics: "baker", "school") are what users asked for, not the model's habits.
    terms = mine_terms(texts, frequency, top=top, hard=hard, min_count=min_count, min_texts=2, prompts=asked)
    mined = [BanPhrase(t.term, t.factor) for t in terms]
    after, after_s = generate(provider, prompts, mined, n_tokens)
    guarded, guarded_s = generate(provider, prompts, mined, n_tokens, loop_guard=True)
    rows = [
        row("before (no bans)", before, before_s, prompts, mined, provider, score),
        row(f"after ({len(mined)} mined bans)", after, after_s, prompts, mined, provider, score),
        row("after, + loop guard", guarded, guarded_s, prompts, mined, provider, score),
    ]
    return terms, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--top", type=int, default=40, help="terms to mine")
    parser.add_argument("--hard", type=int, default=10, help="of which hard bans")
    parser.add_argument("--min-count", type=int, default=3, help="fewest occurrences of a mined term")
    parser.add_argument("--no-score", action="store_true", help="skip the log-probability scoring")
    args = parser.parse_args()
    print(machine())
    terms, rows = run(args.prompts, args.tokens, args.top, args.hard, args.min_count, score=not args.no_score)
    shown = ", ".join(f"{t.term} ({t.factor:g})" for t in terms[:20])
    print(f"mined {len(terms)} terms (factor in brackets; 0 = hard ban): {shown}{', ...' if len(terms) > 20 else ''}")
    print(table(HEADER, rows))


if __name__ == "__main__":
    main()
