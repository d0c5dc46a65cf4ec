"""One row of measures for a set of texts (``measure_texts``), and inputs side by side in a markdown table.

What each measure is (see ``slop`` and ``diversity`` for the definitions):

| measure | over the set of texts |
|---|---|
| empty texts | texts with no visible character (nothing, or only white space) |
| ended at once | batch results that ended before their first token (an EOS first); only when the input says |
| ban-list hits / 1k words | occurrences of the list's entries per 1,000 words (words and phrases also apart) |
| contrasts / 1k chars | "not X, but Y" contrasts per 1,000 characters |
| repeated trigrams / 1k words | occurrences of trigrams seen 3 times or more in all, per 1,000 words |
| MATTR-500 | over the words of all the texts in order (windows may span two texts) |
| distinct-2, distinct-3 | mean over the texts |
| looping texts | share of texts in which a run of 4 words occurs 3 times or more |
| mean log-prob / token | optional: under a model, after each text's prompt |

Example:
    >>> report = measure_texts(["It was not fear, but relief.", "A tapestry of light."])
    >>> report.contrasts_per_1k_chars > 0, report.ban_hits_per_1k_words > 0
    (True, True)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import fmean
from typing import Any

from backtrack_sampler.metrics.diversity import distinct_n, loops, mattr, words
from backtrack_sampler.metrics.slop import (
    PhraseCounter,
    contrast_hits,
    is_single_word,
    per_1k,
    repeated_trigrams,
    trigram_counts,
)
from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.slop_list import default_slop_list

TOP = 5  # entries shown in the "most frequent" lists


@dataclass(frozen=True)
class TextsReport:
    """The measures of one set of texts (rates pooled over the set: total hits over total words)."""

    texts: int
    words: int
    chars: int
    empty_texts: int
    ban_hits_per_1k_words: float
    ban_words_per_1k_words: float
    ban_phrases_per_1k_words: float
    contrasts_per_1k_chars: float
    repeated_trigrams_per_1k_words: float
    mattr_500: float
    distinct_2: float
    distinct_3: float
    looping_texts: float
    mean_logprob: float | None = None
    ended_at_once: int | None = None
    top_ban_hits: list[tuple[str, int]] = field(default_factory=list)
    top_trigrams: list[tuple[str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values."""
        return asdict(self)


def measure_texts(
    texts: Sequence[str],
    bans: Iterable[BanPhrase] | None = None,
    mean_logprob: float | None = None,
    ended_at_once: int | None = None,
) -> TextsReport:
    """The measures of ``texts`` against the ban list ``bans`` (default: the project's slop list).

    Args:
        texts: the texts (at least one).
        bans: the list whose hits are counted.
        mean_logprob: a fluency figure computed elsewhere (``logprob.mean_logprob``), carried into the report.
        ended_at_once: how many of the texts ended before their first token, when the input says
            (``texts.LoadedTexts.ended_at_once``), carried into the report.

    Raises:
        ValueError: ``texts`` is empty.
    """
    if not texts:
        raise ValueError("texts must hold at least one text, got none")
    counter = PhraseCounter(default_slop_list() if bans is None else bans)
    hits: Counter[str] = Counter()
    for text in texts:
        hits.update(counter.count(text))
    word_lists = [words(text) for text in texts]
    n_words = sum(len(w) for w in word_lists)
    single = sum(count for phrase, count in hits.items() if is_single_word(phrase))
    trigrams = trigram_counts(texts)
    return TextsReport(
        texts=len(texts),
        words=n_words,
        chars=sum(len(text) for text in texts),
        empty_texts=sum(1 for text in texts if not text.strip()),
        ban_hits_per_1k_words=per_1k(sum(hits.values()), n_words),
        ban_words_per_1k_words=per_1k(single, n_words),
        ban_phrases_per_1k_words=per_1k(sum(hits.values()) - single, n_words),
        contrasts_per_1k_chars=per_1k(sum(contrast_hits(text) for text in texts), sum(len(t) for t in texts)),
        repeated_trigrams_per_1k_words=per_1k(repeated_trigrams(trigrams), n_words),
        mattr_500=mattr([w for ws in word_lists for w in ws]),
        distinct_2=fmean(distinct_n(ws, 2) for ws in word_lists),
        distinct_3=fmean(distinct_n(ws, 3) for ws in word_lists),
        looping_texts=fmean(1.0 if loops(text) else 0.0 for text in texts),
        mean_logprob=mean_logprob,
        ended_at_once=ended_at_once,
        top_ban_hits=sorted(hits.items(), key=lambda item: (-item[1], item[0]))[:TOP],
        top_trigrams=[(" ".join(g), c) for g, c in sorted(trigrams.items(), key=lambda i: (-i[1], i[0]))[:TOP]],
    )


