"""Thin, typed glue over llama-cpp-python's low-level (ctypes) API.

The engine needs what llama.cpp's own server uses: one context with several
sequences, a reusable ``llama_batch``, and a sampler chain per request that
samples straight from the context's logits (no per-token copy of the
vocabulary into Python). llama-cpp-python's high-level ``Llama`` class runs one
sequence at a time, so the engine talks to these functions instead. Every
pointer is owned by one object here and freed exactly once.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models import compute
from shimmy.models.grammar import init_grammar_sampler
from shimmy.models.llama_bindings import llama_cpp
from shimmy.models.offload import Offload

_backend_lock = threading.Lock()
_backend_ready = False
_llama_log = logging.getLogger("llama.cpp")
# ggml log levels (none, debug, info, warn, error, cont) -> ours. llama.cpp is
# chatty at load and its warnings are mostly advice ("n_ctx_seq < n_ctx_train"),
# they show with -v only; shimmy's own errors carry the reason a load failed.
_LOG_LEVELS = {1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO, 4: logging.INFO}
_last_error = threading.local()


@llama_cpp.llama_log_callback
def _route_llama_log(level: int, text: bytes, _user_data: ctypes.c_void_p) -> None:
    message = text.decode("utf-8", errors="replace").rstrip()
    if message:
        _llama_log.log(_LOG_LEVELS.get(level, logging.DEBUG), "%s", message)
        if level == 4 and getattr(_last_error, "message", None) is None:
            # The first error since the load began is the specific one; kept so
            # a failed load can say why (llama.cpp only returns NULL).
            _last_error.message = message.removeprefix("llama_model_load: ")


def last_error() -> str | None:
    """llama.cpp's first error line on this thread since the last model load began."""
    return getattr(_last_error, "message", None)


