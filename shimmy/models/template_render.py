"""Chat templates rendered in worker processes, bounded in time, output and memory.

A chat template comes from a GGUF file, that is from a stranger. Jinja's
sandbox stops it reaching Python's internals, not looping for minutes or
allocating gigabytes. So templates are rendered by ``template_worker.py``
children that the kernel bounds: ``RLIMIT_AS`` caps a render's memory, the
output is counted as it is produced, and a render that runs past its time limit
or whose client has left (``cancel``) is ended with SIGKILL, which works even in
the middle of one long C call. Workers start lazily, are reused, and are
replaced after a kill.

Why a process and not hooks in this one (measured on 2 cores, December 2026,
with the in-process variant built as well: sandbox ``call_binop`` checks on
``*``, ``**``, ``+``, ``%``; ``generate()`` counting output; a watchdog thread
raising into the rendering thread with ``PyThreadState_SetAsyncExc`` on a time
or RSS limit):

- ``~`` is Jinja's ``Concat`` node, which no sandbox hook sees: doubling a
  string with it grew RSS by 192 MB before the watchdog got in, a ``join``
  doubling by 109 MB, ``indent`` by 134 MB; ``replace`` grew it by 954 MB and
  ran 4.9 s against a 3 s limit, because an asynchronous exception waits for
  the C call to return (as does the watchdog, which needs the GIL);
- ``center``, ``format``, ``str.ljust`` with a width of 10**10 and constant
  folding at compile time (``'a' * 10**10`` is computed by ``from_string``)
  allocate 10 GB in one call: each needs its own argument check, and the list
  of such filters and methods is never complete;
- an RSS limit in the server's own process is also hit by the server's own
  growth (KV caches, saved prompts), failing good templates.

The child bounds all of these whatever the operation; in it each of those
bombs is refused with at most 52 MB of growth, in the child, which is then
replaced. Its cost (SmolLM2's real template, median of 500 renders, on the same
2 busy cores): 30-50 us in process, 190-280 us through a warm worker (the pipe
round trip and JSON), against milliseconds for the prompt's decode. A worker
starts in 100-200 ms, once. Each live worker holds 21 MB of RSS (11 MB of it
its own, the rest shared libraries) in its own process, never in the server's:
``psutil.Process(pid).memory_info()``, as bench/bench_server.py measures, does
not see children. One worker serves but concurrent renders; at most
``max_workers`` run and at most ``max_idle`` are kept. A worker exits at EOF on
its stdin, so it ends with the server even when the server is killed; while
rendering, ``RLIMIT_CPU`` ends it should the parent die mid-render.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from shimmy.errors import ShimmyError
from shimmy.models import template_worker as protocol

# A good template renders in well under a millisecond; even a conversation the
# size of the largest request body takes tens of milliseconds.
RENDER_TIMEOUT_S = 3.0
# The output may be this many characters, plus OUTPUT_PER_INPUT per character
# sent: a template repeats its input with some markup around it, never more.
OUTPUT_LIMIT_CHARS = 1 << 20
OUTPUT_PER_INPUT = 4
# The memory a render may map beyond what its worker holds when it starts, plus
# MEMORY_PER_INPUT bytes per byte sent (JSON decoding and a few copies of each
# message's text as the template concatenates them).
MEMORY_LIMIT_BYTES = 64 << 20
MEMORY_PER_INPUT = 16
# Workers rendering at once (more renders wait for one), and kept when idle.
MAX_WORKERS = 4
MAX_IDLE = 2
# With every live worker busy, a render waits this long for one to come back
# before starting another: a render takes a millisecond or two, a new worker
# 70-230 ms (a Python start and Jinja's import), so a burst of eight requests
# is served by the idle two far sooner than by two new ones. A slow template
# holds its worker longer than this, and the renders behind it get their own.
SPAWN_AFTER_S = 0.05
# Starting a worker is a Python start and a Jinja import: ~100 ms, seconds on a
# loaded machine. Not counted in the render's own limit.
START_TIMEOUT_S = 30.0
# How often a render waiting on its worker looks at its cancel token.
_CANCEL_POLL_S = 0.01

_WORKER_SCRIPT = Path(protocol.__file__)


class RenderCancelled(ShimmyError):
    """The render was stopped by its ``cancel`` token (its client left).

    A ``generation_failed`` error, raised only when ``cancel`` was set; the
    request it belonged to should be dropped without an answer.
    """

    def __init__(self) -> None:
        super().__init__(
            "generation_failed",
            "The request was cancelled while its chat template was rendering",
        )


@dataclass(frozen=True)
class RenderLimits:
    """What one render may take."""

    timeout: float = RENDER_TIMEOUT_S
    output_chars: int = OUTPUT_LIMIT_CHARS
    memory_bytes: int = MEMORY_LIMIT_BYTES

    def output_for(self, input_size: int) -> int:
        return self.output_chars + OUTPUT_PER_INPUT * input_size

    def memory_for(self, input_size: int) -> int:
        return self.memory_bytes + MEMORY_PER_INPUT * input_size


def _too_long(limits: RenderLimits) -> ShimmyError:
    return ShimmyError(
        "model_invalid",
        f"The model's chat template ran too long: it was stopped after {limits.timeout:g} s",
    )


def _too_large(what: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("model_invalid", f"The model's chat template ran too large: {what}", details)


def _not_started(details: str) -> ShimmyError:
    return ShimmyError("server_error", "The chat template renderer did not start", details)


class _WorkerGone(Exception):
    """The worker closed its end of a pipe (it exited or was killed)."""


class _WorkerLost(_WorkerGone):
    """The worker was gone before it read the request (killed while idle)."""


class _Worker:
    """One renderer child and its pipes; used by one thread at a time."""

    def __init__(self, cpu_seconds: float) -> None:
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-I", str(_WORKER_SCRIPT), f"{cpu_seconds:g}"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                # The worker reports everything through its replies; a crash must
                # never print onto the dashboard's screen.
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
        except OSError as exc:
            raise _not_started(str(exc)) from exc
        self.ready = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def _stdin(self) -> IO[bytes]:
        assert self.process.stdin is not None
        return self.process.stdin

    def _read(self, size: int, deadline: float, cancel: threading.Event | None) -> bytes | None:
        """``size`` bytes, or None at the deadline; raises on cancel or EOF."""
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        poller = select.poll()  # not select(): a busy server has descriptors past 1024
        poller.register(fd, select.POLLIN)
        data = bytearray()
        while len(data) < size:
            if cancel is not None and cancel.is_set():
                raise RenderCancelled
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            wait = left if cancel is None else min(left, _CANCEL_POLL_S)
            if not poller.poll(max(1, int(wait * 1000))):
                continue
            chunk = os.read(fd, size - len(data))
            if not chunk:
                raise _WorkerGone
            data += chunk
        return bytes(data)

    def wait_ready(self, cancel: threading.Event | None) -> None:
        if self.ready:
            return
        try:
            ready = self._read(len(protocol.READY), time.monotonic() + START_TIMEOUT_S, cancel)
        except _WorkerGone:
            ready = None
        if ready != protocol.READY:
            raise _not_started(f"exit status {self.process.poll()}")
        self.ready = True

    def ask(self, request: bytes, deadline: float, cancel: threading.Event | None) -> bytes | None:
        """The reply to ``request``, or None if none came before ``deadline``."""
        frame = memoryview(protocol.HEADER.pack(len(request)) + request)
        try:
            while frame:  # a raw write may be partial (a signal mid-way)
                frame = frame[self._stdin().write(frame) or 0 :]
        except (BrokenPipeError, ValueError) as exc:
            raise _WorkerLost from exc
        header = self._read(protocol.HEADER.size, deadline, cancel)
        if header is None:
            return None
        return self._read(protocol.HEADER.unpack(header)[0], deadline, cancel)

    def kill(self) -> None:
        """End the worker now and reap it (no zombie is left)."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def close(self, timeout: float = 2.0) -> None:
        """Let an idle worker exit on EOF, killing it if it does not."""
        try:
            self._stdin().close()
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass


