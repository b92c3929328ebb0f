"""``shimmy diag``: the system, the llama.cpp build and every folder searched for models."""

from __future__ import annotations

import argparse
import json
from typing import Any

from shimmy.cli.output import print_fields
from shimmy.cli.settings import settings_from
from shimmy.errors import ExitCode

# The values start in one column whatever the longest key ("models folder").
KEY_WIDTH = 14


def cmd_diag(args: argparse.Namespace) -> int:
    """Print what shimmy sees of this machine (or --json)."""
    from shimmy.diagnostics import collect_diagnostics
    from shimmy.models.registry import ModelRegistry
    from shimmy.units import format_bytes

    settings = settings_from(args)
    data = collect_diagnostics(settings, ModelRegistry(settings.model_dirs))
    if args.json:
        print(json.dumps(data, indent=2))
        return ExitCode.OK
    cpu, mem, llama = data["cpu"], data["memory"], data["llama_cpp"]
    models = data["models"]
    cores = f"{cpu['physical_cores']} physical, {cpu['logical_cores']} logical"
    print_fields(
        [
            ("shimmy", data["shimmy"]),
            ("python", f"{data['python']['version']} ({data['python']['executable']})"),
            ("platform", data["platform"]),
            ("cpu", cpu["model"]),
            ("cores", f"{cores}, {cpu['usable_cores']} usable"),
            ("cpu features", " ".join(cpu["features"]) or "-"),
            (
                "memory",
                f"{format_bytes(mem['total_bytes'])} total, "
                f"{format_bytes(mem['available_bytes'])} available",
            ),
            ("cgroup", _cgroup(mem["cgroup"])),
            ("threads", f"{data['generation_threads']} for generation"),
            (
                "llama.cpp",
                f"llama-cpp-python {llama.get('version')}, "
                f"gpu offload: {llama.get('gpu_offload')}, rpc: {llama.get('rpc')}, "
                f"weight repacking: {_repacking(llama.get('weight_repacking'))}",
            ),
            ("", llama.get("system_info") or llama.get("error") or ""),
            ("packages", ", ".join(f"{k} {v or 'missing'}" for k, v in data["packages"].items())),
            ("config file", data["paths"]["config_file"]),
            ("models folder", data["paths"]["models_dir"]),
            ("chats", data["paths"]["chats_db"]),
            (
                "models",
                f"{models['total']} found, {models['usable']} usable, "
                + (f"{models['to_pull']} pulled on first use, " if models["to_pull"] else "")
                + f"{models['unusable']} unusable",
            ),
        ],
        width=KEY_WIDTH,
    )
    print("devices (llama.cpp):")
    for device in llama.get("devices", []):
        memory = (
            f"{format_bytes(device['free_bytes'])} free of {format_bytes(device['total_bytes'])}"
        )
        print(f"  {device['name']:<12} {device['kind']:<5} {device['description']}  ({memory})")
    if not any(d["kind"] in {"gpu", "igpu"} for d in llama.get("devices", [])):
        print("  no GPU backend in this build: SHIMMY_GPU=cuda scripts/setup builds one (README)")
    print("model places:")
    for place in data["model_places"]:
        state = f"{place['models']} models" if place["exists"] else "missing"
        print(f"  {place['source']:<12} {place['path']}  ({state})")
    return ExitCode.OK


def _cgroup(cgroup: dict[str, Any] | None) -> str:
    """The cgroup memory limit, and whether it is what bounds shimmy's memory budget."""
    from shimmy.units import format_bytes

    if cgroup is None:
        return "no memory limit"
    text = (
        f"memory limit {format_bytes(cgroup['limit_bytes'])}, "
        f"{format_bytes(cgroup['available_bytes'])} available "
        f"(v{cgroup['version']}, {cgroup['path']})"
    )
    if cgroup["bounds_budget"]:
        return text + ": the memory budget is bounded by it, not by the RAM"
    return text + ": the RAM is tighter"


def _repacking(enabled: bool | None) -> str:
    if enabled is None:
        return "unknown"
    return "on" if enabled else "off (this build's AMX kernels crash; plain CPU weights)"
