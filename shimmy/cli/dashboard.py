"""``shimmy`` with no command: the Textual dashboard, with the API server inside.

The first frame waits for every import made before ``App.run``, so FastAPI,
uvicorn, llama.cpp and huggingface_hub are imported later, by the workers that
need them (tests/tui/test_imports.py).
"""

from __future__ import annotations

import argparse
import logging

from shimmy.cli.settings import open_manager, settings_from
from shimmy.errors import ExitCode

log = logging.getLogger("shimmy")


def cmd_dashboard(args: argparse.Namespace) -> int:
    """Run the dashboard until it quits; 1 if it crashed."""
    from shimmy.api.address import ollama_bind, parse_bind
    from shimmy.api.server_control import ServerControl
    from shimmy.chats import open_store
    from shimmy.config import Paths, chats_path
    from shimmy.tui.app import ShimmyApp
    from shimmy.tui.logsink import DashboardLogHandler, route_logging_to
    from shimmy.tui.native_stderr import native_stderr_to

    settings = settings_from(args)
    host, port = parse_bind(args.bind, None, settings.host)
    if not args.no_server:
        from shimmy.api.security import check_bind

        check_bind(host, settings.api_keys, settings.insecure)
    # Nothing may print onto the screen the dashboard draws: Python logging goes to
    # the Log tab, llama.cpp's own stderr to a file.
    from shimmy.redact import RedactQueryStrings

    log_handler = DashboardLogHandler(quiet_libraries=not args.verbose)
    log_handler.addFilter(RedactQueryStrings())
    previous = route_logging_to(log_handler, args.verbose)
    manager = open_manager(settings)
    # Ollama's listener is always on the Server tab; it starts with the dashboard
    # when --ollama (or the ollama setting) asks for it, else at Ollama's address.
    ollama = ollama_bind(settings.ollama)
    server = ServerControl(
        manager,
        host,
        port,
        ollama=ollama or ollama_bind("on"),
        ollama_on=ollama is not None and not args.no_server,
    )
    # A damaged database is kept aside and a new one started: the dashboard opens.
    chats = open_store(chats_path(settings))
    if chats.problem:
        log.error("%s", chats.problem)
    try:
        with native_stderr_to(Paths.from_env().log_dir / "dashboard-stderr.log") as path:
            log.info("llama.cpp's own messages go to %s", path)
            app = ShimmyApp(
                manager,
                server,
                serve=not args.no_server,
                log_handler=log_handler,
                chats=chats.store,
                chats_problem=chats.problem,
            )
            code = app.run()
    finally:
        server.stop()
        if server.ollama is not None:
            server.ollama.stop()
        manager.close()
        chats.store.close()
        logging.getLogger().handlers[:] = previous
    if code is None:
        # A dashboard that crashed returns nothing but says so in its return code.
        return ExitCode.FAILURE if app.return_code else ExitCode.OK
    return int(code)
