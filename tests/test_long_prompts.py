"""A prompt far longer than the context is refused by its characters, before it is tokenized.

``batch`` tokenized a 10 MB prompt line in full (17.6 s) before finding it did
not fit. The engine now applies the server's rule (``core.checks.surely_too_long``:
more than ``MAX_CHARS_PER_TOKEN`` characters per context token) before
``encode``, so every front end shares it. The tests count ``encode`` calls,
never time.
"""

from __future__ import annotations

import json

import pytest

from backtrack_sampler.batch import BatchDefaults, run_batch
from backtrack_sampler.core.checks import MAX_CHARS_PER_TOKEN, surely_too_long
from backtrack_sampler.core.engine import BacktrackSampler
from scripted import EOS, text_provider

CONTEXT = 64


def counted_provider():
    """A scripted model of ``CONTEXT`` positions whose ``encode`` records the length of each text it is given."""
    provider = text_provider([EOS, "a", "b"], lambda text: {EOS: 9.0}, context_length=CONTEXT)
    provider.encoded = []
    encode = provider.encode

    def counting(text, *args, **kwargs):
        provider.encoded.append(len(text))
        return encode(text, *args, **kwargs)

    provider.encode = counting
    return provider


def test_the_bound_is_the_servers():
    pytest.importorskip("fastapi", reason="the server needs the extra: server")
    from backtrack_sampler.server import prepare

    assert not hasattr(prepare, "MAX_CHARS_PER_TOKEN")  # one rule, in core.checks, used by the server too
    assert prepare.surely_too_long is surely_too_long
    assert surely_too_long("a" * (MAX_CHARS_PER_TOKEN * CONTEXT + 1), CONTEXT)
    assert not surely_too_long("a" * (MAX_CHARS_PER_TOKEN * CONTEXT), CONTEXT)


def test_the_engine_refuses_a_prompt_too_long_by_its_characters_without_encoding_it():
    provider = counted_provider()
    long = "a" * (MAX_CHARS_PER_TOKEN * CONTEXT + 1)
    with pytest.raises(ValueError, match=f"prompt has {len(long)} characters, far more than the {CONTEXT} tokens"):
        BacktrackSampler(provider).stream(long, max_new_tokens=2)
    assert provider.encoded == []
    # At the bound it is encoded, and then measured in tokens.
    with pytest.raises(ValueError, match=f"prompt has {MAX_CHARS_PER_TOKEN * CONTEXT} tokens"):
        BacktrackSampler(provider).stream(long[:-1], max_new_tokens=2)
    assert provider.encoded == [MAX_CHARS_PER_TOKEN * CONTEXT]


def test_batch_reports_a_huge_prompt_line_without_tokenizing_it(tmp_path):
    huge = "ab" * 5_000_000  # 10 MB on one line
    source = tmp_path / "in.jsonl"
    lines = [{"id": "huge", "prompt": huge}, {"id": "chat", "messages": [{"role": "user", "content": huge}]}]
    lines.append({"id": "small", "prompt": "ab", "max_tokens": 2})
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    provider = counted_provider()
    out = tmp_path / "out.jsonl"
    run_batch(source, out, [provider], BatchDefaults(max_tokens=2, raw=True), progress=None)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    for name in ("huge", "chat"):
        error = records[name]["error"]
        assert error["type"] == "invalid_params" and "characters, far more than the 64 tokens" in error["message"]
    assert "error" not in records["small"]
    assert max(provider.encoded) < 100  # only the small line was tokenized
