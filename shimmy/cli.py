"""The ``shimmy`` command.

stdout carries results (generated text, tables, JSON); diagnostics and errors go
to stderr as one line each; exit codes are those of :class:`shimmy.errors.ExitCode`.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from shimmy import __version__
from shimmy.config import Settings, load_settings
from shimmy.errors import ExitCode, ShimmyError
from shimmy.hub_cli import HUB_COMMANDS, add_hub_parsers

log = logging.getLogger("shimmy")


# -- argument parsing ---------------------------------------------------------


def _shared(command: bool) -> dict[str, Any]:
    """A flag that the main parser also has: absent, not None, when a command's
    parser did not see it, so it cannot reset a value given before the command."""
    return {"default": argparse.SUPPRESS} if command else {}


def _common_model_flags(parser: argparse.ArgumentParser, *, command: bool = True) -> None:
    group = parser.add_argument_group("models")
    group.add_argument(
        "--model",
        metavar="NAME_OR_PATH",
        help="default model: a name from `shimmy list` or a path",
        **_shared(command),
    )
    group.add_argument(
        "--model-dirs",
        metavar="PATH",
        nargs="+",
        help="extra files or folders to search for GGUF models",
        **_shared(command),
    )


def _security_flags(parser: argparse.ArgumentParser, *, command: bool = True) -> None:
    group = parser.add_argument_group("security and limits")
    group.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="require this key (Bearer or x-api-key) on every endpoint but /api/health; "
        "repeatable; SHIMMY_API_KEY works too",
        **_shared(command),
    )
    group.add_argument(
        "--api-key-file", metavar="PATH", help="keys, one a line", **_shared(command)
    )
    group.add_argument(
        "--insecure",
        action="store_true",
        help="allow listening on a non-loopback address without an API key",
        **_shared(command),
    )
    group.add_argument(
        "--cors-origin",
        action="append",
        metavar="ORIGIN",
        help="also allow web pages from this origin (repeatable; '*' wildcards, never '*' "
        "alone); pages from localhost and local apps are allowed without it",
        **_shared(command),
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        metavar="SECONDS",
        help="longest one generation may take (default 600)",
        **_shared(command),
    )


def _engine_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine")
    group.add_argument(
        "--threads", type=int, metavar="N", help="generation threads (default: all physical cores)"
    )
    group.add_argument(
        "--ctx-size",
        type=int,
        metavar="TOKENS",
        help="context tokens per request slot (default 4096; the model holds parallel x this)",
    )
    group.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help="requests decoded together per model (default 4)",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        metavar="TOKENS",
        help="prompt tokens decoded per step (default 512)",
    )
    group.add_argument(
        "--cache-ram",
        type=int,
        metavar="MIB",
        help="host memory per model for prompts whose slot another request took, "
        "restored when they come back (default 1024; 0: off)",
    )
    group.add_argument(
        "--keep-alive",
        type=float,
        metavar="SECONDS",
        help="unload a model after this long idle (default 300; negative: never)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The dashboard's flags sit on the main parser; a command repeats the ones it
    shares. Subcommand flags default to "absent" (SUPPRESS), so a value given
    before the command (`shimmy --model X list`) is not reset by the command's
    own default; `_settings` reads every flag with getattr(..., None)."""
    parser = argparse.ArgumentParser(
        prog="shimmy",
        description="A local LLM server for GGUF models, with a terminal dashboard. "
        "Run without a command to open the dashboard.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"shimmy {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="enable verbose logging")
    dashboard = parser.add_argument_group("dashboard (no command)")
    dashboard.add_argument(
        "--bind", metavar="HOST:PORT", help="embedded server address (default 127.0.0.1:11435)"
    )
    dashboard.add_argument(
        "--no-server", action="store_true", help="open the dashboard without the API server"
    )
    _common_model_flags(parser, command=False)
    _security_flags(parser, command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="start the API server")
    serve.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:11435)",
        **_shared(True),
    )
    serve.add_argument("--port", type=int, help="port to listen on (overrides the port of --bind)")
    serve.add_argument(
        "-v", "--verbose", action="store_true", help="enable verbose logging", **_shared(True)
    )
    _security_flags(serve)
    serve.add_argument(
        "--no-preload",
        action="store_true",
        help="load the default model on first use instead of in the background at start",
    )
    _common_model_flags(serve)
    _engine_flags(serve)

    gen = sub.add_parser("generate", help="generate text from a prompt, streamed to stdout")
    gen.add_argument("--prompt", "-p", help="the prompt ('-' or none: read standard input)")
    gen.add_argument(
        "--max-tokens", type=int, default=100, help="maximum tokens to generate (default 100)"
    )
    gen.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="sampling temperature (default 0.7; 0 = greedy)",
    )
    gen.add_argument("--top-p", type=float, default=0.95)
    gen.add_argument("--top-k", type=int, default=40)
    gen.add_argument("--min-p", type=float, default=0.05)
    gen.add_argument("--repeat-penalty", type=float, default=1.1)
    gen.add_argument("--seed", type=int, help="seed for reproducible sampling")
    gen.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop at this text (repeatable)"
    )
    gen.add_argument(
        "--raw", action="store_true", help="send the prompt as is, without the chat template"
    )
    _common_model_flags(gen)
    _engine_flags(gen)

    lst = sub.add_parser("list", help="list every model found, usable or not")
    lst.add_argument("--json", action="store_true", help="print JSON")
    _common_model_flags(lst)

    probe = sub.add_parser("probe", help="check, load and test-generate a model")
    probe.add_argument(
        "model_name",
        nargs="?",
        metavar="model-name",
        help="model to probe (default: the default model)",
    )
    probe.add_argument("--json", action="store_true", help="print JSON")
    _common_model_flags(probe)
    _engine_flags(probe)

    diag = sub.add_parser("diag", help="show system, build and model-folder diagnostics")
    diag.add_argument("--json", action="store_true", help="print JSON")
    _common_model_flags(diag)

    add_hub_parsers(sub)
    return parser


