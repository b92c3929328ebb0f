"""The one ModelManager of a shimmy process.

It knows which models exist (through the registry), which are loaded, which
is the default, and how much work they have done. The CLI, the API and the
dashboard all share the same instance (DESIGN.md, "One manager, shared").
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shimmy.config import Paths, Settings
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.chat import Message
from shimmy.models.default_choice import FILE_NAME, RememberedDefault, longest_here
from shimmy.models.embeddings import EmbeddingModels, Embeddings
from shimmy.models.engine import Engine, EngineOptions, process_rss
from shimmy.models.first_use_pull import FirstUsePulls
from shimmy.models.generation import FINISH_ERROR, Generation, GenerationRequest, SamplingParams
from shimmy.models.memory import (
    Budget,
    Resident,
    check_memory_settings,
    estimate_entry,
    plan_room,
)
from shimmy.models.placement import Placement, placement_for
from shimmy.models.presets import apply_sampling, check_presets, preset_settings, with_system
from shimmy.models.registry import ModelEntry, ModelRegistry
from shimmy.models.tools import ToolRequest, plan_tools

if TYPE_CHECKING:
    from shimmy.models.backends import Device

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"
# One model load at a time in the process (placing it, making room, llama.cpp's
# model and context): two loads of different models side by side crashed the
# process in a later decode (a segfault in llama_decode, 3 runs in 8 of the
# two-models e2e test). Generation on loaded models goes on meanwhile.
_llama_load_lock = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    name: str
    memory_bytes: int
    load_seconds: float
    n_ctx: int
    busy: bool
    queued: int
    idle_seconds: float
    slots: int
    slots_busy: int
    # Conversations kept in host memory (--cache-ram), their bytes, and how many
    # prompts were restored from them instead of decoded again.
    saved_prompts: int = 0
    saved_prompt_bytes: int = 0
    saved_prompt_hits: int = 0
    # Speculative decoding: tokens drafted (from the requests' own text or earlier
    # replies), how many of them the model produced itself (accepted), and how
    # many of those came from earlier replies (replayed).
    drafted_tokens: int = 0
    accepted_tokens: int = 0
    replayed_tokens: int = 0
    # Seconds until it is unloaded for being idle (None: never); while it is
    # busy, its whole keep-alive (the countdown starts when it goes idle).
    unloads_in: float | None = None
    # GPU memory of its offloaded layers (weights and KV cache); memory_bytes is the host's.
    gpu_memory_bytes: int = 0

    @property
    def acceptance(self) -> float | None:
        """The share of drafted tokens accepted (None before any draft)."""
        return self.accepted_tokens / self.drafted_tokens if self.drafted_tokens else None


@dataclass
class UsageTotals:
    """Counters over every finished generation of this process."""

    requests: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    generation_seconds: float = 0.0
    last_tokens_per_second: float | None = None

    @property
    def average_tokens_per_second(self) -> float | None:
        if self.generation_seconds <= 0:
            return None
        return self.completion_tokens / self.generation_seconds


@dataclass(frozen=True)
class ChatSize:
    """How much of a model's context a conversation takes (``measure_chat``)."""

    model: str  # the model's name ("default" resolved)
    prompt_tokens: int  # the conversation, rendered with its template and tokenized
    context_tokens: int  # what one request may hold (the engine refuses more)


@dataclass(frozen=True)
class ManagerStats:
    loaded: list[LoadedModel]
    rss_bytes: int
    totals: UsageTotals
    active: int
    queued: int
    default_model: str | None = None
    uptime_seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)
    memory_limit: int | None = None  # --memory-limit in bytes (None: the RAM available)
    max_loaded_models: int = 0  # 0: no cap


