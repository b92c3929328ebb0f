"""Who may talk to the server: API keys, and refusing unsafe binds.

With keys configured, every HTTP route and WebSocket except ``/api/health``
needs one, as ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` (WebSockets
may also pass ``?api_key=KEY``, since browsers cannot set headers on them).
Keys are compared in constant time against every configured key.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from collections.abc import Sequence
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from shimmy.api.error_shapes import ErrorBody, shimmy_error_body
from shimmy.api.refusal import refuse
from shimmy.errors import ShimmyError

OPEN_PATHS = frozenset({"/api/health"})

# The request-state entry naming whose prompt cache a request may use (see
# cache_scope); absent means the shared one.
CACHE_SCOPE = "shimmy_cache_scope"


def cache_scope(scope: Scope) -> str:
    """The prompt-cache scope of a request: its API key's when several keys are
    configured, else "" (everyone shares one cache, as they share one key)."""
    state = scope.get("state") or {}
    return str(state.get(CACHE_SCOPE, ""))


def read_key_file(path: str) -> list[str]:
    """Keys from a file, one a line; blank lines and ``#`` comments are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise ShimmyError(
            "invalid_request", f"Cannot read --api-key-file {path}", str(exc)
        ) from exc
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ShimmyError("invalid_request", f"--api-key-file {path} holds no keys")
    return keys


def check_keys(keys: Sequence[str]) -> None:
    """Refuse keys that protect nothing: an empty or blank key (``--api-key ""``,
    an empty line in a script's variable) would let an empty header in."""
    for key in keys:
        if not key.strip():
            raise ShimmyError(
                "invalid_request",
                "An API key must not be empty",
                "check --api-key, --api-key-file and SHIMMY_API_KEY",
            )


def matching_key(candidate: str, keys: Sequence[str]) -> int | None:
    """The index of the key ``candidate`` is, or None. Constant time in the
    candidate's content: every key is compared, always. An empty candidate
    never matches, whatever the keys are."""
    given = candidate.encode()
    found: int | None = None
    for index, key in enumerate(keys):
        if hmac.compare_digest(given, key.encode()) and given:
            found = index
    return found


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror:
        return False
    addresses = {str(info[4][0]).split("%")[0] for info in infos}
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)


def check_bind(host: str, keys: Sequence[str], insecure: bool) -> None:
    """Refuse to listen beyond this machine without an API key, unless told to."""
    if keys or insecure or is_loopback(host):
        return
    raise ShimmyError(
        "invalid_request",
        f"Refusing to listen on {host} without an API key",
        "anyone who can reach this address could use your models; set --api-key KEY "
        "(or SHIMMY_API_KEY), or pass --insecure to allow it anyway",
    )


def _presented_key(scope: Scope) -> str | None:
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"x-api-key":
            return value.decode("latin-1").strip()
    if scope["type"] == "websocket":
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if query.get("api_key"):
            return query["api_key"][0]
    return None


class ApiKeyAuth:
    """Pure ASGI, so it guards HTTP routes and WebSockets alike, before any routing."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Sequence[str],
        *,
        open_paths: frozenset[str] = OPEN_PATHS,
        error_body: ErrorBody = shimmy_error_body,
    ) -> None:
        check_keys(keys)
        self.app = app
        self.keys = tuple(keys)
        self.open_paths = open_paths
        self.error_body = error_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        key = _presented_key(scope)
        index = None if key is None else matching_key(key, self.keys)
        if index is not None:
            if len(self.keys) > 1:
                # Each key's prompts are cached apart, so that one key's clients
                # cannot learn from cached_tokens what another key's sent.
                scope.setdefault("state", {})[CACHE_SCOPE] = f"key-{index}"
            await self.app(scope, receive, send)
            return
        error = ShimmyError(
            "unauthorized",
            "A valid API key is required",
            "send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'"
            if key is None
            else "the API key is not valid",
        )
        challenge = [(b"www-authenticate", b'Bearer realm="shimmy"')]
        await refuse(scope, receive, send, error, challenge, self.error_body)
