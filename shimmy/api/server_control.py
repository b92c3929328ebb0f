"""The dashboard's embedded API server: start, stop and rebind it.

It holds no Textual, so it lives in the api layer beside :class:`EmbeddedServer`
(the dashboard drives it from its thread workers). Importing it imports neither
FastAPI nor uvicorn: they load on the first start, after the dashboard's first
frame.

The FastAPI app is built once, on first start, so its request log outlives a
restart on another port (until then ``request_log`` is an empty stand-in, or
the one a test hands in). Every method blocks (binding, uvicorn start-up and
shutdown), so the dashboard calls them from thread workers.

Every rebind and start applies ``shimmy serve``'s own check
(:func:`shimmy.api.security.check_bind`): no address beyond this machine without
an API key, unless the settings say ``insecure``.

The Ollama listener (``--ollama``) is a second ServerControl, the main one's
``ollama``: it serves Ollama's API over the same manager and reports into the
main one's /metrics and request log; the Server tab switches it on and off, and
a port it cannot take is its error, never the dashboard's end.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from shimmy.api.requestlog import RequestLog
from shimmy.errors import ShimmyError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shimmy.api.app import Observers
    from shimmy.api.server import EmbeddedServer
    from shimmy.models.manager import ModelManager


class ServerControl:
    """One embedded server for ``manager``, listening on ``host:port`` once started."""

    def __init__(
        self,
        manager: ModelManager,
        host: str,
        port: int,
        *,
        request_log: RequestLog | None = None,
        ollama: tuple[str, int] | None = None,
        ollama_on: bool = False,
    ) -> None:
        """``ollama``: the address of Ollama's listener (the ``ollama`` property),
        which ``ollama_on`` says to start with this one."""
        self.manager = manager
        self.host = host
        self.port = port
        self.request_log = RequestLog() if request_log is None else request_log
        self.error: str | None = None  # why the last start or rebind failed
        self.started_at: float | None = None  # time.monotonic() of the last start
        self.listener = "api"
        self.flag = "--bind"  # the option that names this address, for hints
        self.ollama: ServerControl | None = None
        self.ollama_on = ollama_on
        self._main: ServerControl | None = None  # whose observers an Ollama listener shares
        self._observers: Observers | None = None
        self._server: EmbeddedServer | None = None
        self._app: FastAPI | None = None
        self._lock = threading.Lock()
        if ollama is not None:
            self.ollama = ServerControl(manager, *ollama, request_log=self.request_log)
            self.ollama.listener, self.ollama.flag, self.ollama._main = "ollama", "--ollama", self

    @property
    def bind(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        server = self._server
        return server is not None and server.running

    @property
    def url(self) -> str | None:
        server = self._server
        return server.url if server is not None and server.running else None

    @property
    def uptime_seconds(self) -> float | None:
        if not self.running or self.started_at is None:
            return None
        return time.monotonic() - self.started_at

    def observers(self) -> Observers:
        """The /metrics counters and request log of every listener of this dashboard."""
        if self._main is not None:
            return self._main.observers()
        with self._lock:
            if self._observers is None:
                from shimmy.api.app import Observers

                self._observers = Observers.of(self.manager, self.request_log)
            return self._observers

    def rebind(self, bind: str) -> None:
        """Take a new ``HOST:PORT`` (used by the next start). Raises ``ShimmyError``,
        keeping the old address, on a bad one or one that :meth:`check` refuses."""
        from shimmy.api.address import parse_bind
        from shimmy.config import DEFAULT_OLLAMA_PORT, DEFAULT_PORT

        try:
            default_port = DEFAULT_OLLAMA_PORT if self.listener == "ollama" else DEFAULT_PORT
            host, port = parse_bind(bind, None, self.host, default_port)
            self.check(host)
        except ShimmyError as exc:
            self.error = describe(exc)
            raise
        self.host, self.port = host, port

    def check(self, host: str) -> None:
        """Refuse ``host`` as ``shimmy serve`` would: beyond this machine only with an
        API key or ``insecure`` (may resolve a host name, so call it off the UI)."""
        from shimmy.api.security import check_bind

        settings = self.manager.settings
        check_bind(host, settings.api_keys, settings.insecure)

    def start(self) -> str:
        """Bind and start serving; returns the URL. Raises ``ShimmyError`` (port in use...)."""
        from shimmy.api.app import create_app, create_ollama_app
        from shimmy.api.server import EmbeddedServer, open_socket

        observers = self.observers()
        with self._lock:
            if self._server is not None and self._server.running:
                return self._server.url
            try:
                self.check(self.host)
                sock = open_socket(self.host, self.port, flag=self.flag)
            except ShimmyError as exc:
                self.error = describe(exc)
                raise
            if self._app is None:
                build = create_ollama_app if self.listener == "ollama" else create_app
                self._app = build(self.manager, observers=observers)
            server = EmbeddedServer(self._app, sock)
            try:
                server.start()
            except ShimmyError as exc:
                self.error = describe(exc)
                server.stop()
                raise
            self._server = server
            self.error = None
            self.started_at = time.monotonic()
            return server.url

    def stop(self) -> None:
        """Stop serving and free the port; a no-op when not running."""
        with self._lock:
            server, self._server = self._server, None
            self.started_at = None
        if server is not None:
            server.stop()


def describe(error: ShimmyError) -> str:
    """Why a start or rebind failed, as the Server tab shows it: the message and its
    details, the words ``shimmy serve`` prints (without its "error: ")."""
    return f"{error.message} ({error.details})" if error.details else error.message
