"""Bans in every script: word edges where a script has no spaces, NFC and case folding, regex bans, LoopGuard."""

from __future__ import annotations

import sys
import unicodedata
from bisect import bisect_right

import pytest
import regex

import test_bans as bans
from backtrack_sampler import (
    AntiSlopStrategy,
    BacktrackSampler,
    BanPhrase,
    LoopGuardStrategy,
    Rewind,
    RewindEvent,
    RewindRefusedEvent,
)
from backtrack_sampler.strategy.prompt_terms import PromptTerms
from backtrack_sampler.strategy.regex_tracker import with_script_word_edges
from backtrack_sampler.strategy.word_scripts import UNSPACED_RANGES, UNSPACED_SCRIPTS, is_unspaced, word_spans
from scripted import EOS, of, run, text_provider

VOCAB = [EOS, ".", " ", "从前", "有一个", "小村庄", "，", "村里", "住着", "村", "里", "住", "一个", "老人", "。"]
VOCAB += ["私", "は", "、", "学生", "です", "ภาษา", "ไทย", "ง่าย", "my", "我的", "iPhone", "用", "了", "户"]
VOCAB += ["cafe", "Cafe", "\u0301", " café", " Café", "é", "Straße", " STRASSE", "s", " x"]


FLAT = text_provider(VOCAB, lambda text: {})


def decisions_for(strategy, *pieces, prompt="."):
    """Feed ``pieces`` of VOCAB one by one after ``prompt``; (ctx, the strategy's decision after each)."""
    return bans.decisions_for(strategy, *pieces, prompt=prompt, provider=FLAT)


def rewinds(decisions) -> list[tuple[int, int]]:
    """(the piece after which, the position to which) of each rewind."""
    return [(at, d.position) for at, d in enumerate(decisions) if isinstance(d, Rewind)]


# -- whole-word phrases where the script has no spaces ---------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "pieces", "expected"),
    [
        ("村里", ("从前", "有一个", "小村庄", "，", "村里", "住着"), [(4, 4)]),  # decided at once: no edge to wait for
        ("村里", ("小村庄", "村", "里", "住着"), [(2, 1)]),  # split across tokens, inside running text
        ("一个", ("从前", "有一个", "小村庄"), [(1, 1)]),  # inside a token
        ("学生", ("私", "は", "学生", "です"), [(2, 2)]),
        ("は、", ("私", "は", "、", "学生"), [(2, 1)]),  # Hiragana, then punctuation
        ("ไทย", ("ภาษา", "ไทย", "ง่าย"), [(1, 1)]),  # Thai
        ("ง่าย", ("ภาษา", "ไทย", "ง่าย", "."), [(2, 2)]),  # Thai with a combining tone mark
    ],
)
def test_a_phrase_in_a_script_without_spaces_is_found_inside_running_text(phrase, pieces, expected):
    _, decisions = decisions_for(AntiSlopStrategy(None, [phrase]), *pieces)
    assert rewinds(decisions) == expected
    assert all(d.ban_phrase == phrase for d in decisions if isinstance(d, Rewind))


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        (("我的", "iPhone", "用", "了"), [(2, 1)]),  # "iPhone" begins a word after Han; "用" needs no edge
        (("我的", "iPhone", "用", "户"), [(2, 1)]),
        (("my", "iPhone", "用", "了"), []),  # "myiPhone": no word edge before "i"
        ((" ", "iPhone", "用"), [(2, 1)]),
        (("我的", "iPhone", "s", "用"), []),  # "iPhones用": "s" goes on with the word, no edge after "e"
    ],
)
def test_a_mixed_phrase_gets_the_rule_of_each_edge(pieces, expected):
    _, decisions = decisions_for(AntiSlopStrategy(None, ["iPhone用"]), *pieces)
    assert rewinds(decisions) == expected


def test_a_latin_word_next_to_han_is_a_whole_word():
    _, decisions = decisions_for(AntiSlopStrategy(None, ["iPhone"]), "我的", "iPhone", "用")
    assert rewinds(decisions) == [(2, 1)]  # "用" ends the word "iPhone"
    _, decisions = decisions_for(AntiSlopStrategy(None, ["iPhone"]), "my", "iPhone", "用")
    assert rewinds(decisions) == []


def test_text_in_a_script_without_spaces_streams_when_no_phrase_is_open():
    strategy = AntiSlopStrategy(None, ["村里"])
    ctx, _ = decisions_for(strategy, "从前", "有一个")
    assert strategy.holdback(ctx) == 0
    ctx, _ = decisions_for(strategy, "从前", "有一个", "村")
    assert strategy.holdback(ctx) == 1  # "村" may become "村里"