def init_backend() -> None:
    """llama_backend_init once per process, and llama.cpp's log lines into Python
    logging: never printed onto a terminal that the dashboard may own."""
    global _backend_ready
    with _backend_lock:
        if _backend_ready:
            return
        llama_cpp.llama_log_set(_route_llama_log, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        _backend_ready = True


def amx_compiled_in() -> bool:
    """Whether this llama.cpp build carries ggml's AMX kernels (built with
    ``-march=native`` on a CPU that has AMX, as pip's source build does)."""
    return b"AMX_INT8 = 1" in llama_cpp.llama_print_system_info()


def use_extra_buffer_types() -> bool:
    """Whether models may use ggml's extra weight buffers (repacked layouts, AMX).

    Not where the build has AMX: on the 2-core test machine (a Sapphire Rapids
    VM) llama.cpp 0.3.36's ``ggml_backend_amx_mul_mat`` ends the process with
    SIGSEGV at its ``ldtilecfg`` on the first prompt of more than one token,
    in llama-cpp-python's own ``Llama`` too. Without the extra buffers the
    weights stay in llama.cpp's plain CPU layout, which every build runs."""
    return not amx_compiled_in()


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    frequency_penalty: float
    presence_penalty: float
    seed: int
    grammar: str | None = None
    grammar_trigger_tokens: tuple[int, ...] = ()  # lazy grammar (see init_grammar_sampler)
    logit_bias: tuple[tuple[int, float], ...] = ()
    penalty_last_n: int = 64


class Model:
    """A loaded GGUF model (weights and vocabulary)."""

    def __init__(
        self,
        path: Path,
        *,
        use_mmap: bool = True,
        offload: Offload | None = None,
        gpu_layers: int = 0,
    ) -> None:
        init_backend()
        offload = offload or Offload()
        params = llama_cpp.llama_model_default_params()
        params.use_mmap = use_mmap
        params.n_gpu_layers = gpu_layers
        params.main_gpu = offload.main_gpu
        # llama.cpp reads llama_max_devices() floats: kept alive with the model.
        self._split = (ctypes.c_float * max(1, int(llama_cpp.llama_max_devices())))()
        for i, share in enumerate(offload.tensor_split[: len(self._split)]):
            self._split[i] = share
        if offload.tensor_split:
            params.tensor_split = self._split
        params.use_extra_bufts = use_extra_buffer_types()
        _last_error.message = None
        self._ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise ShimmyError(
                "model_load_failed",
                "llama.cpp could not load the model",
                last_error() or str(path),
            )
        self.vocab = llama_cpp.llama_model_get_vocab(self._ptr)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(self._ptr))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self.vocab))
        self._piece = ctypes.create_string_buffer(256)

    @property
    def ptr(self) -> Any:
        return self._ptr

    def kv_bytes_per_token(self, offload: Offload | None = None) -> int:
        """KV cache bytes per token at the offload's cache types (every layer)."""
        n_layer = int(llama_cpp.llama_model_n_layer(self._ptr))
        n_embd = int(llama_cpp.llama_model_n_embd(self._ptr))
        n_head = max(1, int(llama_cpp.llama_model_n_head(self._ptr)))
        n_head_kv = int(llama_cpp.llama_model_n_head_kv(self._ptr))
        per_layer = n_head_kv * (n_embd // n_head)
        return (offload or Offload()).kv_bytes_per_token(n_layer, per_layer, per_layer)

    def tokenize(self, text: str, *, add_bos: bool, special: bool = True) -> list[int]:
        """Tokens of ``text``; special tokens in it are parsed (as llama.cpp's server
        does) unless ``special`` is false. Safe from any thread (the vocabulary is
        read-only)."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (llama_cpp.llama_token * capacity)()
        n = llama_cpp.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_bos, special)
        if n < 0:  # never for UTF-8 input (a token covers at least one byte), but be exact
            capacity = -n
            buf = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_bos, special
            )
        return list(buf[:n])

    def piece(self, token: int, special: bool = False) -> bytes:
        """The bytes of one token (special tokens render as nothing unless
        ``special``). Engine thread only."""
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece, 256, 0, special)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, big, -n, 0, special)
            return big.raw[:n]
        return self._piece.raw[:n]

    def single_token(self, text: str) -> int | None:
        """The token that is exactly ``text`` in this vocabulary (special tokens
        included), or None when ``text`` takes several tokens or none."""
        tokens = self.tokenize(text, add_bos=False)
        if len(tokens) != 1:
            return None
        buffer = ctypes.create_string_buffer(256)  # any thread: not the engine's buffer
        n = llama_cpp.llama_token_to_piece(self.vocab, tokens[0], buffer, 256, 0, True)
        return tokens[0] if 0 <= n and buffer.raw[:n] == text.encode() else None

    def detokenize(self, tokens: Sequence[int]) -> str:
        arr = (llama_cpp.llama_token * len(tokens))(*tokens)
        capacity = max(64, len(tokens) * 16)
        buf = ctypes.create_string_buffer(capacity)
        n = llama_cpp.llama_detokenize(self.vocab, arr, len(tokens), buf, capacity, False, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_detokenize(self.vocab, arr, len(tokens), buf, -n, False, False)
        return buf.raw[:n].decode("utf-8", errors="replace")

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_model_free(self._ptr)
            self._ptr = None


def load_model(name: str, path: Path, offload: Offload | None = None, gpu_layers: int = 0) -> Model:
    """The weights of the model ``name`` at ``path``; ``model_load_failed`` naming it."""
    try:
        return Model(path, offload=offload, gpu_layers=gpu_layers)
    except ShimmyError as exc:
        raise ShimmyError(
            "model_load_failed", f"Model '{name}' failed to load", exc.details
        ) from exc


def context_per_sequence(requested: int, trained: int) -> int:
    """Tokens a sequence may hold: ``requested`` (0: the model's trained length),
    never more than the model was trained for, never less than 64."""
    return max(64, min(requested, trained)) if requested > 0 else trained


def _context_params(
    *, n_ctx: int, n_batch: int, n_seq: int, threads: int, offload: Offload | None = None
) -> Any:
    """llama.cpp's context parameters as shimmy sets them for every context: one
    micro-batch per batch, the same threads for prompts and generation, no perf
    counters, and the offload's flash attention and KV cache types."""
    offload = offload or Offload()
    params = llama_cpp.llama_context_default_params()
    params.flash_attn_type = offload.flash_attn
    params.type_k, params.type_v = offload.type_ids()
    params.n_ctx = n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = n_seq
    params.n_threads = threads
    params.n_threads_batch = threads
    params.no_perf = True
    return params


class Context:
    """A llama.cpp context holding ``n_seq`` sequences, each in its own KV stream."""

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int,
        n_seq: int,
        n_batch: int,
        threads: int,
        offload: Offload | None = None,
    ) -> None:
        params = _context_params(
            n_ctx=n_ctx, n_batch=n_batch, n_seq=n_seq, threads=threads, offload=offload
        )
        # A KV stream per sequence: each attends only to its own cells, so a
        # request's output does not depend on what else runs beside it (with a
        # unified buffer the masked attention sums over every sequence's cells
        # and greedy outputs drift), and llama.cpp says it is faster when the
        # sequences share no long prefix.
        params.kv_unified = False
        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise ShimmyError(
                "model_load_failed",
                "llama.cpp could not create a context",
                f"{n_ctx} tokens for {n_seq} sequences: not enough memory?",
            )
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ptr))
        self.n_batch = n_batch
        self.memory = llama_cpp.llama_get_memory(self._ptr)
        self.batch = Batch(n_batch + n_seq)

    @property
    def ptr(self) -> Any:
        return self._ptr

    def decode(self) -> None:
        result = compute.run(llama_cpp.llama_decode, self._ptr, self.batch.raw)
        if result != 0:
            # 1: no KV slot for the batch; <0: a hard error. Either way this step failed.
            raise ShimmyError("generation_failed", "llama.cpp failed to decode", f"code {result}")

    def logits(self, index: int, n_vocab: int) -> Any:
        """The logits at batch position ``index`` of the last decode, as a numpy
        view (valid until the next decode)."""
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self._ptr, index)
        return np.ctypeslib.as_array(pointer, shape=(n_vocab,))

    def copy_sequence(self, source: int, target: int) -> bool:
        """Make ``target`` hold what ``source`` holds, now, by way of host memory;
        false if llama.cpp refused (``target``'s state is then unknown).

        Not ``llama_memory_seq_cp``: between two sequences' KV streams it copies
        the whole stream (every cell, however few are used) and only at the next
        decode, until which reading or writing either sequence's state (saving a
        finished one to the prompt cache, restoring another into it) would see or
        be overwritten by the wrong one."""
        try:
            state = self.save_sequence(source)
        except ShimmyError:
            return False
        return self.restore_sequence(target, state)

    def forget(self, seq: int, start: int) -> None:
        """Drop the cached tokens of ``seq`` from position ``start`` on."""
        llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1)

    def save_sequence(self, seq: int) -> Any:
        """A copy of the KV state of ``seq`` in host memory (a ctypes byte array,
        see :func:`host_buffer`)."""
        size = llama_cpp.llama_state_seq_get_size(self._ptr, seq)
        data = host_buffer(size)
        written = llama_cpp.llama_state_seq_get_data(self._ptr, data, size, seq)
        if written != size:
            raise ShimmyError("generation_failed", "llama.cpp could not copy a sequence")
        return data

    def restore_sequence(self, seq: int, data: Any) -> bool:
        """Replace the KV state of ``seq`` with one :meth:`save_sequence` took."""
        read: int = llama_cpp.llama_state_seq_set_data(self._ptr, data, len(data), seq)
        return read == len(data)

    def close(self) -> None:
        self.batch.close()
        if self._ptr:
            llama_cpp.llama_free(self._ptr)
            self._ptr = None