class TemplateRenderer:
    """A pool of renderer workers, safe to share between threads.

    ``render`` blocks until the prompt is rendered, its limits are hit
    (``model_invalid``), the template fails (``model_invalid`` or
    ``invalid_request``, as before), or ``cancel`` is set (``RenderCancelled``,
    within ~10 ms).
    """

    def __init__(
        self,
        limits: RenderLimits | None = None,
        *,
        max_workers: int = MAX_WORKERS,
        max_idle: int = MAX_IDLE,
    ) -> None:
        self.limits = limits or RenderLimits()
        self._max_idle = max_idle
        self._slots = threading.BoundedSemaphore(max_workers)
        self._lock = threading.Lock()
        self._given_back = threading.Condition(self._lock)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._closed = False

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (idle and busy), for tests and diagnostics."""
        with self._lock:
            return [w.pid for w in [*self._idle, *self._busy]]

    def render(
        self, source: str, context: Mapping[str, Any], cancel: threading.Event | None = None
    ) -> str:
        """``source`` rendered with ``context`` (JSON-like values) in a worker."""
        if cancel is not None and cancel.is_set():
            raise RenderCancelled
        # Values JSON cannot carry are rendered as their str(), as Jinja would print them.
        encoded = json.dumps(context, ensure_ascii=False, default=str)
        size = len(source) + len(encoded)
        request = (
            f'{{"source":{json.dumps(source, ensure_ascii=False)},"context":{encoded},'
            f'"max_output":{self.limits.output_for(size)},'
            f'"memory":{self.limits.memory_for(size)}}}'
        ).encode("utf-8", protocol.TEXT_ERRORS)
        self._acquire_slot(cancel)
        try:
            return self._render_in_a_worker(request, size, cancel)
        finally:
            self._slots.release()

    def close(self) -> None:
        """Stop every worker (idle ones on EOF, busy ones killed); later renders fail."""
        with self._lock:
            self._closed = True
            self._given_back.notify_all()
            idle, self._idle = self._idle, []
            busy = list(self._busy)
        for worker in idle:
            worker.close()
        for worker in busy:
            worker.kill()

    def _acquire_slot(self, cancel: threading.Event | None) -> None:
        while not self._slots.acquire(timeout=_CANCEL_POLL_S if cancel is not None else None):
            if cancel is not None and cancel.is_set():
                raise RenderCancelled

    def _render_in_a_worker(self, request: bytes, size: int, cancel: threading.Event | None) -> str:
        # A worker killed while idle (by the OOM killer, say) shows up as a broken
        # pipe before the request reached it; take a fresh one, once.
        for attempt in (1, 2):
            worker = self._take()
            try:
                worker.wait_ready(cancel)
                deadline = time.monotonic() + self.limits.timeout
                reply = worker.ask(request, deadline, cancel)
            except _WorkerLost:
                self._discard(worker)
                if attempt == 1:
                    continue
                raise _not_started("its pipe closed twice") from None
            except _WorkerGone:  # it died mid-render: the template killed it
                raise self._died(worker) from None
            except BaseException:  # cancelled, or the worker would not start
                self._discard(worker)
                raise
            if reply is None:
                self._discard(worker)
                raise _too_long(self.limits)
            status, text = reply[:1], reply[1:].decode("utf-8", protocol.TEXT_ERRORS)
            if status == protocol.STATUS_OK:
                self._give_back(worker)
                return text
            # After a limit was hit, start the next render in a fresh process.
            if status in (protocol.STATUS_OUTPUT, protocol.STATUS_MEMORY, protocol.STATUS_DEPTH):
                self._discard(worker)
            else:
                self._give_back(worker)
            raise self._error(status, text, size)
        raise AssertionError("unreachable")

    def _died(self, worker: _Worker) -> ShimmyError:
        try:  # its pipe closes just before it is reaped: let it finish dying
            returncode: int | None = worker.process.wait(1)
        except subprocess.TimeoutExpired:
            returncode = None
        self._discard(worker)
        if returncode == -signal.SIGXCPU:  # its CPU-time backstop
            return _too_long(self.limits)
        return _too_large("it stopped its renderer", f"exit status {returncode}")

    def _error(self, status: bytes, text: str, size: int) -> ShimmyError:
        if status == protocol.STATUS_COMPILE:
            return ShimmyError("model_invalid", "The model's chat template does not compile", text)
        if status == protocol.STATUS_REJECTED:
            return ShimmyError(
                "invalid_request", "The model's chat template rejected the messages", text
            )
        if status == protocol.STATUS_OUTPUT:
            limit = self.limits.output_for(size)
            return _too_large(f"its output passed {limit} characters")
        if status == protocol.STATUS_MEMORY:
            limit = self.limits.memory_for(size) >> 20
            return _too_large(f"it needed more than {limit} MiB of memory", text)
        if status == protocol.STATUS_DEPTH:
            return _too_large("its recursion went too deep", text)
        return ShimmyError("invalid_request", "The chat template failed to render", text)

    def _take(self) -> _Worker:
        """An idle worker; when every worker is busy, the first given back within
        ``SPAWN_AFTER_S``; else a new one."""
        spawn_at = time.monotonic() + SPAWN_AFTER_S
        with self._given_back:
            while True:
                if self._closed:
                    raise ShimmyError("server_error", "The chat template renderer is shut down")
                if self._idle:
                    worker = self._idle.pop()
                    self._busy.add(worker)
                    return worker
                wait = spawn_at - time.monotonic()
                if not self._busy or wait <= 0:
                    break
                self._given_back.wait(wait)
        # A template's own CPU use is bounded a little above its wall-clock
        # limit, should the parent die mid-render.
        worker = _Worker(cpu_seconds=self.limits.timeout + 1)
        with self._lock:
            self._busy.add(worker)
            closed = self._closed
        if closed:  # close() ran while it started
            self._discard(worker)
            raise ShimmyError("server_error", "The chat template renderer is shut down")
        return worker

    def _give_back(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            keep = not self._closed and len(self._idle) < self._max_idle
            if keep:
                self._idle.append(worker)
                self._given_back.notify()
        if not keep:
            worker.close()

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
            self._given_back.notify_all()  # a render waiting on it may start its own
        worker.kill()


_shared: TemplateRenderer | None = None
_shared_lock = threading.Lock()


def shared_renderer() -> TemplateRenderer:
    """The process's renderer, started on first use and stopped at exit.

    One pool for every model keeps the number of worker processes bounded
    however many engines are loaded; workers are a process-wide resource.
    """
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = TemplateRenderer()
            atexit.register(_shared.close)
        return _shared
