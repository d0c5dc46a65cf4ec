"""English stop-words: the words of NLTK's English list (which the slop-score leaderboard uses) and common contractions.

Mining skips terms made of them, and over-used trigrams made only of them are
not counted: "one of the" says nothing about a model's style.
"""

from __future__ import annotations

STOPWORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her
    hers herself it its itself they them their theirs themselves what which who whom this that these those
    am is are was were be been being have has had having do does did doing a an the and but if or because
    as until while of at by for with about against between into through during before after above below to
    from up down in out on off over under again further then once here there when where why how all any both
    each few more most other some such no nor not only own same so than too very s t can will just don
    should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma mightn mustn needn shan
    shouldn wasn weren won wouldn""".split()
) | frozenset(
    """i'm i've i'd i'll you're you've you'd you'll he's he'd he'll she's she'd she'll it's it'd it'll we're
    we've we'd we'll they're they've they'd they'll that's there's here's what's who's let's isn't aren't
    wasn't weren't don't doesn't didn't haven't hasn't hadn't won't wouldn't can't couldn't shouldn't
    mustn't""".split()
)
