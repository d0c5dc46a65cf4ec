"""The backtracking engine: the only place where tokens are rewound.

One step of a generation, in the order ``_Generation.events`` runs it:

1. Take the logits of the next position from the cache, or bring the
   provider's KV cache up to date and evaluate (``_logits_at``).
2. Let the strategy adjust a copy of them, apply the positional bans and
   penalties, sample (``_choose``); a token queued by ``Rewind(insert=...)``
   skips 1-2. A provider that samples by itself (a remote engine,
   ``proposes_tokens``) picks the token instead, under the position's bans
   and penalties, when the strategy leaves the distribution alone (a provider
   that cannot apply the penalties returns ``None``: the engine samples).
   When no token is acceptable, climb the retry ladder (4b).
3. Append the token and ask the strategy: continue, rewind, or stop.
4. On a rewind: truncate tokens and text, drop bans, penalties and cached
   logits past the rewind point, add the new ones, count it against the
   budget (``_rewind``). The KV cache is truncated lazily, at the next
   evaluation. Only when the caller asked (``candidates_min_p``), the
   rewind's event also lists the likely tokens of that position, read from
   its kept logits (``core.candidates``): nothing is computed otherwise.
4b. The retry ladder (``_ladder``), so no generation dies or spins. It
   serves rewinds that ban matched text (``Rewind.match_end`` set): when one
   lands on a position that cannot take it (its per-position budget is
   spent, or its bans would leave no token), or when sampling finds no
   acceptable token where one banned tokens, take the first rung that can:

   a. ban more of the match: keep its first tokens, ban its next one;
   b. rewind to the start of the previous word and ban the token there;
   c. the same at the start of the sentence;
   d. give up: a ``RewindRefusedEvent`` says the text is let through (or
      that the position is sampled without its bans).

   Every rung counts against the budget; the ladder reaches back only into
   text not yet emitted.
5. Emit every token the strategy can no longer rewind (``commit_boundary``,
   which by default follows ``holdback``), except the tokens of a character
   still being spelled: they wait until a later token completes it.

At the finish, however the generation ends, a character that the last token
leaves unfinished is dropped (``_drop_unfinished_character``): the tokens
that carry nothing but its bytes leave the sequence, and the finish event's
``detail`` says how many bytes went. A token that completes characters and
then begins the unfinished one cannot be split: it stays, with the text of
its complete characters. So the text emitted, the final text and the final
tokens agree: the text is the tokens' bytes decoded up to the last complete
character (invalid bytes inside the text still read as U+FFFD), and never
ends in a U+FFFD that only the cut made.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backtrack_sampler.core.base_provider import BaseProvider, GenerationSetup
from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.candidates import Candidates, min_p_candidates
from backtrack_sampler.core.checks import check_optional_number, is_int, surely_too_long
from backtrack_sampler.core.context import GenerationContext, Progress
from backtrack_sampler.core.decisions import Continue, Rewind, Stop
from backtrack_sampler.core.events import (
    Escalation,
    Event,
    FinishEvent,
    FinishReason,
    GenerationStats,
    RefusalCause,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.core.sampling import SamplingParams, sample_token
from backtrack_sampler.core.text_units import previous_word_start, sentence_start
from backtrack_sampler.core.token_text import TokenText


@dataclass(frozen=True)
class GenerationResult:
    """What ``BacktrackSampler.generate_text`` returns."""

    text: str
    tokens: tuple[int, ...]
    finish_reason: FinishReason
    stats: GenerationStats
    rewinds: tuple[RewindEvent, ...]
    refusals: tuple[RewindRefusedEvent, ...]
    finish_detail: str = ""  # the FinishEvent's detail: why a strategy stopped, or what the limit did


class BacktrackSampler:
    """Generates with a provider while a strategy may rewind and re-sample.

    Example:
        >>> sampler = BacktrackSampler(provider, AntiSlopStrategy(provider, ["tapestry"]))  # doctest: +SKIP
        >>> for token in sampler.generate("Once upon a time", max_new_tokens=64):  # doctest: +SKIP
        ...     print(provider.decode([token]), end="")
    """

    def __init__(
        self,
        provider: BaseProvider,
        strategy: BaseStrategy | None = None,
        budget: RewindBudget | None = None,
    ) -> None:
        if not isinstance(provider, BaseProvider):
            raise TypeError(f"provider must be a BaseProvider, got {type(provider).__name__}")
        if strategy is None:
            strategy = BaseStrategy()
        if not isinstance(strategy, BaseStrategy):
            raise TypeError(f"strategy must be a BaseStrategy, got {type(strategy).__name__}")
        if strategy.needs_full_logits and not provider.gives_full_logits:
            raise ValueError(
                f"{strategy.name} reshapes the whole distribution, but {type(provider).__name__} "
                "gives only top-k logprobs; use a local provider or another strategy"
            )
        self.provider = provider
        self.strategy = strategy
        self.budget = budget or RewindBudget()

    def generate(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None, **overrides: Any
    ) -> Iterator[int]:
        """Yield generated token ids, each only once no strategy can rewind it.

        Takes the arguments of ``stream``. EOS is not yielded.
        """
        events = self.stream(prompt, params, **overrides)
        return (t for event in events if isinstance(event, TextEvent) for t in event.tokens)

    def generate_text(
        self, prompt: str | Sequence[int], params: SamplingParams | None = None, **overrides: Any
    ) -> GenerationResult:
        """Run a whole generation; return the final text, tokens, finish reason and stats.

        Takes the arguments of ``stream``.
        """
        rewinds, refusals = [], []
        for event in self.stream(prompt, params, **overrides):
            if isinstance(event, RewindEvent):
                rewinds.append(event)
            elif isinstance(event, RewindRefusedEvent):
                refusals.append(event)
            elif isinstance(event, FinishEvent):
                return GenerationResult(
                    event.text, event.tokens, event.reason, event.stats, tuple(rewinds), tuple(refusals), event.detail
                )
        raise AssertionError("a stream always ends with a FinishEvent")  # pragma: no cover

    def stream(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        *,
        candidates_min_p: float | None = None,
        **overrides: Any,
    ) -> Iterator[Event]:
        """Yield the typed events of one generation, ending with a ``FinishEvent``.

        Args:
            prompt: text (special tokens written as text are parsed) or token ids.
            params: how to sample and how long to run (``SamplingParams``).
            candidates_min_p: when set, in (0, 1], every ``RewindEvent`` lists
                the tokens of its position whose probability is at least
                this times the best's (``RewindEvent.candidates``), for
                preference data such as FTPO. ``None`` (the default)
                computes nothing.
            **overrides: ``SamplingParams`` fields given one by one, as in
                ``stream(prompt, max_new_tokens=64, temperature=0.7, seed=1)``;
                they override ``params``.

        Arguments are checked here, before the first event.
        """
        params = SamplingParams.of(params, **overrides)
        check_optional_number("candidates_min_p", candidates_min_p, 0, 1, low_open=True)
        prompt_tokens = self._prompt_tokens(prompt)
        limit = self._new_token_limit(len(prompt_tokens), params.max_length, params.max_new_tokens)
        rng = np.random.default_rng(params.seed)
        return _Generation(self, prompt_tokens, limit, params, rng, candidates_min_p).events()

    def _prompt_tokens(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            context = self.provider.context_length
            if context is not None and surely_too_long(prompt, context):  # refused before a long tokenization
                raise ValueError(
                    f"prompt has {len(prompt)} characters, far more than the {context} tokens the model's context "
                    "holds; shorten the prompt or load the model with a larger context"
                )
            tokens = self.provider.encode(prompt)
        elif isinstance(prompt, Sequence) and all(is_int(t) for t in prompt):
            tokens = [int(t) for t in prompt]
            bad = [t for t in tokens if not 0 <= t < self.provider.vocab_size]
            if bad:
                raise ValueError(f"prompt token ids must be in [0, {self.provider.vocab_size}), got {bad[0]}")
        else:
            raise TypeError(f"prompt must be a str or a sequence of token ids, got {type(prompt).__name__}")
        if not tokens:
            raise ValueError("prompt must not be empty")
        return tokens

    def _new_token_limit(self, n_prompt: int, max_length: int | None, max_new_tokens: int | None) -> int:
        limits = []
        if max_new_tokens is not None:
            limits.append(max_new_tokens)
        if max_length is not None:
            limits.append(max(0, max_length - n_prompt))
        context = self.provider.context_length
        if context is not None:
            if n_prompt >= context:
                raise ValueError(
                    f"prompt has {n_prompt} tokens but the model's context holds {context}; "
                    "shorten the prompt or load the model with a larger context"
                )
            limits.append(context - n_prompt)
        if not limits:
            raise ValueError("max_new_tokens or max_length is required: the provider has no context length")
        return min(limits)


@dataclass
class _Position:
    """What the engine knows about one generated position while the tokens before it stay the same."""

    logits: np.ndarray | None = None  # raw logits, shape (vocab,); dropped once the position is emitted
    bans: set[int] = field(default_factory=set)
    penalties: dict[int, float] = field(default_factory=dict)  # token -> log of the factor
    bans_match: bool = False  # a rewind of matched text banned tokens here: the retry ladder may climb
    rewinds: int = 0


@dataclass(frozen=True)
class _Finish:
    reason: FinishReason
    detail: str = ""


_KEEP = "keep"  # the token stays: emit what is ready and go on
_AGAIN = "again"  # the token was rewound: sample again


class _Generation:
    """The state of one generation; created fresh by every ``stream`` call.

    ``positions[p]`` holds what depends on the tokens before position ``p``;
    there is always one more record than tokens (the next position's).
    """

    def __init__(
        self,
        sampler: BacktrackSampler,
        prompt: list[int],
        limit: int,
        params: SamplingParams,
        rng: np.random.Generator,
        candidates_min_p: float | None = None,
    ) -> None:
        self.provider, self.strategy, self.budget = sampler.provider, sampler.strategy, sampler.budget
        self.prompt, self.limit, self.params, self.rng = prompt, limit, params, rng
        self.candidates_min_p = candidates_min_p  # list the likely tokens in rewind events (None: off)
        self.tokens: list[int] = []
        self.text = TokenText(self.provider.token_bytes)
        self.positions: list[_Position] = [_Position()]
        self.forced: deque[int] = deque()
        self.kv_valid = 0  # leading positions of the provider's cache that match prompt + tokens
        self.rewind_limit = self.budget.generation_limit(limit)
        self.n_rewinds = self.n_rewound = self.n_refused = self.n_evaluated = 0
        self.progress = Progress(max_new_tokens=limit)
        self.ctx = GenerationContext(self.provider, prompt, self.tokens, self.text, self._kept_logits, self.progress)
        self.remote_sampling = self.provider.proposes_tokens and not self.strategy.adjusts_logits
        self.ended = False

    def events(self) -> Iterator[Event]:
        try:
            yield from self._steps()
        finally:  # also when the caller stops reading: the provider gets its resources back
            self._end()

    def _steps(self) -> Iterator[Event]:
        started = time.perf_counter()
        self._begin()
        finish = self._limit_reached()
        while finish is None:
            # 1-2: the next token, forced or sampled (a dead end climbs the retry ladder instead)
            token = yield from self._next_token()
            if token is not None:
                # 3-4: append it and carry out the strategy's decision
                outcome = yield from self._decide(token)
                if isinstance(outcome, _Finish):
                    finish = outcome
                    break
                if outcome == _KEEP:
                    # 5: emit what the strategy can no longer rewind
                    emitted = self._emit(self.strategy.commit_boundary(self.ctx, len(self.tokens)))
                    if emitted is not None:
                        yield emitted
            finish = self._limit_reached()
        finish = self._drop_unfinished_character(finish)
        final = self._emit(len(self.tokens), final=True)
        if final is not None:
            yield final
        finished = self._finish_event(finish, time.perf_counter() - started)
        self._end()  # before the last event: a caller that stops at it leaves nothing held
        yield finished

    def _begin(self) -> None:
        self.strategy.reset()
        setup = GenerationSetup(self.params, self.rng, self.remote_sampling, len(self.prompt) + self.limit)
        self.provider.begin_generation(setup)
        self.positions[0].logits = self.provider.prefill(self.prompt)
        self.kv_valid = len(self.prompt)

    def _end(self) -> None:
        if not self.ended:
            self.ended = True
            self.provider.end_generation()

    def _limit_reached(self) -> _Finish | None:
        if len(self.tokens) >= self.limit:
            return _Finish("length")
        cap = self.budget.max_positions_evaluated
        if cap is not None and self.n_evaluated >= cap:
            return _Finish("budget", f"evaluated {self.n_evaluated} positions")
        return None

    def _finish_event(self, finish: _Finish, elapsed: float) -> FinishEvent:
        stats = GenerationStats(
            prompt_tokens=len(self.prompt),
            tokens_emitted=len(self.tokens),
            positions_evaluated=self.n_evaluated,
            rewinds=self.n_rewinds,
            tokens_rewound=self.n_rewound,
            rewinds_refused=self.n_refused,
            elapsed_s=elapsed,
        )
        return FinishEvent(finish.reason, self.full_text, tuple(self.tokens), stats, finish.detail)

    def _kept_logits(self, position: int) -> np.ndarray | None:
        """The raw logits of ``position`` while they are kept (for ``GenerationContext.logprob``)."""
        return self.positions[position].logits if 0 <= position < len(self.positions) else None

    # -- steps 1-2: the next token ---------------------------------------------------------
    def _next_token(self) -> Generator[Event, None, int | None]:
        """The token for the next position; ``None`` when a dead end rewound instead (the event is yielded)."""
        position = len(self.tokens)
        self.progress.forced = bool(self.forced)
        if self.forced:
            return self.forced.popleft()
        token = self._choose(position, self._logits_at(position))
        if token is None:  # every token is banned or masked here
            event = self._dead_end(position)
            yield event
            if isinstance(event, RewindEvent):
                return None
            token = self._choose(position, self._logits_at(position), with_bans=False)
        return token

    def _logits_at(self, position: int) -> np.ndarray:
        logits = self.positions[position].logits
        if logits is not None:
            return logits
        n_prompt = len(self.prompt)
        target = n_prompt + position
        start = min(self.kv_valid, target - 1)  # evaluate at least one position for its logits
        if self.provider.n_past > start:
            self.provider.rewind(start)
        if start >= n_prompt:
            chunk = self.tokens[start - n_prompt : position]
        else:
            chunk = self.prompt[start:] + self.tokens[:position]
        logits = self.provider.forward(chunk)
        self.n_evaluated += target - max(start, n_prompt)
        self.kv_valid = target
        self.positions[position].logits = logits
        return logits

    def _choose(self, position: int, raw: np.ndarray, with_bans: bool = True) -> int | None:
        """Sample the token at ``position``; ``None`` when the bans and masks leave none."""
        if not with_bans:  # the ladder had no rung left: sample as if nothing were banned
            logits = self.strategy.adjust_logits(self.ctx, raw.copy())
            return sample_token(logits if np.max(logits) > -np.inf else raw, self.params, self.rng)
        here = self.positions[position]
        if self.remote_sampling:
            proposed = self.provider.propose(self.prompt + self.tokens, here.bans, here.penalties)
            if proposed is not None:
                return proposed
        logits = self.strategy.adjust_logits(self.ctx, raw.copy())
        if here.bans:
            logits[list(here.bans)] = -np.inf
        for token, log_factor in here.penalties.items():
            logits[token] += log_factor
        if not np.max(logits) > -np.inf:
            return None
        return sample_token(logits, self.params, self.rng)

    def _dead_end(self, position: int) -> RewindEvent | RewindRefusedEvent:
        """No token is acceptable at ``position``: rewind further back (4b), or say it is sampled without bans."""
        name = self.strategy.name
        bans_match = self.positions[position].bans_match
        rung = self._ladder(position, None) if bans_match and self.n_rewinds < self.rewind_limit else None
        if rung is not None:
            target, token, escalation = rung
            reason = f"every token at position {position} is banned or masked"
            return self._carry_out(Rewind(target, ban=(token,), reason=reason, match_end=target), name, escalation)
        self.n_refused += 1
        ladder = " and the retry ladder has no rung left" if bans_match else ""
        message = f"every token at position {position} is banned or masked{ladder}; sampling without the bans"
        return RewindRefusedEvent(position, "all_banned", "", name, message)

    # -- steps 3-4: the strategy decides -------------------------------------------------------
    def _decide(self, token: int) -> Generator[Event, None, _Finish | str]:
        """Append ``token``, ask the strategy, carry out its answer: ``_KEEP``, ``_AGAIN`` or a ``_Finish``."""
        self.tokens.append(token)
        self.text.append(token)
        self.positions.append(_Position())
        decision = self.strategy.on_token(self.ctx, token)
        if isinstance(decision, Rewind):
            event = self._rewind(decision)
            yield event
            if isinstance(event, RewindEvent):
                return _AGAIN
        elif isinstance(decision, Stop):
            if not decision.keep_token:
                self._truncate(len(self.tokens) - 1)
            return _Finish(decision.finish, decision.reason)
        elif not isinstance(decision, Continue):
            raise TypeError(f"{self.strategy.name}.on_token must return Continue, Rewind or Stop, got {decision!r}")
        if token in self.provider.eos_token_ids:
            self._truncate(len(self.tokens) - 1)
            return _Finish("eos")
        return _KEEP

    def _rewind(self, decision: Rewind) -> RewindEvent | RewindRefusedEvent:
        name = decision.strategy or self.strategy.name
        position, length = decision.position, len(self.tokens)
        if not is_int(position) or not 0 <= position < length:
            raise ValueError(
                f"{name} asked to rewind to position {position!r}; "
                f"it must be an int in [0, {length - 1}] (the latest token is at {length - 1})"
            )
        let_through = "the text is let through" if decision.bans_match else "the text stays"
        if position < self.progress.committed:
            message = (
                f"position {position} was already emitted (first rewindable: {self.progress.committed}); "
                f"{name}.holdback() must cover every token it may rewind"
            )
            return self._refuse(decision, name, "already_emitted", message)
        if self.n_rewinds >= self.rewind_limit:
            message = f"the generation's {self.rewind_limit} rewinds are spent; {let_through}"
            return self._refuse(decision, name, "generation_budget", message)
        if decision.bans_match:
            return self._rewind_match(decision, name)
        if self.positions[position].rewinds >= self.budget.per_position:
            message = f"position {position} was rewound {self.budget.per_position} times"
            return self._refuse(decision, name, "position_budget", message)
        return self._carry_out(decision, name)

    def _rewind_match(self, decision: Rewind, name: str) -> RewindEvent | RewindRefusedEvent:
        """A rewind that bans matched text; 4b, the retry ladder, when its position cannot take it."""
        position = decision.position
        cause = self._blocked(position, decision.ban)
        if cause is None:
            return self._carry_out(decision, name)
        rung = self._ladder(position, decision.match_end)
        if rung is not None:
            target, token, escalation = rung
            reason = f"{decision.reason} ({escalation.replace('_', ' ')}: position {position} is exhausted)"
            escalated = Rewind(target, ban=(token,), reason=reason, match_end=target, ban_phrase=decision.ban_phrase)
            return self._carry_out(escalated, name, escalation)
        if cause == "position_budget":
            message = f"position {position} was rewound {self.budget.per_position} times"
        else:
            message = f"its bans would leave no token at position {position}"
        message += " and the retry ladder has no rung left; the text is let through"
        return self._refuse(decision, name, cause, message)

    def _refuse(self, decision: Rewind, name: str, cause: RefusalCause, message: str) -> RewindRefusedEvent:
        self.n_refused += 1
        return RewindRefusedEvent(decision.position, cause, decision.reason, name, message)

    def _carry_out(self, decision: Rewind, name: str, escalation: Escalation = "") -> RewindEvent:
        position = decision.position
        suppressed = tuple(self.tokens[position:])
        suppressed_text = self.text.text_from(position)
        self._truncate(position)
        here = self.positions[position]
        here.rewinds += 1
        self.n_rewinds += 1
        self.n_rewound += len(suppressed)
        if decision.ban:
            here.bans.update(decision.ban)
            here.bans_match = here.bans_match or decision.bans_match
        for token, factor in decision.penalize:
            here.penalties[token] = here.penalties.get(token, 0.0) + math.log(factor)
        self.forced = deque(decision.insert)
        self.strategy.on_rewind(self.ctx, position)
        candidates, probability = self._candidates(position, suppressed[0])
        return RewindEvent(
            position,
            suppressed_text,
            suppressed,
            decision.ban,
            decision.insert,
            decision.reason,
            name,
            decision.penalize,
            decision.ban_phrase,
            escalation,
            candidates,
            probability,
        )

    def _candidates(self, position: int, suppressed: int) -> tuple[Candidates, float | None]:
        """The likely tokens of ``position`` and the probability of ``suppressed`` there, when asked and known."""
        raw = self.positions[position].logits
        if self.candidates_min_p is None or raw is None:
            return (), None
        return min_p_candidates(raw, self.candidates_min_p, suppressed)

    def _blocked(self, position: int, ban: tuple[int, ...]) -> RefusalCause | None:
        """Why ``position`` cannot take a rewind adding ``ban`` (``None`` when it can)."""
        here = self.positions[position]
        if here.rewinds >= self.budget.per_position:
            return "position_budget"
        raw = here.logits
        if ban and raw is not None:
            banned = here.bans.union(ban)
            possible = int(np.count_nonzero(raw > -np.inf))
            if possible <= sum(1 for t in banned if raw[t] > -np.inf):
                return "all_banned"
        return None

    def _ladder(self, position: int, match_end: int | None) -> tuple[int, int, Escalation] | None:
        """The first rung (4b) that can take a rewind: ``(position, token to ban there, rung)``, or ``None``."""
        tokens = self.tokens
        if match_end is not None:  # (a) keep the match's first tokens, ban its next one
            for later in range(position + 1, min(match_end, len(tokens) - 1) + 1):
                if self._blocked(later, (tokens[later],)) is None:
                    return later, tokens[later], "more_of_match"
        # (b), (c): back into the text before ``position`` that is not yet emitted
        committed = self.progress.committed
        base = self.text.char_start(committed)
        before = self.text.text_from(committed)[: self.text.char_start(position) - base]
        rungs: tuple[tuple[Escalation, int], ...] = (
            ("previous_word", previous_word_start(before)),
            ("previous_sentence", sentence_start(before)),
        )
        for escalation, char in rungs:
            if char >= len(before):
                continue
            target = self.text.token_at_char(base + char)
            if committed <= target < position and self._blocked(target, (tokens[target],)) is None:
                return target, tokens[target], escalation
        return None

    def _truncate(self, position: int) -> None:
        """Keep the first ``position`` tokens; forget what depended on the rest."""
        del self.positions[position + 1 :]
        del self.tokens[position:]
        self.text.truncate(position)
        self.kv_valid = min(self.kv_valid, len(self.prompt) + position)

    # -- step 5: emitting -------------------------------------------------------------
    def _emit(self, upto: int, final: bool = False) -> TextEvent | None:
        start = self.progress.committed
        if not final:
            # A character still being spelled can begin a match, and its bytes
            # are no text yet: keep its tokens until a later one completes it.
            while upto > start and self.text.ends_mid_character(upto - 1):
                upto -= 1
        if upto <= start:
            return None
        for position in range(start, upto):
            self.positions[position].logits = None
        self.progress.committed = upto
        return TextEvent("".join(self.text.pieces[start:upto]), tuple(self.tokens[start:upto]))

    def _drop_unfinished_character(self, finish: _Finish) -> _Finish:
        """Drop the bytes of a character that the last token leaves unfinished; say so in the finish's detail.

        The tokens that carry only those bytes leave the sequence; a token
        that also completed characters stays (its piece holds only those).
        """
        first, n_bytes = self.text.unfinished_end()
        if not n_bytes:
            return finish
        self._truncate(first)
        dropped = f"dropped {n_bytes} byte{'s' if n_bytes > 1 else ''} of an unfinished character at the end"
        return _Finish(finish.reason, f"{finish.detail}; {dropped}" if finish.detail else dropped)

    @property
    def full_text(self) -> str:
        return self.text.text_from(0)
