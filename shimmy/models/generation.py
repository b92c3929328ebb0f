"""What a caller asks an engine for, and the handle it gets back.

A :class:`Generation` is filled by the engine's scheduler thread (its producer
side: ``start``, ``emit``, ``finish``) and read by anyone: a plain iterator for
threads (the CLI, Textual workers), an async iterator for the event loop
(uvicorn), and ``cancel()`` from either side.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from shimmy.errors import ShimmyError
from shimmy.models.tools.spec import ToolRequest

FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"
FINISH_ERROR = "error"

DEFAULT_MAX_TOKENS = 100  # the seed's max_tokens (SEED-API.md)


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. ``temperature`` 0 means greedy."""

    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    repeat_last_n: int = 64  # recent tokens the penalties look at (0: none; -1: the context)
    # Added to the logits of these tokens before anything else (OpenAI's
    # logit_bias: -100 all but bans a token, 100 all but forces it).
    logit_bias: tuple[tuple[int, float], ...] = ()
    # The fields above the request did not set (its dialect's defaults stand in):
    # a preset's defaults (presets.py) may fill them. Not part of equality.
    unset: frozenset[str] = field(default=frozenset(), compare=False)


@dataclass(frozen=True)
class GenerationRequest:
    """One completion to run: the prompt as tokens, plus when to stop."""

    prompt_tokens: Sequence[int]
    max_tokens: int = DEFAULT_MAX_TOKENS
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    grammar: str | None = None  # GBNF, e.g. for JSON mode
    # A lazy grammar: free until this marker's token is sampled (one token of the
    # vocabulary), constrained from it on; "" applies the grammar from the start.
    grammar_trigger: str = ""
    # Marker texts kept in the reply even where the vocabulary has them as special
    # tokens (whose text is otherwise dropped): a tool-call format's markers.
    preserved: tuple[str, ...] = ()
    # The request's tools and the model's format: the caller parses the reply.
    tools: ToolRequest | None = None
    # Log-probabilities: -1 none; k >= 0 each token's own and its k most likely
    # alternatives, from the model's distribution before any sampling setting.
    logprobs: int = -1
    label: str = ""  # who asked, for logs and the dashboard ("api", "chat", "cli")
    # Requests of different scopes never share cached prompt tokens (one scope per
    # API key): ``cached_tokens`` and the time to the first token would tell one
    # client how much of another's prompt it guessed. "" is the shared scope.
    cache_scope: str = ""


@dataclass(frozen=True)
class Piece:
    """One step of output: the text now safe to show and the token that made it."""

    text: str
    token_id: int | None


@dataclass(frozen=True)
class TokenLogprob:
    """One generated token: its bytes, its log-probability under the model's own
    distribution (the softmax of its logits, before temperature, penalties or any
    other sampling setting), and the most likely tokens at that step."""

    token_id: int
    piece: bytes
    logprob: float
    top: tuple[tuple[int, bytes, float], ...] = ()

    @property
    def text(self) -> str:
        return self.piece.decode("utf-8", errors="replace")


_ids = itertools.count(1)


