"""What a decode step costs by its size and by the depth of its caches, without a model."""

from __future__ import annotations

import pytest

from shimmy.models.speculation import plan_drafts
from shimmy.models.stepcost import (
    WARM_UP_STEPS,
    DecodeCost,
    micro_batches,
    step_cost,
)

# Measured on SmolLM2 on two cores with flash attention on (ms by step size, at
# an empty cache and 1,600 tokens deep).
SHALLOW = {1: 9.8, 2: 12.7, 4: 18.7, 8: 30.7, 16: 57.4, 32: 111.2, 64: 206.7}
DEEP = {1: 29.5, 2: 48.4, 4: 92.7, 8: 161.8, 16: 315.1, 32: 624.0, 64: 336.5}


def ubatch_sizes(rows: list[int]) -> list[int]:
    return [batch.tokens for batch in micro_batches(rows)]


def cost_of(times: dict[int, float]) -> DecodeCost:
    cost = DecodeCost()
    for tokens, seconds in times.items():
        cost.observe(tokens, seconds, calibrating=True)
    return cost


def calibrated() -> DecodeCost:
    """As the engine leaves it at load: steps of 1, 4, 16 and 64 timed with an
    empty cache, and past the first steps of loading."""
    cost = cost_of({n: SHALLOW[n] / 1000 for n in (1, 4, 16, 64)})
    for _ in range(WARM_UP_STEPS):
        cost.observe_step([1], SHALLOW[1] / 1000)
    return cost


def test_a_step_costs_what_steps_of_its_size_took_and_between_them_a_line():
    cost = DecodeCost()
    assert not cost.known and cost.predict(4) == 0.0
    for _ in range(WARM_UP_STEPS):
        cost.observe(1, 5.0)  # loading's first steps are slow: not counted
    assert not cost.known
    cost = cost_of({1: 0.010, 4: 0.022, 16: 0.040})
    assert cost.predict(1) == 0.010
    assert cost.predict(2) == pytest.approx(0.014)  # between 1 and 4
    assert cost.predict(10) == pytest.approx(0.031)  # between 4 and 16
    assert cost.predict(28) == pytest.approx(0.058)  # past 16: the last slope (1.5 ms a token)
    for _ in range(WARM_UP_STEPS + 30):
        cost.observe(4, 0.030)  # steps of 4 now take longer: the cost follows
    assert cost.predict(4) == pytest.approx(0.030, abs=0.002)
    cost.observe(4, 100.0)  # the machine was busy elsewhere: capped, not believed
    assert cost.predict(4) < 0.04


def test_a_step_is_computed_in_micro_batches_of_consecutive_sequences():
    assert ubatch_sizes([1] * 8) == [8]
    assert ubatch_sizes([2, 1, 1, 1]) == [4, 1]  # a draft: one more pass, of its tokens
    assert ubatch_sizes([1, 4, 4, 1]) == [4, 6]
    assert ubatch_sizes([1, 0, 1, 0, 1]) == [1, 1, 1]  # a gap splits the run
    assert ubatch_sizes([0, 0, 5]) == [5]
    assert ubatch_sizes([0, 0]) == []


def test_a_micro_batch_is_as_deep_as_its_sequences_caches_on_average():
    assert micro_batches([1, 1, 0, 1], [100, 300, 0, 50]) == [(2, 200.0, False), (1, 50.0, False)]
    assert micro_batches([3, 1], [1000, 10]) == [(2, 505.0, False), (2, 1000.0, False)]
    assert micro_batches([2]) == [(2, 0.0, False)]  # depths not given: empty caches
    assert micro_batches([64, 8]) == [(16, 0.0, False), (56, 0.0, False)]
    assert micro_batches([70]) == [(70, 0.0, True)]