def host_buffer(size: int) -> Any:
    """A zeroed ctypes byte array of ``size`` bytes in an anonymous memory mapping
    of its own, given back to the system the moment the array is dropped.

    Saved KV states are megabytes each (24 MB for 1,000 tokens of SmolLM2), and
    the prompt cache drops them in any order. From malloc, glibc keeps a freed
    block in its heap while newer blocks sit above it, so a server that had
    saved and dropped conversations for a while held 20 MB more than its cache
    did (bench/RESULTS.md, "Servers compared"); a mapping has no neighbours."""
    if size <= 0:
        return (ctypes.c_uint8 * 0)()
    # The array keeps the mapping alive (from_buffer holds a reference to it).
    return (ctypes.c_uint8 * size).from_buffer(mmap.mmap(-1, size))


class EmbeddingContext:
    """A llama.cpp context in embedding mode: one input at a time, pooled by
    llama.cpp into one vector (``pooling_type`` is llama.cpp's enum, never none)."""

    def __init__(self, model: Model, *, n_ctx: int, pooling_type: int, threads: int) -> None:
        # Pooling reads whole sequences: one input must fit one micro-batch.
        params = _context_params(n_ctx=n_ctx, n_batch=n_ctx, n_seq=1, threads=threads)
        params.embeddings = True
        params.pooling_type = pooling_type
        self._ptr = llama_cpp.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise ShimmyError(
                "model_load_failed",
                "llama.cpp could not create an embedding context",
                f"{n_ctx} tokens: not enough memory?",
            )
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ptr))
        self.n_embd = int(llama_cpp.llama_model_n_embd(model.ptr))
        self._memory = llama_cpp.llama_get_memory(self._ptr)
        self._batch = Batch(n_ctx)

    def embed(self, tokens: Sequence[int]) -> list[float]:
        """The pooled vector of ``tokens`` (at most ``n_ctx`` of them), not normalized."""
        llama_cpp.llama_memory_clear(self._memory, True)
        self._batch.clear()
        for position, token in enumerate(tokens):
            # Every input token is an output in embedding mode (llama.cpp would
            # override the flags otherwise, with a warning per input).
            self._batch.add(token, position, 0, True)
        result = compute.run(llama_cpp.llama_decode, self._ptr, self._batch.raw)
        if result != 0:
            raise ShimmyError("generation_failed", "Embedding failed", f"llama.cpp code {result}")
        vector = llama_cpp.llama_get_embeddings_seq(self._ptr, 0)
        if not vector:
            raise ShimmyError("generation_failed", "Embedding failed", "no pooled vector")
        return list(vector[: self.n_embd])

    def close(self) -> None:
        self._batch.close()
        if self._ptr:
            llama_cpp.llama_free(self._ptr)
            self._ptr = None


