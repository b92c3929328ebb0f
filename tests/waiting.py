"""Waiting for a condition, bounded: the one way tests synchronise with threads,
workers and servers. A sleep used as synchronisation fails on a loaded machine;
these poll the outcome itself and fail with a message once the bound is spent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

# What a wait is for, said in its timeout message: a phrase, or a callable asked
# only then, which can report the state the wait last saw.
What = str | Callable[[], object]


def _timed_out(timeout: float, what: What, condition: Callable[[], object]) -> AssertionError:
    said = what() if callable(what) else what
    return AssertionError(f"timed out after {timeout:g} s waiting for {said or condition}")


def eventually(
    condition: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.02,
    what: What = "",
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, condition)
        time.sleep(interval)


async def eventually_async(
    condition: Callable[[], T],
    timeout: float = 30.0,
    interval: float = 0.02,
    what: What = "",
) -> T:
    """`eventually` for coroutines: the event loop keeps running while it waits."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, condition)
        await asyncio.sleep(interval)


async def settle(
    pilot: Any, condition: Callable[[], T], timeout: float = 60.0, what: What = ""
) -> T:
    """Let a Textual app run (its workers, and the messages they post back from
    their threads) until ``condition`` holds. A finished worker's last message
    may still be in a widget's queue after ``workers.wait_for_complete()``.
    Once it holds, the app gets one more pause to lay out and repaint what the
    change caused, so that a click that follows lands where the widget now is."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            await pilot.pause()
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(timeout, what, condition)
        await pilot.pause(0.02)