# -- set-up shared by every command --------------------------------------------


def _setup_logging(verbose: bool) -> None:
    from shimmy.redact import RedactQueryStrings

    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactQueryStrings())
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    # uvicorn's error logger says "Started server process" etc.: useful, not noisy.
    logging.getLogger("uvicorn.error").setLevel(logging.INFO)
    if not verbose:
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _settings(args: argparse.Namespace) -> Settings:
    from shimmy.api.browser import check_cors_origins
    from shimmy.api.security import check_keys

    settings = load_settings(
        model=getattr(args, "model", None),
        model_dirs=tuple(getattr(args, "model_dirs", None) or ()) or None,
        threads=getattr(args, "threads", None),
        ctx_size=getattr(args, "ctx_size", None),
        parallel=getattr(args, "parallel", None),
        api_keys=_api_keys(args) or None,
        cors_origins=tuple(getattr(args, "cors_origin", None) or ()) or None,
        insecure=getattr(args, "insecure", False) or None,
        request_timeout=getattr(args, "request_timeout", None),
        batch_size=getattr(args, "batch_size", None),
        cache_ram=getattr(args, "cache_ram", None),
        keep_alive=getattr(args, "keep_alive", None),
        verbose=args.verbose or None,
    )
    check_keys(settings.api_keys)
    check_cors_origins(settings.cors_origins)
    return settings


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    from shimmy.api.security import read_key_file

    keys = tuple(getattr(args, "api_key", None) or ())
    if getattr(args, "api_key_file", None):
        keys += tuple(read_key_file(args.api_key_file))
    return keys


def _manager(settings: Settings) -> Any:
    from shimmy.models.manager import ModelManager

    return ModelManager(settings)


# -- commands ------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from shimmy.api.address import parse_bind
    from shimmy.api.app import create_app
    from shimmy.api.security import check_bind
    from shimmy.api.server import open_socket, serve_forever, url_for

    settings = _settings(args)
    host, port = parse_bind(args.bind, args.port, settings.host)
    check_bind(host, settings.api_keys, settings.insecure)
    sock = open_socket(host, port)
    manager = _manager(settings)
    try:
        app = create_app(manager, preload=settings.preload and not args.no_preload)
        auth = "API key required" if settings.api_keys else "no API key"
        print(
            f"shimmy {__version__} serving on {url_for(sock)} ({auth})", file=sys.stderr, flush=True
        )
        serve_forever(
            app,
            sock,
            on_shutdown=manager.cancel_all,
            log_level="info" if args.verbose else "warning",
        )
    finally:
        manager.close()
    return ExitCode.OK


def _read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None and args.prompt != "-":
        return str(args.prompt)
    if args.prompt is None and sys.stdin.isatty():
        raise ShimmyError("invalid_request", "No prompt given", "use --prompt TEXT or pipe text in")
    return sys.stdin.read()


def cmd_generate(args: argparse.Namespace) -> int:
    from shimmy.models.generation import SamplingParams

    prompt = _read_prompt(args)
    if not prompt.strip():
        raise ShimmyError("invalid_request", "The prompt is empty")
    if args.max_tokens < 1:
        raise ShimmyError("invalid_request", "--max-tokens must be at least 1")
    if not 0 <= args.temperature <= 2:
        raise ShimmyError("invalid_request", "--temperature must be between 0 and 2")
    settings = _settings(args)
    manager = _manager(settings)
    try:
        generation = manager.submit_prompt(
            None,  # the default: --model, which may be a path (settings.model)
            prompt,
            max_tokens=args.max_tokens,
            sampling=SamplingParams(
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                min_p=args.min_p,
                repeat_penalty=args.repeat_penalty,
                seed=args.seed,
            ),
            stop=args.stop,
            raw=args.raw,
            label="cli",
        )
        try:
            for piece in generation:
                if piece.text:
                    sys.stdout.write(piece.text)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            generation.cancel()
            sys.stdout.write("\n")
            return ExitCode.INTERRUPTED
        sys.stdout.write("\n")
        sys.stdout.flush()
        speed = generation.tokens_per_second
        log.info(
            "%s: %d prompt + %d completion tokens, %s tok/s, finish %s",
            generation.model,
            generation.prompt_tokens,
            generation.completion_tokens,
            f"{speed:.1f}" if speed else "-",
            generation.finish_reason,
        )
    finally:
        manager.close()
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    from shimmy.models.registry import ModelRegistry
    from shimmy.units import format_bytes, format_params

    settings = _settings(args)
    registry = ModelRegistry(settings.model_dirs)
    entries = registry.entries()
    if args.json:
        print(json.dumps([_entry_json(e) for e in entries], indent=2))
        return ExitCode.OK
    if not entries:
        print(
            "No models found. Add a folder with --model-dirs, or see `shimmy diag`.",
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
                "ok" if e.usable else f"unusable: {e.error}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print(
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
        )
    return ExitCode.OK


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
    }


