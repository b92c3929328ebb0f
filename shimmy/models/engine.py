"""One loaded model and the scheduler thread that owns its llama.cpp context.

Every call into llama.cpp for a loaded model goes through its :class:`Engine`,
whichever thread asks. ``submit`` validates a request and returns a
:class:`~shimmy.models.generation.Generation` at once.

The scheduler does continuous batching, as llama.cpp's own server does: the
context holds ``parallel`` sequence slots; each step builds one batch with the
next token of every running sequence plus chunks of waiting prompts, calls
``llama_decode`` once, and samples each sequence from its own logits with its
own sampler chain. A new request takes a free slot whose cached tokens its
prompt continues (a later turn of the same chat, the same prompt again) and
decodes only the rest; see :func:`~shimmy.models.slots.choose_slot`. Only tokens left by a request
of the same cache scope (``GenerationRequest.cache_scope``, one per API key)
are ever reused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
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
    TokenLogprob,
    wake_readers,
)
from shimmy.models.memory import MemoryEstimate, estimate_entry
from shimmy.models.offload import Offload
from shimmy.models.promptcache import PromptCache, common_prefix, continues_a_conversation
from shimmy.models.slots import Slot, assign_slots, gap_move, runs, shared_tokens
from shimmy.models.speculation import (
    MAX_DRAFT,
    MEMORY_NGRAM,
    OWN,
    REPLAY,
    Draft,
    DraftMemory,
    DraftOdds,
    EngineOdds,
    NgramIndex,
    OddsKey,
    at_least,
    match_class,
    plan_drafts,
)
from shimmy.models.stepcost import (
    CALIBRATION_ROUNDS,
    CALIBRATION_SIZES,
    LOGITS_TIMED,
    DecodeCost,
)
from shimmy.models.textstream import TextStream

if TYPE_CHECKING:
    from shimmy.config import Settings
    from shimmy.models.llamacpp import Context, Model
    from shimmy.models.placement import Placement
    from shimmy.models.registry import ModelEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOptions:
    """How a model is loaded and how much work it accepts: read from the
    settings (:meth:`from_settings`), which state every default once."""

    ctx_size: int  # tokens per slot: the most one request (prompt + output) can use
    parallel: int  # sequence slots decoded together
    threads: int
    batch_size: int  # most tokens in one decode step
    max_queue: int  # requests waiting for a slot before server_busy
    request_timeout: float  # wall-clock seconds from submit to the last token
    prompt_cache_bytes: int  # host memory for prompts whose slot was taken
    spec: bool = True  # n-gram speculative decoding
    draft_min: int = 0  # tokens a slot with a draft drafts at least (see Settings)
    offload: Offload = Offload()  # GPU layers, flash attention, KV cache types, RPC

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineOptions:
        return cls(
            ctx_size=settings.ctx_size,
            parallel=settings.parallel,
            threads=settings.threads,
            batch_size=settings.batch_size,
            max_queue=settings.max_queue,
            request_timeout=settings.request_timeout,
            prompt_cache_bytes=max(0, settings.cache_ram) * 1024 * 1024,
            spec=settings.spec,
            draft_min=min(max(0, settings.draft_min), MAX_DRAFT),
            offload=Offload.from_settings(settings),
        )


def process_rss() -> int:
    """Resident memory of this process, in bytes."""
    import psutil

    return int(psutil.Process(os.getpid()).memory_info().rss)


# An idle engine waits this long for more arrivals before decoding (see _receive).
ARRIVAL_GAP = 0.003
ARRIVAL_WINDOW = 0.025
# ... and up to this long while other requests for it are still being rendered.
ARRIVAL_PREPARING = 0.2
# Steps a gap between running sequences may last before a running request is
# moved into it (see _close_a_gap): a new request would fill it for nothing. A
# move copies the request's KV state by way of host memory (SmolLM2 on two
# cores: 2 ms for 70 tokens, about a third of what the gap costs each step), so
# only requests whose state is at most MOVE_MAX_BYTES move.
GAP_PATIENCE = 3
MOVE_MAX_BYTES = 32 << 20


class Engine:
    """A loaded model: tokenizer, chat template and a batching scheduler thread."""

    def __init__(
        self,
        entry: ModelEntry,
        options: EngineOptions,
        *,
        decode_lock: threading.Lock | None = None,
        on_finish: Callable[[Generation], None] | None = None,
        placement: Placement | None = None,
    ) -> None:
        """``placement``: where the model's memory goes, as the manager decided
        before making room for it (placement.py); decided here when None."""
        self.entry = entry
        self.name = entry.name
        self.options = options
        # One decode at a time across every engine of the process: llama.cpp's
        # worker threads spin, and two concurrent decoders on a small machine
        # slow each other down about 100x (DESIGN.md, "Engine").
        self._decode_lock = decode_lock or threading.Lock()
        self._on_finish = on_finish
        self._inbox: queue.SimpleQueue[Generation | None] = queue.SimpleQueue()
        self._waiting: deque[Generation] = deque()
        self._pending = 0  # submitted and not finished (waiting or running)
        self._arriving = 0  # being rendered and tokenized for this engine (see arriving)
        self._pending_lock = threading.Lock()
        self._closed = False
        self._draining = False
        self.last_used = time.monotonic()

        rss_before = process_rss()
        started = time.perf_counter()
        self._model, self._context, self.estimate, self.placement = _load(entry, options, placement)
        self.load_seconds = time.perf_counter() - started
        self.rss_delta = max(0, process_rss() - rss_before)
        self.n_parallel = options.parallel
        self.n_ctx = self._context.n_ctx // options.parallel  # per request
        self._slots = [Slot(seq=i) for i in range(options.parallel)]
        self._kv_bytes_per_token = self.estimate.kv_cache // max(1, self._context.n_ctx)
        self._prompt_cache = PromptCache(
            options.prompt_cache_bytes, trial_entries=max(4, options.parallel)
        )
        self._marker_tokens: dict[str, int | None] = {}
        self.prompt_tokens_read = 0  # prompt tokens decoded since loading (not reused)
        self.drafted = 0  # speculative tokens decoded since loading
        self.accepted = 0  # of which the model produced the same
        self.replayed = 0  # of those, drafted from an earlier reply (draft_memory)
        self.moves = 0  # running requests moved into a gap between others (_close_a_gap)
        self._gap_steps = 0  # steps the running sequences have lain in more than one run
        self.decode_cost = DecodeCost()  # what drafting costs on this machine
        self.draft_memory = DraftMemory()  # earlier replies, to draft repeats of them
        self.draft_odds = EngineOdds()  # how often drafts come true, over all requests
        self.max_draft = MAX_DRAFT  # tokens drafted at most in one step, all slots together
        info = entry.info
        self.template = ChatTemplate.for_model(
            info.chat_template if info else None,
            info.bos_token if info else None,
            info.eos_token if info else None,
        )
        self._thread = threading.Thread(
            target=self._run, name=f"shimmy-engine-{entry.name}", daemon=True
        )
        self._thread.start()

    # -- public interface ----------------------------------------------------

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Tokens of ``text``, special tokens parsed (as llama.cpp's server does)."""
        if add_bos is None:
            add_bos = self._model.add_bos
        if add_bos and self.template.bos_token and text.startswith(self.template.bos_token):
            add_bos = False  # the template already wrote BOS; never send it twice
        return self._model.tokenize(text, add_bos=add_bos)

    def render_chat(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> str:
        """The model's chat template applied to ``messages`` (and ``tools``, as the
        template's ``tools`` variable); stops when ``cancel`` is set."""
        return self.template.render(
            messages, add_generation_prompt=True, tools=tools, cancel=cancel
        )

    def chat_tokens(
        self,
        messages: Sequence[Message],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[int]:
        return self.tokenize(self.render_chat(messages, tools=tools, cancel=cancel))

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._model.detokenize(tokens)

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around preparing a request for this engine (rendering its template,
        tokenizing): an idle engine that has just received a request waits for
        the ones being prepared beside it (``ARRIVAL_PREPARING`` at most), so that
        a burst of clients starts in one decode step (see :meth:`_receive`)."""
        with self._pending_lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._pending_lock:
                self._arriving -= 1

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a generation and return its handle at once.

        Raises ``invalid_request`` for a prompt that does not fit a slot's
        context (never truncated) and ``server_busy`` when the queue is full.
        """
        return self.submit_choices(request, 1)[0]

    def submit_choices(self, request: GenerationRequest, n: int) -> list[Generation]:
        """Queue ``n`` generations of one request (OpenAI's ``n``): they start
        together, the prompt is read once and its KV cache copied to the others'
        slots; a seeded request's choices get consecutive seeds, so they differ.

        Raises as :meth:`submit` does, and ``invalid_request`` when ``n`` is more
        than the model's slots."""
        if not 1 <= n <= self.n_parallel:
            raise ShimmyError(
                "invalid_request",
                f"n must be between 1 and {self.n_parallel}, the slots of model '{self.name}'",
                "start the server with a larger --parallel for more choices",
            )
        if self._closed:
            raise ShimmyError("server_error", f"Model '{self.name}' was unloaded")
        if self._draining:
            raise ShimmyError("server_busy", "The server is shutting down")
        prompt_len = len(request.prompt_tokens)
        if prompt_len == 0:
            raise ShimmyError("invalid_request", "The prompt is empty")
        if prompt_len >= self.n_ctx:
            raise ShimmyError(
                "invalid_request",
                f"The prompt is {prompt_len} tokens, but the context of model "
                f"'{self.name}' holds {self.n_ctx} tokens per request",
                "Shorten the prompt or load the model with a larger --ctx-size",
            )
        if request.max_tokens < 1:
            raise ShimmyError("invalid_request", "max_tokens must be at least 1")
        n_vocab = self._model.n_vocab
        for what, tokens in (
            ("prompt", request.prompt_tokens),
            ("logit_bias", [t for t, _ in request.sampling.logit_bias]),
        ):
            bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
            if bad is not None:
                raise ShimmyError(
                    "invalid_request",
                    f"The {what} names token {bad}, which model '{self.name}' does not have",
                    f"its tokens are 0 to {n_vocab - 1}",
                )
        with self._pending_lock:
            # Requests beyond the slots wait in line; the line is bounded.
            waiting = self._pending - self.n_parallel
            if waiting + n - 1 >= self.options.max_queue:
                raise ShimmyError(
                    "server_busy",
                    "The server is busy",
                    f"{waiting} requests are waiting for model '{self.name}'",
                    headers={"Retry-After": "1"},
                )
            self._pending += n
        choices = [Generation(_choice(request, index), self.name) for index in range(n)]
        for choice in choices:
            choice.choices = tuple(choices)
        choices[0].followers = choices[1:]
        self.last_used = time.monotonic()
        self._inbox.put(choices[0])
        return choices

    @property
    def prompt_cache(self) -> PromptCache:
        """The saved conversations (read-only outside the scheduler thread)."""
        return self._prompt_cache

    @property
    def slots_busy(self) -> int:
        return sum(1 for s in self._slots if not s.free)

    @property
    def queued(self) -> int:
        """Generations waiting for a slot."""
        with self._pending_lock:
            return max(0, self._pending - self.slots_busy)

    @property
    def busy(self) -> bool:
        return self.slots_busy > 0

    @property
    def idle(self) -> bool:
        with self._pending_lock:
            return self._pending == 0

    def cancel_all(self) -> None:
        """Ask every running and waiting generation to stop, and refuse new ones
        (graceful shutdown). Thread-safe."""
        self._draining = True
        for slot in self._slots:
            generation = slot.generation
            if generation is not None:
                generation.cancel()
        for generation in list(self._waiting):
            for choice in (generation, *generation.followers):
                choice.cancel()

    def memory_bytes(self) -> int:
        """Host memory: the load's estimate (weights, the KV cache of every slot,
        compute buffers: memory.py) less what its GPU layers hold (placement.py),
        and the saved prompts."""
        return self.placement.host_bytes + self._prompt_cache.size_bytes

    @property
    def gpu_bytes(self) -> int:
        """GPU memory: the weights and KV cache of the layers offloaded (placement.py)."""
        return self.placement.gpu_bytes

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything queued or running, stop the thread, free llama.cpp memory."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("engine %s did not stop in %.0fs; leaking its context", self.name, timeout)
            return
        self._context.close()
        self._model.close()

    # -- scheduler thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            if self.options.spec:
                self._time_steps()
            while self._receive():
                self._admit()
                if any(not s.free for s in self._slots):
                    self._close_a_gap()
                    self._step()
        except Exception:  # a bug here must not hang every caller
            log.exception("engine %s scheduler crashed", self.name)
            self._fail_all(ShimmyError("generation_failed", "The engine stopped unexpectedly"))
            self._closed = True
            return
        self._fail_all(None)
        for slot in self._slots:
            if slot.sampler is not None:
                slot.sampler.close()

    def _time_steps(self) -> None:
        """Time decode steps of each of CALIBRATION_SIZES tokens, every token
        with its logits as a drafted one has, so that the first drafts are sized
        by this machine's costs (a sequence's cache is empty before its first
        request). A first one-token step warms up and is not kept; each size is
        timed CALIBRATION_ROUNDS times, in turns, and its fastest kept: a busy
        machine (another program, a test suite) slows some steps, and one slowed
        large step would stop drafts of that size from being tried at all.

        Steps larger than LOGITS_TIMED are timed with the last token's logits
        alone, plus what the others' would cost (measured at LOGITS_TIMED rows
        with and without them): llama.cpp's logits buffers grow to the most rows
        a step asked for and keep that size, and 64 rows of them are ~25 MB of
        resident memory that a server whose requests never draft long should
        not carry."""
        context, batch = self._context, self._context.batch
        token = self._model.single_token(" the") or 0
        sizes = [n for n in CALIBRATION_SIZES if n <= min(context.n_batch, batch.room)]
        # (tokens, whether every token asks for its logits)
        steps = [(n, n <= LOGITS_TIMED) for n in sizes]
        if any(n > LOGITS_TIMED for n in sizes) and LOGITS_TIMED in sizes:
            steps.append((LOGITS_TIMED, False))
        fastest: dict[tuple[int, bool], float] = {}
        warm_up = [(sizes[0], True)]
        for keep, round_steps in ((False, warm_up), *[(True, steps)] * CALIBRATION_ROUNDS):
            for n, every in round_steps:
                batch.clear()
                for position in range(n):
                    batch.add(token, position, 0, every or position == n - 1)
                started = time.monotonic()
                with self._decode_lock:
                    context.decode()
                if keep:
                    took = time.monotonic() - started
                    fastest[n, every] = min(took, fastest.get((n, every), took))
                context.forget(0, 0)
        batch.clear()
        per_logits_row = 0.0
        if (LOGITS_TIMED, False) in fastest:
            with_all = fastest[LOGITS_TIMED, True] - fastest[LOGITS_TIMED, False]
            per_logits_row = max(0.0, with_all / (LOGITS_TIMED - 1))
        for (n, every), seconds in fastest.items():
            if every:
                self.decode_cost.observe(n, seconds, calibrating=True)
            elif n > LOGITS_TIMED:
                seconds += (n - 1) * per_logits_row
                self.decode_cost.observe(n, seconds, calibrating=True)

    def _receive(self) -> bool:
        """Move submissions into the waiting line; block only when there is no work.
        False once the engine is closed.

        When the engine was idle, it lingers while requests keep arriving (each
        within ``ARRIVAL_GAP`` of the last, ``ARRIVAL_WINDOW`` at most, or
        ``ARRIVAL_PREPARING`` while others are still being rendered: see
        :meth:`arriving`), so that clients starting together begin in one step:
        decoding the first alone would keep llama.cpp's threads spinning on every
        core while the HTTP threads are still preparing the others, and those would
        start a step or two later, their preparation slowed by the decode."""
        idle = all(s.free for s in self._slots) and not self._waiting
        first_arrival: float | None = None
        while True:
            try:
                if idle:
                    item = self._next_while_idle()
                elif first_arrival is not None and self._lingering(first_arrival):
                    item = self._inbox.get(timeout=ARRIVAL_GAP)
                else:
                    item = self._inbox.get_nowait()
            except queue.Empty:
                if first_arrival is not None and self._awaiting_preparations(first_arrival):
                    continue
                return True
            if item is None:
                return False
            self._waiting.append(item)
            if idle:
                first_arrival = time.monotonic()
            idle = False

    def _lingering(self, first_arrival: float) -> bool:
        return time.monotonic() - first_arrival < ARRIVAL_WINDOW or self._awaiting_preparations(
            first_arrival
        )

    def _awaiting_preparations(self, first_arrival: float) -> bool:
        return self._arriving > 0 and time.monotonic() - first_arrival < ARRIVAL_PREPARING

    def _next_while_idle(self) -> Generation | None:
        """The next submission; until it comes, save the conversations that idle
        slots hold to the prompt cache, one at a time, looking at the inbox between."""
        while True:
            try:
                return self._inbox.get_nowait()
            except queue.Empty:
                if not self._save_an_idle_slot():
                    return self._inbox.get()

    def _save_an_idle_slot(self) -> bool:
        """Save one idle slot's conversation that the prompt cache lacks; false when
        there is none left.

        A conversation is saved when a request takes its slot, before that request's
        first step: a long one delays every request starting in that step (16-75 ms
        for 1,000 tokens of SmolLM2). Saved here, while nothing runs, the eviction
        finds it in the cache and costs nothing. (llama-server saves idle slots
        too, when a task starts.)"""
        for slot in self._slots:
            if not slot.unsaved:
                continue
            slot.unsaved = False
            if self._save(slot):
                return True
        return False

    def _admit(self) -> None:
        """Give waiting generations free slots, first come first served (which slot
        each takes: :func:`~shimmy.models.slots.assign_slots`)."""
        self._drop_cancelled()
        free = [s for s in self._slots if s.free]
        starting: list[tuple[Generation, list[int]]] = []
        taken = 0
        # First come, first served: a request with several choices waits until it
        # has a slot for each, and those behind it wait with it.
        while self._waiting and taken + 1 + len(self._waiting[0].followers) <= len(free):
            choices = self._live(self._waiting.popleft())
            if choices:
                starting.append((choices[0], list(choices[0].request.prompt_tokens)))
                taken += len(choices)
        slots = assign_slots(
            free,
            [prompt for _, prompt in starting],
            [generation.request.cache_scope for generation, _ in starting],
            busy={s.seq for s in self._slots if not s.free},
        )
        # The other choices take the slots left, least recently used first.
        spare = sorted((s for s in free if s not in slots), key=lambda s: s.last_used)
        for slot, (generation, prompt) in zip(slots, starting, strict=True):
            try:
                shared = self._swap_saved_prompts(slot, prompt, generation.request.cache_scope)
                self._start(slot, generation, prompt, shared)
            except ShimmyError as exc:
                self._release(slot)
                self._finished(generation, FINISH_ERROR, exc)
                for follower in generation.followers:
                    self._finished(follower, FINISH_ERROR, exc)
                continue
            for follower in generation.followers:
                self._start_follower(spare.pop(0), follower, slot, prompt)

    def _live(self, generation: Generation) -> list[Generation]:
        """``generation`` and its other choices that still want to run (the rest
        are finished here); the first of them leads, the others follow it."""
        live = []
        for choice in (generation, *generation.followers):
            if choice.cancelled or self._draining:
                self._finished(choice, FINISH_CANCELLED)
            elif time.monotonic() - choice.created_at > self.options.request_timeout:
                self._finished(choice, FINISH_ERROR, self._timeout_error())
            else:
                live.append(choice)
        generation.followers = []
        if live:
            live[0].followers = live[1:]
        return live

    def _drop_cancelled(self) -> None:
        """Finish the waiting generations whose clients left, at once rather than
        when a slot frees: they never take one, and the line they held is free."""
        if any(c.cancelled for g in self._waiting for c in (g, *g.followers)):
            waiting = self._waiting
            self._waiting = deque()
            for generation in waiting:
                choices = [c for c in (generation, *generation.followers) if not c.cancelled]
                for choice in (generation, *generation.followers):
                    if choice.cancelled:
                        self._finished(choice, FINISH_CANCELLED)
                generation.followers = []
                if choices:
                    choices[0].followers = choices[1:]
                    self._waiting.append(choices[0])

    def _swap_saved_prompts(self, slot: Slot, prompt: list[int], scope: str) -> int:
        """Before ``prompt``, of cache ``scope``, takes ``slot``: save the
        conversation it would evict, and bring back a saved one of ``scope`` that
        ``prompt`` continues further than what the slot holds (see
        :mod:`shimmy.models.promptcache`). Returns how many of the slot's cached
        tokens ``prompt`` then may reuse (none of another scope's)."""
        cache = self._prompt_cache
        keep = shared_tokens(slot, prompt, scope)
        self._save(slot, keep)
        started = time.monotonic()
        saved = cache.take(prompt, keep, scope=scope)
        if saved is None:
            return keep
        if self._context.restore_sequence(slot.seq, saved.data):
            slot.cached = saved.tokens
            slot.scope = saved.scope
            log.debug(
                "engine %s: restored %d saved tokens into slot %d in %.1f ms",
                self.name,
                len(saved.tokens),
                slot.seq,
                1000 * (time.monotonic() - started),
            )
            return common_prefix(saved.tokens, prompt)
        # The sequence's state is unknown now: start it from nothing.
        log.warning("engine %s could not restore a saved prompt", self.name)
        self._context.forget(slot.seq, 0)
        slot.cached = []
        return 0

    def _save(self, slot: Slot, keep: int = 0) -> bool:
        """Copy the conversation ``slot`` holds into the prompt cache, if the cache
        wants it (beyond the first ``keep`` tokens, which the request taking the
        slot reuses in place); false if it does not."""
        if not self._prompt_cache.wants(slot.cached, keep, scope=slot.scope):
            return False
        started = time.monotonic()
        try:
            self._prompt_cache.add(
                slot.cached,
                self._context.save_sequence(slot.seq),
                scope=slot.scope,
                proven=slot.proven,
            )
        except ShimmyError:  # only a lost optimisation: the request goes on
            log.warning("engine %s could not save a prompt", self.name)
        else:
            log.debug(
                "engine %s: saved the %d tokens of slot %d in %.1f ms",
                self.name,
                len(slot.cached),
                slot.seq,
                1000 * (time.monotonic() - started),
            )
        return True

    def _start(self, slot: Slot, generation: Generation, prompt: list[int], reuse: int) -> None:
        """Run ``generation`` in ``slot``, whose first ``reuse`` cached tokens are
        the prompt's own."""
        request = generation.request
        if reuse == len(prompt):
            reuse -= 1  # decode at least one token to get fresh logits
        self._context.forget(slot.seq, reuse)
        del slot.cached[reuse:]
        # The ``reuse`` tokens kept are this scope's too (none when another scope
        # left them): from here on, everything the slot holds is this request's.
        slot.scope = request.cache_scope
        slot.proven = continues_a_conversation(reuse, len(prompt))
        self._begin(slot, generation, prompt)
        slot.pending = prompt[reuse:]
        generation.cached_tokens = reuse
        log.debug(
            "engine %s: generation %d takes slot %d after %.1f ms in line; %d of %d prompt"
            " tokens cached",
            self.name,
            generation.id,
            slot.seq,
            1000 * (time.monotonic() - generation.created_at),
            reuse,
            len(prompt),
        )

    def _start_follower(
        self, slot: Slot, generation: Generation, leader: Slot, prompt: list[int]
    ) -> None:
        """Run another choice of ``leader``'s request in ``slot``: it reads no prompt
        but copies the leader's KV cache once the leader has read it."""
        self._save(slot)
        self._context.forget(slot.seq, 0)
        slot.cached = []
        slot.scope = generation.request.cache_scope
        slot.proven = False  # the leader's slot keeps the conversation
        self._begin(slot, generation, prompt)
        assert leader.generation is not None
        slot.copy_from = (leader, leader.generation)
        generation.cached_tokens = leader.generation.cached_tokens

    def _begin(self, slot: Slot, generation: Generation, prompt: list[int]) -> None:
        """Give ``slot`` ``generation``'s sampler, stream and limits."""
        from shimmy.models.llamacpp import Sampler, SamplerSettings

        request = generation.request
        p = request.sampling
        seed = p.seed if p.seed is not None else random.getrandbits(32)
        settings = SamplerSettings(
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty,
            seed=seed,
            grammar=request.grammar,
            grammar_trigger_tokens=self._trigger_tokens(request),
            penalty_last_n=p.repeat_last_n if p.repeat_last_n >= 0 else self.n_ctx,
            logit_bias=p.logit_bias,
        )
        slot.sampler = Sampler(self._model, settings, prompt)
        slot.preserved = self.marker_tokens(request.preserved)
        slot.generation = generation
        slot.pending = []
        slot.next_token = None
        slot.copy_from = None
        slot.stream = TextStream(request.stop)
        slot.produced = 0
        slot.max_tokens = min(request.max_tokens, self.n_ctx - len(prompt))
        slot.drafts = NgramIndex(prompt) if self.options.spec else None
        slot.odds = {}
        slot.judged_by = None
        slot.draft = []
        slot.guess = None
        generation.start()

    def marker_tokens(self, markers: Sequence[str]) -> frozenset[int]:
        """The tokens that are exactly one of ``markers`` in this model's vocabulary."""
        found = set()
        for marker in markers:
            if marker not in self._marker_tokens:
                self._marker_tokens[marker] = self._model.single_token(marker)
            token = self._marker_tokens[marker]
            if token is not None:
                found.add(token)
        return frozenset(found)

    def _trigger_tokens(self, request: GenerationRequest) -> tuple[int, ...]:
        if request.grammar is None or not request.grammar_trigger:
            return ()
        return tuple(self.marker_tokens([request.grammar_trigger]))

    def _step(self) -> None:
        """One decode of every running sequence's next token plus prompt chunks."""
        batch = self._context.batch
        batch.clear()
        now = time.monotonic()
        for slot in self._slots:
            slot.logits_at = -1
            if slot.generation is None:
                continue
            if slot.generation.cancelled:
                self._end(slot, FINISH_CANCELLED)
            elif now - slot.generation.created_at > self.options.request_timeout:
                self._end(slot, FINISH_ERROR, self._timeout_error())
        running = [s for s in self._slots if s.generation is not None]
        # Running sequences first, so a long prompt never stalls their streams.
        deciding = [s for s in running if s.next_token is not None]
        # Each sequence's tokens in this step, in order of sequence id (llama.cpp
        # splits a step into micro-batches by them: stepcost.micro_batches), and
        # how many it holds cached before it (what each of its tokens attends to).
        rows = [0] * len(self._slots)
        depths = [0] * len(self._slots)
        for slot in deciding:
            assert slot.next_token is not None
            rows[slot.seq] = 1
            depths[slot.seq] = len(slot.cached)
            slot.logits_at = batch.add(slot.next_token, len(slot.cached), slot.seq, True)
            slot.cached.append(slot.next_token)
            slot.next_token = None
        # Then their drafts, verified in the same decode (shimmy/models/speculation.py).
        if self.options.spec:
            offered = [self._offer(slot) for slot in deciding]
            offers = [tokens for _, tokens in offered]
            # At most max_draft drafted tokens in all: each asks for its logits,
            # and llama.cpp's logits buffer grows to the most rows a step asked
            # for and stays that size (vocabulary x 4 bytes a row: 196 KB on
            # SmolLM2, 25 MB for 128 rows). A busy step gives its room to the
            # drafts most likely to come true (plan_drafts).
            room = min(self.max_draft, batch.room - (self._context.n_batch // 2))
            by_seq = [(0.0, 0)] * len(self._slots)
            for slot, (chance, offer) in zip(deciding, offered, strict=True):
                by_seq[slot.seq] = (chance, len(offer))
            plan = plan_drafts(self.decode_cost, rows, by_seq, room, depths)
            lengths = [plan[slot.seq] for slot in deciding]
            if self.options.draft_min:
                lengths = at_least(
                    lengths, [len(offer) for offer in offers], self.options.draft_min, room
                )
            for slot, offer, length in zip(deciding, offers, lengths, strict=True):
                slot.draft = offer[:length]
                # Without a draft the slot keeps the first token it would have
                # drafted (its guess), to learn whether drafting would pay.
                slot.guess = offer[0] if offer and not length else None
                slot.draft_at = batch.n
                rows[slot.seq] += len(slot.draft)
                for token in slot.draft:
                    batch.add(token, len(slot.cached), slot.seq, True)
                    slot.cached.append(token)
        budget = max(0, self._context.n_batch - batch.n)
        prompt_read = 0
        for slot in running:
            if not slot.pending or budget == 0:
                continue
            chunk = slot.pending[:budget]
            del slot.pending[: len(chunk)]
            budget -= len(chunk)
            prompt_read += len(chunk)
            last = len(chunk) - 1
            for i, token in enumerate(chunk):
                index = batch.add(token, len(slot.cached), slot.seq, i == last and not slot.pending)
                slot.cached.append(token)
                if i == last and not slot.pending:
                    slot.logits_at = index
        if batch.n == 0:
            return
        started = time.monotonic()
        try:
            with self._decode_lock:
                self._context.decode()
        except ShimmyError as exc:
            for slot in running:
                # The KV of this step is unknown now: forget the slot's cache.
                self._context.forget(slot.seq, 0)
                slot.cached.clear()
                self._end(slot, FINISH_ERROR, exc)
            return
        self.prompt_tokens_read += prompt_read
        self._copy_read_prompts(running)
        # Each with its generation, which _sample may take from the slot.
        sampled = [(s, s.generation) for s in running if s.logits_at >= 0 and s.generation]
        for slot, _ in sampled:
            self._sample(slot)
        if not prompt_read and self.options.spec:
            # Steps that only generate tell what a drafted token costs.
            self.decode_cost.observe_step(rows, time.monotonic() - started, depths)
        wake_readers(generation for _, generation in sampled)
        if prompt_read:  # steps that only generate are too many to log
            log.debug(
                "engine %s: step of %d tokens (%d of prompts) for %d sequences in %.1f ms",
                self.name,
                batch.n,
                prompt_read,
                len(running),
                1000 * (time.monotonic() - started),
            )

    def _close_a_gap(self) -> None:
        """Move a running request into a free slot between others once the gap has
        lasted GAP_PATIENCE steps (see :func:`~shimmy.models.slots.gap_move`).

        llama.cpp computes a step in one micro-batch per run of consecutive
        sequences, each a pass over the weights (stepcost.micro_batches): four
        requests in slots 0, 2, 4 and 6 cost a step as much as eight. New requests
        take the free slot that fills a gap (choose_slot), but a request that ends
        between others leaves one until the next arrives. Only requests that are
        generating move (not one still reading its prompt, nor a choice waiting
        for its leader's), and none whose KV state is over MOVE_MAX_BYTES."""
        busy = {s.seq for s in self._slots if not s.free}
        if runs(busy) <= 1:
            self._gap_steps = 0
            return
        self._gap_steps += 1
        if self._gap_steps < GAP_PATIENCE:
            return
        most = MOVE_MAX_BYTES // max(1, self._kv_bytes_per_token)
        movable = [
            s
            for s in self._slots
            if not s.free and not s.pending and s.copy_from is None and len(s.cached) <= most
        ]
        move = gap_move(self._slots, movable)
        if move is not None:
            self._gap_steps = 0
            self._move(*move)

    def _move(self, running: Slot, free: Slot) -> None:
        """Move the request ``running`` holds into ``free``'s sequence: its KV state
        (Context.copy_sequence), and the two slots trade sequence ids. The
        conversation ``free`` held is saved to the prompt cache first if the cache
        wants it."""
        self._save(free)
        started = time.monotonic()
        moved = self._context.copy_sequence(running.seq, free.seq)
        free.cached = []
        free.scope = ""
        free.proven = False
        free.unsaved = False
        if not moved:  # only a lost optimisation: the request stays where it is
            log.warning("engine %s could not move a sequence", self.name)
            self._context.forget(free.seq, 0)
            return
        self._context.forget(running.seq, 0)
        old, new = running.seq, free.seq
        running.seq, free.seq = new, old
        self._slots[new], self._slots[old] = running, free
        self.moves += 1
        log.debug(
            "engine %s: moved the %d tokens of sequence %d to %d in %.1f ms",
            self.name,
            len(running.cached),
            old,
            new,
            1000 * (time.monotonic() - started),
        )

    def _copy_read_prompts(self, running: Sequence[Slot]) -> None:
        """Give each waiting choice its leader's prompt once the leader has read it
        (this step decoded its last prompt token): a copy of the KV cache, and the
        same logits to sample its first token from with its own sampler. A choice
        whose leader stopped before that reads the prompt itself."""
        for slot in running:
            if slot.copy_from is None or slot.generation is None:
                continue
            leader, leader_generation = slot.copy_from
            if leader.generation is not leader_generation:
                slot.copy_from = None
                slot.pending = list(slot.generation.request.prompt_tokens)
            elif leader.logits_at >= 0 and leader.produced == 0 and not leader.pending:
                slot.copy_from = None
                if not self._context.copy_sequence(leader.seq, slot.seq):
                    log.warning("engine %s could not copy a prompt's cache", self.name)
                    self._context.forget(slot.seq, 0)
                    slot.cached = []
                    slot.pending = list(slot.generation.request.prompt_tokens)
                    continue
                slot.cached = list(leader.cached)
                slot.logits_at = leader.logits_at

    def _offer(self, slot: Slot) -> tuple[float, list[int]]:
        """The chance that a drafted token comes true, and the tokens ``slot``
        could draft after its next one, within its max_tokens (plan_drafts
        decides how many of them are worth decoding): what followed the latest
        n-gram where the request's text had it before, or what the model wrote
        next where an earlier reply had the latest tokens; of the two, the one
        more likely to come true by its source and length of match
        (``slot.judged_by`` says which)."""
        slot.judged_by = None
        most = min(self.max_draft, slot.max_tokens - slot.produced - 1)
        if slot.drafts is None or slot.generation is None or most <= 0:
            return 0.0, []
        scope = slot.generation.request.cache_scope
        own = slot.drafts.draft(most)
        replay = self.draft_memory.draft(scope, slot.drafts.tokens, most)
        best: tuple[float, OddsKey, Draft] | None = None
        for source, draft in ((REPLAY, replay), (OWN, own)):  # on a tie, the replay
            if draft.tokens:
                key = (source, match_class(draft.matched))
                chance = self._odds(slot, key).chance
                if best is None or chance > best[0]:
                    best = (chance, key, draft)
        if best is None:
            return 0.0, []
        chance, slot.judged_by, draft = best
        return chance, draft.tokens

    def _odds(self, slot: Slot, key: OddsKey) -> DraftOdds:
        """The request's odds for drafts of ``key``, from the engine's at first."""
        odds = slot.odds.get(key)
        if odds is None:
            odds = slot.odds[key] = self.draft_odds.for_request(key)
        return odds

    def _sample(self, slot: Slot) -> None:
        """Sample ``slot``'s next token, and with a draft each drafted position in
        turn, keeping the drafted tokens the model produces itself and removing
        the rest from the KV cache: the text is what it is without drafting."""
        assert slot.sampler is not None and slot.generation is not None
        draft, slot.draft = slot.draft, []
        guess, slot.guess = slot.guess, None
        kept = 0
        for position in range(len(draft) + 1):
            # The logits after the next token, then after each drafted one (the
            # drafts of every slot follow all the slots' next tokens in the batch).
            logits_at = slot.logits_at if position == 0 else slot.draft_at + position - 1
            token = slot.sampler.sample(self._context, logits_at)
            if guess is not None:  # no draft: was the guess right?
                self._judge(slot, 1, int(token == guess))
            if not self._produce(slot, token, logits_at):
                break  # the generation ended: the token is not in the cache
            if position < len(draft) and token == draft[position]:
                kept += 1  # already decoded in this step: take the next position
                continue
            slot.next_token = token
            break
        if draft:
            rejected = len(slot.cached) - len(draft) + kept
            if rejected < len(slot.cached):
                self._context.forget(slot.seq, rejected)
                del slot.cached[rejected:]
            self.drafted += len(draft)
            self.accepted += kept
            if slot.judged_by is not None and slot.judged_by[0] == REPLAY:
                self.replayed += kept
            self._judge(slot, len(draft), kept)

    def _judge(self, slot: Slot, drafted: int, accepted: int) -> None:
        """Count how the step's draft (or guess) fared, in the request's odds and
        the engine's for its source and class of match."""
        if slot.judged_by is not None:
            slot.odds[slot.judged_by].judged(drafted, accepted)
            self.draft_odds.judged(slot.judged_by, drafted, accepted)

    def _produce(self, slot: Slot, token: int, logits_at: int) -> bool:
        """Hand ``token``, sampled from the logits at ``logits_at``, to the slot's
        generation; false if that ended it (end of turn, a stop string, max_tokens)."""
        assert slot.generation is not None and slot.stream is not None
        generation = slot.generation
        if self._model.is_end_of_generation(token):
            generation.emit(slot.stream.flush(), None)
            self._end(slot, FINISH_STOP)
            return False
        slot.produced += 1
        if slot.produced == 1:
            log.debug(
                "engine %s: generation %d has its first token %.1f ms after it came",
                self.name,
                generation.id,
                1000 * (time.monotonic() - generation.created_at),
            )
        piece = self._model.piece(token, special=token in slot.preserved)
        logprob = None
        if generation.request.logprobs >= 0:
            logprob = self._logprob(slot, token, piece, logits_at)
        generation.emit(slot.stream.feed(piece), token, wake=False, logprob=logprob)
        if slot.drafts is not None:
            slot.drafts.extend((token,))
        if slot.stream.stopped:
            generation.stop_string = slot.stream.stop_string
            self._end(slot, FINISH_STOP)
            return False
        if slot.produced >= slot.max_tokens:
            generation.emit(slot.stream.flush(), None)
            self._end(slot, FINISH_LENGTH)
            return False
        return True

    def _logprob(self, slot: Slot, token: int, piece: bytes, logits_at: int) -> TokenLogprob:
        """The sampled token's log-probability and the most likely alternatives,
        from the logits the sampler read (sampling leaves them as they were)."""
        from shimmy.models.llamacpp import log_probabilities

        assert slot.generation is not None
        top = slot.generation.request.logprobs
        logits = self._context.logits(logits_at, self._model.n_vocab)
        logprob, best = log_probabilities(logits, token, top)
        alternatives = tuple((t, self._model.piece(t), lp) for t, lp in best)
        return TokenLogprob(token, piece, logprob, alternatives)

    def _timeout_error(self) -> ShimmyError:
        return ShimmyError(
            "generation_failed",
            f"The request took longer than the {self.options.request_timeout:g} s limit",
            "raise it with --request-timeout",
        )

    def _end(self, slot: Slot, reason: str, error: ShimmyError | None = None) -> None:
        generation = slot.generation
        self._release(slot)
        if generation is not None:
            self._finished(generation, reason, error)

    def _release(self, slot: Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        if slot.drafts is not None and slot.generation is not None and slot.produced:
            # The reply, with the prompt tokens that led into it.
            reply = slot.drafts.tokens[-(slot.produced + MEMORY_NGRAM) :]
            self.draft_memory.remember(slot.generation.request.cache_scope, reply)
        # Prompt tokens queued but never decoded are not in the cache.
        slot.generation = None
        slot.sampler = None
        slot.pending = []
        slot.next_token = None
        slot.copy_from = None
        slot.drafts = None
        slot.draft = []
        slot.guess = None
        slot.stream = None
        slot.last_used = time.monotonic()
        slot.unsaved = True

    def _finished(
        self, generation: Generation, reason: str, error: ShimmyError | None = None
    ) -> None:
        generation.finish(reason, error)
        with self._pending_lock:
            self._pending -= 1
        self.last_used = time.monotonic()
        if self._on_finish is not None:
            try:
                self._on_finish(generation)
            except Exception:  # statistics must never break generation
                log.exception("on_finish callback failed")

    def _fail_all(self, error: ShimmyError | None) -> None:
        """End every running and waiting generation (cancelled, or failed with ``error``)."""
        reason = FINISH_ERROR if error is not None else FINISH_CANCELLED
        for slot in self._slots:
            if slot.generation is not None:
                self._end(slot, reason, error)
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                self._waiting.append(item)
        while self._waiting:
            self._finished(self._waiting.popleft(), reason, error)


def _load(
    entry: ModelEntry, options: EngineOptions, placement: Placement | None = None
) -> tuple[Model, Context, MemoryEstimate, Placement]:
    if not entry.usable:
        raise ShimmyError(
            "model_invalid", f"Model '{entry.name}' cannot be used", entry.error or None
        )
    for part in entry.parts:
        if not part.is_file():
            raise ShimmyError(
                "model_load_failed", f"Model '{entry.name}' is missing a file", str(part)
            )
    # The file may have been replaced since discovery read it: check it again
    # (tens of milliseconds), since llama.cpp can abort the process on a bad file.
    from shimmy.models.gguf import read_gguf_info

    try:
        info = read_gguf_info(entry.path)
    except ShimmyError as exc:
        raise ShimmyError(
            "model_invalid", f"Model '{entry.name}' cannot be used", exc.details or exc.message
        ) from exc
    from shimmy.models.llamacpp import Context, context_per_sequence, load_model

    if options.parallel < 1:
        raise ShimmyError("invalid_request", "--parallel must be at least 1")
    from shimmy.models.placement import placement_for

    offload = options.offload
    estimate = estimate_entry(dataclasses.replace(entry, info=info), options)
    assert estimate is not None  # the header was just read
    if placement is None:
        placement = placement_for(info, estimate, offload)
    model = load_model(entry.name, entry.path, offload, placement.gpu_layers)
    per_slot = context_per_sequence(options.ctx_size, model.n_ctx_train or options.ctx_size)
    try:
        context = Context(
            model,
            n_ctx=per_slot * options.parallel,
            n_seq=options.parallel,
            n_batch=max(1, min(options.batch_size, per_slot * options.parallel)),
            threads=options.threads,
            offload=offload,
        )
    except ShimmyError:
        model.close()
        raise
    return model, context, estimate, placement


def _choice(request: GenerationRequest, index: int) -> GenerationRequest:
    """The request of choice ``index``: a seeded request's choices take consecutive
    seeds, so that they differ and each repeats."""
    seed = request.sampling.seed
    if index == 0 or seed is None:
        return request
    return dataclasses.replace(
        request, sampling=dataclasses.replace(request.sampling, seed=seed + index)
    )