class Batch:
    """A reusable llama_batch; each token belongs to exactly one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.raw = llama_cpp.llama_batch_init(capacity, 0, 1)
        self._token = self.raw.token
        self._pos = self.raw.pos
        self._n_seq_id = self.raw.n_seq_id
        self._seq_id = self.raw.seq_id
        self._logits = self.raw.logits
        self.n = 0

    def clear(self) -> None:
        self.n = 0
        self.raw.n_tokens = 0

    def add(self, token: int, pos: int, seq: int, want_logits: bool) -> int:
        """Append one token; returns its index (where its logits will be)."""
        i = self.n
        self._token[i] = token
        self._pos[i] = pos
        self._n_seq_id[i] = 1
        self._seq_id[i][0] = seq
        self._logits[i] = want_logits
        self.n = i + 1
        self.raw.n_tokens = self.n
        return i

    @property
    def room(self) -> int:
        return self.capacity - self.n

    def close(self) -> None:
        if self.raw is not None:
            llama_cpp.llama_batch_free(self.raw)
            self.raw = None


def _tokens_kept_after_penalties(s: SamplerSettings) -> int | None:
    """How many of the best tokens the chain after the penalties can pick from;
    None when that is not bounded (no top-k) or when a penalty can raise logits."""
    if s.repeat_penalty < 1.0 or s.frequency_penalty < 0.0 or s.presence_penalty < 0.0:
        return None  # a penalty that raises logits can lift any token to the top
    if s.temperature <= 0:
        return 1  # greedy
    return s.top_k if s.top_k > 0 else None


class Sampler:
    """One request's sampler chain, as llama.cpp's server builds it: grammar,
    penalties, then greedy or top-k / top-p / min-p / temperature / seeded draw.

    llama.cpp's penalties look up every token of the vocabulary in their table of
    recent tokens: for SmolLM2's 49,152 tokens that is three times the cost of the
    rest of the chain, paid for every token of every stream while llama.cpp's
    threads wait. When the penalties can only lower logits and the chain keeps at
    most k tokens afterwards, a top-(k + penalty_last_n) cut before them changes
    nothing: at most penalty_last_n distinct tokens are penalised, so a token
    outside that cut still has k unpenalised tokens above it. The cut makes the
    penalties cost as little as the rest. ``prefilter=False`` builds the plain
    chain (the tests compare the two)."""

    def __init__(
        self,
        model: Model,
        settings: SamplerSettings,
        prompt: Sequence[int],
        *,
        prefilter: bool = True,
    ) -> None:
        self._ptr = llama_cpp.llama_sampler_chain_init(
            llama_cpp.llama_sampler_chain_default_params()
        )
        if settings.logit_bias:
            # First: a bias can lift a token into the cuts that follow.
            biases = (llama_cpp.llama_logit_bias * len(settings.logit_bias))()
            for entry, (token, bias) in zip(biases, settings.logit_bias, strict=True):
                entry.token = token
                entry.bias = bias
            self._add(llama_cpp.llama_sampler_init_logit_bias(model.n_vocab, len(biases), biases))
        if settings.grammar is not None:
            # Parsed on the big-stack grammar thread, never on this one (the
            # engine's): see shimmy/models/grammar.py.
            try:
                grammar = init_grammar_sampler(
                    model.vocab, settings.grammar, settings.grammar_trigger_tokens
                )
            except BaseException:
                self.close()
                raise
            self._add(grammar)
        s = settings
        neutral = s.repeat_penalty == 1.0 and s.frequency_penalty == 0.0 == s.presence_penalty
        if not neutral and s.penalty_last_n > 0:
            penalties = llama_cpp.llama_sampler_init_penalties(
                model.n_vocab,
                s.penalty_last_n,
                s.repeat_penalty,
                s.frequency_penalty,
                s.presence_penalty,
            )
            # The prompt's tail counts as "recent tokens" for the penalties (it
            # must not reach the grammar, which only sees generated text).
            for token in prompt[-s.penalty_last_n :]:
                llama_cpp.llama_sampler_accept(penalties, token)
            kept = _tokens_kept_after_penalties(s)
            if prefilter and kept is not None and s.penalty_last_n > 0:
                self._add(llama_cpp.llama_sampler_init_top_k(kept + s.penalty_last_n))
            self._add(penalties)
        if s.temperature <= 0:
            self._add(llama_cpp.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                self._add(llama_cpp.llama_sampler_init_top_k(s.top_k))
            if s.top_p < 1.0:
                self._add(llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
            if s.min_p > 0.0:
                self._add(llama_cpp.llama_sampler_init_min_p(s.min_p, 1))
            self._add(llama_cpp.llama_sampler_init_temp(s.temperature))
            self._add(llama_cpp.llama_sampler_init_dist(s.seed & 0xFFFFFFFF))

    def _add(self, sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(self._ptr, sampler)

    def sample(self, context: Context, index: int) -> int:
        """Sample from the logits of batch position ``index`` (and accept the token)."""
        return int(llama_cpp.llama_sampler_sample(self._ptr, context.ptr, index))

    def close(self) -> None:
        if self._ptr:
            llama_cpp.llama_sampler_free(self._ptr)
            self._ptr = None


def log_probabilities(logits: Any, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """``token``'s log-probability under the softmax of ``logits``, and the ``top``
    most likely tokens with theirs, most likely first."""
    import numpy as np

    values = logits.astype(np.float64)
    peak = float(values.max())
    log_total = peak + float(np.log(np.exp(values - peak).sum()))
    best: list[tuple[int, float]] = []
    if top > 0:
        candidates = np.argpartition(-values, min(top, len(values) - 1))[:top]
        ranked = sorted(candidates, key=lambda i: -values[i])
        best = [(int(i), float(values[i]) - log_total) for i in ranked]
    return float(values[token]) - log_total, best
