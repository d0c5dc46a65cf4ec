"""Mining a ban list: the words and n-grams a model writes far more often than people do.

1. Count the words (``diversity.words``) and the word n-grams of each order
   asked for, within each text, over all the texts.
2. Keep the candidates: seen ``min_count`` times or more, in ``min_texts``
   texts or more (so one story's hero does not top the list); a word of 3
   letters or more, letters only, not a stop-word; an n-gram without digits
   that does not start with a stop-word and holds a word of 3 letters or more
   that is not one ("testament to" stays, "of the" and "the tapestry" go);
   with ``prompts``, no word of the term may be one the prompts use
   (compared as ``exempt_prompt_terms`` compares them: "tapestries" in a
   prompt keeps "tapestry" out), so the topics users asked about are not
   mined as the model's habits.
3. Compare each with people's usage: its share of the model's terms of that
   order (count / all n-grams of that order) over its frequency in English
   from ``wordfreq.word_frequency(term, "en")`` (which estimates multi-word
   terms from their words), floored at ``FLOOR`` so a word wordfreq has never
   seen gets a finite ratio.
4. Rank by that over-use ratio (then count, then the term, so the output is
   deterministic); walk down the ranking and drop a term that holds, or is
   held in, a term already taken ("rich tapestry" after "tapestry").
5. The first ``hard`` terms get factor 0 (hard bans); the rest soft bans,
   with factors from ``SOFT_LOW`` for the first to ``SOFT_HIGH`` for the last.

``ban_list_json`` writes the result as the ``[[phrase, factor], ...]`` JSON
that ``--ban-file`` and ``load_ban_list`` read.

Example:
    >>> terms = mine_terms(texts, wordfreq_frequency(), top=20, hard=5)  # doctest: +SKIP
    >>> Path("bans.json").write_text(ban_list_json(terms))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from backtrack_sampler.core.checks import check_int
from backtrack_sampler.metrics.diversity import ngrams, words
from backtrack_sampler.metrics.stopwords import STOPWORDS
from backtrack_sampler.strategy.prompt_terms import word_stem

FLOOR = 1e-8  # the human frequency of a term wordfreq does not know (its rarest listed words are about this)
SOFT_LOW, SOFT_HIGH = 0.2, 0.8  # soft-ban factors of the first and the last soft term
INSTALL_HINT = "pip install 'backtrack_sampler[score]'"


@dataclass(frozen=True)
class MinedTerm:
    """A term the model over-uses.

    Attributes:
        term: the words, lower-case, joined by spaces.
        count: occurrences in all the texts.
        texts: how many texts hold it.
        model_share: count over all the model's n-grams of the term's order.
        human_share: its frequency in English (wordfreq), at least ``FLOOR``.
        ratio: ``model_share / human_share``: how many times more often the model writes it.
        factor: 0 for a hard ban, (0, 1) for a soft one.
    """

    term: str
    count: int
    texts: int
    model_share: float
    human_share: float
    ratio: float
    factor: float


def wordfreq_frequency() -> Callable[[str], float]:
    """``wordfreq.word_frequency(term, "en")``; its data ships in its wheel, nothing is downloaded.

    Raises:
        ImportError: wordfreq is not installed, with the command that installs it.
    """
    try:
        import wordfreq
    except ImportError:
        raise ImportError(f"mining needs the wordfreq package; install it with: {INSTALL_HINT}") from None
    return lambda term: float(wordfreq.word_frequency(term, "en"))


def _is_content(word: str) -> bool:
    return len(word) >= 3 and word.isalpha() and word not in STOPWORDS


def is_candidate(gram: Sequence[str]) -> bool:
    """Whether a word n-gram may be banned (see step 2 of the module docstring)."""
    if len(gram) == 1:
        return _is_content(gram[0])
    if gram[0] in STOPWORDS or any(any(c.isdigit() for c in w) for w in gram):
        return False
    return any(_is_content(w) for w in gram)


def count_terms(texts: Iterable[str], orders: Sequence[int]) -> tuple[dict[int, Counter], Counter, dict[int, int]]:
    """Occurrences of each candidate n-gram, how many texts hold it, and all n-grams counted per order."""
    counts: dict[int, Counter] = {n: Counter() for n in orders}
    in_texts: Counter = Counter()
    totals = dict.fromkeys(orders, 0)
    for text in texts:
        tokens = words(text)
        for n in orders:
            grams = ngrams(tokens, n)
            totals[n] += len(grams)
            kept = [g for g in grams if is_candidate(g)]
            counts[n].update(kept)
            in_texts.update(set(kept))
    return counts, in_texts, totals


def _contains(longer: Sequence[str], shorter: Sequence[str]) -> bool:
    n = len(shorter)
    return any(tuple(longer[i : i + n]) == tuple(shorter) for i in range(len(longer) - n + 1))


def _overlaps(gram: tuple[str, ...], taken: Iterable[tuple[str, ...]]) -> bool:
    return any(_contains(gram, t) if len(gram) >= len(t) else _contains(t, gram) for t in taken)


def soft_factor(rank: int, n_soft: int) -> float:
    """The factor of the ``rank``-th soft ban (0-based) of ``n_soft``: ``SOFT_LOW`` up to ``SOFT_HIGH``."""
    if n_soft <= 1:
        return SOFT_LOW
    return round(SOFT_LOW + (SOFT_HIGH - SOFT_LOW) * rank / (n_soft - 1), 2)


def mine_terms(
    texts: Sequence[str],
    human_frequency: Callable[[str], float],
    orders: Sequence[int] = (1, 2, 3),
    top: int = 50,
    hard: int = 10,
    min_count: int = 3,
    min_texts: int = 2,
    prompts: Iterable[str] = (),
) -> list[MinedTerm]:
    """The ``top`` terms ``texts`` over-use most against ``human_frequency``, with ban factors.

    Args:
        texts: the model's texts.
        human_frequency: a term's frequency in human writing (``wordfreq_frequency()``).
        orders: the n-gram orders to mine (1: words).
        top: how many terms to return.
        hard: how many of the first get factor 0; the others get soft factors.
        min_count: fewest occurrences a term needs.
        min_texts: fewest texts that must hold it.
        prompts: the prompts the texts answer; a term with a word they use is left out.

    Raises:
        ValueError: naming the argument that is out of range.
    """
    check_int("top", top, 1)
    check_int("hard", hard, 0)
    check_int("min_count", min_count, 1)
    check_int("min_texts", min_texts, 1)
    if not orders or any(not isinstance(n, int) or not 1 <= n <= 5 for n in orders):
        raise ValueError(f"orders must be n-gram orders in [1, 5], got {list(orders)!r}")
    counts, in_texts, totals = count_terms(texts, sorted(set(orders)))
    asked = {word_stem(w) for prompt in prompts for w in words(prompt)}
    rows = []
    for n, counter in counts.items():
        for gram, count in counter.items():
            if count < min_count or in_texts[gram] < min_texts or any(word_stem(w) in asked for w in gram):
                continue
            human = max(human_frequency(" ".join(gram)), FLOOR)
            rows.append((count / totals[n] / human, count, gram, human))
    rows.sort(key=lambda r: (-r[0], -r[1], r[2]))
    chosen: list[tuple[float, int, tuple[str, ...], float]] = []
    for row in rows:
        if len(chosen) == top:
            break
        if not _overlaps(row[2], (c[2] for c in chosen)):
            chosen.append(row)
    n_soft = max(0, len(chosen) - hard)
    return [
        MinedTerm(
            term=" ".join(gram),
            count=count,
            texts=in_texts[gram],
            model_share=count / totals[len(gram)],
            human_share=human,
            ratio=ratio,
            factor=0.0 if rank < hard else soft_factor(rank - hard, n_soft),
        )
        for rank, (ratio, count, gram, human) in enumerate(chosen)
    ]


def ban_list_json(terms: Iterable[MinedTerm]) -> str:
    """The terms as the ``[[phrase, factor], ...]`` JSON that ``--ban-file`` reads, one entry a line."""
    entries = [json.dumps([t.term, t.factor], ensure_ascii=False) for t in terms]
    return "[\n" + ",\n".join(f"  {entry}" for entry in entries) + "\n]\n"
