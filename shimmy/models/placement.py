"""How many of a model's layers go to the GPUs (``--gpu-layers``, ``--rpc``).

The engine asks :func:`gpu_layers_for` before loading: RPC workers are added
first (their devices then count as GPUs), and "auto" offloads as many layers
as fit in the devices' free memory. Asking for GPU layers on a build with no
GPU backend runs on the CPU with one warning per process, not an error, so a
config file shared between machines works on each.
"""

from __future__ import annotations

import logging
import threading

from shimmy.models.gguf import GGUFInfo
from shimmy.models.memory import MemoryEstimate
from shimmy.models.offload import Offload

log = logging.getLogger(__name__)

_warned = threading.Event()
NO_GPU_WARNING = (
    "GPU layers were asked for, but this llama.cpp build has no GPU backend: "
    "running on the CPU. scripts/setup builds llama-cpp-python with CUDA when nvcc "
    "is found (or as SHIMMY_GPU=cuda|vulkan|metal says)."
)


def gpu_layers_for(info: GGUFInfo, estimate: MemoryEstimate, offload: Offload) -> int:
    """llama.cpp's ``n_gpu_layers`` for the model ``info`` describes, whose
    weights and KV cache take what ``estimate`` (memory.py) says."""
    from shimmy.models.backends import add_rpc_servers, offload_devices

    if offload.rpc:
        add_rpc_servers(offload.rpc)
    gpus = offload_devices()
    if not gpus:
        if offload.asks_for_gpu and not _warned.is_set():
            _warned.set()
            log.warning(NO_GPU_WARNING)
        return 0
    return offload.layers_to_offload(
        n_layer=_int(info.metadata.get(f"{info.architecture or ''}.block_count")),
        weights_bytes=estimate.weights,
        kv_bytes=estimate.kv_cache,
        free_bytes=sum(d.free_bytes for d in gpus),
    )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