def test_a_step_of_several_micro_batches_is_shared_among_them_by_their_costs():
    cost = cost_of({1: 0.010, 8: 0.050})
    for _ in range(WARM_UP_STEPS):
        cost.observe_step([1] * 8, 0.050)
    for _ in range(40):
        cost.observe_step([2, 1, 1, 1, 1, 1, 1, 1], 0.090)  # 8 then 1: both 1.5x slower
    assert cost.predict(8) == pytest.approx(0.075, rel=0.05)
    assert cost.predict(1) == pytest.approx(0.015, rel=0.05)


def test_steps_deep_in_a_cache_teach_the_cost_of_depth_and_leave_shallow_costs_alone():
    cost = calibrated()
    assert cost.predict(1, 1600) == pytest.approx(SHALLOW[1] / 1000)  # nothing known of depth
    for _ in range(20):  # a long reply to a 1,600-token prompt, one token a step
        cost.observe_step([1], DEEP[1] / 1000, [1600])
    assert cost.predict(1, 1600) == pytest.approx(DEEP[1] / 1000, rel=0.05)
    assert cost.predict(1, 800) == pytest.approx((SHALLOW[1] + DEEP[1]) / 2000, rel=0.1)
    assert cost.predict(1, 0) == pytest.approx(SHALLOW[1] / 1000, rel=0.05)


def test_a_size_never_timed_deep_takes_its_slope_per_token_from_the_nearest_that_was():
    cost = calibrated()
    for _ in range(20):
        cost.observe_step([1], DEEP[1] / 1000, [1600])
    # A step of 4 drafted tokens 1,600 deep is dearer than its shallow cost by
    # about four times what depth adds to one token (93 ms were measured).
    assert cost.predict(4, 1600) == pytest.approx(DEEP[4] / 1000, rel=0.2)
    assert cost.predict(4, 0) == pytest.approx(SHALLOW[4] / 1000, rel=0.05)
    # Once steps of 16 were timed deep, theirs is their own.
    for _ in range(20):
        cost.observe_step([16], DEEP[16] / 1000, [1600])
    assert cost.predict(16, 1600) == pytest.approx(DEEP[16] / 1000, rel=0.05)
    assert cost.predict(16, 0) == pytest.approx(SHALLOW[16] / 1000, rel=0.1)


def test_a_draft_deep_in_a_long_prompt_is_planned_at_what_it_costs_there():
    cost = calibrated()
    likely = [(0.9, 64)]  # an echo: its drafts come true 9 times in 10
    shallow = plan_drafts(cost, [1], likely, 500, [100])
    for _ in range(20):
        cost.observe_step([1], DEEP[1] / 1000, [1600])
    deep = plan_drafts(cost, [1], likely, 500, [1600])
    assert shallow[0] >= 4 and deep[0] < shallow[0]
    # What the plan expects is near what such a step took.
    assert step_cost(cost, [1 + deep[0]], [1600]) == pytest.approx(
        DEEP[1] / 1000 + (DEEP[4] - DEEP[1]) / 3000 * deep[0], rel=0.35
    )
    # And a shallow request after the deep one plans as before it.
    assert plan_drafts(cost, [1], likely, 500, [100]) == shallow


def test_tiled_micro_batches_neither_lend_nor_borrow_the_one_by_one_kernels_costs():
    cost = calibrated()
    for _ in range(20):
        cost.observe_step([32], DEEP[32] / 1000, [1600])
    # Up to 63 rows, the one-by-one kernel's cost per row deep, from 32's ...
    assert cost.predict(48, 1600) > cost.predict(32, 1600) > 0.5
    # ... but 64 rows are computed in tiles: none lent, until timed deep.
    assert cost.predict(64, 1600) == pytest.approx(SHALLOW[64] / 1000)
    for _ in range(20):
        cost.observe_step([64], DEEP[64] / 1000, [1600])
    assert cost.predict(64, 1600) == pytest.approx(DEEP[64] / 1000, rel=0.05)
    assert cost.predict(32, 1600) == pytest.approx(DEEP[32] / 1000, rel=0.05)
