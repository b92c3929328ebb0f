"""What ``shimmy diag`` reports: versions, llama.cpp build, system, model folders."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import TYPE_CHECKING, Any

from shimmy import __version__
from shimmy.config import Paths, Settings, chats_path
from shimmy.models.registry import ModelRegistry

if TYPE_CHECKING:
    from shimmy.models.memory import SystemMemory

_PACKAGES = (
    "llama-cpp-python",
    "textual",
    "fastapi",
    "uvicorn",
    "websockets",
    "huggingface-hub",
    "platformdirs",
    "psutil",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_flags() -> list[str]:
    """The SIMD features llama.cpp cares about, from /proc/cpuinfo where there is one."""
    wanted = ("avx", "avx2", "avx512f", "fma", "f16c", "sse4_2", "neon", "asimd", "amx")
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in present]
    except OSError:
        pass
    return []


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _llama_cpp_info() -> dict[str, Any]:
    try:
        from shimmy.models.llama_bindings import llama_cpp
    except Exception as exc:  # a broken build must still let diag report it
        return {"error": f"llama_cpp does not import: {exc}"}
    info: dict[str, Any] = {"version": getattr(llama_cpp, "__version__", None)}
    try:
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
        info["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
        info["mmap"] = bool(llama_cpp.llama_supports_mmap())
        from shimmy.models.llamacpp import use_extra_buffer_types

        info["weight_repacking"] = use_extra_buffer_types()
        from shimmy.models.backends import devices, rpc_available

        info["rpc"] = rpc_available()
        info["devices"] = [
            {
                "name": d.name,
                "description": d.description,
                "kind": d.kind,
                "backend": d.backend,
                "free_bytes": d.free_bytes,
                "total_bytes": d.total_bytes,
            }
            for d in devices()
        ]
    except Exception as exc:
        info["error"] = str(exc)
    return info


def _cgroup(memory: SystemMemory) -> dict[str, Any] | None:
    """The cgroup memory limit this process runs under (None: none), and whether
    it, not the RAM, bounds the memory budget."""
    cgroup = memory.cgroup
    if cgroup is None:
        return None
    return {
        "version": cgroup.version,
        "path": cgroup.path,
        "limit_bytes": cgroup.limit,
        "available_bytes": cgroup.available,
        "bounds_budget": memory.cgroup_bounds,
    }


def collect_diagnostics(settings: Settings, registry: ModelRegistry) -> dict[str, Any]:
    import psutil

    from shimmy.models.memory import system_memory

    paths = Paths.from_env()
    memory = system_memory()
    places = [
        {"source": p.source, "path": str(p.path), "exists": p.path.exists(), "models": p.count}
        for p in registry.places()
    ]
    entries = registry.entries()
    return {
        "shimmy": __version__,
        "python": {"version": sys.version.split()[0], "executable": sys.executable},
        "platform": platform.platform(),
        "cpu": {
            "model": _cpu_model(),
            "logical_cores": psutil.cpu_count(logical=True),
            "physical_cores": psutil.cpu_count(logical=False),
            "usable_cores": len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else None,
            "features": _cpu_flags(),
        },
        "memory": {
            "total_bytes": memory.ram_total,
            "available_bytes": memory.ram_available,
            "cgroup": _cgroup(memory),
        },
        "generation_threads": settings.threads,
        "llama_cpp": _llama_cpp_info(),
        "packages": {name: _version(name) for name in _PACKAGES},
        "paths": {
            "config_file": str(paths.config_file),
            "data_dir": str(paths.data_dir),
            "models_dir": str(paths.models_dir),
            "cache_dir": str(paths.cache_dir),
            "chats_db": str(chats_path(settings, paths)),
        },
        "model_places": places,
        "models": {
            "total": len(entries),
            "usable": sum(1 for e in entries if e.usable),
            "to_pull": sum(1 for e in entries if e.offered and not e.usable),
            "unusable": sum(1 for e in entries if not e.offered),
        },
    }
