"""JSON: rewind and ban every token that makes the output impossible to complete as a JSON document."""

from __future__ import annotations

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind, Stop
from backtrack_sampler.strategy.json_prefix import (
    DONE,
    IN_STRING,
    JsonState,
    advance,
    can_end,
    completion,
    expected,
    explain,
    initial_state,
)
from backtrack_sampler.strategy.json_token_mask import JsonTokenMask


class JsonStrategy(BaseStrategy):
    """Keep the output a JSON document (RFC 8259): rewind and ban any token that breaks it.

    After each token its text is fed to an incremental validator (a pushdown
    automaton, O(token length) per token). When a character makes the output
    impossible to complete as JSON (an unescaped quote or raw newline in a
    string, a wrong bracket, ``tru e``, ``01``, a trailing comma, text after
    the document, ...), the strategy rewinds to the token in which that
    character began and bans it there; EOS before the document is complete
    is rewound and banned the same way. The output may start with
    whitespace; it must then be the document itself (no prose, no code fence).

    With ``prefilter`` (the default) ``adjust_logits`` also masks, before
    sampling, every token whose text cannot follow (and EOS while the document
    is incomplete). Sampling from the masked logits draws from the same
    distribution as sampling, rewinding and banning until a valid token comes
    (bans act before top-k/top-p, like the mask), without spending the rewind
    budget; the rewinds remain the guarantee. With a provider that samples by
    itself (a remote engine that gives only top-k logprobs) use
    ``prefilter=False``: the engine then takes the remote engine's tokens and
    sends the bans back with the request. The prefilter also looks one token ahead:
    a token after which no token of the vocabulary fits (a vocabulary that
    lacks some character) is rewound and banned at once.

    Decisions:
        - Holdback is 0: a token the validator accepted leaves a prefix that
          can always be completed, so it is never rewound later and streams
          at once. Only a character split over tokens (bytes of one UTF-8
          character) may send the rewind back to the earlier token, which the
          engine holds back anyway until the character is complete; a token
          that leaves such bytes outside a string is rejected at once. With
          a byte-level vocabulary (every ASCII character is a token, as in
          GPT-2-style BPE) a position never runs out of valid tokens, so no
          rewind further back is needed; with a vocabulary that lacks
          characters, the one-token look-ahead of ``prefilter`` avoids
          the dead ends one token deep, and deeper ones end in the engine's
          refusal (below).
        - When the document is complete (its top-level value is closed), the
          strategy stops the generation (``Stop``, keeping the token; finish
          reason ``"stop"``). With ``stop_when_complete=False`` only
          whitespace and EOS may follow instead. A top-level number is
          complete only once whitespace follows it (or EOS, which is then
          allowed).
        - If the engine refuses a rewind (its budget is spent) the invalid
          token stays; the output can then never be JSON, so the strategy
          stops at the next token, saying why.
        - The document is closed before ``max_new_tokens``: the strategy keeps
          room to close what is open. With ``prefilter`` a token is allowed only
          if the tokens left after it can still spell the closing text (the
          closing quote, ``]`` and ``}``, a literal's last letters, ...,
          one character per token), so near the limit the output closes by
          itself; without it, a token that leaves too little room is rewound
          and the closing text inserted in its place. A document closed this
          way ends with finish reason ``"length"`` (the limit cut the content,
          though the text is valid JSON) and a detail that says so. Only a
          limit too small for the shortest document (1 token for ``root="object"``
          where no token spells ``{}``), or a vocabulary without a one-character
          token for a closing character, ends with an incomplete document.

    Args:
        provider: the provider the sampler uses (for EOS ids and token texts).
        root: ``"any"`` for any JSON value, or ``"object"``/``"array"`` to
            require that kind of document (its first character is then forced).
        prefilter: mask impossible tokens before sampling.
        stop_when_complete: stop as soon as the document is complete.

    Example:
        >>> sampler = BacktrackSampler(provider, JsonStrategy(provider, root="object"))  # doctest: +SKIP
        >>> json.loads(sampler.generate_text(prompt, max_new_tokens=200).text)  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: BaseProvider,
        root: str = "any",
        prefilter: bool = True,
        stop_when_complete: bool = True,
    ) -> None:
        if not isinstance(provider, BaseProvider):
            raise TypeError(f"provider must be a BaseProvider, got {type(provider).__name__}")
        for name, value in (("prefilter", prefilter), ("stop_when_complete", stop_when_complete)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {value!r}")
        self.provider = provider
        self.root = root
        self.prefilter = prefilter
        self.stop_when_complete = stop_when_complete
        self._initial = initial_state(root)
        self._eos = frozenset(provider.eos_token_ids)
        self._mask: JsonTokenMask | None = None
        self._states: list[JsonState] = [self._initial]  # _states[i]: the state before generated token i
        self._closing_from: int | None = None  # the position from which the limit forced the closing

    @property
    def adjusts_logits(self) -> bool:
        """Only the prefilter changes the distribution; without it a remote engine may pick the tokens."""
        return self.prefilter

    def reset(self) -> None:
        self._states = [self._initial]
        self._closing_from = None

    @property
    def token_mask(self) -> JsonTokenMask:
        """The vocabulary's mask cache, built on first use (about 0.2 s for 49k tokens) and shared per provider."""
        if self._mask is None:
            self._mask = JsonTokenMask.for_provider(self.provider)
        return self._mask

    def adjust_logits(self, ctx: GenerationContext, logits: np.ndarray) -> np.ndarray:
        if self.prefilter and len(self._states) == ctx.position + 1:
            state = self._states[-1]
            allowed = self.token_mask.allowed(state)
            left = ctx.max_new_tokens - ctx.position - 1  # tokens after this one
            costs = self.token_mask.closing_costs(state)
            if ctx.max_new_tokens and costs.most > left:  # keep only tokens that leave room to close
                fits = allowed & ~costs.over(allowed, left)
                if fits.any():
                    allowed = fits
                    if len(completion(state)) > left and self._closing_from is None:
                        self._closing_from = ctx.position
            np.copyto(logits, -np.inf, where=~allowed)
        return logits

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        position = len(ctx.tokens) - 1
        if len(self._states) < position + 1:
            # A rewind we asked for was refused: an invalid token stayed in the output.
            return Stop("the output can no longer be JSON: a rewind was refused", keep_token=False)
        del self._states[position + 1 :]
        state = self._states[position]
        if token in self._eos:
            if can_end(state):
                return CONTINUE
            return Rewind(
                position,
                ban=tuple(sorted(self._eos)),
                reason=f"end of text in an incomplete JSON document (expected {expected(state)})",
            )
        text = ctx.text_from(position)
        following, accepted = advance(state, text)
        if accepted < len(text):
            char = ctx.char_start(position) + accepted
            culprit = ctx.token_at_char(char)
            return Rewind(
                culprit,
                ban=(ctx.tokens[culprit],),
                reason=f"not JSON at character {char}: {explain(following, text[accepted])}",
            )
        if following.mode not in IN_STRING and ctx.ends_mid_character(position):
            # The bytes left over begin a non-ASCII character, which only a string may hold.
            return Rewind(
                position,
                ban=(token,),
                reason=f"not JSON at character {ctx.n_chars}: a non-ASCII character outside a string",
            )
        closing = self._close_in_time(ctx, position, state, following, text)
        if closing is not None:
            return closing
        if following.mode == DONE and self.stop_when_complete:
            self._states.append(following)
            if self._closing_from is not None:
                return Stop(self._closed_detail(ctx, self._closing_from), finish="length")
            return Stop("the JSON document is complete")
        if self.prefilter and not self.token_mask.allowed(following).any():
            return Rewind(
                position,
                ban=(token,),
                reason=f"no token of the vocabulary can continue the JSON after {text!r} "
                f"(expected {expected(following)})",
            )
        self._states.append(following)
        return CONTINUE

    def _close_in_time(
        self, ctx: GenerationContext, position: int, state: JsonState, following: JsonState, text: str
    ) -> Decision | None:
        """A token that leaves more to close than tokens are left: end before it, or close in its place."""
        left = ctx.max_new_tokens - position - 1
        if ctx.max_new_tokens and len(completion(following)) > left:
            closing = self.token_mask.spell(completion(state))
            if closing == ():  # complete before this token (a top-level number): end there
                return Stop(self._closed_detail(ctx, position), keep_token=False, finish="length")
            if closing is not None and len(closing) <= left + 1:
                if self._closing_from is None:
                    self._closing_from = position
                return Rewind(
                    position,
                    insert=closing,
                    reason=f"closing the JSON document to fit max_new_tokens ({ctx.max_new_tokens}): "
                    f"{text!r} would leave {len(completion(following))} characters to close in {left} tokens",
                )
        return None

    @staticmethod
    def _closed_detail(ctx: GenerationContext, position: int) -> str:
        return f"the JSON document was closed to fit max_new_tokens ({ctx.max_new_tokens}) from token {position} on"

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        del self._states[position + 1 :]
        if self._closing_from is not None and self._closing_from > position:
            self._closing_from = None
