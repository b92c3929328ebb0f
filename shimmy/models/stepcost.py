"""What a decode step costs, by its size and by how deep its sequences' caches are.

Speculation (shimmy/models/speculation.py) drafts only what pays, so it needs
to know what a step of n tokens costs on this machine, with this model. No
formula is assumed for the size: the engine times steps of a few sizes when it
loads and every step that only generates, and sizes between are read off a
line between the nearest ones timed.

How deep the cache is matters as much. Every token of a step attends to every
token cached before it, and llama.cpp's CPU kernels do that at very different
prices: measured on SmolLM2 on two cores with flash attention on (llama.cpp's
default), a 1-token step costs 10 ms with an empty cache and 30 ms 1,600 tokens
deep, a 4-token step 19 and 93 ms (5x), a 64-token step 207 and 337 ms (the
kernel tiles 64 rows or more); with flash attention off, 1.6x, 1.4x and 1.5x.
Timed only at load, with an empty cache, a first request deep in a long prompt
drafts as if drafts were as cheap there; learned from every step with no depth,
a deep request would leave the table too dear for the shallow chats after it.
So each size's cost is a line in the depth, ``seconds = a + b * depth``, kept
from its recent steps (:class:`DecodeCost`): the intercept from the shallow
ones (starting at what the load timed), the slope from the deep ones; a size
never timed deep takes its slope per token from the nearest size that was.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

COST_MEMORY = 0.9  # how much of a step size's record each new step of that size keeps
WARM_UP_STEPS = 8  # the first steps after loading are slow, and say nothing of drafts
OUTLIER = 3.0  # a step slower than this many times the expected is capped (the OS took the CPU)
CALIBRATION_SIZES = (1, 4, 16, 64)  # step sizes the engine times when it loads (~0.3 s)
CALIBRATION_ROUNDS = 3  # ... each this many times, keeping the fastest
LOGITS_TIMED = 16  # ... the larger ones with one token's logits, the rest's added (see Engine)
DEPTH_UNIT = 1000.0  # depths are counted in thousands of cached tokens in the fits
# A step whose caches hold fewer tokens than this (in DEPTH_UNIT) times its
# size's cost with an empty cache (the line's intercept); a deeper one, what
# depth adds (its slope). So a deep request leaves shallow costs as they were,
# and a shallow chat's noise never passes for a slope.
DEEP_FROM = 0.5
# A size's own slope is believed once its deep steps' squared depths (recent
# ones weighing most) add up to this: one step 1,000 tokens deep, or four 500
# deep. Before that, it takes the slope per token of the nearest size that was.
DEEP_EVIDENCE = 1.0
# llama.cpp's CPU flash-attention kernel computes a sequence's rows in tiles
# once a micro-batch holds this many of them (ggml's GGML_FA_TILE_Q), and one
# by one below: 1,600 tokens deep on SmolLM2, 32 rows take 624 ms and 64 take
# 337. So the costs of the two are kept, interpolated and lent apart.
FLASH_TILE = 64


@dataclass
class _Line:
    """One step size's cost, ``intercept + slope * depth`` (depth in
    DEPTH_UNIT): the intercept a recency-weighted mean of its shallow steps
    (less what depth added to them), starting at what the load timed; the slope
    a recency-weighted least-squares fit of its deep steps' time above the
    intercept, through zero."""

    intercept: float
    weight: float = 0.0  # of the shallow steps in the intercept
    sum_dd: float = 0.0  # of the deep steps: depth squared, and depth times time over the intercept
    sum_dt: float = 0.0
    borrowed: float = 0.0  # the slope lent by the nearest size timed deep

    def add(self, depth: float, seconds: float) -> None:
        if depth < DEEP_FROM:
            self.weight = self.weight * COST_MEMORY + 1.0
            target = seconds - self.slope * depth
            self.intercept += (target - self.intercept) / self.weight
        else:
            self.sum_dd = self.sum_dd * COST_MEMORY + depth * depth
            self.sum_dt = self.sum_dt * COST_MEMORY + depth * (seconds - self.intercept)

    @property
    def deep(self) -> bool:
        return self.sum_dd >= DEEP_EVIDENCE

    @property
    def slope(self) -> float:
        """Seconds a step of this size gains per DEPTH_UNIT of cache."""
        if self.deep:
            return max(0.0, self.sum_dt / self.sum_dd)
        return self.borrowed

    def at(self, depth: float) -> float:
        return self.intercept + self.slope * depth


class _Family:
    """The lines of the step sizes of one of llama.cpp's attention kernels (see
    :data:`FLASH_TILE`), in order of size."""

    def __init__(self) -> None:
        self.lines: dict[int, _Line] = {}
        self.sizes: list[int] = []
        self.lent = False  # whether any size borrows a slope

    def line(self, tokens: int, first: float) -> _Line:
        """The record of ``tokens``-token steps; a new one starts at ``first``
        seconds with an empty cache."""
        line = self.lines.get(tokens)
        if line is None:
            line = self.lines[tokens] = _Line(first)
            bisect.insort(self.sizes, tokens)
        return line

    def lend_slopes(self) -> None:
        """Each size not timed deep takes the slope per token of the nearest
        size that was (none: no slope)."""
        deep = [size for size in self.sizes if self.lines[size].deep]
        if not deep and not self.lent:
            return
        self.lent = bool(deep)
        for size in self.sizes:
            line = self.lines[size]
            if line.deep:
                continue
            line.borrowed = 0.0
            if deep:
                at = bisect.bisect_left(deep, size)
                near = [deep[i] for i in (at - 1, at) if 0 <= i < len(deep)]
                nearest = min(near, key=lambda other: abs(other - size))
                line.borrowed = self.lines[nearest].slope * size / nearest

    def predict(self, tokens: int, d: float, beyond: _Family) -> float:
        """The seconds of ``tokens`` tokens ``d`` deep: a size seen, or read off
        the line between the nearest ones seen (below the smallest: no cheaper;
        beyond the largest: the last two's slope, or with only one, the line to
        the smallest of ``beyond``, the other kernel's)."""
        sizes, lines = self.sizes, self.lines
        if tokens in lines:
            return lines[tokens].at(d)
        at = bisect.bisect_left(sizes, tokens)
        if at == 0:
            return lines[sizes[0]].at(d)
        if at == len(sizes):
            last = sizes[-1]
            if len(sizes) == 1:
                above = next((n for n in beyond.sizes if n > last), None)
                if above is None:
                    return lines[last].at(d) * tokens / last
                low, high = lines[last].at(d), beyond.lines[above].at(d)
                return low + (high - low) * (tokens - last) / (above - last)
            before = sizes[-2]
            high, low = lines[last].at(d), lines[before].at(d)
            slope = max(0.0, (high - low) / (last - before))
            return high + slope * (tokens - last)
        low_size, high_size = sizes[at - 1], sizes[at]
        share = (tokens - low_size) / (high_size - low_size)
        low, high = lines[low_size].at(d), lines[high_size].at(d)
        return low + share * (high - low)


class DecodeCost:
    """What a decode step costs by its number of tokens and the depth of the
    caches it reads (see the module's docstring): timed by the engine when it
    loads (:data:`CALIBRATION_SIZES`, at depth 0) and on every step that only
    generates; sizes not seen are read off the line between the nearest seen
    ones at the same depth (and beyond the largest, its slope). Micro-batches
    of FLASH_TILE tokens of a sequence or more are kept apart from smaller
    ones: another kernel computes them."""

    def __init__(self) -> None:
        self._families = {False: _Family(), True: _Family()}  # by tiled
        self._steps = 0

    def observe(self, tokens: int, seconds: float, *, calibrating: bool = False) -> None:
        """A step of one sequence's ``tokens`` tokens, with an empty cache, took
        ``seconds`` (see :meth:`observe_step`; ``calibrating``: timed by the
        engine at load, kept as the size's intercept)."""
        if calibrating:
            self._families[tokens >= FLASH_TILE].line(tokens, seconds).intercept = seconds
        else:
            self.observe_step([tokens], seconds)

    def observe_step(
        self, rows: Sequence[int], seconds: float, depths: Sequence[float] | None = None
    ) -> None:
        """A step with ``rows`` tokens of each sequence (``depths``: the tokens
        each had cached before it) took ``seconds``, shared among its
        micro-batches by their expected times. The first steps are ignored
        (loading's are slow) and a step far slower than expected is capped (the
        operating system took the CPU)."""
        batches = micro_batches(rows, depths)
        if not batches:
            return
        self._steps += 1
        if self._steps <= WARM_UP_STEPS:
            return
        expected = [self.predict(*batch) for batch in batches]
        total = sum(expected)
        if total > 0:
            seconds = min(seconds, OUTLIER * total)
        elif len(batches) > 1:
            return  # nothing to share the time by
        known = self.known
        for batch, share in zip(batches, expected, strict=True):
            part = seconds if len(batches) == 1 else seconds * share / total
            family = self._families[batch.tiled]
            line = family.lines.get(batch.tokens)
            new = line is None
            if line is None:  # starts at what the sizes around it cost
                first = self.predict(batch.tokens, 0.0, batch.tiled) if known else part
                line = family.line(batch.tokens, first)
            was_deep = line.deep
            line.add(batch.depth / DEPTH_UNIT, part)
            if new or was_deep or line.deep:  # a slope others lean on, or a new size
                family.lend_slopes()

    @property
    def known(self) -> bool:
        """Whether any step was timed."""
        return any(family.sizes for family in self._families.values())

    def predict(self, tokens: int, depth: float = 0.0, tiled: bool | None = None) -> float:
        """The expected seconds of a micro-batch of ``tokens`` tokens whose
        sequences hold ``depth`` tokens each (0 before any step was timed);
        ``tiled``: whether it holds FLASH_TILE tokens of a sequence or more
        (by default, whether ``tokens`` are as many: one sequence's)."""
        if tiled is None:
            tiled = tokens >= FLASH_TILE
        family, other = self._families[tiled], self._families[not tiled]
        if not family.sizes:
            family, other = other, family
            if not family.sizes:
                return 0.0
        return family.predict(tokens, depth / DEPTH_UNIT, other)


class MicroBatch(NamedTuple):
    tokens: int
    depth: float  # the mean of its sequences' cached tokens
    tiled: bool  # FLASH_TILE tokens of each sequence or more


def micro_batches(rows: Sequence[int], depths: Sequence[float] | None = None) -> list[MicroBatch]:
    """The micro-batches llama.cpp computes a step in, given each sequence's
    tokens in the step in order of sequence id (0 for one not in it) and the
    tokens each has cached (``depths``; none: empty caches). With a KV stream
    per sequence, a micro-batch holds a run of consecutive sequence ids and the
    same number of tokens of each (llama.cpp's sequential equal split), and
    each costs a pass over the weights: on two CPU cores, 8 sequences of one
    token each take 54 ms, the same with one of them drafting a token 68 ms,
    and sequences 0, 2, 4 and 6 as long as all eight."""
    left = list(rows)
    batches: list[MicroBatch] = []
    while True:
        first = next((i for i, n in enumerate(left) if n > 0), None)
        if first is None:
            return batches
        last = first
        while last + 1 < len(left) and left[last + 1] > 0:
            last += 1
        each = min(left[first : last + 1])
        for i in range(first, last + 1):
            left[i] -= each
        count = last - first + 1
        depth = sum(depths[first : last + 1]) / count if depths else 0.0
        batches.append(MicroBatch(each * count, depth, each >= FLASH_TILE))


def step_cost(
    cost: DecodeCost, rows: Sequence[int], depths: Sequence[float] | None = None
) -> float:
    """The expected seconds of a step with ``rows`` tokens of each sequence,
    ``depths`` tokens deep."""
    return sum(cost.predict(*batch) for batch in micro_batches(rows, depths))
