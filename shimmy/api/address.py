"""The ``--bind`` address: parsed without importing the web stack, so the
dashboard can check it before its first paint."""

from __future__ import annotations

from shimmy.config import DEFAULT_HOST, DEFAULT_OLLAMA_PORT, DEFAULT_PORT
from shimmy.errors import ShimmyError

_OFF = frozenset({"", "off", "false", "no", "0"})
_ON = frozenset({"on", "true", "yes", "1"})


def parse_bind(
    bind: str | None, port: int | None, default_host: str, default_port: int = DEFAULT_PORT
) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``HOST`` or ``:PORT``; ``--port`` overrides the port."""
    host, bound_port = default_host, default_port
    if bind:
        text = bind.strip()
        if text.startswith("["):
            end = text.find("]")
            if end == -1:
                raise ShimmyError("invalid_request", f"Bad --bind address '{bind}'")
            host = text[1:end]
            rest = text[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ShimmyError("invalid_request", f"Bad --bind address '{bind}'")
                bound_port = _port(rest[1:], bind)
        elif text.count(":") == 1:
            head, tail = text.split(":")
            host = head or default_host
            bound_port = _port(tail, bind)
        else:
            host = text  # a bare host, or a bare IPv6 address
    if port is not None:
        bound_port = port
    if not 0 <= bound_port <= 65535:
        raise ShimmyError("invalid_request", f"Port {bound_port} is out of range (0-65535)")
    return host, bound_port


def _port(text: str, bind: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ShimmyError("invalid_request", f"Bad port in --bind '{bind}'") from None


def ollama_bind(setting: str) -> tuple[str, int] | None:
    """Where the Ollama listener listens (the ``ollama`` setting, ``--ollama``):
    ``HOST:PORT``, ``HOST`` or ``:PORT`` (the port defaults to Ollama's 11434),
    "on" for 127.0.0.1:11434, or None when it is off ("", "off")."""
    text = setting.strip()
    if text.lower() in _OFF:
        return None
    if text.lower() in _ON:
        return DEFAULT_HOST, DEFAULT_OLLAMA_PORT
    try:
        return parse_bind(text, None, DEFAULT_HOST, DEFAULT_OLLAMA_PORT)
    except ShimmyError as exc:
        # parse_bind words its errors for --bind; say which option was wrong.
        message = exc.message.replace("--bind", "--ollama")
        raise ShimmyError(exc.code, message, exc.details) from None
