"""What a model will take in host memory before it is loaded, and how much
memory shimmy may use (``--memory-limit``, else the RAM available now, or less
under the limit of the process's cgroup: cgroup.py).

The estimate is made from the GGUF header alone, so the manager can refuse or
make room before llama.cpp allocates anything (a load that runs out of memory
is a kill by the kernel, not an error). Its parts, as llama.cpp 0.3.36 lays a
CPU model out (measured with SmolLM2-135M; the figures are in README.md):

- **weights**: the tensor data, mapped from the file and read whole at load;
- **KV cache**: every slot's context at the cache types (``--cache-type-k/-v``),
  allocated and cleared when the context is made;
- **compute**: the work buffers one decode step touches: per token of a batch
  about ``4 * n_ff + 3 * n_embd`` floats, a logits row per slot, and with
  flash attention off the attention scores of a whole slot's context;
- **runtime**: the vocabulary's tables and llama.cpp's fixed allocations.

llama.cpp reserves its compute buffer for the worst step (a logits row for
every token of a batch: 98 MiB for SmolLM2 at batch 512), but shimmy asks for
the logits of a sequence's last token only, so most of that reservation is
never touched and never becomes resident; the estimate counts what a step
does touch. Layers offloaded to a GPU take their weights and KV cache out of
host memory: placement.py splits the estimate, and :func:`plan_room` checks the
host part against the RAM (or the cgroup's limit: cgroup.py) and the GPU part
against the GPUs' free memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from shimmy.errors import ShimmyError
from shimmy.models.cgroup import CgroupMemory, cgroup_memory
from shimmy.models.offload import FLASH_ATTN

if TYPE_CHECKING:
    from shimmy.config import Settings
    from shimmy.models.backends import Device
    from shimmy.models.discovery import ModelEntry
    from shimmy.models.engine import EngineOptions
    from shimmy.models.gguf import GGUFInfo

MIB = 1024 * 1024
# Fixed allocations of a llama.cpp context and the bytes per vocabulary entry of
# its tokenizer tables (strings, maps, merges): fitted to SmolLM2's 49,152 tokens.
RUNTIME_FIXED_BYTES = 4 * MIB
RUNTIME_BYTES_PER_TOKEN = 320
DEFAULT_VOCAB = 32_000  # a header without a token list (rare): a common size

# The largest --memory-limit taken (1 PiB): a larger figure is a typo.
MAX_MEMORY_LIMIT = 1 << 50
MIN_MEMORY_LIMIT = 16 * MIB
MAX_LOADED_MODELS = 1000
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)(b?)\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}


@dataclass(frozen=True)
class MemoryEstimate:
    """Host bytes a model needs loaded, by part (see the module docstring)."""

    weights: int
    kv_cache: int
    compute: int
    runtime: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.runtime


def estimate_memory(
    info: GGUFInfo, options: EngineOptions, *, weights_bytes: int | None = None
) -> MemoryEstimate:
    """What the model ``info`` describes will take loaded with ``options``.
    ``weights_bytes``: the tensor data of every part of a split model (the
    header of the first part describes only its own)."""
    from shimmy.models.llamacpp import context_per_sequence

    arch = info.architecture or ""
    meta = info.metadata

    def number(key: str, default: int = 0) -> int:
        value = meta.get(f"{arch}.{key}")
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return default
        return value

    n_layer = number("block_count")
    n_embd = number("embedding_length")
    n_head = number("attention.head_count", 1)
    n_head_kv = number("attention.head_count_kv", n_head)
    head_k = number("attention.key_length", n_embd // n_head)
    head_v = number("attention.value_length", n_embd // n_head)
    n_ff = number("feed_forward_length", 4 * n_embd)
    n_vocab = info.vocab_size or number("vocab_size", DEFAULT_VOCAB)

    trained = info.context_length or options.ctx_size
    per_slot = context_per_sequence(options.ctx_size, trained)
    parallel = max(1, options.parallel)
    offload = options.offload
    kv = offload.kv_bytes_per_token(n_layer, n_head_kv * head_k, n_head_kv * head_v)
    kv_cache = kv * per_slot * parallel

    n_ubatch = max(1, min(options.batch_size, per_slot * parallel))
    compute = n_ubatch * 4 * (4 * n_ff + 3 * n_embd) + parallel * n_vocab * 4
    if offload.flash_attn == FLASH_ATTN["off"]:
        # Without flash attention a step holds every head's scores over a slot's cache.
        compute += n_ubatch * per_slot * n_head * 4
    runtime = RUNTIME_FIXED_BYTES + n_vocab * RUNTIME_BYTES_PER_TOKEN
    weights = weights_bytes if weights_bytes is not None else info.tensor_bytes or 0
    return MemoryEstimate(weights=weights, kv_cache=kv_cache, compute=compute, runtime=runtime)


def estimate_entry(entry: ModelEntry, options: EngineOptions) -> MemoryEstimate | None:
    """:func:`estimate_memory` for a listed model (None for one without a header)."""
    info = entry.info
    if info is None:
        return None
    single = len(entry.parts) <= 1 and info.tensor_bytes is not None
    return estimate_memory(info, options, weights_bytes=info.tensor_bytes if single else entry.size)


def file_needs(size: int) -> int:
    """A rough need for a model file of ``size`` bytes before its header is read
    (the Hub tab, `shimmy pull`, a suggestion): the weights mapped whole and the
    KV cache of shimmy's default slots, roughly a quarter of the weights again
    (at least 256 MB)."""
    return size + max(256 * 1000**2, size // 4)


def parse_size(raw: str | int, *, what: str = "--memory-limit") -> int:
    """``512MB``, ``8GB``, ``1.5GiB``, ``800M`` or a count of bytes, as bytes.

    Units are binary (a "GB" of memory is 1024**3 bytes here, as RAM is sold and
    as ``free -g`` counts). Anything else is an ``invalid_request`` that says
    what is accepted."""
    text = str(raw)
    match = _SIZE.match(text) if len(text) <= 32 else None
    if match is None:
        raise ShimmyError(
            "invalid_request",
            f"Bad {what} '{text[:40]}'",
            "a size like 512MB, 8GB or 1.5GiB (or a number of bytes)",
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * 1024 ** _POWERS[unit])
    if not MIN_MEMORY_LIMIT <= value <= MAX_MEMORY_LIMIT:
        raise ShimmyError(
            "invalid_request",
            f"Bad {what} '{text}'",
            f"from {MIN_MEMORY_LIMIT // MIB}MB to {MAX_MEMORY_LIMIT // 1024**5}PB",
        )
    return value


def memory_limit_bytes(raw: str) -> int | None:
    """The ``memory_limit`` setting in bytes; None when it is empty (no limit)."""
    return parse_size(raw) if str(raw).strip() else None


def check_max_loaded_models(value: int) -> int:
    """``--max-loaded-models``: 0 (no cap) to MAX_LOADED_MODELS."""
    if not 0 <= value <= MAX_LOADED_MODELS:
        raise ShimmyError(
            "invalid_request",
            f"Bad --max-loaded-models {value}",
            f"from 0 (no cap) to {MAX_LOADED_MODELS}",
        )
    return value


def headroom_bytes(total: int) -> int:
    """Memory left to the rest of the machine when no --memory-limit is set: a
    tenth of the RAM, at least 256 MiB and at most 2 GiB."""
    return min(2048 * MIB, max(256 * MIB, total // 10))


@dataclass(frozen=True)
class SystemMemory:
    """The memory this process may use now: the RAM's figures, as the kernel
    counts them (page cache that can be dropped is available), bounded by the
    limit of the process's cgroup where that is tighter (cgroup.py)."""

    ram_available: int
    ram_total: int
    cgroup: CgroupMemory | None = None

    @property
    def available(self) -> int:
        if self.cgroup is None:
            return self.ram_available
        return min(self.ram_available, self.cgroup.available)

    @property
    def total(self) -> int:
        if self.cgroup is None:
            return self.ram_total
        return min(self.ram_total, self.cgroup.limit)

    @property
    def cgroup_bounds(self) -> bool:
        """Whether the cgroup's limit, not the RAM, is what bounds the figures."""
        cgroup = self.cgroup
        return cgroup is not None and (
            cgroup.available < self.ram_available or cgroup.limit < self.ram_total
        )