def test_a_chinese_ban_on_the_engine_writes_something_else():
    story = ["从前", "有一个", "小村庄", "，", "村里", "住着", "一个", "老人", "。"]

    def rule(text: str) -> dict[str, float]:
        written = text[1:]
        for i in range(len(story)):
            if written == "".join(story[:i]):
                return {story[i]: 9.0, "村": 5.0} if story[i] == "村里" else {story[i]: 9.0}
        if written.endswith("村"):
            return {"里": 9.0, "。": 1.0}
        return {EOS: 9.0}

    provider = text_provider(VOCAB, rule)
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["村里"]))
    events = run(sampler, ".", max_new_tokens=12, temperature=0)
    assert "村里" not in events[-1].text and not of(events, RewindRefusedEvent)
    assert [r.suppressed_text for r in of(events, RewindEvent)] == ["村里", "村里"]  # both spellings caught


# -- canonical equivalence and case folding ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phrase", "pieces", "expected"),
    [
        ("café", (" ", "cafe", "\u0301", " "), [(3, 1)]),  # typed with a combining accent
        ("cafe\u0301", (" café", " "), [(1, 0)]),  # the phrase typed so, the text precomposed
        ("CAFÉ", (" ", "cafe", "\u0301", " "), [(3, 1)]),  # case folding and NFC together
        ("cafe", (" ", "cafe", "\u0301", " "), []),  # "café" is not the word "cafe"
        ("caf", (" café", " "), []),
        ("STRASSE", ("Straße", " "), [(1, 0)]),
        ("straße", (" STRASSE", " "), [(1, 0)]),
    ],
)
def test_phrases_are_compared_in_nfc_and_case_folded(phrase, pieces, expected):
    ctx, decisions = decisions_for(AntiSlopStrategy(None, [phrase]), *pieces)
    assert rewinds(decisions) == expected


def test_a_substring_ban_maps_back_to_the_original_characters():
    ctx, decisions = decisions_for(AntiSlopStrategy(None, ["fé"], whole_words=False), " ", "cafe", "\u0301", "s")
    assert rewinds(decisions) == [(2, 1)]  # the match began in "cafe", where "f" is
    ctx, decisions = decisions_for(AntiSlopStrategy(None, ["e\u0301"], whole_words=False), " café")
    assert rewinds(decisions) == [(0, 0)]


def test_case_sensitive_phrases_compare_in_nfc():
    strategy = AntiSlopStrategy(None, [BanPhrase("Café", ignore_case=False)])
    assert rewinds(decisions_for(strategy, " ", "Cafe", "\u0301", " ")[1]) == [(3, 1)]
    assert rewinds(decisions_for(strategy, " ", "cafe", "\u0301", " ")[1]) == []
    assert rewinds(decisions_for(strategy, " Café", " ")[1]) == [(1, 0)]


# -- regex bans --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "pieces", "expected"),
    [
        (r"\b村里\b", ("从前", "有一个", "小村庄", "，", "村里", "住着"), [(5, 4)]),
        (r"\m村里\M", ("小村庄", "村", "里", "住着"), [(3, 1)]),
        (r"一个\B", ("从前", "有一个", "小村庄"), []),  # next to Han there is always a word edge
        (r"\biPhone\b", ("我的", "iPhone", "用", "了"), [(2, 1)]),
        (r"\biPhone\b", ("my", "iPhone", "用", "了"), []),
        (r"\bcafe\b", (" ", "cafe", "s", " "), []),  # between spaced letters, what regex means
        (r"\Bafe\b", (" ", "cafe", " "), [(2, 1)]),
        (r"\bcafé\b", (" ", "cafe", "\u0301", " "), [(3, 1)]),  # searched in NFC form, mapped back
        (r"fé", (" ", "cafe", "\u0301", "s"), [(3, 1)]),
        ("(?i)\\bCAFE\u0301", (" café", " "), [(1, 0)]),  # the pattern's text in NFC form too
    ],
)
def test_regex_word_assertions_follow_the_script_rule(pattern, pieces, expected):
    _, decisions = decisions_for(AntiSlopStrategy(None, [], regex=[pattern]), *pieces)
    assert rewinds(decisions) == expected


def test_only_word_assertions_outside_character_sets_are_rewritten():
    for kept in (r"[\b]", r"\\b", r"[^]\b]", r"[[:alpha:]\b]", r"\p{Han}", r"\N{LATIN SMALL LETTER A}"):
        assert with_script_word_edges(kept) == kept
    rewritten = with_script_word_edges(r"[a]\b")
    assert rewritten.startswith("[a](?:") and r"\b" not in rewritten


# -- LoopGuard ---------------------------------------------------------------------------------------------------


