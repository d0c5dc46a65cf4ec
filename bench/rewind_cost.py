"""Rewind cost: model positions evaluated per emitted token under a strategy that rewinds often.

CreativeWriting rewinds a token whenever the distribution is flat. The ideal
engine evaluates each sampled token once (emitted + rewound tokens), never
re-evaluates the prompt, and re-samples at a rewind point from cached logits
(zero forward passes per rewind). The script counts, on the real backend:

- positions evaluated by the model for generated tokens (``stats.positions_evaluated``),
- the ideal: tokens emitted + tokens rewound,
- prompt positions evaluated beyond the first prefill (must be 0),
- forward passes made at a rewind point, beyond the ideal (must be 0).

    python bench/rewind_cost.py [--backend llamacpp] [--tokens 256] [--seeds 3]
"""

from __future__ import annotations

import argparse

from backtrack_sampler import BacktrackSampler, CreativeWritingStrategy
from common import BACKENDS, load_backend, machine, table

HEADER = [
    "backend",
    "strategy",
    "emitted",
    "rewinds",
    "tokens rewound",
    "positions evaluated",
    "ideal (emitted + rewound)",
    "evaluated / emitted",
    "prompt re-evaluated",
    "forward passes",
]


def measure(backend_name: str, n_tokens: int, seeds: int) -> list[list]:
    backend = load_backend(backend_name)
    provider = backend.provider
    forward_calls = 0
    original = provider._forward

    def counting_forward(tokens):
        nonlocal forward_calls
        forward_calls += 1
        return original(tokens)

    provider._forward = counting_forward
    prompt = provider.apply_chat_template([{"role": "user", "content": "Write a short story about a lighthouse."}])
    prompt_tokens = provider.encode(prompt)
    sampler = BacktrackSampler(provider, CreativeWritingStrategy(provider))
    emitted = rewinds = rewound = evaluated = prompt_extra = calls = 0
    for seed in range(seeds):
        backend.reset()
        before, forward_calls = provider.positions_evaluated, 0
        result = sampler.generate_text(prompt, max_new_tokens=n_tokens, temperature=1.0, seed=seed)
        stats = result.stats
        emitted += stats.tokens_emitted
        rewinds += stats.rewinds
        rewound += stats.tokens_rewound
        evaluated += stats.positions_evaluated
        prompt_extra += provider.positions_evaluated - before - stats.positions_evaluated - len(prompt_tokens)
        calls += forward_calls - 1  # the prefill is one call
    ideal = emitted + rewound
    return [
        [
            backend_name,
            "CreativeWriting",
            emitted,
            rewinds,
            rewound,
            evaluated,
            ideal,
            f"{evaluated / emitted:.3f}",
            prompt_extra,
            f"{calls} (one per position evaluated)" if calls == evaluated else f"{calls} vs {evaluated} positions",
        ]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=BACKENDS, default="llamacpp")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    print(machine())
    print(table(HEADER, measure(args.backend, args.tokens, args.seeds)))


if __name__ == "__main__":
    main()
