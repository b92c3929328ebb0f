"""``shimmy serve``: the API server in the foreground, and Ollama's API on a
second listener when ``--ollama`` (or the ``ollama`` setting) asks for it."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from shimmy import __version__
from shimmy.cli.settings import open_manager, settings_from
from shimmy.errors import ExitCode, ShimmyError

if TYPE_CHECKING:
    import socket


def cmd_serve(args: argparse.Namespace) -> int:
    """Listen (the ports are taken before any model loads) and serve until stopped."""
    from shimmy.api.address import ollama_bind, parse_bind
    from shimmy.api.app import Observers, create_app, create_ollama_app
    from shimmy.api.security import check_bind
    from shimmy.api.server import EmbeddedServer, open_socket, serve_forever, url_for

    settings = settings_from(args)
    host, port = parse_bind(args.bind, args.port, settings.host)
    check_bind(host, settings.api_keys, settings.insecure)
    ollama = ollama_bind(settings.ollama)
    if ollama is not None:
        check_bind(ollama[0], settings.api_keys, settings.insecure)
    sock = open_socket(host, port)
    ollama_sock = _ollama_socket(ollama) if ollama is not None else None
    manager = open_manager(settings)
    log_level = "info" if args.verbose else "warning"
    ollama_server: EmbeddedServer | None = None
    try:
        observers = Observers.of(manager)  # one /metrics and request log for both
        app = create_app(
            manager, preload=settings.preload and not args.no_preload, observers=observers
        )
        auth = "API key required" if settings.api_keys else "no API key"
        print(
            f"shimmy {__version__} serving on {url_for(sock)} ({auth})", file=sys.stderr, flush=True
        )
        if ollama_sock is not None:
            ollama_app = create_ollama_app(manager, observers=observers)
            ollama_server = EmbeddedServer(ollama_app, ollama_sock, log_level=log_level)
            ollama_server.start()
            print(f"Ollama's API on {ollama_server.url}", file=sys.stderr, flush=True)
        serve_forever(app, sock, on_shutdown=manager.cancel_all, log_level=log_level)
    finally:
        if ollama_server is not None:
            ollama_server.stop()
        manager.close()
    return ExitCode.OK


def _ollama_socket(address: tuple[str, int]) -> socket.socket | None:
    """The Ollama listener's socket, or None with the reason on stderr: a port in
    use (a real Ollama running, say) must not keep shimmy's own API from serving."""
    from shimmy.api.server import open_socket
    from shimmy.api.server_control import describe

    try:
        return open_socket(*address, flag="--ollama")
    except ShimmyError as exc:
        print(f"warning: Ollama's API is not served: {describe(exc)}", file=sys.stderr)
        return None
