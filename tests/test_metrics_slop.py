"""Slop measures on hand-written texts: exact counts and rates, and MATTR-500 against a naive reference."""

from __future__ import annotations

import random

import pytest

from backtrack_sampler.metrics.diversity import mattr, words
from backtrack_sampler.metrics.report import markdown_table, measure_texts
from backtrack_sampler.metrics.slop import (
    PhraseCounter,
    contrast_hits,
    contrast_matches,
    repeated_trigrams,
    trigram_counts,
)
from backtrack_sampler.strategy.ban_rules import BanPhrase
from backtrack_sampler.strategy.slop_list import default_slop_list

BANS = [BanPhrase("tapestry"), BanPhrase("testament to", 0.5), BanPhrase("delve")]


def test_ban_hits_are_whole_words_ignoring_case():
    text = "A Tapestry! tapestries, a testament to it; Testament To all. We delve; delved; DELVE."
    assert PhraseCounter(BANS).count(text) == {"tapestry": 1, "testament to": 2, "delve": 2}


def test_ban_hits_follow_an_entrys_own_matching():
    phrases = [BanPhrase("avid", whole_word=False), BanPhrase("Glow", ignore_case=False), BanPhrase("café")]
    assert PhraseCounter(phrases).count("David is avid. glow Glow, CAFÉ cafés") == {"avid": 2, "Glow": 1, "café": 1}


def test_ban_hits_in_scripts_without_spaces_need_no_boundary_next_to_them():
    # strategy.word_scripts' rule: a Han/Kana edge matches inside running text, a Latin edge needs a boundary.
    phrases = [BanPhrase("村里"), BanPhrase("iPhone用"), BanPhrase("ねこ")]
    text = "小村庄，村里住着。我的iPhone用了三年。xiPhone用 ねこがすき"
    assert PhraseCounter(phrases).count(text) == {"村里": 1, "iPhone用": 1, "ねこ": 1}
    assert measure_texts([text], phrases).ban_hits_per_1k_words == pytest.approx(3 * 1000 / len(words(text)))


def test_ban_hits_per_1k_words_split_into_words_and_phrases():
    # 22 words; 2 single-word hits (tapestry, delve) and 1 phrase hit (testament to)
    text = "The tapestry was a testament to her skill and we delve into it now with one two three four five six seven."
    assert len(words(text)) == 22
    report = measure_texts([text], BANS)
    assert report.words == 22
    assert report.ban_words_per_1k_words == pytest.approx(2 * 1000 / 22)
    assert report.ban_phrases_per_1k_words == pytest.approx(1 * 1000 / 22)
    assert report.ban_hits_per_1k_words == pytest.approx(3 * 1000 / 22)
    assert report.top_ban_hits == [("delve", 1), ("tapestry", 1), ("testament to", 1)]


def test_rates_are_pooled_over_the_texts():
    texts = ["tapestry " * 3 + "plain " * 7, "plain " * 30]  # 3 hits in 40 words
    assert measure_texts(texts, BANS).ban_hits_per_1k_words == pytest.approx(3 * 1000 / 40)


def test_the_default_list_is_the_slop_list():
    text = "It was a testament to the rich tapestry of life."
    expected = sum(PhraseCounter(default_slop_list()).count(text).values())
    assert expected > 0
    assert measure_texts([text]).ban_hits_per_1k_words == pytest.approx(expected * 1000 / len(words(text)))


@pytest.mark.parametrize(
    "text",
    [
        "It was not fear, but relief.",
        "She wasn't angry; but she was tired of waiting.",
        "It wasn’t fear — it was relief.",
        "It's not about the money. It's about trust.",
        "This isn't a house. It is a home.",
        "The garden is not just a place. It is a refuge.",
        "The town was no longer quiet; it was loud.",
        "They didn't walk. They walked away.",
    ],
)
def test_each_contrast_form_counts_once(text):
    assert contrast_hits(text) == 1


@pytest.mark.parametrize(
    "text",
    [
        "I did not go, but when I did, it rained.",  # "but" opens a clause of its own
        "Not only this, but also that.",  # "not only ... but also" is excluded
        "He said it was not that bad, but we left.",
        "A plain sentence. Another plain one, but fine.",
        "He was no longer a boy; he was a man.",  # no it/they/this/that after the break
    ],
)
def test_near_misses_are_not_contrasts(text):
    assert contrast_hits(text) == 0


def test_contrasts_merge_overlapping_sentences_and_rate_per_1k_chars():
    text = "It's not a bug, but a feature. It's a gift. The sky is blue. It was not fear, but relief."
    assert contrast_matches(text) == [(0, 1), (3, 3)]  # two patterns on sentences 0-1 merge into one hit
    report = measure_texts([text], BANS)
    assert report.contrasts_per_1k_chars == pytest.approx(2 * 1000 / len(text))


def test_trigram_counts_skip_stopword_only_trigrams():
    counts = trigram_counts(["once upon a time there was a fox", "once upon a time it was"])
    assert counts[("once", "upon", "a")] == 2
    assert ("there", "was", "a") not in counts  # only stop-words
    assert repeated_trigrams(counts) == 0
    assert repeated_trigrams(counts, minimum=2) == 4  # once upon a, upon a time: 2 each


def test_repeated_trigrams_per_1k_words():
    texts = ["the red fox ran"] * 3 + ["a blue bird sang here"]
    report = measure_texts(texts, BANS)
    # "the red fox" and "red fox ran" occur 3 times each: 6 occurrences in 17 words
    assert report.repeated_trigrams_per_1k_words == pytest.approx(6 * 1000 / 17)
    assert report.top_trigrams[:2] == [("red fox ran", 3), ("the red fox", 3)]


def naive_mattr(items, window):
    if len(items) <= window:
        return len(set(items)) / len(items)
    ratios = [len(set(items[i : i + window])) / window for i in range(len(items) - window + 1)]
    return sum(ratios) / len(ratios)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mattr_500_matches_a_naive_reference(seed):
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(300)]
    items = [rng.choice(vocabulary) for _ in range(1300)]
    assert mattr(items) == pytest.approx(naive_mattr(items, 500))


def test_report_mattr_spans_the_texts_and_loops_are_a_share():
    looping = "I went home and I went home and I went home and I went home"
    plain = "A quiet morning on the river bank with birds."
    report = measure_texts([looping, plain], BANS)
    assert report.looping_texts == 0.5
    assert report.mattr_500 == pytest.approx(naive_mattr(words(looping) + words(plain), 500))


def test_table_has_a_difference_column_for_two_inputs():
    first = measure_texts(["It was a tapestry of light, not dark, but bright."] * 2, BANS)
    second = measure_texts(["The light was bright over the hills today."] * 2, BANS)
    table = markdown_table({"first": first, "second": second})
    lines = table.splitlines()
    assert lines[0] == "| measure | first | second | difference (2nd - 1st) |"
    hits = next(line for line in lines if line.startswith("| ban-list hits"))
    assert hits.split("|")[2:5] == [" 100.00 ", " 0.00 ", " -100.00 (-100%) "]
    assert "log-prob" not in table  # not measured: no row


def test_measure_refuses_no_texts():
    with pytest.raises(ValueError, match="texts must hold at least one text"):
        measure_texts([])