def system_memory(root: Path = Path("/")) -> SystemMemory:
    """The RAM now, and the cgroup limit read under ``root`` (cgroup.py)."""
    import psutil

    memory = psutil.virtual_memory()
    return SystemMemory(int(memory.available), int(memory.total), cgroup_memory(root))


@dataclass(frozen=True)
class Resident:
    """A loaded model as the budget sees it."""

    name: str
    bytes: int  # host memory
    evictable: bool  # idle, with no request being prepared for it
    last_used: float  # time.monotonic() of its last request
    gpu_bytes: int = 0  # its offloaded layers' weights and KV cache, on the GPUs


@dataclass(frozen=True)
class Budget:
    """What may be used now: the --memory-limit (None: none), the memory
    available (RAM, or less under a cgroup limit) less the headroom left to the
    rest of the machine, and the GPUs with their free memory."""

    limit: int | None
    available: int
    headroom: int
    max_models: int = 0  # 0: no cap on the count
    cgroup_limit: int | None = None  # the cgroup's limit, when it bounds ``available``
    gpus: tuple[Device, ...] = ()  # asked for only when layers go to them

    @property
    def gpu_free(self) -> int:
        return sum(d.free_bytes for d in self.gpus)

    @classmethod
    def now(cls, limit: int | None, max_models: int = 0, gpus: Sequence[Device] = ()) -> Budget:
        memory = system_memory()
        cgroup_limit = memory.cgroup.limit if memory.cgroup and memory.cgroup_bounds else None
        return cls(
            limit,
            memory.available,
            headroom_bytes(memory.total),
            max_models,
            cgroup_limit=cgroup_limit,
            gpus=tuple(gpus),
        )

    def describe_available(self) -> str:
        """What ``available`` is: of the RAM, or under the cgroup's limit."""
        from shimmy.units import format_gb

        if self.cgroup_limit is None:
            return f"{format_gb(self.available)} of RAM available"
        return (
            f"{format_gb(self.available)} available under the cgroup memory limit "
            f"of {format_gb(self.cgroup_limit)}"
        )


