"""How many of a model's layers go to the GPUs (``--gpu-layers``, ``--rpc``),
and so which of its memory is the host's and which the GPUs'.

The manager asks :func:`placement_for` once before loading: RPC workers are
added first (their devices then count as GPUs), and "auto" offloads as many
layers as fit in the devices' free memory. The offloaded layers' weights and
KV cache then count against the GPUs' free memory, the rest against the host's
(memory.py's ``plan_room``), so a model mostly on a GPU is not refused for
host memory it will never use. Asking for GPU layers on a build with no GPU
backend runs on the CPU with one warning per process, not an error, so a config
file shared between machines works on each; there, everything is the host's,
as before.

:func:`place` and :func:`split_estimate` are pure (the devices are arguments),
so the arithmetic is tested without a GPU.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shimmy.models.gguf import GGUFInfo
from shimmy.models.memory import MemoryEstimate
from shimmy.models.offload import Offload

if TYPE_CHECKING:
    from shimmy.models.backends import Device

log = logging.getLogger(__name__)

_warned = threading.Event()
NO_GPU_WARNING = (
    "GPU layers were asked for, but this llama.cpp build has no GPU backend: "
    "running on the CPU. scripts/setup builds llama-cpp-python with CUDA when nvcc "
    "is found (or as SHIMMY_GPU=cuda|vulkan|metal says)."
)


@dataclass(frozen=True)
class Placement:
    """Where a loaded model's memory goes: ``gpu_layers`` (llama.cpp's
    ``n_gpu_layers``; -1: all) with their share of the weights and KV cache on
    the GPUs (``gpu_bytes``), everything else in host memory (``host_bytes``)."""

    gpu_layers: int
    host_bytes: int
    gpu_bytes: int = 0


def split_estimate(estimate: MemoryEstimate, n_layer: int, gpu_layers: int) -> Placement:
    """``estimate`` split between host and GPUs with ``gpu_layers`` of the model's
    ``n_layer`` layers offloaded.

    As llama.cpp lays a model out, the last ``gpu_layers`` repeating layers go
    to the GPUs, with their KV cache, and the output layer too once every
    repeating layer has (``n_layer + 1`` is all); the token embeddings, the
    compute buffers the host steps through and the runtime stay in host memory.
    The weights are taken as ``n_layer + 1`` equal shares (the repeating layers
    and the output layer), as "auto" counts them (offload.py). A header without
    a layer count cannot be split: all of it is the host's, the most it may need.
    """
    if gpu_layers == 0 or n_layer <= 0:
        return Placement(gpu_layers, estimate.total)
    offloaded = n_layer + 1 if gpu_layers < 0 else min(gpu_layers, n_layer + 1)
    weights = estimate.weights * offloaded // (n_layer + 1)
    kv_cache = estimate.kv_cache * min(offloaded, n_layer) // n_layer
    on_gpus = weights + kv_cache
    return Placement(gpu_layers, estimate.total - on_gpus, on_gpus)


def place(
    info: GGUFInfo, estimate: MemoryEstimate, offload: Offload, gpus: Sequence[Device]
) -> Placement:
    """The placement of the model ``info`` describes, whose memory ``estimate``
    (memory.py) gives, with ``gpus`` the devices layers can go to: none on the
    CPU, the asked count, or with "auto" as many as fit in their free memory."""
    if not gpus:
        return Placement(0, estimate.total)
    n_layer = layer_count(info)
    layers = offload.layers_to_offload(
        n_layer=n_layer,
        weights_bytes=estimate.weights,
        kv_bytes=estimate.kv_cache,
        free_bytes=sum(d.free_bytes for d in gpus),
    )
    return split_estimate(estimate, n_layer, layers)


def placement_for(info: GGUFInfo, estimate: MemoryEstimate, offload: Offload) -> Placement:
    """:func:`place` with this process's devices: the RPC workers ``offload``
    names are added first; GPU layers asked of a build with none warn once."""
    from shimmy.models.backends import add_rpc_servers, offload_devices

    if offload.rpc:
        add_rpc_servers(offload.rpc)
    gpus = offload_devices()
    if not gpus and offload.asks_for_gpu and not _warned.is_set():
        _warned.set()
        log.warning(NO_GPU_WARNING)
    return place(info, estimate, offload, gpus)


def layer_count(info: GGUFInfo) -> int:
    """The model's repeating layers (``ARCH.block_count``; 0 when the header has none)."""
    value = info.metadata.get(f"{info.architecture or ''}.block_count")
    return max(0, value) if isinstance(value, int) and not isinstance(value, bool) else 0