class ModelManager:
    """Loads models on first use, unloads them after ``keep_alive`` idle seconds."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry | None = None,
        *,
        remembered: RememberedDefault | None = None,
    ) -> None:
        self.settings = settings
        self._memory_limit, self._max_models = check_memory_settings(settings)
        check_presets(settings)
        self.registry = registry or ModelRegistry(settings.model_dirs)
        # [models.NAME] presets: listed as models, each loaded with its own settings.
        self._presets = {p.name: p for p in settings.presets}
        if settings.presets:
            self.registry.set_presets(settings.presets)
        self.remembered = remembered or RememberedDefault(Paths.from_env().data_dir / FILE_NAME)
        self._engines: dict[str, Engine] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        # Making room is one decision at a time (what to unload, what a load may
        # take); the loads themselves run side by side. Bytes promised to loads
        # under way, by model:
        self._room_lock = threading.Lock()
        self._loading: dict[str, tuple[int, int]] = {}  # (host, GPU)
        self._decode_lock = threading.Lock()
        self._embeddings = EmbeddingModels(
            ctx_size=settings.ctx_size, threads=settings.threads, decode_lock=self._decode_lock
        )
        self._totals = UsageTotals()
        self._started = time.monotonic()
        self._default_override: str | None = None
        self._finish_listeners: list[Callable[[Generation], None]] = []
        self._shutting_down = False
        self._closed = threading.Event()
        # Each loaded model's keep-alive, as its last request asked (None: the
        # settings'); the reaper is woken when a model that asked for 0 goes idle.
        self._keep_alive: dict[str, float | None] = {}
        self._in_preparation: dict[str, int] = {}  # requests not yet submitted, by model
        self._reap_now = threading.Event()
        # Presets' Hugging Face models, pulled on first use: one download per model.
        self._pulls = FirstUsePulls()
        self._reaper = threading.Thread(target=self._reap_idle, name="shimmy-reaper", daemon=True)
        self._reaper.start()

    # -- which model ---------------------------------------------------------

    @property
    def default_model_name(self) -> str | None:
        """The model that "default" means: set at run time, else --model (or the
        config's ``model``), else the one the user chose last (remembered across
        runs), else the model on this machine longest (default_choice.py): a
        download never becomes the default by itself."""
        wanted = self._default_override or self.settings.model
        if wanted:
            try:
                # --model may name a file: the operator's choice, unlike a request's.
                return self.registry.resolve_operator(wanted).name
            except ShimmyError:
                return None
        entries = self.registry.entries()
        remembered = self.remembered.name
        if remembered is not None:
            for entry in entries:
                if entry.name == remembered and entry.usable:
                    return entry.name
        chosen = longest_here(entries)
        return chosen.name if chosen is not None else None

    def set_default(self, name: str) -> ModelEntry:
        """Make ``name`` the default, now and in later runs (it is remembered)."""
        entry = self.resolve(name)
        self._default_override = entry.name
        self.remembered.remember(entry.name)
        return entry

    def resolve(self, name: str | None) -> ModelEntry:
        """The registry entry for a request's model field ("default" or empty: the default)."""
        if not name or name == DEFAULT_ALIAS:
            default = self.default_model_name
            if default is None:
                wanted = self._default_override or self.settings.model
                if wanted:
                    raise model_not_found(wanted)
                from shimmy.models.first_model import how_to_get_a_model

                raise ShimmyError(
                    "model_not_found",
                    "The specified model was not found",
                    f"No usable model was discovered. {how_to_get_a_model()}",
                )
            return self.registry.resolve(default)
        return self.registry.resolve(name)

    # -- loading -------------------------------------------------------------

    def engine(self, name: str | None, *, keep_alive: float | None = None) -> Engine:
        """The loaded engine for ``name``, loading it first if needed.

        ``keep_alive`` is how long the model stays loaded once idle, from now on
        (seconds; negative: until unloaded; 0: unloaded as soon as it is idle;
        None: the settings' ``keep_alive``): each request says it again, as
        Ollama's do."""
        entry = self.resolve(name)
        with self._lock:
            self._keep_alive[entry.name] = keep_alive
            engine = self._engines.get(entry.name)
            if engine is not None:
                engine.last_used = time.monotonic()
                return engine
            load_lock = self._load_locks.setdefault(entry.name, threading.Lock())
        # Loads of one model wait for each other here; loads of different models
        # wait for each other below (_llama_load_lock), after any first-use pull.
        with load_lock:
            with self._lock:
                engine = self._engines.get(entry.name)
            if engine is not None:
                return engine
            if self._shutting_down:
                raise ShimmyError("server_busy", "The server is shutting down")
            entry = self._on_disk(entry)
            with _llama_load_lock:
                options, placement = self._place(entry, self._engine_options(entry.name))
                self._make_room(entry, placement)
                log.info("loading model %s from %s", entry.name, entry.path)
                try:
                    engine = Engine(
                        entry,
                        options,
                        decode_lock=self._decode_lock,
                        on_finish=self._count,
                        placement=placement,
                    )
                finally:
                    with self._lock:
                        self._loading.pop(entry.name, None)
            with self._lock:
                self._engines[entry.name] = engine
                if self._shutting_down:  # shutdown began while this model loaded
                    engine.cancel_all()
            log.info("loaded %s in %.2fs", entry.name, engine.load_seconds)
            return engine

    def load(self, name: str | None) -> Engine:
        return self.engine(name)

    def _on_disk(self, entry: ModelEntry) -> ModelEntry:
        """``entry`` itself, or for a preset whose Hugging Face model is not on this
        machine yet, the entry once it is pulled (first_use_pull.py): the download
        is shared with everyone asking for that model meanwhile, and the registry
        is refreshed so that every name for it sees the file."""
        if entry.pull is None:
            return entry
        current = self.registry.resolve(entry.name)  # pulled meanwhile, for another preset?
        if current.pull is None:
            return current
        self._pulls.pull(current)
        self.registry.refresh()
        pulled = self.registry.resolve(entry.name)
        if pulled.pull is not None or not pulled.usable:
            raise ShimmyError(
                "model_load_failed",
                f"Model '{entry.name}' was pulled ({entry.pull}) but cannot be used",
                pulled.error or "the file pulled is not the one its name says",
            )
        return pulled

    def _place(self, entry: ModelEntry, options: EngineOptions) -> tuple[EngineOptions, Placement]:
        """Where ``entry``'s memory will go (placement.py): its GPU layers, decided
        once here ("auto" included) and handed to the load in the options, and
        the host and GPU bytes they leave. A model without a header counts its
        file's size, all of it in host memory."""
        estimate = estimate_entry(entry, options)
        if entry.info is None or estimate is None:
            return options, Placement(0, entry.size)
        placement = placement_for(entry.info, estimate, options.offload)
        offload = dataclasses.replace(options.offload, gpu_layers=placement.gpu_layers)
        return dataclasses.replace(options, offload=offload), placement

    def _make_room(self, entry: ModelEntry, placement: Placement) -> None:
        """Check that ``entry`` fits the memory budget (host memory, and GPU memory
        for the layers it offloads) and the --max-loaded-models cap, unloading
        idle models (least recently used first) to make it fit, and promise it
        the memory until its load ends. Raises as
        :func:`~shimmy.models.memory.plan_room` does; unloads nothing then."""
        need, need_gpu = placement.host_bytes, placement.gpu_bytes
        with self._room_lock:
            for _attempt in range(3):  # a model chosen to go may get a request first
                with self._lock:
                    resident = [
                        Resident(
                            name,
                            engine.memory_bytes(),
                            engine.idle and not self._in_preparation.get(name),
                            engine.last_used,
                            engine.gpu_bytes,
                        )
                        for name, engine in self._engines.items()
                    ]
                    loading = tuple(host for host, _ in self._loading.values())
                    loading_gpu = sum(gpu for _, gpu in self._loading.values())
                budget = Budget.now(
                    self._memory_limit, self._max_models, gpus=self._gpus() if need_gpu else ()
                )
                evict = plan_room(
                    entry.name,
                    need,
                    resident,
                    budget,
                    loading=loading,
                    need_gpu=need_gpu,
                    loading_gpu=loading_gpu,
                )
                taken = [self._take_if_idle(name) for name in evict]
                for name, engine in zip(evict, taken, strict=True):
                    if engine is not None:
                        log.info("unloading %s to make room for %s", name, entry.name)
                        self._embeddings.unload(name)
                        engine.close()
                if all(engine is not None for engine in taken):
                    break
            else:
                raise ShimmyError(
                    "server_busy",
                    f"Model '{entry.name}' cannot load yet: the models it would replace are busy",
                    headers={"Retry-After": "5"},
                )
            with self._lock:
                self._loading[entry.name] = (need, need_gpu)

    @staticmethod
    def _gpus() -> list[Device]:
        """The devices layers go to, with their free memory now."""
        from shimmy.models.backends import offload_devices

        return offload_devices()

    def _take_if_idle(self, name: str) -> Engine | None:
        """Remove and return ``name``'s engine if it is idle with no request being
        prepared for it (checked and removed under one lock)."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is None or not engine.idle or self._in_preparation.get(name):
                return None
            del self._engines[name]
            self._keep_alive.pop(name, None)
            return engine

    def unload(self, name: str | None) -> bool:
        """Unload a model; false if it was not loaded. Running generations are cancelled."""
        entry = self.resolve(name)
        with self._lock:
            engine = self._engines.pop(entry.name, None)
            self._keep_alive.pop(entry.name, None)
        embedded = self._embeddings.unload(entry.name)
        if engine is None:
            return embedded
        engine.close()
        log.info("unloaded %s", entry.name)
        return True

    def loaded_names(self) -> list[str]:
        with self._lock:
            return sorted(self._engines)

    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._engines

    def keep_alive_of(self, name: str) -> float:
        """The seconds ``name`` stays loaded once idle (negative: until unloaded)."""
        with self._lock:
            asked = self._keep_alive.get(name)
        return self.settings.keep_alive if asked is None else asked

    def unloads_in(self, name: str) -> float | None:
        """Seconds until a loaded model is unloaded for being idle: its keep-alive,
        counted from its last use once it is idle; None when it never is (a
        negative keep-alive) or is not loaded."""
        with self._lock:
            engine = self._engines.get(name)
        keep_alive = self.keep_alive_of(name)
        if engine is None or keep_alive < 0:
            return None
        if not engine.idle:
            return keep_alive  # the countdown starts when its last request ends
        return max(0.0, keep_alive - (time.monotonic() - engine.last_used))

    def preload_default(self) -> threading.Thread:
        """Load the default model in the background (the server answers meanwhile)."""

        def load() -> None:
            try:
                self.engine(None)
            except ShimmyError as exc:
                log.warning("default model not loaded: %s", exc.one_line())

        thread = threading.Thread(target=load, name="shimmy-preload", daemon=True)
        thread.start()
        return thread

    def _engine_options(self, name: str | None = None) -> EngineOptions:
        preset = self._presets.get(name) if name else None
        if preset is None:
            return EngineOptions.from_settings(self.settings)
        return EngineOptions.from_settings(preset_settings(self.settings, preset))

    # -- generating ----------------------------------------------------------

    def submit(self, name: str | None, request: GenerationRequest) -> Generation:
        return self.engine(name).submit(request)

    def submit_chat(
        self,
        name: str | None,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        sampling: SamplingParams,
        stop: Sequence[str] = (),
        grammar: str | None = None,
        label: str = "",
        cancel: threading.Event | None = None,
        cache_scope: str = "",
        tools: ToolRequest | None = None,
        keep_alive: float | None = None,
        logprobs: int = -1,
        n: int = 1,
    ) -> Generation:
        """Render ``messages`` with the model's own template and submit them; with
        ``n`` > 1, as that many choices sharing the prompt (``Generation.choices``).

        With ``tools``, they are rendered the way the model's tool-call format
        wants (its template's ``tools``, or the generic system message), calls are
        constrained by grammar as the choice asks, and the generation's request
        carries the tools and format, so the caller can parse the reply
        (:func:`shimmy.models.tools.reply_parser`). Setting ``cancel`` (the client
        left) stops the render at once with ``RenderCancelled``. ``keep_alive``:
        see :meth:`engine`."""
        with self._preparing(name, keep_alive) as engine:
            preset = self._presets.get(engine.name)
            messages = with_system(preset, messages)
            sampling = apply_sampling(preset, sampling)
            plan = plan_tools(engine.template, messages, tools, grammar, engine.marker_tokens)
            request = GenerationRequest(
                prompt_tokens=engine.chat_tokens(
                    plan.messages, tools=plan.template_tools, cancel=cancel
                ),
                max_tokens=max_tokens,
                sampling=sampling,
                stop=tuple(stop) + tuple(engine.template.stop_strings()),
                grammar=plan.grammar,
                grammar_trigger=plan.grammar_trigger,
                preserved=plan.preserved,
                tools=plan.tools,
                label=label,
                cache_scope=cache_scope,
                logprobs=logprobs,
            )
            return engine.submit_choices(request, n)[0]

    def count_chat_tokens(
        self,
        name: str | None,
        messages: Sequence[Message],
        *,
        tools: ToolRequest | None = None,
        cancel: threading.Event | None = None,
    ) -> int:
        """How many tokens ``messages`` (with ``tools``) make as a prompt: rendered
        and tokenized exactly as :meth:`submit_chat` would, with nothing queued
        (Anthropic's count_tokens). Loads the model, whose tokenizer and template
        it takes."""
        engine = self.engine(name)
        messages = with_system(self._presets.get(engine.name), messages)
        plan = plan_tools(engine.template, messages, tools, None, engine.marker_tokens)
        return len(engine.chat_tokens(plan.messages, tools=plan.template_tools, cancel=cancel))

    def measure_chat(self, name: str | None, messages: Sequence[Message]) -> ChatSize:
        """The size of ``messages`` as ``submit_chat`` would send them (loading the
        model first if needed), so a chat can decide what fits before it sends."""
        engine = self.engine(name)
        messages = with_system(self._presets.get(engine.name), messages)
        return ChatSize(engine.name, len(engine.chat_tokens(messages)), engine.n_ctx)

    def submit_prompt(
        self,
        name: str | None,
        prompt: str | Sequence[int],
        *,
        max_tokens: int,
        sampling: SamplingParams,
        stop: Sequence[str] = (),
        raw: bool = False,
        grammar: str | None = None,
        label: str = "",
        cancel: threading.Event | None = None,
        cache_scope: str = "",
        keep_alive: float | None = None,
        logprobs: int = -1,
        n: int = 1,
    ) -> Generation:
        """Submit a plain prompt (``n`` choices of it, as :meth:`submit_chat`). Unless
        ``raw``, it is sent as one user turn through the model's chat template (as
        Ollama's generate does), since instruct models answer poorly to bare text;
        a model without a template gets it raw. A prompt of token ids is raw.
        ``grammar`` (GBNF, checked by the caller) constrains the reply."""
        with self._preparing(name, keep_alive) as engine:
            if not isinstance(prompt, str) or raw or engine.template.is_fallback:
                # Token ids are the model's own prompt, as they are (always raw).
                tokens = engine.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
                request = GenerationRequest(
                    prompt_tokens=tokens,
                    max_tokens=max_tokens,
                    sampling=apply_sampling(self._presets.get(engine.name), sampling),
                    stop=tuple(stop),
                    grammar=grammar,
                    label=label,
                    cache_scope=cache_scope,
                    logprobs=logprobs,
                )
                return engine.submit_choices(request, n)[0]
        return self.submit_chat(
            name,
            [{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            sampling=sampling,
            stop=stop,
            grammar=grammar,
            label=label,
            cancel=cancel,
            cache_scope=cache_scope,
            keep_alive=keep_alive,
            logprobs=logprobs,
            n=n,
        )

    @contextlib.contextmanager
    def _preparing(self, name: str | None, keep_alive: float | None) -> Iterator[Engine]:
        """The engine for a request being rendered and tokenized: until it is
        submitted, its model is in use, so the reaper does not unload it even when
        its keep-alive has run out (0, say)."""
        key = self.resolve(name).name
        with self._lock:
            self._in_preparation[key] = self._in_preparation.get(key, 0) + 1
        try:
            engine = self.engine(name, keep_alive=keep_alive)
            with engine.arriving():
                yield engine
        finally:
            with self._lock:
                self._in_preparation[key] -= 1
                if not self._in_preparation[key]:
                    del self._in_preparation[key]

    def embed(
        self,
        name: str | None,
        inputs: Sequence[str | Sequence[int]],
        *,
        truncate: bool = False,
        keep_alive: float | None = None,
    ) -> Embeddings:
        """Pooled, normalized embedding vectors of ``inputs`` (see embeddings.py);
        ``truncate`` cuts an input to the context instead of refusing it;
        ``keep_alive``: see :meth:`engine`."""
        entry = self.resolve(name)
        with self._lock:
            self._keep_alive[entry.name] = keep_alive
        return self._embeddings.embed(self._on_disk(entry), inputs, truncate=truncate)

    @property
    def decode_lock(self) -> threading.Lock:
        """Held around every llama.cpp decode of this process, one at a time."""
        return self._decode_lock

    def add_finish_listener(self, listener: Callable[[Generation], None]) -> None:
        """Call ``listener`` (from an engine thread) whenever a generation ends."""
        self._finish_listeners.append(listener)

    def cancel_all(self) -> None:
        """Cancel every running and waiting generation, and refuse new work
        (graceful shutdown)."""
        with self._lock:
            self._shutting_down = True
            engines = list(self._engines.values())
        self._pulls.close()
        for engine in engines:
            engine.cancel_all()

    def _count(self, generation: Generation) -> None:
        if self.keep_alive_of(generation.model) == 0:
            self._reap_now.set()  # unload now if this was its last request (the reaper's job)
        for listener in self._finish_listeners:
            try:
                listener(generation)
            except Exception:  # a listener must never break generation
                log.exception("finish listener failed")
        with self._lock:
            totals = self._totals
            totals.requests += 1
            if generation.finish_reason == FINISH_ERROR:
                totals.failed += 1
            totals.prompt_tokens += generation.prompt_tokens
            totals.completion_tokens += generation.completion_tokens
            if generation.started_at is not None and generation.finished_at is not None:
                totals.generation_seconds += generation.finished_at - generation.started_at
            speed = generation.tokens_per_second
            if speed is not None:
                totals.last_tokens_per_second = speed

    # -- figures -------------------------------------------------------------

    def stats(self) -> ManagerStats:
        now = time.monotonic()
        with self._lock:
            engines = list(self._engines.values())
            totals = UsageTotals(**vars(self._totals))
        loaded = [
            LoadedModel(
                name=e.name,
                memory_bytes=e.memory_bytes(),
                load_seconds=e.load_seconds,
                n_ctx=e.n_ctx,
                busy=e.busy,
                queued=e.queued,
                idle_seconds=now - e.last_used,
                slots=e.n_parallel,
                slots_busy=e.slots_busy,
                saved_prompts=len(e.prompt_cache),
                saved_prompt_bytes=e.prompt_cache.size_bytes,
                saved_prompt_hits=e.prompt_cache.hits,
                drafted_tokens=e.drafted,
                accepted_tokens=e.accepted,
                replayed_tokens=e.replayed,
                unloads_in=self.unloads_in(e.name),
                gpu_memory_bytes=e.gpu_bytes,
            )
            for e in engines
        ]
        return ManagerStats(
            loaded=loaded,
            rss_bytes=process_rss(),
            totals=totals,
            active=sum(e.slots_busy for e in engines),
            queued=sum(e.queued for e in engines),
            default_model=self.default_model_name,
            uptime_seconds=now - self._started,
            memory_limit=self._memory_limit,
            max_loaded_models=self._max_models,
        )

    # -- lifetime ------------------------------------------------------------

    def _reap_idle(self) -> None:
        """Unload models idle for longer than their keep-alive (negative: keep forever)."""
        while not self._closed.is_set():
            self._reap_now.wait(self._reap_interval())
            self._reap_now.clear()
            if self._closed.is_set():
                return
            self._embeddings.unload_idle(self.keep_alive_of)
            with self._lock:
                names = list(self._engines)
            for name in names:
                engine = self._take_if_expired(name)
                if engine is not None:
                    log.info("unloading %s: idle for its keep-alive", name)
                    self._embeddings.unload(name)
                    engine.close()

    def _take_if_expired(self, name: str) -> Engine | None:
        """Remove and return ``name``'s engine if it has been idle for its whole
        keep-alive and no request is being prepared for it (checked and removed
        under one lock, so a request arriving meanwhile gets a new load)."""
        with self._lock:
            engine = self._engines.get(name)
            asked = self._keep_alive.get(name)
            keep_alive = self.settings.keep_alive if asked is None else asked
            if engine is None or keep_alive < 0 or self._in_preparation.get(name):
                return None
            if not engine.idle or time.monotonic() - engine.last_used < keep_alive:
                return None
            del self._engines[name]
            self._keep_alive.pop(name, None)
            return engine

    def _reap_interval(self) -> float:
        with self._lock:
            asked = [k for k in self._keep_alive.values() if k is not None]
        positive = [k for k in (self.settings.keep_alive, *asked) if k > 0]
        return max(0.2, min(5.0, min(positive) / 4)) if positive else 1.0

    def close(self) -> None:
        """Cancel all work, stop the downloads of presets' models, and unload every model."""
        self._closed.set()
        self._reap_now.set()
        self._pulls.close()
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()
        self._embeddings.close()
