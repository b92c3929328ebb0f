"""Embeddings: one llama.cpp context per model, opened in embedding mode.

A generation engine's context computes logits, not pooled embeddings, and is
owned by its scheduler thread, so embeddings come from a second model and
context of the same file, loaded through :mod:`shimmy.models.llamacpp` like
every model (the weights are memory-mapped, so the second instance mostly
shares them through the page cache). It is opened on the first
embedding request, unloaded with the model or after ``keep_alive`` idle
seconds, and every decode it makes holds the manager's decode lock, so it never
runs at the same time as a generation (DESIGN.md, "Engine").

Vectors are pooled over the input's tokens (the model's own pooling type when
its GGUF names one, else the mean) and L2-normalized, as OpenAI's are.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shimmy.errors import ShimmyError

if TYPE_CHECKING:
    from shimmy.models.llamacpp import EmbeddingContext, Model
    from shimmy.models.registry import ModelEntry

log = logging.getLogger(__name__)

# llama.cpp's enum llama_pooling_type.
POOLING_NONE = 0
POOLING_MEAN = 1
POOLING_RANK = 4


@dataclass(frozen=True)
class Embeddings:
    """Vectors in input order, and the tokens read to make them."""

    vectors: list[list[float]]
    prompt_tokens: int
    model: str
    load_seconds: float = 0.0  # spent loading the model for this call (0: it was loaded)


class _EmbeddingModel:
    def __init__(
        self, entry: ModelEntry, model: Model, context: EmbeddingContext, load_seconds: float
    ) -> None:
        self.entry = entry
        self.model = model
        self.context = context
        self.load_seconds = load_seconds
        self.n_ctx = context.n_ctx
        self.last_used = time.monotonic()
        self.lock = threading.Lock()  # one request at a time; unload waits for it
        self.closed = False


class EmbeddingModels:
    """Embedding-mode instances by model name; thread-safe."""

    def __init__(
        self,
        *,
        ctx_size: int,
        threads: int,
        decode_lock: threading.Lock,
    ) -> None:
        self.ctx_size = ctx_size
        self.threads = threads
        self._decode_lock = decode_lock
        self._models: dict[str, _EmbeddingModel] = {}
        self._lock = threading.Lock()  # guards _models and loading

    def embed(
        self,
        entry: ModelEntry,
        inputs: Sequence[str | Sequence[int]],
        *,
        truncate: bool = False,
    ) -> Embeddings:
        """Embed each input (text, or the model's token ids); ``invalid_request``
        (with the numbers) for an input that does not fit the context, unless
        ``truncate`` asks for its end to be cut off (as Ollama's /api/embed does
        by default): never a silent truncation. Each input is read alone, so its
        vector does not depend on what else the request holds."""
        if not inputs:
            raise ShimmyError("invalid_request", "input must not be empty")
        for index, text in enumerate(inputs):
            if not text:
                raise ShimmyError("invalid_request", f"input[{index}] is empty")
        while True:
            model, loaded = self._model(entry)
            with model.lock:
                if model.closed:  # unloaded between lookup and use: open it again
                    continue
                result = self._embed(model, inputs, truncate)
            return dataclasses.replace(result, load_seconds=model.load_seconds if loaded else 0.0)

    def _embed(
        self, model: _EmbeddingModel, inputs: Sequence[str | Sequence[int]], truncate: bool
    ) -> Embeddings:
        name = model.entry.name
        tokenized = []
        for index, text in enumerate(inputs):
            if isinstance(text, str):
                # As llama.cpp adds them for this vocabulary (BOS, and EOS/SEP for
                # encoders); special-token names in an input are plain words.
                tokens = model.model.tokenize(text, add_bos=True, special=False)
            else:
                tokens = list(text)
                bad = next((t for t in tokens if not 0 <= t < model.model.n_vocab), None)
                if bad is not None:
                    raise ShimmyError(
                        "invalid_request",
                        f"input[{index}] names token {bad}, which model '{name}' does not have",
                        f"its tokens are 0 to {model.model.n_vocab - 1}",
                    )
            if truncate:
                tokens = tokens[: model.n_ctx]
            if len(tokens) > model.n_ctx:
                raise ShimmyError(
                    "invalid_request",
                    f"input[{index}] is {len(tokens)} tokens, but the embedding context of "
                    f"model '{name}' holds {model.n_ctx} tokens",
                    "Shorten the input or load the model with a larger --ctx-size",
                )
            tokenized.append(tokens)
        counts = [len(tokens) for tokens in tokenized]
        try:
            with self._decode_lock:
                vectors = [_normalized(model.context.embed(tokens)) for tokens in tokenized]
        finally:
            model.last_used = time.monotonic()
        return Embeddings(vectors, sum(counts), name)

    def _model(self, entry: ModelEntry) -> tuple[_EmbeddingModel, bool]:
        """The instance for ``entry``, and whether this call loaded it."""
        with self._lock:
            model = self._models.get(entry.name)
            loaded = model is None
            if model is None:
                model = self._load(entry)
                self._models[entry.name] = model
            model.last_used = time.monotonic()
            return model, loaded

    def _load(self, entry: ModelEntry) -> _EmbeddingModel:
        if not entry.usable:
            raise ShimmyError(
                "model_invalid", f"Model '{entry.name}' cannot be used", entry.error or None
            )
        from shimmy.models.llamacpp import EmbeddingContext, context_per_sequence, load_model

        n_ctx = context_per_sequence(self.ctx_size, entry.context_length or self.ctx_size)
        log.info("loading %s for embeddings (context %d)", entry.name, n_ctx)
        started = time.perf_counter()
        model = load_model(entry.name, entry.path)
        try:
            context = EmbeddingContext(
                model, n_ctx=n_ctx, pooling_type=_pooling_type(entry), threads=self.threads
            )
        except ShimmyError:
            model.close()
            raise
        return _EmbeddingModel(entry, model, context, time.perf_counter() - started)

    def loaded_names(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def unload(self, name: str) -> bool:
        """Free the embedding instance of ``name``; false if there was none."""
        with self._lock:
            model = self._models.pop(name, None)
        if model is None:
            return False
        with model.lock:  # never free a context in the middle of a request
            model.closed = True
            model.context.close()
            model.model.close()
        return True

    def unload_idle(self, keep_alive: Callable[[str], float]) -> None:
        """Unload instances idle for their model's ``keep_alive(name)`` seconds
        (negative: never)."""
        now = time.monotonic()
        with self._lock:
            idle = [
                n
                for n, m in self._models.items()
                if 0 <= keep_alive(n) <= now - m.last_used and not m.lock.locked()
            ]
        for name in idle:
            log.info("unloading embeddings of %s: idle for its keep-alive", name)
            self.unload(name)

    def close(self) -> None:
        for name in self.loaded_names():
            self.unload(name)


def _pooling_type(entry: ModelEntry) -> int:
    """The pooling the GGUF asks for; mean pooling for models that name none
    (chat models), since a vector per token is not what /v1/embeddings returns."""
    info = entry.info
    if info is not None and info.architecture:
        value = info.metadata.get(f"{info.architecture}.pooling_type")
        if isinstance(value, int) and value not in (POOLING_NONE, POOLING_RANK):
            return value
    return POOLING_MEAN


def _normalized(vector: list[float]) -> list[float]:
    """``vector`` scaled to length 1, as OpenAI's embeddings are (a zero vector as is)."""
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector
