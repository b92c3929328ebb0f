"""``shimmy worker``: lend this machine's GPU (or CPU) to another shimmy over
llama.cpp's RPC protocol (``shimmy serve --rpc HOST:PORT``).

The protocol has no authentication and no encryption, and a worker runs
whatever graph a client sends it: so a worker listens on loopback unless told
``--insecure``, and SECURITY.md says how to run one on a private network.
"""

from __future__ import annotations

import argparse
import sys
import threading

from shimmy.errors import ShimmyError

DEFAULT_RPC_PORT = 50052  # llama.cpp's rpc-server's default


def cmd_worker(args: argparse.Namespace) -> int:
    from shimmy.api.address import parse_bind
    from shimmy.api.security import is_loopback
    from shimmy.config import Paths, default_threads
    from shimmy.models import backends

    host, port = parse_bind(args.bind, None, "127.0.0.1", DEFAULT_RPC_PORT)
    if not 1 <= port <= 65535:
        raise ShimmyError("invalid_request", "A worker needs a port (1-65535)")
    if not is_loopback(host) and not args.insecure:
        raise ShimmyError(
            "invalid_request",
            f"Refusing to lend this machine on {host}",
            "llama.cpp's RPC protocol has no authentication or encryption: anyone who "
            "reaches the port can use this machine's memory and compute. On a private "
            "network, pass --insecure (SECURITY.md)",
        )
    if not backends.rpc_available():
        raise ShimmyError(
            "invalid_request",
            "This llama.cpp build has no RPC backend",
            "scripts/setup builds llama-cpp-python with GGML_RPC=ON",
        )
    threads = args.threads or default_threads()
    cache_dir = None
    if args.cache:
        folder = Paths.from_env().cache_dir / "rpc"
        folder.mkdir(parents=True, exist_ok=True)
        cache_dir = str(folder)
    endpoint = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            backends.serve_rpc(endpoint, threads=threads, cache_dir=cache_dir, device=args.device)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    # ggml's server blocks in C for good; a thread leaves Ctrl-C to Python.
    thread = threading.Thread(target=serve, name="rpc-worker", daemon=True)
    print(
        f"shimmy worker: llama.cpp RPC on {endpoint}; Ctrl-C stops it", file=sys.stderr, flush=True
    )
    thread.start()
    while thread.is_alive():
        thread.join(0.5)
    if failure and isinstance(failure[0], ShimmyError):
        raise failure[0]
    # start_server returns only when it could not listen (ggml printed why).
    raise ShimmyError(
        "server_error", f"The RPC worker could not listen on {endpoint}", "is the port in use?"
    )
