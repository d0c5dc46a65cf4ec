"""``PositionBans`` driven by hand inside vLLM's venv: batch rows added, removed, moved and swapped.

vLLM is not installed in the project's venv, so the checks run as a script in
the venv of ``scripts/setup_vllm.sh`` (this checkout's ``src/`` on its path);
skipped without it. No server starts: the processor gets vLLM's own
``BatchUpdate`` objects and a logits tensor, as the engine would give them.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from remote_servers import ROOT, VLLM_ENV, vllm_python

pytestmark = pytest.mark.vllm

SCRIPT = r"""
import math
from types import SimpleNamespace

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from backtrack_sampler.vllm_plugin import PositionBans

INF = float("-inf")
config = SimpleNamespace(model_config=SimpleNamespace(get_vocab_size=lambda: 10))
proc = PositionBans(config, torch.device("cpu"), False)
assert proc.is_argmax_invariant() is False

def params(**xargs):
    return SamplingParams(extra_args=xargs or None)

def step(update=None, rows=4):
    proc.update_state(update)
    return proc.apply(torch.zeros(rows, 10))

def edited(logits):
    # (row, token) -> value of every entry the processor changed, rounded as float32 allows
    return {(r, t): round(logits[r, t].item(), 5) for r, t in (logits != 0).nonzero().tolist()}

def update(added=(), removed=(), moved=(), size=4):
    return BatchUpdate(batch_size=size, removed=list(removed), added=list(added), moved=list(moved))

a_out, b_out, c_out = [], [], []
a = params(backtrack_bans='{"0": [1], "2": [3, 42]}')  # 42 is outside the vocabulary: skipped
b = params(backtrack_penalties='{"0": {"4": 0.5}}')
c = params()
logits = step(update(added=[(0, a, [9], a_out), (1, b, [9], b_out), (2, c, [9], c_out)]))
assert edited(logits) == {(0, 1): INF, (1, 4): round(math.log(0.5), 5)}, edited(logits)
assert set(proc.rows) == {0, 1}  # a row without rules is never kept

for out in (a_out, b_out, c_out):
    out.append(5)
assert edited(step()) == {} and set(proc.rows) == {0}  # b is past its last rule: forgotten

a_out.append(6)  # a reaches position 2
assert edited(step()) == {(0, 3): INF}

# Swapped with row 2 (c): the rules follow the request.
assert edited(step(update(moved=[(0, 2, MoveDirectionality.SWAP)]))) == {(2, 3): INF}

# A new request d at row 3, then moved one way to row 0.
d_out = []
d = params(backtrack_bans='{"0": [7]}')
assert edited(step(update(added=[(3, d, [9], d_out)]))) == {(2, 3): INF, (3, 7): INF}
assert edited(step(update(moved=[(3, 0, MoveDirectionality.UNIDIRECTIONAL)]))) == {(2, 3): INF, (0, 7): INF}

# Removed: a's row 2 goes; a new request without rules replaces d at row 0.
assert edited(step(update(removed=[2], added=[(0, c, [9], [])]))) == {}
assert proc.rows == {}

# Nothing in apply raises: logits of the wrong shape leave the engine running.
e = params(backtrack_bans='{"0": [1]}')
proc.update_state(update(added=[(3, e, [9], [])]))
broken = torch.zeros(2, 10)
assert proc.apply(broken) is broken

# validate_params refuses malformed rules (vLLM answers 400 with the message).
try:
    PositionBans.validate_params(params(backtrack_bans='{"0": [-1]}'))
except ValueError as exc:
    assert "token ids must be integers >= 0" in str(exc), exc
else:
    raise AssertionError("a negative token id was accepted")
PositionBans.validate_params(params())
print("ok")
"""


def test_the_processor_follows_the_batch():
    python = vllm_python()
    if python is None:
        pytest.skip(f"no vLLM venv: run scripts/setup_vllm.sh (or set {VLLM_ENV} to its python)")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([str(python), "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout[-2000:] + done.stderr[-3000:]
