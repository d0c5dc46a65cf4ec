"""Hypothesis strategies shared by the property tests: vocabularies, phrases, rewind budgets, sampling arguments."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from backtrack_sampler import BanPhrase, RewindBudget
from scripted import EOS

budgets = st.builds(RewindBudget, per_position=st.integers(0, 8), per_generation=st.integers(0, 60))
"""Rewind budgets from none at all to generous."""


def vocabs(alphabet: str, max_extra: int) -> st.SearchStrategy[list[str]]:
    """Vocabularies: EOS, each character of ``alphabet``, then up to ``max_extra`` tokens of 2-3 of its characters.

    A multi-character token that is a substring of ``alphabet`` is dropped (it would spell a run of it).
    """
    return st.lists(st.text(alphabet, min_size=2, max_size=3), max_size=max_extra, unique=True).map(
        lambda extra: [EOS, *alphabet, *(t for t in extra if t not in alphabet)]
    )


def phrases(alphabet: str) -> st.SearchStrategy[list[str]]:
    """One to three phrases of 2-3 characters of ``alphabet``."""
    return st.lists(st.text(alphabet, min_size=2, max_size=3), min_size=1, max_size=3)


def ban_phrases(alphabet: str) -> st.SearchStrategy[list[BanPhrase]]:
    """Up to four ``BanPhrase`` of 1-3 characters, hard or soft, with case and whole-word options set or not."""
    return st.lists(
        st.builds(
            BanPhrase,
            st.text(alphabet, min_size=1, max_size=3),
            st.sampled_from([0.0, 0.0, 0.5]),
            st.sampled_from([None, True, False]),
            st.sampled_from([None, True, False]),
        ),
        max_size=4,
    )


def sampling(temperatures: Sequence[float], top_ks: Sequence[int] | None = None) -> st.SearchStrategy[dict]:
    """Keyword arguments of ``stream``: up to 30 new tokens, one of ``temperatures`` (and of ``top_ks``), a seed."""
    fields = {"max_new_tokens": st.integers(0, 30), "temperature": st.sampled_from(list(temperatures))}
    if top_ks is not None:
        fields["top_k"] = st.sampled_from(list(top_ks))
    fields["seed"] = st.integers(0, 2**16)
    return st.fixed_dictionaries(fields)
