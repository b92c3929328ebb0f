"""``shimmy ps``: the models a running server has loaded, asked over its native
API (``GET /api/ps``), as ``ollama ps`` asks Ollama's: a command of its own
would have nothing loaded."""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from typing import Any

from shimmy.cli.output import print_table
from shimmy.cli.settings import settings_from
from shimmy.errors import ExitCode, ShimmyError

MAX_ANSWER_BYTES = 4 * 1024 * 1024  # the answer of a server with hundreds of models is far less
TIMEOUT_SECONDS = 10.0


def cmd_ps(args: argparse.Namespace) -> int:
    """A table of the loaded models (or --json): memory, slots, keep-alive left."""
    from shimmy.api.address import parse_bind

    settings = settings_from(args)
    host, port = parse_bind(getattr(args, "bind", None), None, settings.host, settings.port)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"  # a server on every address answers on loopback
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    answer = _get(url + "/api/ps", settings.api_keys[0] if settings.api_keys else None)
    if args.json:
        print(json.dumps(answer, indent=2))
        return ExitCode.OK
    _print(answer, url)
    return ExitCode.OK


def _get(url: str, key: str | None) -> dict[str, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
            body = response.read(MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise ShimmyError(
                "unauthorized",
                f"The server at {url} wants an API key",
                "give it with --api-key or SHIMMY_API_KEY",
            ) from None
        raise ShimmyError("server_error", f"The server at {url} answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ShimmyError(
            "server_error",
            f"No shimmy server answers at {url.removesuffix('/api/ps')}",
            f"{reason}; start one with `shimmy serve` or `shimmy`, or name its address "
            "with --bind HOST:PORT",
        ) from None
    try:
        answer = json.loads(body[:MAX_ANSWER_BYTES])
        if not isinstance(answer, dict) or not isinstance(answer.get("models"), list):
            raise ValueError("no models list")
    except ValueError as exc:
        raise ShimmyError(
            "server_error", f"The server at {url} did not answer as shimmy does", str(exc)[:200]
        ) from None
    return answer


def _print(answer: dict[str, Any], url: str) -> None:
    from shimmy.units import format_gb

    models = answer["models"]
    memory = answer.get("memory") or {}
    if not models:
        print(f"No models loaded in the server at {url}.")
    else:
        rows = [("NAME", "MEMORY", "CONTEXT", "SLOTS", "QUEUED", "UNLOADS")]
        for m in models:
            rows.append(
                (
                    str(m.get("name")),
                    _memory(m),
                    str(m.get("context_length")),
                    f"{m.get('slots_busy')}/{m.get('slots')} busy",
                    str(m.get("queued")),
                    _unloads(m),
                )
            )
        print_table(rows)
    used = memory.get("used_bytes")
    if isinstance(used, int):
        limit = memory.get("limit_bytes")
        cgroup = memory.get("cgroup_limit_bytes")
        available = format_gb(memory.get("available_bytes") or 0)
        if isinstance(limit, int):
            room = f"of the {format_gb(limit)} --memory-limit"
        elif isinstance(cgroup, int):
            room = f"with {available} available under a {format_gb(cgroup)} cgroup limit"
        else:
            room = f"with {available} of RAM available"
        cap = memory.get("max_loaded_models")
        capped = f"; at most {cap} models loaded" if cap else ""
        print(f"\nmemory: {format_gb(used)} estimated for loaded models, {room}{capped}")


def _memory(model: dict[str, Any]) -> str:
    """Its host memory, and the GPU memory of the layers it offloaded, if any."""
    from shimmy.units import format_gb

    gpu = model.get("gpu_memory_bytes")
    if isinstance(gpu, int) and gpu > 0:
        return f"{model.get('memory')} + {format_gb(gpu)} GPU"
    return str(model.get("memory"))


def _unloads(model: dict[str, Any]) -> str:
    """When a model is unloaded for being idle: "in 4:59", "never", or, while it
    is busy, its keep-alive after its last request."""
    from shimmy.units import format_time_left

    left = model.get("unloads_in_seconds")
    if left is None:
        return "never"
    if model.get("slots_busy") or model.get("queued"):
        return f"{format_time_left(left)} after it is idle"
    return f"in {format_time_left(left)}"
