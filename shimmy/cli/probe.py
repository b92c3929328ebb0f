"""``shimmy probe``: check, load and test-generate one model, and report the figures."""

from __future__ import annotations

import argparse
import json

from shimmy.cli.output import print_fields
from shimmy.cli.settings import open_manager, settings_from
from shimmy.errors import ExitCode


def cmd_probe(args: argparse.Namespace) -> int:
    """Probe the named model (or the default) and print its report (or --json)."""
    from shimmy.models.probe import probe_model
    from shimmy.units import format_bytes, format_params

    settings = settings_from(args)
    manager = open_manager(settings)
    try:
        name = args.model_name
        if name is not None:  # the operator may name a file, unlike an API client
            name = manager.registry.resolve_operator(name).name
        report = probe_model(manager, name)
    finally:
        manager.close()
    info = report.info
    data = {
        "name": report.entry.name,
        "path": str(report.entry.path),
        "source": report.entry.source,
        "size": report.entry.size,
        "gguf_version": info.version,
        "architecture": info.architecture,
        "parameters": info.parameter_count,
        "quantization": info.quantization,
        "context_length": info.context_length,
        "chat_template": info.chat_template is not None,
        "load_seconds": round(report.load_seconds, 3),
        "memory_bytes": report.memory_bytes,
        "context_tokens": report.n_ctx,
        "tokens_per_second": round(report.tokens_per_second, 1)
        if report.tokens_per_second
        else None,
        "time_to_first_token": round(report.time_to_first_token, 3)
        if report.time_to_first_token
        else None,
        "completion_tokens": report.completion_tokens,
        "sample": report.sample,
    }
    if args.json:
        print(json.dumps(data, indent=2))
        return ExitCode.OK
    speed = f"{report.tokens_per_second:.1f} tok/s" if report.tokens_per_second else "-"
    print_fields(
        [
            ("model", report.entry.name),
            ("file", str(report.entry.path)),
            (
                "source",
                report.entry.source + (f" ({report.entry.origin})" if report.entry.origin else ""),
            ),
            ("size", format_bytes(report.entry.size)),
            ("format", f"GGUF v{info.version}, {info.tensor_count} tensors"),
            ("architecture", info.architecture or "-"),
            ("parameters", format_params(info.parameter_count) if info.parameter_count else "-"),
            ("quantization", info.quantization or "-"),
            ("trained context", str(info.context_length or "-")),
            ("chat template", "yes" if info.chat_template else "none (ChatML fallback)"),
            ("load time", f"{report.load_seconds:.2f} s"),
            (
                "memory",
                f"{format_bytes(report.memory_bytes)} (weights + context of {report.n_ctx} tokens)",
            ),
            ("generation", f"{report.completion_tokens} tokens, {speed}"),
            ("sample", report.sample.strip().replace("\n", " ")[:200]),
        ]
    )
    return ExitCode.OK
