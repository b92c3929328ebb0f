"""N-gram speculative decoding: drafts from a request's own text.

Many requests repeat their own context: a function returned with one name
changed, a summary that quotes, JSON that repeats its keys. When the latest
tokens have occurred before in the request (its prompt or its output), the
tokens that followed them then are a good guess for what follows now. The
engine decodes such a draft together with the slot's next token in one step
(beside the other slots' tokens) and keeps the longest prefix that the model
itself would have produced: each drafted position is sampled in order, from the
model's own distribution with the request's own sampler, and the first token
that differs from the draft ends it. So the text is exactly what it would have
been without drafting (greedy or seeded alike), and rejected positions are
removed from the KV cache.

A draft costs compute whether or not it is accepted, and how much depends on
the machine: where a step's time is mostly fixed (a big model reading its weights
from memory) drafted tokens are almost free, and where it grows with each token
(a small model on a CPU, or many slots in one batch) a draft must be nearly
certain to pay. So the engine measures its steps (:class:`DecodeCost`: the time
of a step of n tokens, fitted as fixed + n * per-token), each slot keeps the odds
that its drafted tokens come true (:class:`DraftOdds`, fed by its real drafts and,
while it does not draft, by the draft it would have made), and a slot drafts the
tokens whose chance of being accepted exceeds the share of the step's time that
they add. Text that repeats nothing (no n-gram matches, or drafts that fail)
drafts nothing, and a busy batch drafts only what is all but sure.
"""

from __future__ import annotations

from collections.abc import Sequence

NGRAM = 6  # the longest n-gram matched to find where the text repeats itself
MIN_NGRAM = 2  # fall back to shorter matches down to this
MAX_DRAFT = 16  # tokens drafted at most in one step
ODDS_MEMORY = 0.9  # how much of a slot's record each new judgement keeps
COST_MEMORY = 0.99  # how much of the step-time fit each new step keeps
MIN_SHARE = 0.05  # drafts are never taken as free
WARM_UP_STEPS = 8  # the first steps after loading are slow, and say nothing of drafts
OUTLIER = 3.0  # a step slower than this many times the fit is capped (the OS took the CPU)


class NgramIndex:
    """The tokens of one request so far, indexed so that the continuation of the
    latest n-gram's previous occurrence is found in constant time."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        # n-gram -> the position of the token that followed its latest occurrence
        self._next: list[dict[tuple[int, ...], int]] = [{} for _ in range(NGRAM - MIN_NGRAM + 1)]
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` (accepted text: the prompt, then what was generated)."""
        for token in tokens:
            position = len(self.tokens)
            for offset, table in enumerate(self._next):
                n = NGRAM - offset
                if position >= n:
                    table[tuple(self.tokens[position - n : position])] = position
            self.tokens.append(token)

    def draft(self, length: int) -> list[int]:
        """Up to ``length`` tokens that followed the latest n-gram where it occurred
        before (the longest n-gram that matches); empty when none does."""
        if length <= 0:
            return []
        tokens = self.tokens
        for offset, table in enumerate(self._next):
            n = NGRAM - offset
            if len(tokens) < n:
                continue
            start = table.get(tuple(tokens[-n:]))
            if start is not None:
                draft = tokens[start : start + length]
                # Text that repeats with a short period (a list, a loop) runs into
                # its own end: the period continues it.
                period = len(tokens) - start
                while len(draft) < length:
                    draft.append(draft[len(draft) - period])
                return draft
        return []


class DraftOdds:
    """How often a slot's drafted tokens come true: each drafted token is taken to
    be right with the same chance ``q`` once the ones before it were (a run of
    repeated text goes on, or it ends), estimated from the slot's recent drafts
    with one right and one wrong guess to start from."""

    def __init__(self) -> None:
        self.hits = 1.0
        self.misses = 1.0

    @property
    def chance(self) -> float:
        """The estimated chance that a drafted token is accepted."""
        return self.hits / (self.hits + self.misses)

    def judged(self, drafted: int, accepted: int) -> None:
        """``accepted`` of ``drafted`` tokens (the first ones) came true."""
        self.hits = self.hits * ODDS_MEMORY + accepted
        self.misses = self.misses * ODDS_MEMORY + (1 if accepted < drafted else 0)

    def length(self, share: float, most: int) -> int:
        """How many tokens to draft (at most ``most``) when a drafted token costs
        ``share`` (see :meth:`DecodeCost.share`): each one is worth it while its
        chance of being accepted (``q`` to the power of its position) exceeds it."""
        q = self.chance
        length = 0
        odds = q
        while length < most and odds > share:
            length += 1
            odds *= q
        return length


class DecodeCost:
    """What a decode step costs as a function of its tokens, fitted to the engine's
    own generation steps as ``fixed + n * per_token`` (least squares, the recent
    steps weighing most)."""

    def __init__(self) -> None:
        self._w = self._n = self._nn = self._t = self._nt = 0.0
        self._steps = 0

    def observe(self, tokens: int, seconds: float) -> None:
        """A step of ``tokens`` tokens took ``seconds``."""
        self._steps += 1
        if self._steps <= WARM_UP_STEPS:
            return
        if self._fit() is not None:
            seconds = min(seconds, OUTLIER * self.predict(tokens))
        m = COST_MEMORY
        self._w = self._w * m + 1
        self._n = self._n * m + tokens
        self._nn = self._nn * m + tokens * tokens
        self._t = self._t * m + seconds
        self._nt = self._nt * m + tokens * seconds

    def _fit(self) -> tuple[float, float] | None:
        """(fixed, per_token) seconds, or None until steps of different sizes
        were seen."""
        spread = self._w * self._nn - self._n * self._n
        if self._w < 2 or spread <= 1e-9 * self._w * self._w:
            return None
        per_token = (self._w * self._nt - self._n * self._t) / spread
        return (self._t - per_token * self._n) / self._w, per_token

    def predict(self, tokens: int) -> float:
        """The expected seconds of a step of ``tokens`` tokens (the mean step
        until the fit can tell sizes apart)."""
        fit = self._fit()
        mean = self._t / self._w if self._w else 0.0
        if fit is None:
            return mean
        fixed, per_token = fit
        return max(fixed + tokens * per_token, 0.0) or mean

    def share(self, tokens: int) -> float:
        """What one drafted token costs when a step makes ``tokens`` tokens anyway:
        the tokens' share of the step's time, tokens * per_token / (fixed + tokens
        * per_token). A drafted token pays (for the batch's throughput) when its
        chance of being accepted exceeds it. Until steps of different sizes were
        seen, the fixed and per-token parts are taken as equal."""
        fit = self._fit()
        if fit is None:
            return tokens / (tokens + 1)
        fixed, per_token = fit
        if per_token <= 0:
            return MIN_SHARE
        if fixed <= 0:
            return 1.0
        return max(MIN_SHARE, tokens * per_token / (fixed + tokens * per_token))
