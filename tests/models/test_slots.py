"""Which free slot a new request takes (no model needed: slots are plain records)."""

from __future__ import annotations

from shimmy.models.engine import _Slot, choose_slot

SYSTEM = list(range(1000, 1024))  # a 24-token system prompt every chat shares


def slot(seq: int, cached: list[int], last_used: float = 0.0) -> _Slot:
    return _Slot(seq=seq, cached=list(cached), last_used=last_used)


def test_a_later_turn_takes_the_slot_holding_its_chat() -> None:
    turn_one = [*SYSTEM, 1, 2, 3, 50, 51, 52]  # prompt, then the reply
    other = slot(0, [*SYSTEM, 7, 8, 9, 60], last_used=1.0)
    mine = slot(1, turn_one, last_used=5.0)
    assert choose_slot([other, mine, slot(2, [])], [*turn_one, 4, 5]) is mine


def test_the_same_prompt_again_takes_the_slot_that_ran_it() -> None:
    prompt = [*SYSTEM, 1, 2, 3]
    ran_it = slot(3, [*prompt, *range(200, 320)])  # prompt plus 120 generated tokens
    assert choose_slot([slot(0, []), ran_it], prompt) is ran_it


def test_the_longest_continuation_wins() -> None:
    prompt = [*SYSTEM, 1, 2, 3, 4, 5, 6]
    short = slot(0, [*SYSTEM, 1, 2, 3, 4])
    longer = slot(1, [*SYSTEM, 1, 2, 3, 4, 5])
    assert choose_slot([short, longer], prompt) is longer


def test_sharing_only_the_system_prompt_does_not_evict_a_chat() -> None:
    chat = slot(0, [*SYSTEM, 7, 8, 9, *range(200, 300)])
    empty_high, empty_low = slot(5, []), slot(2, [])
    # An empty slot, the lowest, so running sequences stay in a narrow stream range.
    assert choose_slot([chat, empty_high, empty_low], [*SYSTEM, 1, 2, 3]) is empty_low


def test_with_no_continuation_and_no_empty_slot_the_least_recently_used_goes() -> None:
    recent = slot(0, [*SYSTEM, 7, 8, *range(300, 340)], last_used=9.0)
    old = slot(1, [*SYSTEM, 5, 6, *range(900, 1900)], last_used=2.0)
    assert choose_slot([recent, old], [*SYSTEM, 1, 2, 3]) is old
