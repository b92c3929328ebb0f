"""The n-gram drafts, the odds of a slot's drafts and the cost of a drafted
token, without a model."""

from __future__ import annotations

import pytest

from shimmy.models.speculation import (
    MIN_SHARE,
    WARM_UP_STEPS,
    DecodeCost,
    DraftOdds,
    NgramIndex,
)


def test_a_draft_is_what_followed_the_latest_ngram_before():
    index = NgramIndex([1, 2, 3, 4, 5, 9, 9, 1, 2, 3])
    assert index.draft(3) == [4, 5, 9]
    index.extend([4, 7])  # the text went another way: the latest occurrence wins
    index.extend([1, 2, 3])
    assert index.draft(2) == [4, 7]


def test_the_longest_ngram_that_matches_is_used():
    # "2 3" last led to 8, but "1 2 3" (longer) last led to 4.
    index = NgramIndex([1, 2, 3, 4, 0, 2, 3, 8, 5, 1, 2, 3])
    assert index.draft(1) == [4]


def test_no_match_no_draft():
    assert NgramIndex([1, 2, 3, 4]).draft(4) == []
    assert NgramIndex([1, 2, 3, 1, 2, 3]).draft(0) == []
    assert NgramIndex([1]).draft(3) == []


def test_a_short_period_continues_itself():
    index = NgramIndex([7, 8, 9, 7, 8, 9, 7, 8])
    assert index.draft(7) == [9, 7, 8, 9, 7, 8, 9]


def test_drafts_that_come_true_grow_and_drafts_that_fail_stop():
    odds = DraftOdds()
    assert odds.chance == 0.5
    assert odds.length(0.6, 16) == 0  # an even chance does not pay at that cost
    for _ in range(10):
        odds.judged(4, 4)
    assert odds.chance > 0.9
    assert odds.length(0.6, 16) >= 4
    assert odds.length(0.6, 3) == 3  # never more than there is
    for _ in range(50):
        odds.judged(4, 3)  # three in four come true
    assert odds.chance == pytest.approx(0.75, abs=0.02)
    assert odds.length(0.6, 16) == 1
    assert odds.length(0.2, 16) == 5  # cheaper tokens: a longer draft
    for _ in range(30):
        odds.judged(1, 0)
    assert odds.length(0.3, 16) == 0


def test_a_token_costs_its_share_of_the_step():
    cost = DecodeCost()
    assert cost.share(1) == 0.5  # nothing seen yet: fixed and per-token parts equal
    for _ in range(WARM_UP_STEPS):
        cost.observe(1, 5.0)  # loading's first steps are slow: not counted
    for _ in range(20):
        cost.observe(1, 0.010)
    assert cost.share(1) == 0.5  # one step size alone says nothing of the split
    for tokens in (1, 5, 9, 17):
        for _ in range(5):
            cost.observe(tokens, 0.004 + 0.006 * tokens)  # fixed 4 ms, 6 ms a token
    assert cost.share(1) == pytest.approx(0.006 / 0.010)
    assert cost.share(8) == pytest.approx(0.048 / 0.052)
    cost.observe(1, 100.0)  # the machine was busy elsewhere: capped, not believed
    assert cost.share(1) == pytest.approx(0.006 / 0.010, abs=0.1)


def test_a_step_time_that_does_not_grow_makes_drafts_nearly_free():
    cost = DecodeCost()
    for tokens in [1] * WARM_UP_STEPS + [1, 2, 4, 8, 16]:
        cost.observe(tokens, 0.050)
    assert cost.share(1) == MIN_SHARE
