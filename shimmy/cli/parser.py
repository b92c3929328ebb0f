"""The one argument parser of ``shimmy``: every command's flags, built in one place.

The dashboard's flags sit on the main parser; a command repeats the ones it
shares. A repeated flag defaults to "absent" (SUPPRESS) on the command's parser,
so a value given before the command (`shimmy --model X list`) is not reset by
the command's own default; the commands read such flags with getattr(..., None).
"""

from __future__ import annotations

import argparse
from typing import Any

from shimmy import __version__


def _shared(command: bool) -> dict[str, Any]:
    """A flag that the main parser also has: absent, not None, when a command's
    parser did not see it, so it cannot reset a value given before the command."""
    return {"default": argparse.SUPPRESS} if command else {}


def _model_flags(parser: argparse.ArgumentParser, *, command: bool = True) -> None:
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


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``shimmy`` and all its commands; ``command`` is None for the dashboard."""
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
    _model_flags(parser, command=False)
    _security_flags(parser, command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_generate(sub)
    _add_local(sub)
    _add_hub(sub)
    return parser


def _add_serve(sub: Any) -> None:
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
    _model_flags(serve)
    _engine_flags(serve)


def _add_generate(sub: Any) -> None:
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
    _model_flags(gen)
    _engine_flags(gen)


def _add_local(sub: Any) -> None:
    """list, probe and diag: what is on this machine."""
    lst = sub.add_parser("list", help="list every model found, usable or not")
    _json_flag(lst)
    _model_flags(lst)

    probe = sub.add_parser("probe", help="check, load and test-generate a model")
    probe.add_argument(
        "model_name",
        nargs="?",
        metavar="model-name",
        help="model to probe (default: the default model)",
    )
    _json_flag(probe)
    _model_flags(probe)
    _engine_flags(probe)

    diag = sub.add_parser("diag", help="show system, build and model-folder diagnostics")
    _json_flag(diag)
    _model_flags(diag)


def _add_hub(sub: Any) -> None:
    """search, pull and rm: models on Hugging Face and the ones pulled from it."""
    search = sub.add_parser("search", help="search Hugging Face for GGUF models")
    search.add_argument("query", nargs="?", default="", help="words in the repository name")
    search.add_argument(
        "--limit", type=int, default=20, metavar="N", help="show at most N results (default 20)"
    )
    search.add_argument(
        "--sort",
        choices=("downloads", "likes", "updated"),
        default="downloads",
        help="order of the results (default downloads)",
    )
    _json_flag(search)

    pull = sub.add_parser(
        "pull",
        help="download a GGUF model from Hugging Face",
        description="Download a GGUF model into the Hugging Face cache, where `shimmy list` "
        "finds it. A stopped pull resumes where it stopped.",
    )
    pull.add_argument(
        "model",
        metavar="REPO[:QUANT] | REPO/FILE.gguf",
        help="a repository (default quantization Q4_K_M, else the smallest 4-bit file), "
        "a repository and quantization, or one file of a repository",
    )
    pull.add_argument(
        "--files", action="store_true", help="list the repository's GGUF files and stop"
    )

    rm = sub.add_parser("rm", help="delete a model that `shimmy pull` downloaded")
    rm.add_argument("name", metavar="NAME", help="the model's name in `shimmy list`")
    rm.add_argument("-y", "--yes", action="store_true", help="delete without asking")
    rm.add_argument(
        "--model-dirs",
        metavar="PATH",
        nargs="+",
        help="extra files or folders to search for GGUF models",
    )
