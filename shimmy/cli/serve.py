"""``shimmy serve``: the API server in the foreground."""

from __future__ import annotations

import argparse
import sys

from shimmy import __version__
from shimmy.cli.settings import open_manager, settings_from
from shimmy.errors import ExitCode


def cmd_serve(args: argparse.Namespace) -> int:
    """Listen (the port is taken before any model loads) and serve until stopped."""
    from shimmy.api.address import parse_bind
    from shimmy.api.app import create_app
    from shimmy.api.security import check_bind
    from shimmy.api.server import open_socket, serve_forever, url_for

    settings = settings_from(args)
    host, port = parse_bind(args.bind, args.port, settings.host)
    check_bind(host, settings.api_keys, settings.insecure)
    sock = open_socket(host, port)
    manager = open_manager(settings)
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
