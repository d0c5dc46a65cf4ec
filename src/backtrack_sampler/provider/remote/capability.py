"""Whether the remote engine applies position-scoped rules (vLLM with ``backtrack_sampler.vllm_plugin``).

``PositionRulesSupport`` answers once per server, for a provider and every
provider it spawns: from the setting (``True``, ``False``) or, with
``"auto"``, by a probe of two greedy requests of two tokens each after the
same short prompt:

1. without rules: tokens ``[a, b]``;
2. with ``b`` banned at position 1 only: the server has the plugin when it
   answers ``[a, c]`` with ``c != b``: the first token shows that the ban did
   not weigh on position 0 (as ``logit_bias`` would, were ``a == b``), the
   second that it held at position 1.

A server that ignores ``vllm_xargs`` (vLLM without the plugin) answers
``[a, b]`` again; one that refuses them with a 4xx (another engine) has no
plugin either. Either way the provider keeps its one-token requests with
``logit_bias``. A wrong "yes" could not break a hard ban: the provider checks
every proposed token against the position's bans.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Literal

from backtrack_sampler.provider.remote.position_rules import PositionRules
from backtrack_sampler.provider.remote.wire import RemoteError

Setting = Literal["auto"] | bool

# Sends one greedy request: (prompt, max_tokens, rules or None) -> the generated token ids.
Ask = Callable[[Sequence[int], int, "PositionRules | None"], list[int]]


class PositionRulesSupport:
    """Whether a server applies position-scoped rules; probed at most once, thread-safe.

    Args:
        setting: ``True`` (the server has the plugin), ``False`` (never use
            it) or ``"auto"`` (probe on first use).
    """

    def __init__(self, setting: Setting = "auto") -> None:
        if not (isinstance(setting, bool) or setting == "auto"):
            raise ValueError(f"position_bans must be True, False or 'auto', got {setting!r}")
        self.setting = setting
        self._known: bool | None = None if setting == "auto" else bool(setting)
        self._lock = threading.Lock()
        self.probe_requests = 0
        """Requests the probe sent (not counted in a provider's ``requests``)."""

    @property
    def known(self) -> bool | None:
        """The answer, or ``None`` before the probe."""
        return self._known

    def check(self, prompt: Sequence[int], ask: Ask) -> bool:
        """The answer, probing with ``ask`` after ``prompt`` the first time (see the module docstring)."""
        if self._known is not None:
            return self._known
        with self._lock:
            if self._known is None:
                self._known = self._probe(prompt, ask)
        return self._known

    def _probe(self, prompt: Sequence[int], ask: Ask) -> bool:
        try:
            self.probe_requests += 1
            plain = ask(prompt, 2, None)
            if len(plain) < 2:
                return False  # the model ended at once: no second position to ban
            self.probe_requests += 1
            banned = ask(prompt, 2, PositionRules(bans={1: frozenset({plain[1]})}))
        except RemoteError as exc:
            if exc.status is not None and 400 <= exc.status < 500:
                return False  # the server refuses vllm_xargs: no plugin there
            raise
        return len(banned) >= 2 and banned[0] == plain[0] and banned[1] != plain[1]
