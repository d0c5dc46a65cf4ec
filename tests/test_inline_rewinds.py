"""``generate --show-rewinds`` on a terminal: erased text struck through in place (issue 23, item 1).

A scripted model with a tiny vocabulary makes every case exact: its greedy
choice is " a", banned, so each rewind erases " a..." and " b" is written
after it. Off a terminal stdout keeps the text alone and the rewinds are
``[rewind]`` lines on stderr; ``NO_COLOR`` gives plain markers.
"""

from __future__ import annotations

import io
import re
import sys

import pytest

from backtrack_sampler import BacktrackSampler
from backtrack_sampler.cli import generate
from backtrack_sampler.cli.generate import render
from backtrack_sampler.cli.inline_rewinds import PLAIN, STRUCK, InlineRewinds, inline_marks
from backtrack_sampler.cli.main import build_parser
from backtrack_sampler.core.events import RewindEvent, TextEvent
from backtrack_sampler.provider.scripted_provider import ScriptedProvider
from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy

VOCAB = ["<eos>", " a", " b", " c"]
STRUCK_SPAN = re.compile(r"\x1b\[9;2m(.*?)\x1b\[0m", re.S)
PLAIN_SPAN = re.compile(r"\[-(.*?)-\]", re.S)


def scripted() -> ScriptedProvider:
    # Greedy prefers " a", then " b", then " c".
    return ScriptedProvider(VOCAB, lambda tokens: [0.0, 3.0, 2.0, 1.0], 0)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def rewind(position: int, text: str) -> RewindEvent:
    return RewindEvent(position, text, (), (), (), "banned phrase", "AntiSlopStrategy")


@pytest.mark.parametrize(
    ("is_tty", "environ", "marks"),
    [
        (True, {}, STRUCK),
        (True, {"TERM": "xterm-256color"}, STRUCK),
        (True, {"NO_COLOR": "1"}, PLAIN),
        (True, {"NO_COLOR": ""}, STRUCK),  # no-color.org: an empty NO_COLOR does not count
        (True, {"TERM": "dumb"}, PLAIN),
        (False, {}, None),
        (False, {"NO_COLOR": "1"}, None),
    ],
)
def test_the_marks_follow_the_terminal_and_no_color(is_tty, environ, marks):
    assert inline_marks(is_tty, environ) == marks


def test_render_strikes_each_erased_text_where_it_was_and_writes_the_replacement_after_it():
    provider = scripted()
    sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["a"]))
    out, err = io.StringIO(), io.StringIO()

    events = sampler.stream(" c", max_new_tokens=3, temperature=0)
    finish = render(events, out, err, show_rewinds=True, inline=InlineRewinds(STRUCK, provider.token_bytes))

    shown = out.getvalue()
    assert finish.text == " b b b"
    assert shown == " \x1b[9;2ma a\x1b[0m b \x1b[9;2ma a\x1b[0m b \x1b[9;2ma\x1b[0m b\n"
    # Without the struck spans, stdout is the final text; every struck span is banned text.
    assert STRUCK_SPAN.sub("", shown).replace("  ", " ") == finish.text + "\n"
    assert all(set(span.split()) == {"a"} for span in STRUCK_SPAN.findall(shown))
    assert "[rewind]" not in err.getvalue()  # shown in place, not as stderr lines


def test_an_erased_text_lands_inside_a_text_event_at_its_token():
    provider = scripted()
    inline = InlineRewinds(PLAIN, provider.token_bytes)
    b, c = 2, 3
    inline.rewind(rewind(1, " a"))
    assert inline.text(TextEvent(" b c b", (b, c, b))) == " b [-a-] c b"
    inline.rewind(rewind(5, " a a"))  # after what was emitted: kept until position 5 is written
    assert inline.text(TextEvent(" c b", (c, b))) == " c b"
    assert inline.text(TextEvent(" c", (c,))) == " [-a a-] c"
    inline.rewind(rewind(7, " c"))
    assert inline.finish() == " [-c-]"  # nothing followed it: shown at the end
    assert inline.finish() == ""


def test_a_rewind_to_an_earlier_position_drops_the_erased_texts_after_it():
    provider = scripted()
    inline = InlineRewinds(PLAIN, provider.token_bytes)
    inline.rewind(rewind(3, " a"))
    inline.rewind(rewind(3, " c"))  # the same position again: both shown, in order
    inline.rewind(rewind(5, " a"))
    inline.rewind(rewind(4, " b a"))  # erases position 5's replacement: its mark goes
    inline.rewind(rewind(2, "\n"))  # white space alone shows nothing
    assert inline.text(TextEvent(" b b b b b", (2, 2, 2, 2, 2))) == " b b b b b"
    inline2 = InlineRewinds(PLAIN, provider.token_bytes)
    for event in (rewind(3, " a"), rewind(3, " c"), rewind(5, " a"), rewind(4, " b a")):
        inline2.rewind(event)
    assert inline2.text(TextEvent(" b b b b b", (2, 2, 2, 2, 2))) == " b b b [-a-] [-c-] b [-b a-] b"


def _run(monkeypatch, argv: list[str], stdout: io.StringIO) -> io.StringIO:
    """``run_generate`` on the scripted model with ``stdout`` as sys.stdout; returns stderr."""
    provider = scripted()
    monkeypatch.setattr(generate, "load_provider", lambda args: provider)
    monkeypatch.setattr(generate, "format_prompt", lambda provider, prompt, args: " c")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", err)
    args = build_parser().parse_args(["generate", "x", "--ban", "a", "--temperature", "0", "--max-new-tokens", "3"])
    for name, value in argv:
        setattr(args, name, value)
    assert generate.run_generate(args) == 0
    return err


def test_generate_on_a_terminal_strikes_through_in_place(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = FakeTTY()
    err = _run(monkeypatch, [("show_rewinds", True)], out)
    assert "\x1b[9;2m" in out.getvalue() and STRUCK_SPAN.sub("", out.getvalue()).split() == ["b", "b", "b"]
    assert "[rewind]" not in err.getvalue()
    sampling, summary = err.getvalue().splitlines()
    assert sampling.startswith("sampling: temperature 0, top_k 40, top_p 0.95, min_p 0.05 (--temperature given")
    assert summary.startswith("finished (")


def test_generate_with_no_color_uses_plain_markers(monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    out = FakeTTY()
    _run(monkeypatch, [("show_rewinds", True)], out)
    assert "\x1b[" not in out.getvalue()
    assert PLAIN_SPAN.findall(out.getvalue()) and PLAIN_SPAN.sub("", out.getvalue()).split() == ["b", "b", "b"]


def test_generate_off_a_terminal_keeps_stdout_the_text_and_reports_rewinds_on_stderr(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = io.StringIO()
    err = _run(monkeypatch, [("show_rewinds", True)], out)
    assert out.getvalue() == " b b b\n"
    assert [line for line in err.getvalue().splitlines() if line.startswith("[rewind]")]


def test_without_show_rewinds_a_terminal_gets_the_text_alone(monkeypatch):
    out = FakeTTY()
    err = _run(monkeypatch, [("quiet", True)], out)
    assert out.getvalue() == " b b b\n"
    assert err.getvalue() == ""  # --quiet: no sampling line, no summary