def test_loop_guard_counts_characters_where_the_script_has_no_spaces():
    strategy = LoopGuardStrategy(FLAT, min_length=4)
    pieces = ("村里", "住着", "一个", "老人", "。", "村里", "住着")
    _, decisions = decisions_for(strategy, *pieces)
    ((at, rewind),) = [(at, d) for at, d in enumerate(decisions) if isinstance(d, Rewind)]
    assert (at, rewind.position) == (6, 5) and rewind.ban_phrase == "村里住着"
    assert "repeat of 4 words" in rewind.reason
    _, decisions = decisions_for(strategy, "村里", "住着", "一个", "老人", "。", "村里", "住", "老人")
    assert rewinds(decisions) == []  # three characters only


def test_loop_guard_catches_a_chinese_loop_on_the_engine():
    loop = ["从前", "有一个", "小村庄", "，", "村里", "住着", "一个", "老人", "。"]

    def rule(text: str) -> dict[str, float]:
        written = text[1:]
        for i, piece in enumerate(loop):  # go on with the story, round and round; else end
            if written.endswith(piece):
                return {loop[(i + 1) % len(loop)]: 9.0, EOS: 4.0}
        return {loop[0]: 9.0}

    provider = text_provider(VOCAB, rule)
    sampler = BacktrackSampler(provider, LoopGuardStrategy(provider, min_length=4))
    events = run(sampler, ".", max_new_tokens=20, temperature=0)  # two rounds: a loop of 2 sentences
    text = events[-1].text
    chars = [c for c in text if is_unspaced(c)]
    assert of(events, RewindEvent) and not of(events, RewindRefusedEvent)
    assert not any(
        chars[i : i + 4] == chars[j : j + 4] for i in range(len(chars) - 3) for j in range(i + 1, len(chars) - 3)
    )


def test_loop_guard_words_are_case_folded_and_nfc():
    strategy = LoopGuardStrategy(FLAT, min_length=2)
    _, decisions = decisions_for(strategy, "Straße", " café", " STRASSE", " ", "cafe", "\u0301", " ")
    assert rewinds(decisions) == [(6, 2)]  # "STRASSE cafe\u0301" repeats "Straße café"


# -- the prompt's words, and the script table --------------------------------------------------------------------


def test_prompt_terms_split_scripts_without_spaces_into_characters():
    terms = PromptTerms(["村里", "iPhone用", "café"])
    assert terms.used_in("从前有一个小村庄，村里住着") == {0}
    assert terms.used_in("我的iPhone用了, cafe\u0301") == {1, 2}
    spans = [(a, b) for a, b in word_spans("我的iPhone, don't", "'")]
    assert spans == [(0, 1), (1, 2), (2, 8), (10, 15)]


def test_the_unspaced_table_agrees_with_the_unicode_script_properties():
    # Every word character whose Script is one of UNSPACED_SCRIPTS is in the table, and every one in the table
    # has one of them among its Script_Extensions (as "ー", used by Hiragana and Katakana). The characters are
    # read straight from unicodedata, so that no cache fills with every code point.
    script = regex.compile("[" + "".join(rf"\p{{sc={s}}}" for s in UNSPACED_SCRIPTS) + "]")
    extensions = regex.compile("[" + "".join(rf"\p{{scx={s}}}" for s in UNSPACED_SCRIPTS) + "]")
    firsts = [first for first, _ in UNSPACED_RANGES]
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        if unicodedata.category(char)[0] not in "LNM":
            continue
        i = bisect_right(firsts, code) - 1
        if i >= 0 and code <= UNSPACED_RANGES[i][1]:
            assert extensions.match(char), (hex(code), unicodedata.name(char, "?"))
        else:
            assert not script.match(char), (hex(code), unicodedata.name(char, "?"))
    assert [is_unspaced(c) for c in "村ーがกั。a"] == [True] * 5 + [False] * 2


# -- the embedded model ------------------------------------------------------------------------------------------


@pytest.mark.llamacpp
def test_a_chinese_whole_word_ban_on_the_real_model(any_provider):
    provider = any_provider
    prompt = provider.encode("从前有一个小村庄，村里住着")
    control = BacktrackSampler(provider).generate_text(prompt, max_new_tokens=40, temperature=0).text
    pairs = [control[i : i + 2] for i in range(len(control) - 1) if all(map(is_unspaced, control[i : i + 2]))]
    assert pairs, f"the control wrote no two characters of Han or Kana: {control!r}"
    phrase = pairs[0]  # one the model writes on this CPU, without the ban

    strategy = AntiSlopStrategy(provider, [phrase])
    events = run(BacktrackSampler(provider, strategy), prompt, max_new_tokens=40, temperature=0)
    text = events[-1].text
    assert of(events, RewindEvent) and not of(events, RewindRefusedEvent)
    assert phrase not in unicodedata.normalize("NFC", text), (phrase, control, text)