def plan_room(
    name: str,
    need: int,
    resident: list[Resident],
    budget: Budget,
    *,
    loading: tuple[int, ...] = (),
    need_gpu: int = 0,
    loading_gpu: int = 0,
) -> tuple[str, ...]:
    """The loaded models to unload, least recently used first, so that ``name``
    (needing ``need`` bytes of host memory and ``need_gpu`` of GPU memory) fits
    the budget beside the rest; ``loading``: the host bytes promised to each
    load still under way, ``loading_gpu``: the GPU bytes promised to them all.
    Unloads nothing it need not: when only GPU memory is short, only models
    with layers on the GPUs make way.

    Raises ``server_busy`` (503) when it would fit once busy models are done
    and unloaded, else ``model_load_failed``, each with both figures."""
    from shimmy.units import format_gb

    used = sum(r.bytes for r in resident) + sum(loading)
    room_limit = budget.limit - used if budget.limit is not None else None
    room_ram = budget.available - budget.headroom - sum(loading)
    count = len(resident) + len(loading)

    def room(freed: int) -> int:
        ram = room_ram + freed
        return ram if room_limit is None else min(ram, room_limit + freed)

    def gpu_room(freed: int) -> int:
        # The GPUs' free memory already leaves out what loaded models hold there.
        return budget.gpu_free - loading_gpu + freed

    def full(evicted: int) -> bool:
        return budget.max_models > 0 and count - evicted >= budget.max_models

    def host_fits(freed: int, evicted: int) -> bool:
        return need <= room(freed) and not full(evicted)

    def gpu_fits(freed: int) -> bool:
        return need_gpu <= 0 or need_gpu <= gpu_room(freed)

    idle = sorted((r for r in resident if r.evictable), key=lambda r: r.last_used)
    evict: list[str] = []
    freed = freed_gpu = 0
    for candidate in idle:
        if host_fits(freed, len(evict)) and gpu_fits(freed_gpu):
            break
        if host_fits(freed, len(evict)) and candidate.gpu_bytes <= 0:
            continue  # only GPU memory is short, and this one holds none
        evict.append(candidate.name)
        freed += candidate.bytes
        freed_gpu += candidate.gpu_bytes
    if host_fits(freed, len(evict)) and gpu_fits(freed_gpu):
        return tuple(evict)

    busy = [r for r in resident if not r.evictable]
    busy_bytes = sum(r.bytes for r in busy)
    if full(len(evict)):
        message = (
            f"Model '{name}' cannot load: {budget.max_models} model(s) are loaded "
            "(--max-loaded-models) and none is idle"
        )
        details = "loaded and busy: " + ", ".join(r.name for r in busy)
        code = "server_busy" if busy else "model_load_failed"
    elif need > room(freed):
        could_fit = need <= room(freed + busy_bytes)
        free = max(0, room(freed))
        message = (
            f"Model '{name}' needs about {format_gb(need)} of memory, "
            f"but only {format_gb(free)} is free for it"
        )
        parts = []
        if budget.limit is not None:
            parts.append(f"--memory-limit {format_gb(budget.limit)}")
        parts.append(
            f"{budget.describe_available()}, "
            f"{format_gb(budget.headroom)} of it kept for the rest of the machine"
        )
        if resident:
            loaded = ", ".join(f"{r.name} {format_gb(r.bytes)}" for r in resident)
            parts.append(f"loaded: {loaded}")
        if busy and could_fit:
            parts.append("busy models may free memory when their requests end")
        details = "; ".join(parts)
        code = "server_busy" if busy and could_fit else "model_load_failed"
    else:
        could_fit = gpu_fits(freed_gpu + sum(r.gpu_bytes for r in busy))
        message = (
            f"Model '{name}' needs about {format_gb(need_gpu)} of GPU memory for the "
            f"layers it offloads, but only {format_gb(max(0, gpu_room(freed_gpu)))} "
            "is free on the GPUs"
        )
        gpus = ", ".join(
            f"{d.name} {format_gb(d.free_bytes)} free of {format_gb(d.total_bytes)}"
            for d in budget.gpus
        )
        parts = [f"GPUs: {gpus or 'none'}"]
        on_gpus = [r for r in resident if r.gpu_bytes > 0]
        if on_gpus:
            loaded = ", ".join(f"{r.name} {format_gb(r.gpu_bytes)}" for r in on_gpus)
            parts.append(f"loaded on the GPUs: {loaded}")
        if busy and could_fit:
            parts.append("busy models may free GPU memory when their requests end")
        parts.append("offload fewer layers (--gpu-layers N, or auto: as many as fit)")
        details = "; ".join(parts)
        code = "server_busy" if busy and could_fit else "model_load_failed"
    headers = {"Retry-After": "5"} if code == "server_busy" else None
    raise ShimmyError(code, message, details, headers=headers)


def check_memory_settings(settings: Settings) -> tuple[int | None, int]:
    """The ``memory_limit`` (bytes, None: none) and ``max_loaded_models`` settings,
    checked; ``invalid_request`` names a bad one."""
    return memory_limit_bytes(settings.memory_limit), check_max_loaded_models(
        settings.max_loaded_models
    )
