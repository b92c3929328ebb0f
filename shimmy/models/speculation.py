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
the machine and on the batch: where a step's time is mostly fixed (a big model
reading its weights from memory) drafted tokens are almost free; where it grows
with each token (a small model on a CPU) a short draft must be nearly certain to
pay, yet a long one can pay again, since ggml multiplies a batch of many tokens
at a lower cost per token than a batch of a few. So the engine times decode
steps of 1 to 64 tokens when it loads and keeps timing its steps
(shimmy/models/stepcost.py: the time of a micro-batch by its size and the
depth of its caches, no formula assumed for the size; a step of several
requests is computed in several micro-batches), the odds that a drafted token
comes true are kept by source and by how far back the text matches where the
draft was found
(:class:`DraftOdds`, :class:`EngineOdds`: fed by real drafts and, while a slot
does not draft, by the draft it would have made), and :func:`plan_drafts`
chooses how many tokens each slot drafts so that the step makes the most tokens
per second it is expected to. Text that repeats nothing (no n-gram matches, or
drafts that fail) drafts nothing, and a busy batch drafts only what is all but
sure.

Requests also repeat each other: a retried or regenerated request, an agent
asking for the same edit again, the same question asked twice. The engine
remembers what the model wrote for earlier requests (:class:`DraftMemory`, a
few MB) and, where a request's latest tokens match a place in it at length,
drafts what the model wrote next there. llama-server's ngram-mod keeps such a
table across requests too; here it is kept apart per cache scope (one per API
key), since how fast a reply comes would tell one client of another's text.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

from shimmy.models.stepcost import DecodeCost, step_cost

# A draft from the request's own text needs its latest two tokens to have
# occurred before. Of the places where they did, the latest this many are
# compared (the one matching furthest back wins): a pair as common as a line
# break and an indent occurs hundreds of times in a long prompt, and each place
# compared costs about a microsecond of the scheduler's time a step.
CANDIDATES = 32
MAX_DRAFT = 64  # tokens drafted at most in one step, by one slot or all (ngram-mod: 48-64)
ODDS_MEMORY = 0.9  # how much of a slot's record each new judgement keeps
MIN_GAIN = 0.02  # a drafted token less likely than this to be accepted is never worth it
# Earlier replies are drafted from only where this many latest tokens match: a
# short match across different requests is chance (boilerplate, a code fence).
MEMORY_NGRAM = 12
MEMORY_TOKENS = 1 << 15  # tokens of earlier replies remembered per model (~4 MB)
# How far back the latest tokens match the place a draft is taken from says how
# likely it is to come true: measured on SmolLM2's greedy replies (four echo
# tasks, four chats), a drafted token after a 2-3 token match comes true about
# 85% of the time, after 16 or more about 98%. So the odds are kept by class of
# match length (the upper bounds of all but the last class), and a match is
# measured back MATCH_CAP tokens at most.
MATCH_CLASSES = (3, 7, 15, 31)
MATCH_CAP = 32
# Where the odds of each class start, for drafts from the request's own text and
# for replays of earlier replies (close to what was measured; each engine then
# learns its own from every draft, and each request from its own).
OWN, REPLAY = "own", "replay"
# (A replay matches MEMORY_NGRAM tokens at least: its first two classes never occur.)
PRIOR_CHANCE = {OWN: (0.8, 0.9, 0.93, 0.95, 0.97), REPLAY: (0.9, 0.9, 0.93, 0.95, 0.97)}
PRIOR_WEIGHT = 4.0  # a request's odds start as this many judgements at the engine's odds
ENGINE_ODDS_MEMORY = 0.99  # the engine's odds of a class: about its last hundred judgements


class Draft(NamedTuple):
    """Tokens to draft, and how many of the latest tokens match those that led
    into them where they were found (at most :data:`MATCH_CAP`)."""

    tokens: list[int]
    matched: int = 0


NO_DRAFT = Draft([])


def match_class(matched: int) -> int:
    """The class of a match of ``matched`` tokens (an index into the odds' lists)."""
    return bisect.bisect_left(MATCH_CLASSES, matched)


def matched_back(earlier: Sequence[int], end: int, latest: Sequence[int], known: int) -> int:
    """How many tokens before ``earlier[end]`` equal the end of ``latest`` (the
    first ``known`` of them are known to), up to :data:`MATCH_CAP`."""
    matched = known
    while (
        matched < MATCH_CAP
        and matched < end
        and matched < len(latest)
        and earlier[end - 1 - matched] == latest[-1 - matched]
    ):
        matched += 1
    return matched


