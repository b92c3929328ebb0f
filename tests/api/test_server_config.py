"""uvicorn runs shimmy's API with its fast parts: httptools' C parser and uvloop's
event loop (they cut the server's CPU per streamed token; bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import sys
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shimmy.api.http_limits import BoundedHttpToolsProtocol
from shimmy.api.server import _config
from shimmy.config import Settings


def app_for(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.state.manager = SimpleNamespace(settings=settings)  # all _config reads
    return app


def test_the_http_parser_is_httptools_with_header_limits():
    config = _config(app_for(Settings()), "warning")
    config.load()
    assert config.http_protocol_class is BoundedHttpToolsProtocol
    assert issubclass(config.http_protocol_class, HttpToolsProtocol)
    quick = _config(app_for(Settings(header_timeout=0.5)), "warning")
    quick.load()
    assert issubclass(quick.http_protocol_class, BoundedHttpToolsProtocol)
    assert quick.http_protocol_class.header_timeout == 0.5


def test_websocket_frames_are_bounded_by_the_body_limit():
    config = _config(app_for(Settings(max_body_bytes=12345)), "warning")
    assert config.ws_max_size == 12345


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not exist on Windows")
def test_the_event_loop_is_uvloop():
    import uvloop

    factory = _config(app_for(Settings()), "warning").get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
