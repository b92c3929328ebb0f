"""Protection from the web pages open in the user's browser.

Any page can send requests to 127.0.0.1: a "simple" cross-site POST (no
preflight, so CORS alone never stops it from running), a WebSocket (which CORS
does not cover at all), or, through DNS rebinding, requests under its own host
name whose answers it may then read. So, as Ollama does it:

- A request with an ``Origin`` header that is not allowed gets 403 on every
  route and WebSocket handshake, before anything runs. Allowed: pages served
  from this machine (``localhost``, ``*.localhost``, 127.0.0.1, ::1, 0.0.0.0, on
  any port, http or https), local app schemes (``app://``, ``file://``,
  ``tauri://``, ``vscode-webview://``) and the origins named with
  ``--cors-origin``. ``Origin: null`` (sandboxed frames, some redirects) is
  foreign. Requests without an Origin (curl, SDKs, scripts) are not from a
  page and pass, whatever their Content-Type.
- A connection that arrived on a loopback address must name a local ``Host``:
  a loopback, private or unspecified address, ``localhost``, this machine's
  name, or a ``.localhost``/``.local``/``.internal`` name. A rebound
  ``evil.example`` gets 403. The check looks at the address each connection
  came in on rather than the configured bind, so a server on 0.0.0.0 reached
  through 127.0.0.1 is covered too, and a rebind in the dashboard needs no
  rebuilt app.
- Allowed origins get CORS headers (``BrowserCors``), so a local web app can
  read what it asked for.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Sequence
from functools import lru_cache
from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from shimmy.api.error_shapes import ErrorBody, shimmy_error_body
from shimmy.api.refusal import refuse
from shimmy.errors import ShimmyError

LOCAL_APP_SCHEMES = frozenset({"app", "file", "tauri", "vscode-webview"})
LOCAL_HOST_SUFFIXES = (".localhost", ".local", ".internal")
_WEB_SCHEMES = ("http", "https")


def check_cors_origins(origins: Sequence[str]) -> None:
    """Refuse origin patterns that would let every page in (``*`` alone)."""
    for origin in origins:
        if origin.strip() in ("*", "*://*", "http://*", "https://*"):
            raise ShimmyError(
                "invalid_request",
                f"--cors-origin {origin!r} would let every web page use shimmy",
                "name the origins one by one, e.g. --cors-origin https://app.example",
            )


def _normal(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


@lru_cache(maxsize=1)
def _machine_name() -> str:
    # gethostname reads the kernel's name; getfqdn would ask DNS, on the event loop.
    return socket.gethostname().lower()


def _is_local_address(text: str) -> bool:
    try:
        address = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


def _is_local_name(host: str) -> bool:
    return (
        _is_local_address(host)
        or host == "localhost"
        or host.endswith(LOCAL_HOST_SUFFIXES)
        or host == _machine_name()
    )


def _host_without_port(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8080
        return host[1 : host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host  # a bare IPv6 address, or a name without a port


class OriginPolicy:
    """Which ``Origin`` values may use the API: local pages and apps, plus the
    configured ones (exact, or with ``*`` wildcards such as ``https://*.example``)."""

    def __init__(self, extra_origins: Sequence[str] = ()) -> None:
        check_cors_origins(extra_origins)
        self.extra = tuple(_normal(o) for o in extra_origins if o.strip())

    def allows(self, origin: str) -> bool:
        normal = _normal(origin)
        if any(fnmatch.fnmatchcase(normal, pattern) for pattern in self.extra):
            return True
        try:
            parts = urlsplit(normal)
            hostname = parts.hostname or ""
            parts.port  # noqa: B018 - raises ValueError for a port that is no number
        except ValueError:
            return False
        if parts.scheme in LOCAL_APP_SCHEMES:
            return True
        if parts.scheme not in _WEB_SCHEMES:
            return False  # "null" lands here, and so does any other scheme
        if hostname == "localhost" or hostname.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(hostname)
        except ValueError:
            return False
        return address.is_loopback or address.is_unspecified


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _arrived_on_loopback(scope: Scope) -> bool:
    server = scope.get("server")
    if not server:
        return False  # a Unix socket, or an in-process test transport
    try:
        return ipaddress.ip_address(str(server[0]).split("%")[0]).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    """Pure ASGI, outermost but for the request log: refuses foreign origins and
    rebound Host names before CORS, auth or any route sees the request."""

    def __init__(
        self, app: ASGIApp, policy: OriginPolicy, *, error_body: ErrorBody = shimmy_error_body
    ) -> None:
        self.app = app
        self.policy = policy
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self.policy.allows(origin):
            error = ShimmyError(
                "forbidden",
                "Requests from this web page's origin are not allowed",
                f"origin {origin[:200]!r}; start shimmy with --cors-origin ORIGIN to allow it",
            )
            await refuse(scope, receive, send, error, error_body=self.error_body)
            return
        if _arrived_on_loopback(scope):
            host = _host_without_port(_header(scope, b"host") or "localhost")
            if not _is_local_name(host):
                error = ShimmyError(
                    "forbidden",
                    "Requests naming this host are not allowed",
                    f"host {host[:200]!r} is not a local name; use localhost or 127.0.0.1",
                )
                await refuse(scope, receive, send, error, error_body=self.error_body)
                return
        await self.app(scope, receive, send)


class BrowserCors(CORSMiddleware):
    """Starlette's CORS with shimmy's origin policy: the pages BrowserGuard lets
    through may read the answers they asked for."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        super().__init__(
            app,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-api-key"],
            max_age=600,
        )
        self.policy = policy

    def is_allowed_origin(self, origin: str) -> bool:
        return self.policy.allows(origin)
