"""``shimmy list``: every model discovery finds, usable or not."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from shimmy.cli.output import print_table
from shimmy.cli.settings import settings_from
from shimmy.errors import ExitCode


def cmd_list(args: argparse.Namespace) -> int:
    """A table of the models (or --json), with why a file is unusable."""
    from shimmy.models.registry import ModelRegistry
    from shimmy.units import format_bytes, format_params

    settings = settings_from(args)
    registry = ModelRegistry(settings.model_dirs)
    registry.set_presets(settings.presets)  # the config's [models.NAME] tables
    entries = registry.entries()
    if args.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2))
        return ExitCode.OK
    if not entries:
        from shimmy.models.first_model import how_to_get_a_model

        print(
            f"No models found. {how_to_get_a_model()}. `shimmy diag` shows where shimmy looked.",
            file=sys.stderr,
        )
        return ExitCode.OK
    rows = [("NAME", "SOURCE", "SIZE", "QUANT", "ARCH", "PARAMS", "CTX", "STATE")]
    for e in entries:
        rows.append(
            (
                e.name,
                e.source,
                format_bytes(e.size),
                e.quantization or "-",
                e.architecture or "-",
                format_params(e.parameter_count) if e.parameter_count else "-",
                str(e.context_length or "-"),
                _state(e),
            )
        )
    print_table(rows)
    return ExitCode.OK


def _state(e: Any) -> str:
    if e.usable:
        return "ok"
    if e.offered:
        return f"pulled on first use ({e.pull})"
    return f"unusable: {e.error}"


def _entry_json(e: Any) -> dict[str, Any]:
    return {
        "name": e.name,
        "source": e.source,
        "origin": e.origin,
        "path": str(e.path),
        "parts": [str(p) for p in e.parts],
        "size": e.size,
        "quantization": e.quantization,
        "architecture": e.architecture,
        "parameters": e.parameter_count,
        "context_length": e.context_length,
        "usable": e.usable,
        "error": e.error,
        "pull": e.pull,
    }