class Generation:
    """A running or finished completion; thread-safe to read from anywhere."""

    def __init__(self, request: GenerationRequest, model: str) -> None:
        self.id = next(_ids)
        self.request = request
        self.model = model
        self.prompt_tokens = len(request.prompt_tokens)
        self.cached_tokens = 0  # prompt tokens reused from the previous request's cache
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        # The stop string that ended it (the request's or the template's), if one
        # did: Anthropic's answer names the stop sequence it met.
        self.stop_string: str | None = None
        self.error: ShimmyError | None = None
        self.created_at = time.monotonic()
        self.started_at: float | None = None
        self.first_token_at: float | None = None
        self.finished_at: float | None = None
        self._pieces: list[Piece] = []
        self.logprobs: list[TokenLogprob] = []  # one per generated token, when asked for
        # The other choices of the same request (n > 1): they wait with this one and
        # copy its prompt's KV cache instead of reading the prompt again. The
        # engine's to set and read.
        self.followers: list[Generation] = []
        # Every choice of the request this generation belongs to, in order (itself
        # alone unless it asked for n > 1); set once, when it is submitted.
        self.choices: tuple[Generation, ...] = (self,)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._cancel = threading.Event()
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # -- consumer side -------------------------------------------------------

    def cancel(self) -> None:
        """Ask the engine to stop; it frees the slot at its next step."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def __iter__(self) -> Iterator[Piece]:
        """Pieces as they arrive; raises the generation's error, if any, at the end."""
        index = 0
        while True:
            with self._changed:
                while index >= len(self._pieces) and self.finish_reason is None:
                    self._changed.wait()
                batch = self._pieces[index:]
                finished = self.finish_reason is not None
            index += len(batch)
            yield from batch
            if finished and index >= len(self._pieces):
                break
        if self.error is not None:
            raise self.error

    async def stream(self) -> AsyncIterator[Piece]:
        """The async view of :meth:`__iter__`, for the event loop."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        with self._lock:
            self._async_waiters.append((loop, wake))
        index = 0
        try:
            while True:
                wake.clear()
                with self._lock:
                    batch = self._pieces[index:]
                    finished = self.finish_reason is not None
                index += len(batch)
                for piece in batch:
                    yield piece
                if finished and not batch:
                    break
                if not batch:
                    await wake.wait()
        finally:
            with self._lock:
                self._async_waiters.remove((loop, wake))
        if self.error is not None:
            raise self.error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until finished; true if it finished within ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self.finish_reason is not None, timeout)

    def text(self, timeout: float | None = None) -> str:
        """The whole output, once finished; raises the generation's error."""
        if not self.wait(timeout):
            raise ShimmyError("generation_failed", "Generation timed out")
        if self.error is not None:
            raise self.error
        return self.output

    @property
    def output(self) -> str:
        """The text produced so far."""
        with self._lock:
            return "".join(p.text for p in self._pieces)

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed after the first token (prompt reading excluded)."""
        if self.first_token_at is None or self.completion_tokens < 2:
            return None
        end = self.finished_at or time.monotonic()
        elapsed = end - self.first_token_at
        return (self.completion_tokens - 1) / elapsed if elapsed > 0 else None

    @property
    def time_to_first_token(self) -> float | None:
        if self.first_token_at is None:
            return None
        return self.first_token_at - self.created_at

    # -- producer side (the engine's scheduler thread) ------------------------
    # Only the engine that runs this generation calls start, emit and finish
    # (tests stand in for it); readers use the consumer side above.

    def _notify(self) -> None:
        self._changed.notify_all()
        for loop, wake in self._async_waiters:
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # that event loop closed; its reader is gone
                pass

    def start(self) -> None:
        """Mark the moment the engine gave this generation a slot. Called only
        by the engine that runs it."""
        self.started_at = time.monotonic()

    def emit(
        self,
        text: str,
        token_id: int | None,
        *,
        wake: bool = True,
        logprob: TokenLogprob | None = None,
    ) -> None:
        """Add a piece (and its token's ``logprob``, when asked for); ``wake`` false
        leaves waking the readers to a later :func:`wake_readers` that wakes
        several generations' readers at once. Called only by the engine that runs
        this generation."""
        now = time.monotonic()
        with self._lock:
            if logprob is not None:
                self.logprobs.append(logprob)
            if token_id is not None:
                self.completion_tokens += 1
                if self.first_token_at is None:
                    self.first_token_at = now
            if text or token_id is not None:
                self._pieces.append(Piece(text, token_id))
            if wake:
                self._notify()

    def finish(self, reason: str, error: ShimmyError | None = None) -> None:
        """End the generation with a finish reason (and the error, if it
        failed) and wake every reader; later calls change nothing. Called only
        by the engine that runs this generation."""
        with self._lock:
            if self.finish_reason is not None:
                return
            self.error = error
            self.finished_at = time.monotonic()
            self.finish_reason = reason
            self._notify()


def wake_readers(generations: Iterable[Generation]) -> None:
    """Wake the readers of ``generations`` with one call into each event loop.

    The scheduler emits a token for every running sequence in a step; waking an
    event loop once per token would write its self-pipe and run its loop once per
    stream, on cores that llama.cpp's threads need for the next step."""
    events: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = {}
    for generation in generations:
        with generation._lock:
            generation._changed.notify_all()
            for loop, wake in generation._async_waiters:
                events.setdefault(loop, []).append(wake)
    for loop, wakes in events.items():
        try:
            loop.call_soon_threadsafe(_set_all, wakes)
        except RuntimeError:  # that event loop closed; its readers are gone
            pass


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()
