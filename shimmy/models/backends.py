"""ggml's compute devices, as llama.cpp sees them, and its RPC backend.

llama-cpp-python binds llama.h but not ggml's backend registry, so the few
functions shimmy needs (list the devices and their memory; add RPC servers;
run an RPC server) are declared here over the same ``libggml`` that llama.cpp
itself uses. Which devices exist depends on how llama-cpp-python was built:
the CPU always, CUDA/Vulkan/Metal GPUs when built with them (scripts/setup,
``SHIMMY_GPU``), and RPC when built with ``GGML_RPC`` (scripts/setup always
asks for it).
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any

from shimmy.errors import ShimmyError

# enum ggml_backend_dev_type (ggml-backend.h)
_DEVICE_KINDS = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel", 4: "meta"}

_lock = threading.Lock()
_lib: Any = None


@dataclass(frozen=True)
class Device:
    """One ggml device: its backend's name for it, what it is, and its memory."""

    name: str  # "CPU", "CUDA0", "RPC[127.0.0.1:50052]", ...
    description: str
    kind: str  # "cpu", "gpu", "igpu", "accel" or "meta"
    backend: str  # the backend (registry) it belongs to: "CPU", "CUDA", "RPC", ...
    free_bytes: int
    total_bytes: int
    handle: int  # ggml_backend_dev_t, for llama_model_params.devices


def _ggml() -> Any:
    """libggml with the registry functions declared (once per process)."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        lib = _llama_ggml()
        p, c_str, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t
        for name, args, result in (
            ("ggml_backend_dev_count", [], size),
            ("ggml_backend_dev_get", [size], p),
            ("ggml_backend_dev_name", [p], c_str),
            ("ggml_backend_dev_description", [p], c_str),
            ("ggml_backend_dev_type", [p], ctypes.c_int),
            ("ggml_backend_dev_backend_reg", [p], p),
            ("ggml_backend_dev_memory", [p, ctypes.POINTER(size), ctypes.POINTER(size)], None),
            ("ggml_backend_reg_name", [p], c_str),
            ("ggml_backend_reg_by_name", [c_str], p),
            ("ggml_backend_reg_dev_count", [p], size),
            ("ggml_backend_reg_dev_get", [p, size], p),
            ("ggml_backend_reg_get_proc_address", [p, c_str], p),
            ("ggml_backend_register", [p], None),
            ("ggml_backend_dev_by_type", [ctypes.c_int], p),
        ):
            function = getattr(lib, name)
            function.argtypes = args
            function.restype = result
        _lib = lib
        return lib


def _llama_ggml() -> Any:
    """The libggml that libllama itself is linked to.

    llama-cpp-python's wheel holds copies, not links, of each library
    (libggml.so, libggml.so.0, ...), and its own ``llama_cpp._ggml`` opens
    libggml.so: a second ggml with a registry of its own, so a device added
    there is one llama.cpp never sees. Opened by the soname libllama asks for,
    the dynamic loader hands back the copy already loaded for libllama."""
    import sys

    from shimmy.models.llama_bindings import llama_cpp  # loads libllama and its libggml

    if sys.platform.startswith("linux"):
        try:
            return ctypes.CDLL("libggml.so.0")
        except OSError:
            pass
    from llama_cpp._ggml import libggml

    del llama_cpp
    return libggml


def _init() -> Any:
    # llama_backend_init loads nothing in a static-backend build, but it is
    # what llama.cpp expects before its devices are used.
    from shimmy.models.llamacpp import init_backend

    init_backend()
    return _ggml()


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def _device(lib: Any, handle: int) -> Device:
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    reg = lib.ggml_backend_dev_backend_reg(handle)
    return Device(
        name=_text(lib.ggml_backend_dev_name(handle)),
        description=_text(lib.ggml_backend_dev_description(handle)),
        kind=_DEVICE_KINDS.get(int(lib.ggml_backend_dev_type(handle)), "other"),
        backend=_text(lib.ggml_backend_reg_name(reg)) if reg else "",
        free_bytes=int(free.value),
        total_bytes=int(total.value),
        handle=int(handle),
    )


def devices() -> list[Device]:
    """Every device llama.cpp can run on in this process (RPC servers once added)."""
    lib = _init()
    return [_device(lib, lib.ggml_backend_dev_get(i)) for i in range(lib.ggml_backend_dev_count())]


def offload_devices() -> list[Device]:
    """The devices that model layers can be offloaded to (GPUs and RPC servers)."""
    return [d for d in devices() if d.kind in {"gpu", "igpu"}]


def rpc_available() -> bool:
    """Whether this llama.cpp build has ggml's RPC backend (GGML_RPC)."""
    return bool(_init().ggml_backend_reg_by_name(b"RPC"))


