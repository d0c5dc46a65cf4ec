import re

from hypothesis import given
from hypothesis import strategies as st

from backtrack_sampler.metrics.diversity import distinct_n, loops, mattr, most_repeated, words
from backtrack_sampler.strategy.word_scripts import is_unspaced

OLD_WORD = re.compile(r"\w+(?:['’]\w+)*")
"""The word pattern before scripts without spaces were split (one word per run of \\w)."""


def test_words_lower_and_apostrophes():
    expected = ["it's", "the", "cat's", "hat", "isn't", "it", "42", "cats"]
    assert words("It's the Cat's hat, isn't it? 42 cats.") == expected


def test_each_han_kana_or_thai_character_is_a_word():
    assert words("我的iPhone, don't") == ["我", "的", "iphone", "don't"]
    assert words("小村庄，村里住着") == ["小", "村", "庄", "村", "里", "住", "着"]
    assert words("ねこがすき") == ["ね", "こ", "が", "す", "き"]
    assert words("Привет, мир") == ["привет", "мир"]  # spaced scripts keep their words


def test_chinese_loops_and_distinct_counts_see_words():
    # Before: the whole run was one "word", so no 4-gram existed and the loop went unseen.
    assert loops("我爱你，我爱你，我爱你，我爱你。")
    assert not loops("我爱你，他恨我。")
    assert distinct_n(words("我爱你我爱你"), 1) == 3 / 6


@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80))
def test_words_outside_unspaced_scripts_are_unchanged(text):
    if any(is_unspaced(c) for c in text):
        text = "".join(c for c in text if not is_unspaced(c))
    assert words(text) == [w.lower() for w in OLD_WORD.findall(text)]


def test_distinct_n():
    assert distinct_n(words("the cat saw the cat"), 1) == 3 / 5
    assert distinct_n(words("the cat saw the cat"), 2) == 3 / 4
    assert distinct_n([], 2) == 1.0


def test_loops_needs_three_occurrences_of_a_four_gram():
    assert not loops("a b c d x a b c d y")  # twice
    assert loops("a b c d x a b c d y a b c d")
    assert most_repeated(words("I continued, I continued, I continued, I continued"), 4) == (
        ("i", "continued", "i", "continued"),
        3,
    )


def test_mattr_short_text_is_ttr_and_window_slides():
    assert mattr(["a", "b", "a"]) == 2 / 3
    # windows of 2 over a a b b: {a}, {a,b}, {b} -> (1 + 2 + 1) / 3 / 2
    assert mattr(["a", "a", "b", "b"], window=2) == 4 / 3 / 2


@given(st.lists(st.sampled_from("abcdef"), min_size=1, max_size=60), st.integers(1, 10))
def test_mattr_equals_the_mean_of_window_ttrs(items, window):
    if len(items) <= window:
        expected = len(set(items)) / len(items)
    else:
        ratios = [len(set(items[i : i + window])) / window for i in range(len(items) - window + 1)]
        expected = sum(ratios) / len(ratios)
    assert abs(mattr(items, window) - expected) < 1e-12
