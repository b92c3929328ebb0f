"""One thread computes for every llama.cpp context in the process.

ggml's CPU backend runs each decode on an OpenMP team, and libgomp gives every
thread that starts a parallel region a team of its own, kept for as long as
that thread lives. Once the process holds more OpenMP threads than it has
cores, libgomp spins only 100 times at each barrier before it puts a thread to
sleep, and a decode passes hundreds of barriers. So a second thread that had
computed once (a second model's engine, an embedding request on an HTTP
worker thread) made every decode in the process about three times slower
(SmolLM2 on two cores: 126 tokens a second, then 44), though only one decode
runs at a time (the manager's decode lock) and the other team sleeps.

So every decode is handed to one long-lived thread, whoever asks for it: one
OpenMP team for the process, however many models and callers. The hand-over
costs a few tens of microseconds (a step of SmolLM2 is 8 ms or more), and the
caller's thread waits on a lock, without the GIL, while llama.cpp computes.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_start_lock = threading.Lock()
_thread: threading.Thread | None = None


class _Job:
    __slots__ = ("args", "done", "error", "function", "result")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.function = function
        self.args = args
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released by the compute thread when the job is done


def _serve() -> None:
    while True:
        job = _jobs.get()
        try:
            job.result = job.function(*job.args)
        except BaseException as error:  # handed to the caller, who raises it
            job.error = error
        finally:
            job.done.release()


def _compute_thread() -> threading.Thread:
    global _thread
    with _start_lock:
        if _thread is None:
            _thread = threading.Thread(target=_serve, name="llama-compute", daemon=True)
            _thread.start()
        return _thread


def run(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on the compute thread; its result, or its exception."""
    thread = _thread or _compute_thread()
    if threading.current_thread() is thread:
        return function(*args)
    job = _Job(function, args)
    _jobs.put(job)
    job.done.acquire()
    if job.error is not None:
        raise job.error
    result: T = job.result
    return result


def _forget_in_child() -> None:
    """A forked child has no compute thread (only the forking thread survives a
    fork): it starts its own if it ever computes."""
    global _jobs, _start_lock, _thread
    _jobs, _start_lock, _thread = queue.SimpleQueue(), threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_in_child)


def is_compute_thread() -> bool:
    """Whether the calling thread is the one that computes (for tests)."""
    return threading.current_thread() is _thread
