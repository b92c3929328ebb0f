"""Which sequence slot of a model's context a request takes: the slot policy.

The engine's context holds ``parallel`` sequences, each keeping the tokens the
last request left in it. A new request takes a free slot whose cached tokens its
prompt continues (a later turn of the same chat, the same prompt again) and
decodes only the rest; :func:`choose_slot` says which, :func:`assign_slots` does
it for requests that start together. Only tokens left by a request of the same
cache scope (one per API key) are ever reused. The engine's scheduler thread
owns the slots; nothing here locks.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shimmy.models.generation import Generation
from shimmy.models.promptcache import common_prefix
from shimmy.models.speculation import DraftOdds, NgramIndex, OddsKey
from shimmy.models.textstream import TextStream

if TYPE_CHECKING:
    from shimmy.models.llamacpp import Sampler


@dataclass(eq=False)
class Slot:
    """One sequence of the context: its cached tokens and the request it runs."""

    seq: int
    cached: list[int] = field(default_factory=list)  # tokens whose KV is in the context
    scope: str = ""  # the cache scope of the request that left ``cached``
    # The request that left ``cached`` continued a conversation (a later turn, or a
    # long shared prefix): what it leaves is likely to come back (promptcache.py).
    proven: bool = False
    generation: Generation | None = None
    sampler: Sampler | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to decode
    next_token: int | None = None  # sampled, to be fed in the next step
    logits_at: int = -1  # batch index of this slot's logits in the current step
    stream: TextStream | None = None
    produced: int = 0
    max_tokens: int = 0
    preserved: frozenset[int] = frozenset()  # special tokens whose text the reply keeps
    # Another choice of the same request reads the prompt in this slot; this one
    # copies its KV cache once it has (the slot and the generation it runs then).
    copy_from: tuple[Slot, Generation] | None = None
    # Speculative decoding: the request's text indexed for drafts, how often the
    # request's drafts from it and from earlier replies (the engine's DraftMemory)
    # come true by source and class of match, the source and class this step's
    # draft or guess is judged by, the draft decoded in this step (after
    # next_token), or without one the token it would have drafted first.
    drafts: NgramIndex | None = None
    odds: dict[OddsKey, DraftOdds] = field(default_factory=dict)
    judged_by: OddsKey | None = None
    draft: list[int] = field(default_factory=list)
    draft_at: int = -1  # batch index of the draft's first token
    guess: int | None = None
    last_used: float = 0.0
    # The conversation left here by the last request may not be in the prompt
    # cache yet (see shimmy.models.engine.Engine._save_an_idle_slot).
    unsaved: bool = False

    @property
    def free(self) -> bool:
        return self.generation is None


# A slot's cache "continues" a prompt when they share this fraction of the shorter
# of the two: the same prompt again, or a later turn of the same chat.
CONTINUES = 0.9


def shared_tokens(slot: Slot, prompt: Sequence[int], scope: str) -> int:
    """How many of ``slot``'s cached tokens a prompt of ``scope`` may reuse: the
    prefix they share, or none when another scope left them."""
    return common_prefix(slot.cached, prompt) if slot.scope == scope else 0


def runs(busy: Collection[int]) -> int:
    """How many runs of consecutive sequence ids ``busy`` holds. Each run is a
    micro-batch of its own in every step (llama.cpp computes a batch of per-
    sequence KV streams in runs of consecutive sequences:
    :func:`shimmy.models.stepcost.micro_batches`), a pass over the weights: on
    two CPU cores sequences 0, 2, 4 and 6 take 54 ms a token, 0 to 3 take 31."""
    return sum(1 for seq in busy if seq - 1 not in busy)


def choose_slot(
    free: Sequence[Slot], prompt: Sequence[int], scope: str = "", busy: Collection[int] = ()
) -> Slot:
    """The free slot for ``prompt``, of cache ``scope``, beside the running
    sequences ``busy``.

    A slot whose cache the prompt continues is taken, the longest shared prefix
    first. Otherwise the slot that keeps the running sequences in the fewest runs
    of consecutive ids (:func:`runs`), of those an empty slot, else the least
    recently used (its conversation is saved to host memory first if the prompt
    cache wants it). A prompt that shares only a short prefix with a slot (a
    system prompt) must not take it: that would evict the slot's conversation,
    whose next turn would then recompute everything and evict another in turn. A
    slot of another scope shares nothing with the prompt.
    """
    return continued_slot(free, prompt, scope) or min(
        free, key=lambda s: (runs({*busy, s.seq}), bool(s.cached), s.last_used, s.seq)
    )


def gap_move(slots: Sequence[Slot], movable: Collection[Slot]) -> tuple[Slot, Slot] | None:
    """A running slot of ``movable`` and a free slot to move its request into,
    such that the running sequences then lie in fewer runs of consecutive ids
    (:func:`runs`); None when no move lowers them.

    A request that ends between others leaves a gap that costs every later step
    a micro-batch of its own until a new request fills it. Of the moves that
    leave the fewest runs, one into a free slot holding nothing is taken first
    (no conversation to save), then into the least recently used; of requests,
    the one with the fewest cached tokens (the least to copy)."""
    busy = {s.seq for s in slots if not s.free}
    now = runs(busy)
    best: tuple[tuple[int, bool, float, int, int, int], Slot, Slot] | None = None
    for source in movable:
        if source.free:
            continue
        for target in slots:
            if not target.free:
                continue
            after = runs((busy - {source.seq}) | {target.seq})
            if after >= now:
                continue
            key = (
                after,
                bool(target.cached),
                target.last_used,
                len(source.cached),
                source.seq,
                target.seq,
            )
            if best is None or key < best[0]:
                best = (key, source, target)
    return None if best is None else (best[1], best[2])


def continued_slot(free: Sequence[Slot], prompt: Sequence[int], scope: str = "") -> Slot | None:
    """The free slot of ``scope`` whose cache ``prompt`` continues, the longest
    shared prefix first; None if there is none."""
    best: Slot | None = None
    best_shared = 0
    for slot in free:
        shared = shared_tokens(slot, prompt, scope)
        if shared > best_shared and shared >= CONTINUES * min(len(prompt), len(slot.cached)):
            best, best_shared = slot, shared
    return best


def assign_slots(
    free: Sequence[Slot],
    prompts: Sequence[Sequence[int]],
    scopes: Sequence[str] | None = None,
    busy: Collection[int] = (),
) -> list[Slot]:
    """A slot for each of ``prompts`` (no more than there are free slots), which
    start together: the prompts that continue a slot's cache take theirs first, so
    that a prompt with none cannot take, and evict, the slot that another prompt of
    the same batch continues (see :func:`choose_slot`). Without this, clients
    coming back together can shuffle their conversations through the slots: each
    eviction saves a state to host memory and each return copies one back, all
    before the first step. ``scopes`` gives each prompt's cache scope ("" for all
    when None); ``busy``, the sequences already running."""
    assert len(prompts) <= len(free)
    scopes = scopes if scopes is not None else [""] * len(prompts)
    homes = [continued_slot(free, p, s) for p, s in zip(prompts, scopes, strict=True)]
    left = list(free)
    running = set(busy)
    chosen: dict[int, Slot] = {}
    for i in sorted(range(len(prompts)), key=lambda i: homes[i] is None):
        home = homes[i]
        # A home another prompt of the batch took first: choose again among the rest.
        if home in left:
            chosen[i] = home
        else:
            chosen[i] = choose_slot(left, prompts[i], scopes[i], running)
        left.remove(chosen[i])
        running.add(chosen[i].seq)
    return [chosen[i] for i in range(len(prompts))]