class NgramIndex:
    """The tokens of one request so far, indexed so that the places where its
    latest tokens occurred before are found at once: for each pair of consecutive
    tokens the place it occurred last, and for each place the one before it where
    the same pair occurred (a hash chain, as zlib finds its matches). On the echo
    texts that is half the memory of a table of every 2- to 6-gram (50 bytes a
    token against 105, the tokens included; 4 bytes a token and one entry per
    distinct pair), and a prompt is indexed five times faster (2,000 tokens in
    0.6 ms)."""

    def __init__(self, tokens: Sequence[int] = ()) -> None:
        self.tokens: list[int] = []
        # pair of tokens (the first << 32 | the second) -> the position of the
        # token that followed its latest occurrence
        self._latest: dict[int, int] = {}
        # position -> the position that followed the same pair's occurrence before (-1: none)
        self._before = array("i")
        self.extend(tokens)

    def extend(self, tokens: Sequence[int]) -> None:
        """Append ``tokens`` (accepted text: the prompt, then what was generated)."""
        text, latest, before = self.tokens, self._latest, self._before
        for token in tokens:
            if len(text) >= 2:
                pair = text[-2] << 32 | text[-1]
                before.append(latest.get(pair, -1))
                latest[pair] = len(text)
            else:
                before.append(-1)
            text.append(token)

    def draft(self, length: int) -> Draft:
        """Up to ``length`` tokens that followed the place where the latest tokens
        occurred before, the one matching furthest back (the latest of those); no
        tokens when the latest two never occurred before."""
        tokens = self.tokens
        if length <= 0 or len(tokens) < 2:
            return NO_DRAFT
        place = self._latest.get(tokens[-2] << 32 | tokens[-1], -1)
        best, best_matched = -1, 0
        for _ in range(CANDIDATES):
            if place < 0:
                break
            matched = matched_back(tokens, place, tokens, 2)  # the pair matches
            if matched > best_matched:
                best, best_matched = place, matched
                if matched == MATCH_CAP:
                    break
            place = self._before[place]
        if best < 0:
            return NO_DRAFT
        draft = tokens[best : best + length]
        # Text that repeats with a short period (a list, a loop) runs into its
        # own end: the period continues it.
        period = len(tokens) - best
        while len(draft) < length:
            draft.append(draft[len(draft) - period])
        return Draft(draft, best_matched)


class DraftMemory:
    """The model's replies to earlier requests (each with the :data:`MEMORY_NGRAM`
    tokens of prompt that led into it), indexed by every n-gram of that length,
    the oldest forgotten past :data:`MEMORY_TOKENS`. Only the engine's scheduler
    thread uses it."""

    def __init__(self, limit: int = MEMORY_TOKENS) -> None:
        self.limit = limit
        self.size = 0  # tokens remembered
        self._texts: OrderedDict[int, tuple[str, list[int]]] = OrderedDict()
        # hash of (scope, n-gram) -> text id << 32 | the position that followed it
        self._at: dict[int, int] = {}
        self._next_id = 0

    def remember(self, scope: str, tokens: Sequence[int]) -> None:
        """Keep ``tokens`` (a reply and what led into it), written for a request of
        ``scope``."""
        text = list(tokens[-self.limit :])
        if len(text) <= MEMORY_NGRAM:
            return
        text_id = self._next_id
        self._next_id += 1
        self._texts[text_id] = (scope, text)
        self.size += len(text)
        for position in range(MEMORY_NGRAM, len(text)):
            key = hash((scope, *text[position - MEMORY_NGRAM : position]))
            self._at[key] = text_id << 32 | position
        while self.size > self.limit:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        text_id, (scope, text) = self._texts.popitem(last=False)
        self.size -= len(text)
        for position in range(MEMORY_NGRAM, len(text)):
            key = hash((scope, *text[position - MEMORY_NGRAM : position]))
            if self._at.get(key, -1) >> 32 == text_id:
                del self._at[key]

    def draft(self, scope: str, tokens: Sequence[int], length: int) -> Draft:
        """Up to ``length`` tokens that followed the latest :data:`MEMORY_NGRAM`
        tokens of ``tokens`` in a remembered reply of ``scope``; no tokens if
        none has them."""
        if length <= 0 or len(tokens) < MEMORY_NGRAM:
            return NO_DRAFT
        ngram = tuple(tokens[-MEMORY_NGRAM:])
        found = self._at.get(hash((scope, *ngram)))
        if found is None:
            return NO_DRAFT
        text_scope, text = self._texts[found >> 32]
        position = found & 0xFFFFFFFF
        if text_scope != scope or tuple(text[position - MEMORY_NGRAM : position]) != ngram:
            return NO_DRAFT  # another n-gram with the same hash
        matched = matched_back(text, position, tokens, MEMORY_NGRAM)
        return Draft(text[position : position + length], matched)


