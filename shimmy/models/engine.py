"""One loaded model and the scheduler thread that owns its llama.cpp context.

Every call into llama.cpp for a loaded model goes through its :class:`Engine`,
whichever thread asks. ``submit`` validates the request and returns a
:class:`~shimmy.models.generation.Generation` at once; the scheduler thread
runs queued generations one at a time, in order. (The continuous-batching
scheduler replaces the inside of this class, not its interface.)
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shimmy.errors import ShimmyError
from shimmy.models.chat import ChatTemplate, Message
from shimmy.models.generation import (
    FINISH_CANCELLED,
    FINISH_ERROR,
    FINISH_LENGTH,
    FINISH_STOP,
    Generation,
    GenerationRequest,
)
from shimmy.models.textstream import TextStream

if TYPE_CHECKING:
    from llama_cpp import Llama

    from shimmy.models.registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How a model is loaded and how much work it accepts."""

    ctx_size: int = 4096
    threads: int = 1
    batch_size: int = 512
    max_queue: int = 16


def process_rss() -> int:
    """Resident memory of this process, in bytes."""
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


class Engine:
    """A loaded model: tokenizer, chat template and a scheduler thread."""

    def __init__(
        self,
        entry: ModelEntry,
        options: EngineOptions,
        *,
        decode_lock: threading.Lock | None = None,
        on_finish: Callable[[Generation], None] | None = None,
    ) -> None:
        self.entry = entry
        self.name = entry.name
        self.options = options
        # One decode at a time across every engine of the process: llama.cpp's
        # worker threads spin, and two concurrent decoders on a small machine
        # slow each other down about 100x (DESIGN.md, "Engine").
        self._decode_lock = decode_lock or threading.Lock()
        self._on_finish = on_finish
        self._queue: queue.Queue[Generation | None] = queue.Queue()
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._active: Generation | None = None
        self._closed = False
        self.last_used = time.monotonic()

        rss_before = process_rss()
        started = time.perf_counter()
        self._llama = _load_llama(entry, options)
        self.load_seconds = time.perf_counter() - started
        self.rss_delta = max(0, process_rss() - rss_before)
        self.n_ctx: int = self._llama.n_ctx()
        info = entry.info
        self.template = ChatTemplate.for_model(
            info.chat_template if info else None,
            info.bos_token if info else None,
            info.eos_token if info else None,
        )
        self._add_bos = self._vocab_adds_bos()
        self._thread = threading.Thread(
            target=self._run, name=f"shimmy-engine-{entry.name}", daemon=True
        )
        self._thread.start()

    # -- public interface ----------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Tokens of ``text``, special tokens parsed (as llama.cpp's server does)."""
        if add_bos is None:
            add_bos = self._add_bos
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS; never send it twice
        return list(self._llama.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True))

    def render_chat(self, messages: Sequence[Message]) -> str:
        return self.template.render(messages, add_generation_prompt=True)

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        return self.tokenize(self.render_chat(messages))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llama.detokenize(list(tokens)).decode("utf-8", errors="replace")

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a generation and return its handle at once.

        Raises ``invalid_request`` for a prompt that does not fit the context
        (never truncated) and ``server_busy`` when the queue is full.
        """
        if self._closed:
            raise ShimmyError("server_error", f"Model '{self.name}' was unloaded")
        prompt_len = len(request.prompt_tokens)
        if prompt_len == 0:
            raise ShimmyError("invalid_request", "The prompt is empty")
        if prompt_len >= self.n_ctx:
            raise ShimmyError(
                "invalid_request",
                f"The prompt is {prompt_len} tokens, but the context of model "
                f"'{self.name}' holds {self.n_ctx} tokens",
                "Shorten the prompt or load the model with a larger --ctx-size",
            )
        if request.max_tokens < 1:
            raise ShimmyError("invalid_request", "max_tokens must be at least 1")
        with self._pending_lock:
            if self._pending >= self.options.max_queue:
                raise ShimmyError(
                    "server_busy",
                    "The server is busy",
                    f"{self._pending} requests are waiting for model '{self.name}'",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
        generation = Generation(request, self.name)
        self.last_used = time.monotonic()
        self._queue.put(generation)
        return generation

    @property
    def queued(self) -> int:
        """Generations waiting, not counting the one running."""
        with self._pending_lock:
            return self._pending - (1 if self._active is not None else 0)

    @property
    def busy(self) -> bool:
        return self._active is not None

    @property
    def idle(self) -> bool:
        with self._pending_lock:
            return self._pending == 0

    def memory_bytes(self) -> int:
        """Weights plus context (KV cache and compute buffers) of this model."""
        import llama_cpp

        model_size = int(llama_cpp.llama_model_size(self._llama.model))
        state_size = int(llama_cpp.llama_state_get_size(self._llama.ctx))
        return model_size + state_size

    def close(self, timeout: float = 5.0) -> None:
        """Cancel everything queued or running, stop the thread, free llama.cpp memory."""
        if self._closed:
            return
        self._closed = True
        if self._active is not None:
            self._active.cancel()
        self._queue.put(None)
        self._thread.join(timeout)
        # Whatever was still queued behind the sentinel is cancelled, never dropped.
        while True:
            try:
                generation = self._queue.get_nowait()
            except queue.Empty:
                break
            if generation is not None:
                self._finished(generation, FINISH_CANCELLED)
        if not self._thread.is_alive():
            self._llama.close()

    # -- scheduler thread ----------------------------------------------------

    def _run(self) -> None:
        while True:
            generation = self._queue.get()
            if generation is None:
                return
            if self._closed or generation.cancelled:
                self._finished(generation, FINISH_CANCELLED)
                continue
            self._active = generation
            try:
                reason = self._generate(generation)
                self._finished(generation, reason)
            except ShimmyError as exc:
                self._finished(generation, FINISH_ERROR, exc)
            except Exception as exc:  # llama.cpp failures must not kill the thread
                log.exception("generation %s failed", generation.id)
                self._finished(
                    generation,
                    FINISH_ERROR,
                    ShimmyError("generation_failed", "Text generation failed", str(exc)),
                )
            finally:
                self._active = None

    def _generate(self, generation: Generation) -> str:
        request = generation.request
        params = request.sampling
        llama = self._llama
        generation._start()
        room = self.n_ctx - len(request.prompt_tokens)
        max_tokens = min(request.max_tokens, room)
        llama.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
        generation.cached_tokens = self._cached_prefix(request.prompt_tokens)
        stream = TextStream(request.stop)
        tokens = llama.generate(
            request.prompt_tokens,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            grammar=_grammar(request.grammar),
        )
        produced: list[int] = []
        try:
            while True:
                if generation.cancelled:
                    return FINISH_CANCELLED
                with self._decode_lock:
                    token = next(tokens)
                if self._is_end_of_generation(token):
                    generation._emit(stream.flush(), None)
                    return FINISH_STOP
                piece = llama.detokenize([token], prev_tokens=produced or None)
                produced.append(token)
                generation._emit(stream.feed(piece), token)
                if stream.stopped:
                    return FINISH_STOP
                if len(produced) >= max_tokens:
                    generation._emit(stream.flush(), None)
                    return FINISH_LENGTH
        finally:
            tokens.close()

    def _finished(
        self, generation: Generation, reason: str, error: ShimmyError | None = None
    ) -> None:
        generation._finish(reason, error)
        with self._pending_lock:
            self._pending -= 1
        self.last_used = time.monotonic()
        if self._on_finish is not None:
            try:
                self._on_finish(generation)
            except Exception:  # statistics must never break generation
                log.exception("on_finish callback failed")

    # -- llama.cpp details ---------------------------------------------------

    def _cached_prefix(self, tokens: Sequence[int]) -> int:
        cached = self._llama._input_ids
        count = 0
        for a, b in zip(cached, tokens, strict=False):
            if a != b:
                break
            count += 1
        return count

    def _is_end_of_generation(self, token: int) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_is_eog(self._llama._model.vocab, token))

    def _vocab_adds_bos(self) -> bool:
        import llama_cpp

        return bool(llama_cpp.llama_vocab_get_add_bos(self._llama._model.vocab))


def _grammar(gbnf: str | None) -> Any:
    if gbnf is None:
        return None
    from llama_cpp import LlamaGrammar

    try:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    except Exception as exc:
        raise ShimmyError("invalid_request", "Invalid grammar", str(exc)) from exc


def _load_llama(entry: ModelEntry, options: EngineOptions) -> Llama:
    if not entry.usable:
        raise ShimmyError(
            "model_invalid", f"Model '{entry.name}' cannot be used", entry.error or None
        )
    for part in entry.parts:
        if not part.is_file():
            raise ShimmyError(
                "model_load_failed", f"Model '{entry.name}' is missing a file", str(part)
            )
    from llama_cpp import Llama

    trained = entry.context_length or options.ctx_size
    n_ctx = max(64, min(options.ctx_size, trained)) if options.ctx_size > 0 else trained
    try:
        return Llama(
            model_path=str(entry.path),
            n_ctx=n_ctx,
            n_batch=min(options.batch_size, n_ctx),
            n_threads=options.threads,
            n_threads_batch=options.threads,
            verbose=False,
        )
    except Exception as exc:  # llama.cpp reports load failures as ValueError/RuntimeError
        raise ShimmyError(
            "model_load_failed", f"Model '{entry.name}' failed to load", str(exc)
        ) from exc