def cmd_probe(args: argparse.Namespace) -> int:
    from shimmy.models.probe import probe_model
    from shimmy.units import format_bytes, format_params

    settings = _settings(args)
    manager = _manager(settings)
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
    lines = [
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
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        print(f"{key.ljust(width)}  {value}")
    return ExitCode.OK


def cmd_diag(args: argparse.Namespace) -> int:
    from shimmy.diagnostics import collect_diagnostics
    from shimmy.models.registry import ModelRegistry
    from shimmy.units import format_bytes

    settings = _settings(args)
    data = collect_diagnostics(settings, ModelRegistry(settings.model_dirs))
    if args.json:
        print(json.dumps(data, indent=2))
        return ExitCode.OK
    cpu, mem, llama = data["cpu"], data["memory"], data["llama_cpp"]
    models = data["models"]
    cores = f"{cpu['physical_cores']} physical, {cpu['logical_cores']} logical"
    rows = [
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
        ("threads", f"{data['generation_threads']} for generation"),
        (
            "llama.cpp",
            f"llama-cpp-python {llama.get('version')}, gpu offload: {llama.get('gpu_offload')}, "
            f"weight repacking: {_repacking(llama.get('weight_repacking'))}",
        ),
        ("", llama.get("system_info") or llama.get("error") or ""),
        ("packages", ", ".join(f"{k} {v or 'missing'}" for k, v in data["packages"].items())),
        ("config file", data["paths"]["config_file"]),
        ("models folder", data["paths"]["models_dir"]),
        (
            "models",
            f"{models['total']} found, {models['usable']} usable, {models['unusable']} unusable",
        ),
    ]
    for key, value in rows:
        print(f"{key:<14}{value}")
    print("model places:")
    for place in data["model_places"]:
        state = f"{place['models']} models" if place["exists"] else "missing"
        print(f"  {place['source']:<12} {place['path']}  ({state})")
    return ExitCode.OK


def _repacking(enabled: bool | None) -> str:
    if enabled is None:
        return "unknown"
    return "on" if enabled else "off (this build's AMX kernels crash; plain CPU weights)"


def cmd_dashboard(args: argparse.Namespace) -> int:
    from shimmy.api.address import parse_bind
    from shimmy.api.server_control import ServerControl
    from shimmy.config import Paths
    from shimmy.tui.app import ShimmyApp
    from shimmy.tui.logsink import DashboardLogHandler, route_logging_to
    from shimmy.tui.native_stderr import native_stderr_to

    settings = _settings(args)
    host, port = parse_bind(args.bind, None, settings.host)
    if not args.no_server:
        from shimmy.api.security import check_bind

        check_bind(host, settings.api_keys, settings.insecure)
    # Nothing may print onto the screen the dashboard draws: Python logging goes to
    # the Log tab, llama.cpp's own stderr to a file.
    from shimmy.redact import RedactQueryStrings

    log_handler = DashboardLogHandler()
    log_handler.addFilter(RedactQueryStrings())
    previous = route_logging_to(log_handler, args.verbose)
    manager = _manager(settings)
    server = ServerControl(manager, host, port)
    try:
        with native_stderr_to(Paths.from_env().log_dir / "dashboard-stderr.log") as path:
            log.info("llama.cpp's own messages go to %s", path)
            app = ShimmyApp(manager, server, serve=not args.no_server, log_handler=log_handler)
            code = app.run()
    finally:
        server.stop()
        manager.close()
        logging.getLogger().handlers[:] = previous
    if code is None:
        # A dashboard that crashed returns nothing but says so in its return code.
        return ExitCode.FAILURE if app.return_code else ExitCode.OK
    return int(code)


COMMANDS: dict[str | None, Callable[[argparse.Namespace], int]] = {
    None: cmd_dashboard,
    "serve": cmd_serve,
    "generate": cmd_generate,
    "list": cmd_list,
    "probe": cmd_probe,
    "diag": cmd_diag,
    **HUB_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    # A second Ctrl-C while shutting down exits at once rather than printing a traceback.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.monotonic()
    try:
        return int(COMMANDS[args.command](args))
    except ShimmyError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # stdout closed early (e.g. `shimmy list | head`): not an error worth a traceback.
        sys.stderr.close()
        return ExitCode.OK
    finally:
        log.debug("%s took %.2fs", args.command or "dashboard", time.monotonic() - started)