class DraftOdds:
    """How often a slot's drafted tokens come true: each drafted token is taken to
    be right with the same chance ``q`` once the ones before it were (a run of
    repeated text goes on, or it ends), estimated from recent drafts and a prior
    (as many right and wrong guesses as it holds to start from)."""

    def __init__(self, hits: float = 1.0, misses: float = 1.0, memory: float = ODDS_MEMORY) -> None:
        self.hits = hits
        self.misses = misses
        self.memory = memory

    @property
    def chance(self) -> float:
        """The estimated chance that a drafted token is accepted."""
        return self.hits / (self.hits + self.misses)

    def judged(self, drafted: int, accepted: int) -> None:
        """``accepted`` of ``drafted`` tokens (the first ones) came true."""
        self.hits = self.hits * self.memory + accepted
        self.misses = self.misses * self.memory + (1 if accepted < drafted else 0)


OddsKey = tuple[str, int]  # a draft's source (OWN or REPLAY) and its match class


class EngineOdds:
    """How often drafted tokens come true, by source and class of match, over all
    of an engine's requests: where each request's odds of a class start
    (:meth:`for_request`), fed by every judgement of every request."""

    def __init__(self) -> None:
        self._odds = {
            (source, klass): DraftOdds(
                PRIOR_WEIGHT * chance, PRIOR_WEIGHT * (1 - chance), ENGINE_ODDS_MEMORY
            )
            for source, chances in PRIOR_CHANCE.items()
            for klass, chance in enumerate(chances)
        }

    def chance(self, key: OddsKey) -> float:
        return self._odds[key].chance

    def for_request(self, key: OddsKey) -> DraftOdds:
        """A request's own odds of ``key``, starting from the engine's."""
        chance = self._odds[key].chance
        return DraftOdds(PRIOR_WEIGHT * chance, PRIOR_WEIGHT * (1 - chance))

    def judged(self, key: OddsKey, drafted: int, accepted: int) -> None:
        self._odds[key].judged(drafted, accepted)


def at_least(
    lengths: Sequence[int], available: Sequence[int], minimum: int, room: int
) -> list[int]:
    """``lengths`` raised to ``minimum`` (or all a slot has to draft, if fewer),
    slot by slot in order while the ``room`` lasts (``--draft-min``)."""
    raised = list(lengths)
    left = room - sum(raised)
    for i, have in enumerate(available):
        extra = min(max(0, min(minimum, have) - raised[i]), max(0, left))
        raised[i] += extra
        left -= extra
    return raised


def plan_drafts(
    cost: DecodeCost,
    rows: Sequence[int],
    offers: Sequence[tuple[float, int]],
    room: int,
    depths: Sequence[float] | None = None,
) -> list[int]:
    """How many tokens each sequence drafts in a step that decodes ``rows``
    tokens of each anyway (in order of sequence id): ``offers`` holds each one's
    (chance that a drafted token is accepted, tokens it has to draft). A
    sequence's j-th drafted token is accepted with chance q to the power j, so
    the drafts are taken most likely first, and as many of them as make the
    step's expected tokens per second, (tokens + expected accepted) / its time,
    the highest; the time counts the micro-batches the drafts add and how deep
    each sequence's cache is (``depths``, in tokens: shimmy/models/stepcost.py).
    At most ``room`` tokens in all."""
    lengths = [0] * len(offers)
    if not cost.known or room <= 0:
        return lengths
    # (-chance of the next drafted token, sequence, its position in the draft)
    heap = [(-q, i, 1) for i, (q, available) in enumerate(offers) if available > 0 and q > MIN_GAIN]
    heapq.heapify(heap)
    base = sum(rows)
    step = list(rows)
    best_rate = base / max(step_cost(cost, step, depths), 1e-9)
    best_count = 0
    expected = 0.0
    taken: list[int] = []
    while heap and len(taken) < room:
        negative, slot, position = heapq.heappop(heap)
        gain = -negative
        if gain < MIN_GAIN:
            break
        expected += gain
        taken.append(slot)
        step[slot] += 1
        q, available = offers[slot]
        if position < available:
            heapq.heappush(heap, (-(q ** (position + 1)), slot, position + 1))
        rate = (base + expected) / max(step_cost(cost, step, depths), 1e-9)
        if rate > best_rate:
            best_rate, best_count = rate, len(taken)
    for slot in taken[:best_count]:
        lengths[slot] += 1
    return lengths
