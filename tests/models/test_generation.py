"""Generation handles: how the scheduler thread hands pieces to their readers."""

from __future__ import annotations

import asyncio
import threading

import pytest

from shimmy.models.generation import Generation, GenerationRequest, wake_readers
from tests.waiting import eventually_async


def make() -> Generation:
    return Generation(GenerationRequest([1, 2, 3], max_tokens=4), "model")


def test_one_wake_per_event_loop_for_a_whole_step() -> None:
    asyncio.run(_one_wake_per_event_loop())


async def _one_wake_per_event_loop() -> None:
    loop = asyncio.get_running_loop()
    generations = [make() for _ in range(4)]
    firsts: list[asyncio.Future[str]] = [loop.create_future() for _ in generations]

    async def read(generation: Generation, first: asyncio.Future[str]) -> str:
        text = ""
        async for piece in generation.stream():
            if not first.done():
                first.set_result(piece.text)
            text += piece.text
        return text

    readers = [asyncio.create_task(read(g, f)) for g, f in zip(generations, firsts, strict=True)]
    # Every reader waits for its first piece: stream() has registered its wake-up
    # (what wake_readers wakes), so the step below has four readers to wake.
    await eventually_async(
        lambda: all(g._async_waiters for g in generations), 5, what="every reader waiting"
    )

    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args):
        nonlocal calls
        calls += 1
        return original(*args)

    def scheduler_step() -> None:  # as the engine's thread does it
        for i, generation in enumerate(generations):
            generation.emit(f"t{i}", 100 + i, wake=False)
        wake_readers(generations)

    # Counted for the step only; undone on the way out, failing or not.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "call_soon_threadsafe", counting)
        thread = threading.Thread(target=scheduler_step)
        thread.start()
        thread.join()
        assert await asyncio.wait_for(asyncio.gather(*firsts), 5) == ["t0", "t1", "t2", "t3"]
        assert calls == 1  # one wake for the four streams

    for generation in generations:
        generation.finish("length")
    assert await asyncio.wait_for(asyncio.gather(*readers), 5) == ["t0", "t1", "t2", "t3"]


def test_pieces_emitted_without_a_wake_reach_thread_readers_after_wake_readers() -> None:
    generation = make()
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(p.text for p in generation))
    reader.start()
    generation.emit("a", 7, wake=False)
    generation.emit("b", 8, wake=False)
    wake_readers([generation])
    generation.finish("length")
    reader.join(5)
    assert not reader.is_alive()
    assert seen == ["a", "b"]
    assert generation.completion_tokens == 2
