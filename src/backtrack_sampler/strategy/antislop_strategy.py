"""AntiSlop: erase a banned phrase or pattern as soon as it appears and choose other words."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import CONTINUE, Decision, Rewind
from backtrack_sampler.core.vocabulary import Vocabulary
from backtrack_sampler.strategy.ban_rules import MAX_PATTERN_LENGTH, BanPhrase, BanRegex, as_patterns, as_phrases
from backtrack_sampler.strategy.ban_scope import BanScope, ScopeTracker
from backtrack_sampler.strategy.phrase_tracker import PhraseMatch, PhraseTracker, prompt_tail
from backtrack_sampler.strategy.prompt_terms import prompt_terms
from backtrack_sampler.strategy.regex_tracker import RegexTracker

# A match found and the rule it broke: (rule, match, which rule: phrases are 0, 1, ..., patterns -1, -2, ...)
Found = tuple[BanPhrase | BanRegex, PhraseMatch, int]


class AntiSlopStrategy(BaseStrategy):
    r"""Ban phrases and patterns: when one appears in the text, rewind to the token where it began.

    Matching is on the decoded text, so every tokenization of a phrase is
    caught (" tapestry" and " tap" + "estry" alike), case-insensitively by
    default (Unicode case folding: "STRASSE" matches "Straße"), in NFC form
    ("café" matches "cafe" + U+0301), and as whole words by default: at each
    end of a phrase that is a word character of a script written with spaces
    the text must not go on with one, so "avid" is not found in "David" or
    "avidly"; an end in a script written without spaces (Han, Hiragana,
    Katakana, Thai, Lao, Khmer, Myanmar) needs no boundary, so "村里" is found
    in "村里住着" and "iPhone用" in "我的iPhone用了" (``strategy.word_scripts``;
    regex bans' ``\b``, ``\B``, ``\m``, ``\M`` follow the same rule). An
    Aho-Corasick automaton stepped by each new character keeps the per-token
    cost independent of the number of phrases and of the text length; 50,000
    phrases build in one or two seconds, once per list (the automata of the
    last lists used are kept).

    On a match, the token where it began is banned at that position (factor
    0), or, for a soft ban (factor in (0, 1)), its probability there is
    multiplied by the factor and the position is sampled again; if the same
    token comes back, that occurrence stays. When the position has no
    acceptable token left, the engine's retry ladder takes over (see
    ``backtrack_sampler.core.engine``).

    Only text that a phrase or pattern could still complete over is held
    back; the rest streams at once. A phrase that ends the text is found when
    the text ends on EOS or at the token limit (not after another strategy's
    ``Stop``).

    Two options make bans know their context. ``exempt_prompt_terms`` spares
    the phrases the prompt itself uses, for the generation that follows it
    (a user who asks about tapestries gets "tapestry"): words are compared
    case-folded and with regular English inflections removed
    (``strategy.prompt_terms``), and a pattern is spared when it matches
    the prompt's text. ``scope`` bans only in part of the output, e.g. only
    in the reasoning between ``<think>`` and ``</think>`` or only in the
    answer (``strategy.ban_scope``: a match counts when it begins in the
    region and holds no marker). Both read the prompt once per generation;
    the per-token cost stays that of the bans. Text outside the scoped region
    streams at once.

    Args:
        provider: the provider the sampler uses.
        slops: phrases to ban: strings, ``(phrase, factor)`` pairs or
            ``BanPhrase`` objects (``load_ban_list`` reads them from a file).
        ignore_case: default case folding of the phrases.
        whole_words: default word-boundary matching of the phrases; ``False``
            matches them anywhere, as substrings.
        regex: patterns to ban (needs the ``regex`` package): strings,
            ``(pattern, factor)`` pairs or ``BanRegex`` objects; a match is
            treated like a phrase.
        regex_timeout: seconds one search may take before generation stops
            with a ``ValueError`` naming the pattern.
        regex_window: the longest text (in characters) an unfinished regex
            match may hold back; longer matches may pass.
        max_pattern_length: the longest pattern accepted.
        exempt_prompt_terms: do not ban, in a generation, the phrases and
            patterns its prompt uses.
        scope: where bans apply: ``None`` (everywhere), ``"think"`` (only
            inside ``<think>...</think>``), ``"answer"`` (only outside them),
            ``"START,END"`` or ``"outside:START,END"`` (other markers), a
            ``BanScope`` or ``{"start": ..., "end": ..., "inside": bool}``.

    Example:
        >>> slops = ["tapestry", ("delve", 0.2)]
        >>> strategy = AntiSlopStrategy(provider, slops, regex=[r"\bnot \w+, but\b"])  # doctest: +SKIP
        >>> AntiSlopStrategy(provider, slops, exempt_prompt_terms=True, scope="answer")  # doctest: +SKIP
    """

    def __init__(
        self,
        provider: Vocabulary,
        slops: Iterable[str | tuple[str, float] | BanPhrase],
        ignore_case: bool = True,
        whole_words: bool = True,
        regex: Iterable[str | tuple[str, float] | BanRegex] = (),
        regex_timeout: float = 0.05,
        regex_window: int = 256,
        max_pattern_length: int = MAX_PATTERN_LENGTH,
        exempt_prompt_terms: bool = False,
        scope: BanScope | str | Mapping[str, object] | None = None,
    ) -> None:
        for name, value in (
            ("ignore_case", ignore_case),
            ("whole_words", whole_words),
            ("exempt_prompt_terms", exempt_prompt_terms),
        ):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {value!r}")
        self.provider = provider
        self.phrases = as_phrases(slops)
        self.slops = [p.text for p in self.phrases]
        self.patterns = as_patterns(regex)
        self.scope = BanScope.of(scope)
        self.exempt_prompt_terms = exempt_prompt_terms
        self.tracker = PhraseTracker(self.phrases, ignore_case, whole_words)
        self.regex_tracker = RegexTracker(self.patterns, regex_timeout, regex_window, max_pattern_length)
        self.scope_tracker = ScopeTracker(self.scope) if self.scope is not None else None
        self._terms = prompt_terms(tuple(self.slops)) if exempt_prompt_terms else None
        self.reset()

    def reset(self) -> None:
        self.tracker.reset()
        self.regex_tracker.reset()
        self._kept: dict[int, set[tuple]] = {}  # position -> soft-banned occurrences allowed to stay
        self._asked: tuple | None = None  # the soft ban of our last Rewind, until the engine carries it out
        self._started = False  # whether this generation's prompt was read (at its first token)
        self.exempt: frozenset[int] = frozenset()
        """The rules this generation's prompt uses (``exempt_prompt_terms``): phrase i is i, pattern j is -1 - j."""
        self._pending: list[Found] = []  # in-scope matches that a marker still being written may yet cover

    def _start(self, ctx: GenerationContext) -> None:
        """Read the prompt, once per generation: the rules it uses, and where it leaves the scope's markers."""
        self._started = True
        if self._terms is None and self.scope_tracker is None:
            return
        prompt = prompt_tail(ctx, len(ctx.prompt_tokens))
        if self._terms is not None:
            used = set(self._terms.used_in(prompt))
            used.update(-1 - j for j in range(len(self.patterns)) if self.regex_tracker.found_in(j, prompt))
            self.exempt = frozenset(used)
        if self.scope_tracker is not None:
            self.scope_tracker.start(prompt)

    def on_token(self, ctx: GenerationContext, token: int) -> Decision:
        self._asked = None
        if not self._started:
            self._start(ctx)
        final = token in ctx.provider.eos_token_ids or 0 < ctx.max_new_tokens <= len(ctx.tokens)
        found: list[Found] = [(self.phrases[m.index], m, m.index) for m in self.tracker.feed(ctx, final)]
        found += [(self.patterns[m.index], m, -1 - m.index) for m in self.regex_tracker.feed(ctx, final)]
        if self.exempt:
            found = [item for item in found if item[2] not in self.exempt]
        if self.scope_tracker is not None:
            found = self._in_scope(ctx, found, final)
        for rule, match, which in sorted(found, key=lambda item: (item[1].start, item[0].factor)):
            if rule.factor >= 1:
                continue
            position = ctx.token_at_char(match.start)
            occurrence = (ctx.tokens[position], which, match.start)
            if occurrence in self._kept.get(position, ()):
                continue  # soft-banned here already, and the same token came back: it stays
            return self._rewind(ctx, position, match, rule, occurrence)
        return CONTINUE

    def _in_scope(self, ctx: GenerationContext, found: list[Found], final: bool) -> list[Found]:
        """The matches that count in the scope; those a marker being written may yet cover wait in ``_pending``."""
        tracker = self.scope_tracker
        tracker.feed(ctx, final)
        waiting, self._pending = self._pending + found, []
        counted = []
        for item in waiting:
            match = item[1]
            if tracker.undecided(match.start, match.end):
                self._pending.append(item)
            elif tracker.counts(match.start, match.end):
                counted.append(item)
        return counted

    def _rewind(
        self, ctx: GenerationContext, position: int, match: PhraseMatch, rule: BanPhrase | BanRegex, occurrence: tuple
    ) -> Rewind:
        kind = "pattern" if isinstance(rule, BanRegex) else "phrase"
        name = _name(rule)
        match_end = ctx.token_at_char(match.end - 1)
        if rule.factor == 0:
            return Rewind(
                position, ban=(occurrence[0],), reason=f"banned {kind} {name!r}", match_end=match_end, ban_phrase=name
            )
        self._asked = (position, occurrence)
        return Rewind(
            position,
            penalize=((occurrence[0], rule.factor),),
            reason=f"soft-banned {kind} {name!r} (factor {rule.factor:g})",
            match_end=match_end,
            ban_phrase=name,
        )

    def on_rewind(self, ctx: GenerationContext, position: int) -> None:
        self.tracker.truncate(position)
        self.regex_tracker.truncate(position)
        if self.scope_tracker is not None:
            self.scope_tracker.truncate(position)
            self._pending = [item for item in self._pending if item[1].end <= ctx.n_chars]
        self._kept = {p: kept for p, kept in self._kept.items() if p <= position}
        if self._asked is not None and self._asked[0] == position:
            self._kept.setdefault(position, set()).add(self._asked[1])
        self._asked = None

    def holdback(self, ctx: GenerationContext) -> int:
        return len(ctx.tokens) - self.commit_boundary(ctx, len(ctx.tokens))

    def commit_boundary(self, ctx: GenerationContext, upto: int) -> int:
        if self.scope_tracker is not None:
            if self._pending:  # a match waiting for a marker may still be banned: keep it
                upto = min(upto, ctx.token_at_char(min(item[1].start for item in self._pending)))
            elif not self.scope_tracker.region_open():
                # Outside the region, nothing written so far can be part of a banned match any more:
                # one that began before the last marker would hold it, one after it begins outside.
                return upto
        while True:  # a boundary must suit both trackers
            lowest = min(self.tracker.commit_boundary(upto), self.regex_tracker.commit_boundary(upto))
            if lowest == upto:
                return upto
            upto = lowest


def _name(rule: BanPhrase | BanRegex) -> str:
    return rule.pattern if isinstance(rule, BanRegex) else rule.text
