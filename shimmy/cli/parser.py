"""The one argument parser of ``shimmy``: every command's flags, built in one place.

The dashboard's flags sit on the main parser; a command repeats the ones it
shares. A repeated flag defaults to "absent" (SUPPRESS) on the command's parser,
so a value given before the command (`shimmy --model X list`) is not reset by
the command's own default; the commands read such flags with getattr(..., None).

Every default is stated once, where it takes effect, and the help quotes it from
there: the server's in :class:`~shimmy.config.Settings`' fields, a generation's in
:class:`~shimmy.models.generation.SamplingParams` and ``GenerationRequest``. A
dataclass field's default is its class attribute.
"""

from __future__ import annotations

import argparse
from typing import Any

from shimmy import __version__
from shimmy.config import DEFAULT_OLLAMA_PORT, Settings
from shimmy.models.generation import GenerationRequest, SamplingParams
from shimmy.models.offload import CACHE_TYPES


class _Given(argparse._StoreAction):
    """Store the value and note that the flag was given (``args.given``): a model
    preset's sampling defaults fill only the flags left at the engine's defaults."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        super().__call__(parser, namespace, values, option)
        namespace.given = getattr(namespace, "given", frozenset()) | {self.dest}


def _shown(value: float) -> str:
    """A default as the help text shows it: 300.0 as 300, 0.7 as 0.7."""
    return f"{value:g}"


def _shared(command: bool) -> dict[str, Any]:
    """A flag that the main parser also has: absent, not None, when a command's
    parser did not see it, so it cannot reset a value given before the command."""
    return {"default": argparse.SUPPRESS} if command else {}


def _model_flags(
    parser: argparse.ArgumentParser, *, command: bool = True, default_model: bool = True
) -> None:
    """--model (unless not ``default_model``) and --model-dirs."""
    group = parser.add_argument_group("models")
    if default_model:
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
        help=f"longest one generation may take (default {_shown(Settings.request_timeout)})",
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
        help=f"context tokens per request slot (default {Settings.ctx_size}; "
        "the model holds parallel x this)",
    )
    group.add_argument(
        "--parallel",
        type=int,
        metavar="N",
        help=f"requests decoded together per model (default {Settings.parallel})",
    )
    group.add_argument(
        "--batch-size",
        type=int,
        metavar="TOKENS",
        help=f"prompt tokens decoded per step (default {Settings.batch_size})",
    )
    group.add_argument(
        "--cache-ram",
        type=int,
        metavar="MIB",
        help="host memory per model for prompts whose slot another request took, "
        f"restored when they come back (default {Settings.cache_ram}; 0: off)",
    )
    group.add_argument(
        "--spec",
        choices=["on", "off"],
        help="draft tokens from the request's own text and verify them in the same step "
        f"(n-gram speculative decoding; default {'on' if Settings.spec else 'off'})",
    )
    group.add_argument(
        "--draft-min",
        type=int,
        metavar="TOKENS",
        help="with --spec on, draft at least this many tokens whenever the request's "
        "text offers them, whatever the measured step costs say "
        f"(default {Settings.draft_min}: as they say; at most 64)",
    )
    group.add_argument(
        "--keep-alive",
        type=float,
        metavar="SECONDS",
        help=f"unload a model after this long idle (default {_shown(Settings.keep_alive)}; "
        "negative: never)",
    )
    _offload_flags(parser)


def _offload_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("GPU and KV cache")
    group.add_argument(
        "--gpu-layers",
        metavar="N|auto|all",
        help="model layers on the GPU (default auto: as many as fit in free GPU memory; "
        "0 on a CPU-only build)",
    )
    group.add_argument(
        "--flash-attn", choices=["on", "off", "auto"], help="flash attention (default auto)"
    )
    for which in ("k", "v"):
        group.add_argument(
            f"--cache-type-{which}",
            choices=list(CACHE_TYPES),
            help=f"KV cache type for {which.upper()} (default f16; q8_0 halves the KV memory)",
        )
    group.add_argument("--main-gpu", type=int, metavar="I", help="the GPU for a one-GPU model")
    group.add_argument(
        "--tensor-split",
        metavar="SHARES",
        help="each GPU's share of the model, like 3,1 (default: by free memory)",
    )
    group.add_argument(
        "--rpc",
        metavar="HOST:PORT,...",
        help="spread the model's layers over these llama.cpp RPC workers (`shimmy worker`)",
    )


def _memory_flags(parser: argparse.ArgumentParser, *, command: bool) -> None:
    """--memory-limit and --max-loaded-models: how many models stay loaded at once."""
    group = parser.add_argument_group("loaded models")
    group.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="memory for loaded models, like 512MB or 8GB (default: the RAM available, "
        "less a headroom); idle models are unloaded, least recently used first, to make room",
        **_shared(command),
    )
    group.add_argument(
        "--max-loaded-models",
        type=int,
        metavar="N",
        help="most models loaded at once; the least recently used idle one makes way "
        f"(default {Settings.max_loaded_models}: no cap)",
        **_shared(command),
    )


def _ollama_flag(group: Any, *, command: bool) -> None:
    """--ollama [HOST:PORT]: Ollama's API on a second listener."""
    group.add_argument(
        "--ollama",
        nargs="?",
        const=f"{Settings.host}:{DEFAULT_OLLAMA_PORT}",
        metavar="HOST:PORT",
        help="also serve Ollama's API, for apps written for Ollama, on this address "
        f"(without one {Settings.host}:{DEFAULT_OLLAMA_PORT}, Ollama's own); "
        "a port in use is reported, not fatal",
        **_shared(command),
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
    bind = f"{Settings.host}:{Settings.port}"  # where serve and the dashboard listen
    dashboard = parser.add_argument_group("dashboard (no command)")
    dashboard.add_argument(
        "--bind", metavar="HOST:PORT", help=f"embedded server address (default {bind})"
    )
    dashboard.add_argument(
        "--no-server", action="store_true", help="open the dashboard without the API server"
    )
    _ollama_flag(dashboard, command=False)
    _model_flags(parser, command=False)
    _memory_flags(parser, command=False)
    _security_flags(parser, command=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub, bind)
    _add_generate(sub)
    _add_local(sub)
    _add_hub(sub)
    _add_chats(sub)
    _add_worker(sub)
    return parser


def _add_serve(sub: Any, bind: str) -> None:
    serve = sub.add_parser("serve", help="start the API server")
    serve.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help=f"address to listen on (default {bind})",
        **_shared(True),
    )
    serve.add_argument("--port", type=int, help="port to listen on (overrides the port of --bind)")
    _ollama_flag(serve, command=True)
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
    _memory_flags(serve, command=True)
    _engine_flags(serve)


