"""The n-gram drafts, the odds of a slot's drafts and the cost of a drafted
token, without a model."""

from __future__ import annotations

import random
import tracemalloc

import pytest

from shimmy.models.speculation import (
    MATCH_CAP,
    MEMORY_NGRAM,
    MIN_GAIN,
    OWN,
    REPLAY,
    DraftMemory,
    DraftOdds,
    EngineOdds,
    NgramIndex,
    at_least,
    match_class,
    plan_drafts,
)
from shimmy.models.stepcost import DecodeCost


def test_a_draft_is_what_followed_the_latest_ngram_before():
    index = NgramIndex([1, 2, 3, 4, 5, 9, 9, 1, 2, 3])
    assert index.draft(3).tokens == [4, 5, 9]
    index.extend([4, 7])  # the text went another way: the latest occurrence wins
    index.extend([1, 2, 3])
    assert index.draft(2).tokens == [4, 7]


def test_the_longest_ngram_that_matches_is_used():
    # "2 3" last led to 8, but "1 2 3" (longer) last led to 4.
    index = NgramIndex([1, 2, 3, 4, 0, 2, 3, 8, 5, 1, 2, 3])
    assert index.draft(1).tokens == [4]


def test_the_place_that_matches_furthest_back_wins_over_a_later_one():
    head = [10, 11, 12, 13, 14, 15, 16, 17]
    # The latest 8 tokens occurred whole at the start (then 1 followed), and their
    # last 6 occurred again later (then 2 followed): the longer match is the
    # likelier guess, however recent the shorter one.
    text = [*head, 1, 5, 6, *head[2:], 2, 7, *head]
    assert NgramIndex(text).draft(1) == ([1], 8)


def test_a_long_prompt_is_indexed_in_little_memory():
    # 10,000 tokens where almost every pair is new (the worst case for the
    # index): under 150 bytes a token, the list of tokens included. A table of
    # every 2- to 6-gram took 543; this one takes about 100.
    rng = random.Random(7)
    text = [rng.randrange(49_152) for _ in range(10_000)]
    tracemalloc.start()
    try:
        index = NgramIndex(text)
        used, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert index.draft(4).tokens == []  # nothing repeats, nothing to draft
    assert used < 150 * len(text)


def test_no_match_no_draft():
    assert NgramIndex([1, 2, 3, 4]).draft(4).tokens == []
    assert NgramIndex([1, 2, 3, 1, 2, 3]).draft(0).tokens == []
    assert NgramIndex([1]).draft(3).tokens == []


def test_a_draft_says_how_far_back_the_text_matches_where_it_was_found():
    # The latest 6 tokens match (the longest n-gram looked up), and 3 more before them.
    text = [5, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 2, 3, 4, 5, 6, 7, 8]
    assert NgramIndex(text).draft(2) == ([9, 0], 7)
    assert NgramIndex([1, 2, 3, 9, 2, 3]).draft(1) == ([9], 2)  # only "2 3"
    # A long repeat is measured up to MATCH_CAP tokens back.
    long = list(range(100))
    assert NgramIndex([*long, *long]).draft(1).matched == MATCH_CAP
    # An earlier reply: MEMORY_NGRAM tokens at least, more where the text has them.
    memory = DraftMemory()
    reply = list(range(100, 160))
    memory.remember("", reply)
    assert memory.draft("", [7, *reply[:20]], 1) == ([reply[20]], 20)
    assert memory.draft("", [7, *reply[5:20]], 1).matched == 15
    assert memory.draft("", reply[:50], 1).matched == MATCH_CAP


def test_a_longer_match_is_a_likelier_draft_and_each_engine_learns_its_own():
    assert [match_class(n) for n in (2, 3, 4, 7, 8, 15, 16, 31, 32)] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    odds = EngineOdds()
    chances = [odds.chance((OWN, klass)) for klass in range(5)]
    assert chances == sorted(chances) and chances[0] < chances[-1]
    # A request starts from the engine's odds, and learns on its own.
    request = odds.for_request((OWN, 0))
    assert request.chance == pytest.approx(chances[0])
    for _ in range(5):
        request.judged(4, 0)
    assert request.chance < 0.3
    assert odds.chance((OWN, 0)) == pytest.approx(chances[0])
    # The engine's odds follow what every request's drafts of a class did.
    for _ in range(300):
        odds.judged((REPLAY, 2), 8, 1)
    assert odds.chance((REPLAY, 2)) < 0.6
    assert odds.for_request((REPLAY, 2)).chance < 0.6
    assert odds.chance((OWN, 2)) == pytest.approx(chances[2])  # other keys unmoved


def test_a_short_period_continues_itself():
    index = NgramIndex([7, 8, 9, 7, 8, 9, 7, 8])
    assert index.draft(7).tokens == [9, 7, 8, 9, 7, 8, 9]


def test_an_earlier_reply_is_drafted_where_the_latest_tokens_match_it():
    memory = DraftMemory()
    reply = list(range(100, 140))
    memory.remember("", reply)
    # A new request reaches the same place: the reply's next tokens are the draft.
    text = [7, 8, *reply[:20]]
    assert memory.draft("", text, 5).tokens == reply[20:25]
    assert memory.draft("", text, 100).tokens == reply[20:]  # as much as the reply has
    assert memory.draft("", text, 0).tokens == []
    # Fewer than MEMORY_NGRAM matching tokens is chance, not a repeat.
    assert memory.draft("", [7, 8, *reply[20 - MEMORY_NGRAM + 1 : 20]], 5).tokens == []
    assert memory.draft("", reply[: MEMORY_NGRAM - 1], 5).tokens == []


