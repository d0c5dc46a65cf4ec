"""Fluency: the mean log-probability per token of texts under a model's raw distribution.

Each text is encoded after its prompt (or after the model's BOS alone when it
has none) and scored token by token from the model's own logits: no
temperature, no top-k, no strategy. Higher (closer to 0) reads as more
fluent to that model; repetitive text scores high too, so read it next to
the diversity measures.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities of ``logits``, shape (vocab,), computed stably."""
    shifted = logits - np.max(logits)
    return shifted - np.log(np.exp(shifted).sum())


def text_logprob(provider: BaseProvider, text: str, prompt: str | None = None) -> tuple[float, int]:
    """The summed log-probability of ``text``'s tokens after ``prompt``, and how many tokens were scored.

    ``prompt`` is encoded with the model's BOS, ``text`` without (a text that
    tokenizes differently alone than after the prompt is scored as it
    tokenizes alone). A text longer than the model's context is scored on
    the tokens that fit after the prompt. An empty text scores ``(0.0, 0)``.
    """
    tokens = provider.encode(text, add_bos=False)
    if not tokens:
        return 0.0, 0
    context = provider.encode(prompt or "", add_bos=True)
    if not context:  # a model without a BOS and no prompt: the first token has no context to be scored from
        context, tokens = tokens[:1], tokens[1:]
    if provider.context_length is not None:
        tokens = tokens[: max(0, provider.context_length - len(context))]
    total = 0.0
    logits = provider.prefill(context)
    for i, token in enumerate(tokens):
        total += float(log_softmax(np.asarray(logits, dtype=np.float64))[token])
        if i + 1 < len(tokens):
            logits = provider.forward([token])
    return total, len(tokens)


def mean_logprob(provider: BaseProvider, texts: Sequence[str], prompts: Sequence[str | None] | None = None) -> float:
    """The mean log-probability per token over all ``texts`` (each after its prompt in ``prompts``, if given).

    Raises:
        ValueError: ``prompts`` is not as long as ``texts``, or no text has a token.
    """
    if prompts is not None and len(prompts) != len(texts):
        raise ValueError(f"prompts must hold one prompt per text ({len(texts)}), got {len(prompts)}")
    total, count = 0.0, 0
    for i, text in enumerate(texts):
        logprob, n = text_logprob(provider, text, prompts[i] if prompts is not None else None)
        total, count = total + logprob, count + n
    if not count:
        raise ValueError("texts must hold at least one token to score, got only empty texts")
    return total / count