def _add_generate(sub: Any) -> None:
    gen = sub.add_parser("generate", help="generate text from a prompt, streamed to stdout")
    gen.add_argument("--prompt", "-p", help="the prompt ('-' or none: read standard input)")
    gen.add_argument(
        "--max-tokens",
        type=int,
        default=GenerationRequest.max_tokens,
        help=f"maximum tokens to generate (default {GenerationRequest.max_tokens})",
    )
    gen.add_argument(
        "--temperature",
        action=_Given,
        type=float,
        default=SamplingParams.temperature,
        help=f"sampling temperature (default {_shown(SamplingParams.temperature)}; 0 = greedy)",
    )
    gen.add_argument(
        "--top-p",
        action=_Given,
        type=float,
        default=SamplingParams.top_p,
        help="keep the likeliest tokens whose probabilities add up to this "
        f"(default {_shown(SamplingParams.top_p)}; 1: off)",
    )
    gen.add_argument(
        "--top-k",
        action=_Given,
        type=int,
        default=SamplingParams.top_k,
        help=f"keep the K likeliest tokens (default {SamplingParams.top_k}; 0: off)",
    )
    gen.add_argument(
        "--min-p",
        action=_Given,
        type=float,
        default=SamplingParams.min_p,
        help="drop tokens less likely than this fraction of the likeliest "
        f"(default {_shown(SamplingParams.min_p)}; 0: off)",
    )
    gen.add_argument(
        "--repeat-penalty",
        action=_Given,
        type=float,
        default=SamplingParams.repeat_penalty,
        help="penalty on recently used tokens "
        f"(default {_shown(SamplingParams.repeat_penalty)}; 1: off)",
    )
    gen.add_argument("--seed", type=int, action=_Given, help="seed for reproducible sampling")
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

    ps = sub.add_parser(
        "ps",
        help="list the models a running server has loaded: memory, slots, keep-alive left",
    )
    ps.add_argument(
        "--bind",
        metavar="HOST:PORT",
        help=f"the server's address (default {Settings.host}:{Settings.port}, or the config's)",
        **_shared(True),
    )
    ps.add_argument(
        "--api-key",
        action="append",
        metavar="KEY",
        help="the server's API key (or SHIMMY_API_KEY)",
        **_shared(True),
    )
    _json_flag(ps)

    diag = sub.add_parser("diag", help="show system, build and model-folder diagnostics")
    _json_flag(diag)
    _model_flags(diag)


