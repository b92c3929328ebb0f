"""Which free slot a new request takes (no model needed: slots are plain records)."""

from __future__ import annotations

from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.slots import (
    Slot,
    assign_slots,
    choose_slot,
    continued_slot,
    gap_move,
    runs,
    shared_tokens,
)

SYSTEM = list(range(1000, 1024))  # a 24-token system prompt every chat shares


def slot(seq: int, cached: list[int], last_used: float = 0.0) -> Slot:
    return Slot(seq=seq, cached=list(cached), last_used=last_used)


def running(seq: int, cached: list[int]) -> Slot:
    busy = slot(seq, cached)
    busy.generation = Generation(GenerationRequest([1, 2, 3]), "m")
    return busy


def test_a_request_moves_into_the_gap_another_left() -> None:
    # Sequence 2 ended between 0-1 and 3: one request moves so that all run in one
    # run. Moving 0 or 3 both do; 3 holds fewer tokens (less to copy).
    slots = [running(0, list(range(60))), running(1, list(range(50)))]
    slots += [slot(2, list(range(40)), last_used=5.0), running(3, list(range(30)))]
    slots += [slot(seq, [], last_used=1.0) for seq in range(4, 8)]
    move = gap_move(slots, [s for s in slots if not s.free])
    assert move == (slots[3], slots[2])
    # Already together: no move.
    together = [running(0, [1]), running(1, [2]), slot(2, []), slot(3, [])]
    assert gap_move(together, together[:2]) is None


def test_a_move_goes_to_an_empty_slot_before_one_holding_a_conversation() -> None:
    # 0 and 4 run; moving 4 next to 0 into 1 (a conversation) or moving 0 next to
    # 4 into 3 (empty) both make one run: the empty one costs no save.
    slots = [running(0, list(range(10))), slot(1, [7, 7, 7]), slot(2, [8, 8]), slot(3, [])]
    slots += [running(4, list(range(200)))]
    assert gap_move(slots, [slots[0], slots[4]]) == (slots[0], slots[3])
    # Of conversations, the least recently used goes.
    slots[3].cached = [9]
    slots[1].last_used, slots[3].last_used = 1.0, 2.0
    assert gap_move(slots, [slots[0], slots[4]]) == (slots[4], slots[1])


def test_only_movable_requests_move() -> None:
    # 0 and 2 run; only 2 may move (0 is reading its prompt, say): into 1.
    slots = [running(0, [1]), slot(1, [5]), running(2, [2]), slot(3, [])]
    assert gap_move(slots, [slots[2]]) == (slots[2], slots[1])
    assert gap_move(slots, []) is None


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


def test_a_new_prompt_keeps_the_running_sequences_together() -> None:
    # Sequences 0-2 run; slot 3 was used more recently than slot 6, but taking 6
    # would leave a gap, and every step would then make two passes over the weights.
    next_to_them = slot(3, [*SYSTEM, 7, *range(300, 340)], last_used=9.0)
    far = slot(6, [*SYSTEM, 5, *range(900, 940)], last_used=1.0)
    prompt = [*SYSTEM, *range(1, 9)]
    assert choose_slot([far, next_to_them], prompt, busy={0, 1, 2}) is next_to_them
    # With nothing running, the least recently used as before.
    assert choose_slot([far, next_to_them], prompt) is far
    # A chat's next turn still takes the slot holding it, gap or not.
    chat = [*SYSTEM, 5, *range(900, 940)]
    assert choose_slot([far, next_to_them], [*chat, 4], busy={0, 1, 2}) is far


def test_prompts_starting_together_fill_a_gap_and_stay_together() -> None:
    free = [slot(seq, [*SYSTEM, seq], last_used=10.0 - seq) for seq in (1, 4, 5, 6, 7)]
    prompts = [[*SYSTEM, *range(90, 99)], [*SYSTEM, *range(80, 89)]]
    got = assign_slots(free, prompts, busy={0, 2, 3})
    assert sorted(s.seq for s in got) == [1, 4]
    assert runs({0, 2, 3, *(s.seq for s in got)}) == 1


def test_runs_of_consecutive_sequences() -> None:
    assert runs(set()) == 0
    assert runs({0, 1, 2}) == 1
    assert runs({0, 2, 4, 6}) == 4
    assert runs({1, 2, 5}) == 2


def test_prompts_starting_together_keep_the_slots_they_continue() -> None:
    # Two clients come back at once; a newcomer arrived first. The newcomer takes
    # the least recently used slot that no prompt of the batch continues, not the
    # one the returning chat continues (which is older still).
    chat_a = [*SYSTEM, 1, 2, *range(400, 440)]
    chat_b = [*SYSTEM, 3, 4, *range(500, 540)]
    a = slot(0, chat_a, last_used=1.0)
    b = slot(1, chat_b, last_used=3.0)
    other = slot(2, [*SYSTEM, 5, 6, *range(600, 640)], last_used=2.0)
    newcomer = [*SYSTEM, 9, 9, 9]
    got = assign_slots([a, b, other], [newcomer, [*chat_a, 7], [*chat_b, 8]])
    assert got == [other, a, b]


def test_one_prompt_alone_takes_what_choose_slot_gives() -> None:
    free = [slot(0, [*SYSTEM, 1], last_used=2.0), slot(1, [*SYSTEM, 2], last_used=1.0)]
    prompt = [*SYSTEM, 3, 4]
    assert assign_slots(free, [prompt]) == [choose_slot(free, prompt)]


def test_the_same_prompt_twice_takes_its_slot_once() -> None:
    prompt = [*SYSTEM, 1, 2, 3]
    ran_it = slot(1, [*prompt, *range(200, 260)], last_used=5.0)
    empty = slot(0, [])
    got = assign_slots([ran_it, empty], [prompt, prompt])
    assert got == [ran_it, empty]


def test_a_slot_of_another_scope_is_never_continued() -> None:
    # The same prompt again from another API key's scope: the slot that ran it
    # shares nothing with it, so the prompt takes the empty slot instead.
    prompt = [*SYSTEM, 1, 2, 3]
    ran_it = Slot(seq=0, cached=[*prompt, *range(200, 260)], scope="a")
    empty = slot(1, [])
    assert continued_slot([ran_it, empty], prompt, "b") is None
    assert choose_slot([ran_it, empty], prompt, "b") is empty
    assert choose_slot([ran_it, empty], prompt, "a") is ran_it  # its own scope: as before
    assert choose_slot([ran_it, empty], prompt) is empty  # "" is a scope of its own too


def test_prompts_starting_together_only_continue_slots_of_their_scope() -> None:
    chat = [*SYSTEM, 1, 2, *range(400, 440)]
    held = Slot(seq=0, cached=chat, scope="a", last_used=1.0)
    other = slot(1, [*SYSTEM, 5, 6, *range(600, 640)], last_used=2.0)
    # Scope "b" sends scope "a"'s conversation: no home, so the least recently
    # used slot (the one holding "a"'s chat) goes to it as to any other prompt,
    # and the cells it then reuses are none (shared_tokens is 0).
    assert assign_slots([held, other], [[*chat, 7]], ["b"]) == [held]
    assert shared_tokens(held, [*chat, 7], "b") == 0
    # Scope "a" coming back beside a newcomer of "b" keeps its slot.
    got = assign_slots([held, other], [[*SYSTEM, 9], [*chat, 7]], ["b", "a"])
    assert got == [other, held]
    assert shared_tokens(held, [*chat, 7], "a") == len(chat)
