"""Running the API: in the foreground (``shimmy serve``) or embedded in a thread
(the dashboard). Both bind the listening socket themselves first, so a port in
use is a clear error rather than uvicorn exiting the process."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from shimmy.api.http_limits import BoundedHttpToolsProtocol
from shimmy.errors import ShimmyError


def open_socket(host: str, port: int, *, flag: str = "--bind") -> socket.socket:
    """A listening socket, or ``server_error`` saying why not (port in use, bad host;
    ``flag`` is the option that chose the address, for the hint)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ShimmyError("invalid_request", f"Cannot bind to '{host}'", str(exc)) from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ShimmyError(
                "server_error",
                f"Port {port} on {host} is already in use",
                f"Stop the other server or choose another port with {flag} HOST:PORT",
            ) from exc
        raise ShimmyError("server_error", f"Cannot listen on {host}:{port}", str(exc)) from exc
    sock.set_inheritable(True)
    return sock


def url_for(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def _config(app: FastAPI, log_level: str) -> uvicorn.Config:
    settings = app.state.manager.settings
    return uvicorn.Config(
        app,
        log_level=log_level,
        log_config=None,  # keep the root logging set up by the CLI or the dashboard
        # httptools (as uvicorn's "auto" picks it) with limits on headers; the loop
        # stays "auto": uvloop.
        http=BoundedHttpToolsProtocol.with_timeout(settings.header_timeout),
        ws="websockets-sansio",
        # A frame is a request body: the same bound (uvicorn's default is 16 MiB).
        ws_max_size=settings.max_body_bytes,
        timeout_graceful_shutdown=3,
        access_log=False,
    )


class _GracefulServer(uvicorn.Server):
    """uvicorn with shimmy's shutdown: the first SIGINT/SIGTERM stops accepting and
    ends every generation (streams get their final event), the second exits at
    once. Unlike uvicorn's own handling, the signal is not re-raised afterwards,
    so a clean shutdown exits 0."""

    def __init__(self, config: uvicorn.Config, on_shutdown: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in _SHUTDOWN_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            os._exit(130 if sig == signal.SIGINT else 143)  # asked twice: leave now
        self.should_exit = True
        self._on_shutdown()


_SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def serve_forever(
    app: FastAPI,
    sock: socket.socket,
    *,
    on_shutdown: Callable[[], None],
    log_level: str = "warning",
) -> None:
    """Run in the foreground until SIGINT/SIGTERM; ``on_shutdown`` runs at the first."""
    server = _GracefulServer(_config(app, log_level), on_shutdown)
    server.run(sockets=[sock])


class EmbeddedServer:
    """uvicorn in a background thread (it skips signal handlers off the main thread);
    stopped with ``should_exit`` and ``join`` (STYLE.md)."""

    def __init__(self, app: FastAPI, sock: socket.socket, *, log_level: str = "warning") -> None:
        self.sock = sock
        self.url = url_for(sock)
        self._server = uvicorn.Server(_config(app, log_level))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="shimmy-http", daemon=True
        )

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ShimmyError("server_error", "The embedded server did not start")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._server.started

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.sock.close()
