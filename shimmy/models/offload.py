"""Where a model's layers and KV cache live: GPU layers, flash attention, cache
types, the GPUs' split and RPC workers (``--gpu-layers``, ``--flash-attn``,
``--cache-type-k/-v``, ``--main-gpu``, ``--tensor-split``, ``--rpc``).

Parsed and checked once from the settings; llamacpp.py turns them into
llama.cpp's model and context parameters. Pure: nothing here touches llama.cpp,
so the checks and the "auto" layer count are tested without a GPU.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from shimmy.config import Settings
from shimmy.errors import ShimmyError

# ggml_type ids (ggml.h) of the KV cache types llama.cpp accepts, with each
# type's bytes per element (blocks of 32 for the quantized ones).
CACHE_TYPES: dict[str, tuple[int, float]] = {
    "f32": (0, 4.0),
    "f16": (1, 2.0),
    "bf16": (30, 2.0),
    "q8_0": (8, 34 / 32),
    "q4_0": (2, 18 / 32),
    "q4_1": (3, 20 / 32),
    "q5_0": (6, 22 / 32),
    "q5_1": (7, 24 / 32),
}
# enum llama_flash_attn_type
FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
GPU_LAYERS_WORDS = ("auto", "all")
MAX_GPU_LAYERS = 10_000
MAX_DEVICES = 16  # llama.cpp's LLAMA_MAX_DEVICES and GGML_RPC_MAX_SERVERS
# Left free on the GPUs by "auto": llama.cpp's compute buffers and what the
# driver and other programs hold (llama-server's --fit keeps 1 GiB by default).
AUTO_HEADROOM_BYTES = 1024 * 1024 * 1024

_ENDPOINT = re.compile(r"^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]{1,253}):(\d{1,5})$")


@dataclass(frozen=True)
class Offload:
    """The checked offload settings of this process (see :meth:`from_settings`)."""

    gpu_layers: int | None = None  # None: auto; -1: all; else that many layers
    flash_attn: int = FLASH_ATTN["auto"]
    type_k: str = "f16"
    type_v: str = "f16"
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    rpc: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Offload:
        """The settings' offload fields, checked; ``invalid_request`` names a bad one."""
        offload = cls(
            gpu_layers=parse_gpu_layers(settings.gpu_layers),
            flash_attn=_choice("flash_attn", settings.flash_attn, FLASH_ATTN),
            type_k=_cache_type("cache_type_k", settings.cache_type_k),
            type_v=_cache_type("cache_type_v", settings.cache_type_v),
            main_gpu=_bounded_int("main_gpu", settings.main_gpu, 0, MAX_DEVICES - 1),
            tensor_split=parse_tensor_split(settings.tensor_split),
            rpc=parse_rpc_servers(settings.rpc),
        )
        if offload.type_v not in {"f32", "f16", "bf16"} and offload.flash_attn == FLASH_ATTN["off"]:
            # llama.cpp cannot read a quantized V cache without flash attention.
            raise ShimmyError(
                "invalid_request",
                f"--cache-type-v {offload.type_v} needs flash attention",
                "use --flash-attn on or auto, or an f16 V cache",
            )
        return offload

    @property
    def asks_for_gpu(self) -> bool:
        """Whether the user asked for GPU layers (not auto, not 0)."""
        return self.gpu_layers is not None and self.gpu_layers != 0

    def type_ids(self) -> tuple[int, int]:
        """ggml type ids of the K and V caches."""
        return CACHE_TYPES[self.type_k][0], CACHE_TYPES[self.type_v][0]

    def kv_bytes_per_token(self, n_layer: int, n_embd_k: int, n_embd_v: int) -> int:
        """KV cache bytes per token at these cache types (every layer)."""
        k = n_embd_k * CACHE_TYPES[self.type_k][1]
        v = n_embd_v * CACHE_TYPES[self.type_v][1]
        return int(n_layer * (k + v))

    def layers_to_offload(
        self, *, n_layer: int, weights_bytes: int, kv_bytes: int, free_bytes: int
    ) -> int:
        """llama.cpp's ``n_gpu_layers`` for a model: the asked number, or with
        "auto" as many layers as fit in ``free_bytes`` of GPU memory (0 with no
        GPU), keeping the KV cache and AUTO_HEADROOM_BYTES free beside them."""
        if self.gpu_layers is not None:
            return self.gpu_layers
        if free_bytes <= 0 or n_layer <= 0:
            return 0
        room = free_bytes - AUTO_HEADROOM_BYTES - kv_bytes
        if room >= weights_bytes:
            return -1
        # The output layer counts as one more layer (n_layer + 1 is all).
        per_layer = max(1, weights_bytes // (n_layer + 1))
        return max(0, min(n_layer, room // per_layer))


def parse_gpu_layers(raw: str) -> int | None:
    """``auto`` -> None, ``all`` -> -1, a count -> itself; anything else refused."""
    text = str(raw).strip().lower()
    if text == "auto":
        return None
    if text == "all":
        return -1
    if text.isdigit() and int(text) <= MAX_GPU_LAYERS:
        return int(text)
    raise ShimmyError(
        "invalid_request",
        f"Bad --gpu-layers '{raw}'",
        f"a count of layers (0-{MAX_GPU_LAYERS}), auto or all",
    )


def parse_tensor_split(raw: tuple[str, ...] | str) -> tuple[float, ...]:
    """``3,1`` -> (3.0, 1.0): the share of the model for each GPU, in order."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    values: list[float] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not 0 <= value <= 1e6 or value != value:
            raise ShimmyError(
                "invalid_request",
                f"Bad --tensor-split value '{part}'",
                "non-negative numbers, like 3,1",
            )
        values.append(value)
    if len(values) > MAX_DEVICES:
        raise ShimmyError(
            "invalid_request", f"--tensor-split names more than {MAX_DEVICES} devices"
        )
    if values and sum(values) <= 0:
        raise ShimmyError("invalid_request", "--tensor-split needs a share above 0")
    return tuple(values)


def parse_rpc_servers(raw: tuple[str, ...] | str) -> tuple[str, ...]:
    """``HOST:PORT,...`` of RPC workers, checked; each named once."""
    parts = raw.split(",") if isinstance(raw, str) else raw
    servers: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        match = _ENDPOINT.match(part)
        if not match or not 1 <= int(match.group(1)) <= 65535:
            raise ShimmyError("invalid_request", f"Bad --rpc worker '{part[:100]}'", "HOST:PORT")
        if part not in servers:
            servers.append(part)
    if len(servers) > MAX_DEVICES:
        raise ShimmyError("invalid_request", f"--rpc names more than {MAX_DEVICES} workers")
    return tuple(servers)


def _choice(name: str, raw: str, choices: dict[str, int]) -> int:
    text = str(raw).strip().lower()
    if text not in choices:
        flag = "--" + name.replace("_", "-")
        raise ShimmyError("invalid_request", f"Bad {flag} '{raw}'", "one of " + ", ".join(choices))
    return choices[text]


def _cache_type(name: str, raw: str) -> str:
    text = str(raw).strip().lower()
    if text not in CACHE_TYPES:
        flag = "--" + name.replace("_", "-")
        raise ShimmyError(
            "invalid_request", f"Bad {flag} '{raw}'", "one of " + ", ".join(CACHE_TYPES)
        )
    return text


def _bounded_int(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        flag = "--" + name.replace("_", "-")
        raise ShimmyError("invalid_request", f"Bad {flag} {value}", f"from {low} to {high}")
    return value
