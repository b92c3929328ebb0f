"""The one ModelManager of a shimmy process.

It knows which models exist (through the registry), which are loaded, which
is the default, and how much work they have done. The CLI, the API and the
dashboard all share the same instance (DESIGN.md, "One manager, shared").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from shimmy.config import Paths, Settings
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.chat import Message
from shimmy.models.default_choice import FILE_NAME, RememberedDefault, longest_here
from shimmy.models.embeddings import EmbeddingModels, Embeddings
from shimmy.models.engine import Engine, EngineOptions, process_rss
from shimmy.models.generation import FINISH_ERROR, Generation, GenerationRequest, SamplingParams
from shimmy.models.registry import ModelEntry, ModelRegistry

log = logging.getLogger(__name__)

DEFAULT_ALIAS = "default"


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
        self.registry = registry or ModelRegistry(settings.model_dirs)
        self.remembered = remembered or RememberedDefault(Paths.from_env().data_dir / FILE_NAME)
        self._engines: dict[str, Engine] = {}
        self._load_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
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
                raise ShimmyError(
                    "model_not_found",
                    "The specified model was not found",
                    "No usable model was discovered; add one with --model or --model-dirs",
                )
            return self.registry.resolve(default)
        return self.registry.resolve(name)

    # -- loading -------------------------------------------------------------

    def engine(self, name: str | None) -> Engine:
        """The loaded engine for ``name``, loading it first if needed."""
        entry = self.resolve(name)
        with self._lock:
            engine = self._engines.get(entry.name)
            if engine is not None:
                engine.last_used = time.monotonic()
                return engine
            load_lock = self._load_locks.setdefault(entry.name, threading.Lock())
        # Loads of one model are serialised; other models are not held up.
        with load_lock:
            with self._lock:
                engine = self._engines.get(entry.name)
            if engine is not None:
                return engine
            if self._shutting_down:
                raise ShimmyError("server_busy", "The server is shutting down")
            log.info("loading model %s from %s", entry.name, entry.path)
            engine = Engine(
                entry,
                self._engine_options(),
                decode_lock=self._decode_lock,
                on_finish=self._count,
            )
            with self._lock:
                self._engines[entry.name] = engine
                if self._shutting_down:  # shutdown began while this model loaded
                    engine.cancel_all()
            log.info("loaded %s in %.2fs", entry.name, engine.load_seconds)
            return engine

    def load(self, name: str | None) -> Engine:
        return self.engine(name)

    def unload(self, name: str | None) -> bool:
        """Unload a model; false if it was not loaded. Running generations are cancelled."""
        entry = self.resolve(name)
        with self._lock:
            engine = self._engines.pop(entry.name, None)
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

    def _engine_options(self) -> EngineOptions:
        return EngineOptions.from_settings(self.settings)

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
    ) -> Generation:
        """Render ``messages`` with the model's own template and submit them.

        Setting ``cancel`` (the client left) stops the render at once with
        ``RenderCancelled`` (shimmy.models.template_render)."""
        engine = self.engine(name)
        request = GenerationRequest(
            prompt_tokens=engine.chat_tokens(messages, cancel=cancel),
            max_tokens=max_tokens,
            sampling=sampling,
            stop=tuple(stop) + tuple(engine.template.stop_strings()),
            grammar=grammar,
            label=label,
            cache_scope=cache_scope,
        )
        return engine.submit(request)

    def measure_chat(self, name: str | None, messages: Sequence[Message]) -> ChatSize:
        """The size of ``messages`` as ``submit_chat`` would send them (loading the
        model first if needed), so a chat can decide what fits before it sends."""
        engine = self.engine(name)
        return ChatSize(engine.name, len(engine.chat_tokens(messages)), engine.n_ctx)

    def submit_prompt(
        self,
        name: str | None,
        prompt: str,
        *,
        max_tokens: int,
        sampling: SamplingParams,
        stop: Sequence[str] = (),
        raw: bool = False,
        label: str = "",
        cancel: threading.Event | None = None,
        cache_scope: str = "",
    ) -> Generation:
        """Submit a plain prompt. Unless ``raw``, it is sent as one user turn through
        the model's chat template (as Ollama's generate does), since instruct
        models answer poorly to bare text; a model without a template gets it raw."""
        engine = self.engine(name)
        if raw or engine.template.is_fallback:
            request = GenerationRequest(
                prompt_tokens=engine.tokenize(prompt),
                max_tokens=max_tokens,
                sampling=sampling,
                stop=tuple(stop),
                label=label,
                cache_scope=cache_scope,
            )
            return engine.submit(request)
        return self.submit_chat(
            name,
            [{"role": "user", "content": prompt}],
            max_tokens=max_tokens,
            sampling=sampling,
            stop=stop,
            label=label,
            cancel=cancel,
            cache_scope=cache_scope,
        )

    def embed(self, name: str | None, inputs: Sequence[str]) -> Embeddings:
        """Pooled, normalized embedding vectors of ``inputs`` (see embeddings.py)."""
        return self._embeddings.embed(self.resolve(name), inputs)

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
        for engine in engines:
            engine.cancel_all()

    def _count(self, generation: Generation) -> None:
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
        )

    # -- lifetime ------------------------------------------------------------

    def _reap_idle(self) -> None:
        """Unload models idle for longer than keep_alive (negative: keep forever)."""
        while not self._closed.wait(self._reap_interval()):
            keep_alive = self.settings.keep_alive
            if keep_alive < 0:
                continue
            self._embeddings.unload_idle(keep_alive)
            now = time.monotonic()
            with self._lock:
                idle = [
                    name
                    for name, e in self._engines.items()
                    if e.idle and now - e.last_used >= keep_alive
                ]
            for name in idle:
                log.info("unloading %s after %.0fs idle", name, keep_alive)
                try:
                    self.unload(name)
                except ShimmyError:
                    pass

    def _reap_interval(self) -> float:
        return max(
            0.2, min(5.0, self.settings.keep_alive / 4 if self.settings.keep_alive > 0 else 1)
        )

    def close(self) -> None:
        """Cancel all work and unload every model."""
        self._closed.set()
        with self._lock:
            engines = list(self._engines.values())
            self._engines.clear()
        for engine in engines:
            engine.close()
        self._embeddings.close()