def test_an_api_key_never_drafts_from_anothers_replies():
    memory = DraftMemory()
    reply = list(range(100, 140))
    memory.remember("key-a", reply)
    assert memory.draft("key-a", reply[:20], 3).tokens == reply[20:23]
    assert memory.draft("key-b", reply[:20], 3).tokens == []
    assert memory.draft("", reply[:20], 3).tokens == []


def test_the_newest_reply_wins_and_the_oldest_are_forgotten_past_the_limit():
    memory = DraftMemory(limit=100)
    lead = list(range(MEMORY_NGRAM))
    memory.remember("", [*lead, 1, 2, 3])
    memory.remember("", [*lead, 4, 5, 6])  # the same lead-in went on otherwise
    assert memory.draft("", lead, 3).tokens == [4, 5, 6]
    for n in range(10):  # 10 x 40 tokens: the first texts are forgotten
        memory.remember("", list(range(1000 * (n + 1), 1000 * (n + 1) + 40)))
    assert memory.size <= 100
    assert memory.draft("", lead, 3).tokens == []
    assert memory.draft("", list(range(10000, 10020)), 2).tokens == [10020, 10021]
    # Forgetting a text removes its entries, not a newer text's.
    assert len(memory._at) <= memory.size


def test_a_reply_too_short_to_match_is_not_kept_and_a_long_one_keeps_its_end():
    memory = DraftMemory(limit=50)
    memory.remember("", list(range(MEMORY_NGRAM)))
    assert memory.size == 0
    memory.remember("", list(range(200)))
    assert memory.size == 50
    assert memory.draft("", list(range(160, 180)), 2).tokens == [180, 181]
    assert memory.draft("", list(range(100, 120)), 2).tokens == []


def test_odds_follow_how_a_slots_drafts_fare():
    odds = DraftOdds()
    assert odds.chance == 0.5  # one right and one wrong guess to start from
    for _ in range(10):
        odds.judged(4, 4)
    assert odds.chance > 0.9
    for _ in range(50):
        odds.judged(4, 3)  # three in four come true, then a miss
    assert odds.chance == pytest.approx(0.75, abs=0.02)
    for _ in range(30):
        odds.judged(1, 0)
    assert odds.chance < 0.15


def cost_of(times: dict[int, float]) -> DecodeCost:
    cost = DecodeCost()
    for tokens, seconds in times.items():
        cost.observe(tokens, seconds, calibrating=True)
    return cost


def test_a_slot_whose_drafts_come_true_drafts_as_long_as_long_steps_pay():
    # A small model on a CPU: a step of n tokens costs much more than one token,
    # but less per token the longer it is (ggml's batched matrix products).
    cpu = cost_of({1: 0.010, 2: 0.018, 4: 0.030, 8: 0.050, 16: 0.080, 32: 0.130, 64: 0.220})
    assert plan_drafts(cpu, [1], [(0.5, 64)], 500) == [0]  # a coin toss never pays
    assert plan_drafts(cpu, [1], [(0.99, 64)], 500)[0] >= 32  # nearly sure: a long draft
    assert plan_drafts(cpu, [1], [(0.99, 5)], 500) == [5]  # never more than there is
    assert plan_drafts(cpu, [1], [(0.99, 64)], 20) == [20]  # nor more than the batch holds
    assert plan_drafts(DecodeCost(), [1], [(0.99, 64)], 500) == [0]  # nothing timed yet


def test_where_steps_cost_the_same_whatever_their_size_drafts_are_nearly_free():
    flat = cost_of({1: 0.050, 64: 0.050})
    assert plan_drafts(flat, [1], [(0.3, 64)], 500)[0] >= 3
    # each drafted token is still taken only while it is likely enough
    assert sum(plan_drafts(flat, [1], [(0.3, 64)], 500)) < 64
    assert plan_drafts(flat, [1], [(MIN_GAIN / 2, 64)], 500) == [0]


def test_a_busy_batch_gives_its_drafts_to_the_slots_most_likely_to_be_right():
    cpu = cost_of({1: 0.010, 8: 0.050, 16: 0.080, 32: 0.130, 64: 0.220})
    lengths = plan_drafts(cpu, [1] * 8, [(0.99, 64), (0.2, 64), (0.0, 0)] + [(0.5, 0)] * 5, 500)
    assert lengths[0] > 0 and lengths[1] == 0 and lengths[2:] == [0] * 6


def test_a_draft_beside_other_sequences_pays_for_its_own_micro_batch():
    # One sequence alone drafts where its drafts are likely; beside seven others
    # (8 tokens in 50 ms), a one-token draft costs a pass of its own (10 ms), far
    # more than the 50/8 ms a token of the shared pass costs.
    cpu = cost_of({1: 0.010, 2: 0.018, 4: 0.030, 8: 0.050, 16: 0.080, 32: 0.130, 64: 0.220})
    assert plan_drafts(cpu, [1], [(0.8, 64)], 500)[0] > 0
    busy = plan_drafts(cpu, [1] * 8, [(0.8, 64)] + [(0.0, 0)] * 7, 500)
    assert busy == [0] * 8
    # Only a long draft that is all but sure pays there.
    assert plan_drafts(cpu, [1] * 8, [(0.99, 64)] + [(0.0, 0)] * 7, 500)[0] >= 16


def test_draft_min_raises_each_slots_draft_while_the_batch_has_room():
    """--draft-min: a slot with a draft drafts at least that many of its tokens
    (all of them when it has fewer), whatever the plan said, first slots first
    while the room lasts; a longer planned draft stays as planned."""
    assert at_least([0, 0, 0], [8, 2, 0], 4, 64) == [4, 2, 0]
    assert at_least([6, 0], [8, 8], 4, 64) == [6, 4]
    assert at_least([0, 0, 0], [8, 8, 8], 4, 6) == [4, 2, 0]
    assert at_least([3, 0], [8, 8], 4, 0) == [3, 0]
