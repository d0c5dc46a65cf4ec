from hypothesis import given
from hypothesis import strategies as st

from backtrack_sampler.metrics.diversity import distinct_n, loops, mattr, most_repeated, words


def test_words_lower_and_apostrophes():
    expected = ["it's", "the", "cat's", "hat", "isn't", "it", "42", "cats"]
    assert words("It's the Cat's hat, isn't it? 42 cats.") == expected


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