def _rpc_function(name: str, prototype: Any) -> Any:
    lib = _init()
    reg = lib.ggml_backend_reg_by_name(b"RPC")
    if not reg:
        raise ShimmyError(
            "invalid_request",
            "This llama.cpp build has no RPC backend",
            "rebuild llama-cpp-python with GGML_RPC=ON: scripts/setup does",
        )
    address = lib.ggml_backend_reg_get_proc_address(reg, name.encode())
    if not address:
        raise ShimmyError("invalid_request", f"llama.cpp's RPC backend lacks {name}")
    return prototype(address)


_added_servers: dict[str, list[Device]] = {}

# ggml-rpc's wire format (ggml-rpc.cpp): a request is | command (1 byte) |
# size (u64) | data |, a reply | size (u64) | data |. HELLO (14) carries
# RPC_CONN_CAPS_SIZE (24) bytes of transport capabilities (zero: plain TCP) and
# is answered with the protocol's major, minor and patch version, a pad byte and
# the server's capabilities.
_RPC_HELLO = 14
_RPC_CAPS_SIZE = 24
_RPC_PROTO_MAJOR = 7  # ggml-rpc.h's RPC_PROTO_MAJOR_VERSION in llama-cpp-python 0.3.36
HANDSHAKE_TIMEOUT = 5.0


def check_rpc_worker(endpoint: str, timeout: float = HANDSHAKE_TIMEOUT) -> None:
    """Shake hands with the RPC worker at ``endpoint`` as ggml will.

    ggml aborts the whole process when a worker cannot be reached or answers
    with another protocol version, so shimmy asks first and turns either into
    a ``model_load_failed`` error that names the worker."""
    import socket
    import struct

    host, _, port = endpoint.rpartition(":")
    unreachable = ShimmyError(
        "model_load_failed",
        f"Cannot reach the RPC worker at {endpoint}",
        "is `shimmy worker` running there, and the port open?",
    )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
            sock.sendall(struct.pack("<BQ", _RPC_HELLO, _RPC_CAPS_SIZE) + bytes(_RPC_CAPS_SIZE))
            reply = b""
            while len(reply) < 8 + 4 + _RPC_CAPS_SIZE:
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
    except (OSError, ValueError):
        raise unreachable from None
    if len(reply) < 12 or struct.unpack("<Q", reply[:8])[0] != 4 + _RPC_CAPS_SIZE:
        raise ShimmyError(
            "model_load_failed",
            f"{endpoint} is not a llama.cpp RPC worker",
            "it did not answer the RPC handshake",
        )
    major, minor, patch = reply[8], reply[9], reply[10]
    if major != _RPC_PROTO_MAJOR:
        raise ShimmyError(
            "model_load_failed",
            f"The RPC worker at {endpoint} speaks protocol {major}.{minor}.{patch}",
            f"this shimmy speaks {_RPC_PROTO_MAJOR}.x: run the same shimmy and "
            "llama-cpp-python there",
        )


def add_rpc_servers(endpoints: tuple[str, ...]) -> list[Device]:
    """Connect to the RPC servers ``HOST:PORT`` and make their devices llama.cpp's
    (as llama-server's ``--rpc`` does); each endpoint is added once per process.
    A server that cannot be reached is an error naming it."""
    lib = _init()
    add = _rpc_function(
        "ggml_backend_rpc_add_server", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p)
    )
    found: list[Device] = []
    with _lock:
        for endpoint in endpoints:
            if endpoint not in _added_servers:
                check_rpc_worker(endpoint)
                reg = add(endpoint.encode())
                count = lib.ggml_backend_reg_dev_count(reg)
                added = [_device(lib, lib.ggml_backend_reg_dev_get(reg, i)) for i in range(count)]
                lib.ggml_backend_register(reg)
                _added_servers[endpoint] = added
            found.extend(_added_servers[endpoint])
    return found


def serve_rpc(endpoint: str, *, threads: int, cache_dir: str | None, device: str | None) -> None:
    """Run ggml's RPC server on ``endpoint`` lending this machine's ``device``
    (default: the first GPU, else the CPU). Blocks for the life of the process."""
    start = _rpc_function(
        "ggml_backend_rpc_start_server",
        ctypes.CFUNCTYPE(
            None,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_void_p),
        ),
    )
    lent = [d for d in devices() if d.backend != "RPC"]
    if device:
        chosen = [d for d in lent if d.name.lower() == device.lower()]
        if not chosen:
            names = ", ".join(d.name for d in lent)
            raise ShimmyError(
                "invalid_request", f"No device named '{device}'", f"devices here: {names}"
            )
    else:
        gpus = [d for d in lent if d.kind in {"gpu", "igpu"}]
        chosen = gpus[:1] or [d for d in lent if d.kind == "cpu"][:1]
    handles = (ctypes.c_void_p * len(chosen))(*(d.handle for d in chosen))
    start(
        endpoint.encode(), cache_dir.encode() if cache_dir else None, threads, len(chosen), handles
    )
