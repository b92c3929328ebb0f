"""uvicorn runs shimmy's API with its fast parts: httptools' C parser and uvloop's
event loop (they cut the server's CPU per streamed token; bench/RESULTS.md)."""

from __future__ import annotations

import asyncio
import sys

import pytest
from fastapi import FastAPI

from shimmy.api.server import _config


def test_the_http_parser_is_httptools():
    config = _config(FastAPI(), "warning")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop does not exist on Windows")
def test_the_event_loop_is_uvloop():
    import uvloop

    factory = _config(FastAPI(), "warning").get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()