@dataclass(frozen=True)
class Row:
    """A line of the table: its label, the report's attribute, its format, and which way is better."""

    label: str
    attribute: str
    fmt: str
    better: str  # "lower", "higher" or "" (neither)


ROWS = (
    Row("texts", "texts", "{:d}", ""),
    Row("- empty", "empty_texts", "{:d}", ""),
    Row("- ended at once (no token)", "ended_at_once", "{:d}", ""),
    Row("words per text", "words_per_text", "{:.1f}", ""),
    Row("ban-list hits / 1k words", "ban_hits_per_1k_words", "{:.2f}", "lower"),
    Row("- single words / 1k words", "ban_words_per_1k_words", "{:.2f}", "lower"),
    Row("- phrases / 1k words", "ban_phrases_per_1k_words", "{:.2f}", "lower"),
    Row('"not X, but Y" / 1k chars', "contrasts_per_1k_chars", "{:.3f}", "lower"),
    Row("repeated trigrams / 1k words", "repeated_trigrams_per_1k_words", "{:.1f}", "lower"),
    Row("MATTR-500", "mattr_500", "{:.4f}", "higher"),
    Row("distinct-2", "distinct_2", "{:.4f}", "higher"),
    Row("distinct-3", "distinct_3", "{:.4f}", "higher"),
    Row("looping texts", "looping_texts", "{:.1%}", "lower"),
    Row("mean log-prob / token", "mean_logprob", "{:.3f}", "higher"),
)


COUNTS = ("texts", "empty_texts", "ended_at_once")  # numbers of texts: no relative difference, not plotted


def row_value(report: TextsReport, attribute: str) -> float | None:
    """The value of a table row for ``report`` (``words_per_text`` is derived)."""
    if attribute == "words_per_text":
        return report.words / report.texts
    return getattr(report, attribute)


def shown_rows(reports: Mapping[str, TextsReport]) -> list[Row]:
    """The rows that have a value for every report (the log-prob row only when it was measured)."""
    return [row for row in ROWS if all(row_value(r, row.attribute) is not None for r in reports.values())]


def _difference(row: Row, first: float, second: float) -> str:
    if row.fmt.endswith("%}"):
        return f"{(second - first) * 100:+.1f} pts"
    text = ("{:+" + row.fmt[2:]).format(second - first)
    if first and row.attribute not in COUNTS:
        text += f" ({(second - first) / abs(first):+.0%})"
    return text


def markdown_table(reports: Mapping[str, TextsReport]) -> str:
    """The measures as rows, the inputs as columns; with two inputs, a column for the second minus the first."""
    names = list(reports)
    header = ["measure", *names] + (["difference (2nd - 1st)"] if len(names) == 2 else [])
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row in shown_rows(reports):
        values = [row_value(reports[name], row.attribute) for name in names]
        cells = [row.label + (f" ({row.better} is better)" if row.better else "")]
        cells += [row.fmt.format(value) for value in values]
        if len(names) == 2:
            cells.append(_difference(row, values[0], values[1]))  # type: ignore[arg-type]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def top_lists(reports: Mapping[str, TextsReport]) -> str:
    """The most frequent ban-list hits and trigrams of each input, one line each."""
    lines = []
    for name, report in reports.items():
        hits = ", ".join(f"{phrase} ({count})" for phrase, count in report.top_ban_hits) or "none"
        grams = ", ".join(f"{gram} ({count})" for gram, count in report.top_trigrams) or "none"
        lines.append(f"{name}: most frequent ban-list hits: {hits}")
        lines.append(f"{name}: most frequent trigrams: {grams}")
    return "\n".join(lines)