def _add_hub(sub: Any) -> None:
    """search, pull and rm: models on Hugging Face and the ones pulled from it."""
    search = sub.add_parser("search", help="search Hugging Face for GGUF models")
    search.add_argument("query", nargs="?", default="", help="words in the repository name")
    search.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="show at most N results (default %(default)s)",
    )
    search.add_argument(
        "--sort",
        choices=("downloads", "likes", "updated"),
        default="downloads",
        help="order of the results (default %(default)s)",
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
    _model_flags(rm, default_model=False)


def _add_chats(sub: Any) -> None:
    """chats list, show, export and rm: the dashboard's saved conversations."""
    chats = sub.add_parser(
        "chats",
        help="list, show, export or delete the dashboard's saved conversations",
        description="The conversations of the dashboard's Chat tab, kept in chats.db in "
        "shimmy's data folder (`shimmy diag` shows where; the chats_db setting or "
        "SHIMMY_CHATS_DB moves it).",
    )
    verbs = chats.add_subparsers(dest="chats_command", metavar="ACTION", required=True)
    lst = verbs.add_parser("list", help="every conversation, most recently updated first")
    _json_flag(lst)
    show = verbs.add_parser("show", help="a conversation's settings and every turn")
    show.add_argument("id", type=int, metavar="ID", help="the conversation's id (`chats list`)")
    export = verbs.add_parser(
        "export", help="a conversation as Markdown (each turn, with a header) or JSON"
    )
    export.add_argument("id", type=int, metavar="ID", help="the conversation's id (`chats list`)")
    export.add_argument(
        "--format", choices=("md", "json"), default="md", help="md (default) or json"
    )
    rm = verbs.add_parser("rm", help="delete a conversation")
    rm.add_argument("id", type=int, metavar="ID", help="the conversation's id (`chats list`)")
    rm.add_argument("-y", "--yes", action="store_true", help="delete without asking")


def _add_worker(sub: Any) -> None:
    worker = sub.add_parser(
        "worker",
        help="lend this machine's GPU or CPU to `shimmy serve --rpc` (llama.cpp RPC)",
        description="Run llama.cpp's RPC server: another shimmy spreads a model's layers "
        "over its workers with --rpc HOST:PORT,... The protocol has no authentication: "
        "a worker listens on loopback unless --insecure (see SECURITY.md).",
    )
    worker.add_argument(
        "--bind", metavar="HOST:PORT", help="address to listen on (default 127.0.0.1:50052)"
    )
    worker.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address (private networks only)",
    )
    worker.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: all cores)")
    worker.add_argument(
        "--device",
        metavar="NAME",
        help="the device to lend, as `shimmy diag` names it (default: first GPU, else CPU)",
    )
    worker.add_argument(
        "--cache",
        action="store_true",
        help="keep tensors sent to this worker on disk, for faster reloads",
    )
