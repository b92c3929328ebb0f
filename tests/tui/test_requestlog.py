"""The API request log the dashboard shows: one record per request, filled from
the real generation (tokens, TTFT, tok/s), for plain, streamed and WebSocket calls."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from shimmy.api.app import create_app
from shimmy.api.requestlog import WEBSOCKET_OPEN, RequestLog
from shimmy.models.manager import ModelManager
from tests.real_model import SMOLLM2_NAME


def test_ring_buffer_keeps_the_newest() -> None:
    log = RequestLog(capacity=3)
    for i in range(5):
        record = log.open("c", "GET", f"/{i}")
        log.close(record, 200)
    assert [r.path for r in log.records()] == ["/2", "/3", "/4"]
    assert all(r.done and r.status == 200 and r.model is None for r in log.records())


@pytest.mark.model
def test_records_generations_of_every_kind(manager: ModelManager) -> None:
    app = create_app(manager)
    log: RequestLog = app.state.request_log
    body = {"model": SMOLLM2_NAME, "prompt": "Say hi.", "max_tokens": 8, "temperature": 0}
    with TestClient(app) as client:
        assert client.get("/api/health").status_code == 200
        assert client.post("/api/generate", json=body).status_code == 200
        with client.stream("POST", "/api/generate", json={**body, "stream": True}) as response:
            assert response.status_code == 200
            response.read()
        assert (
            client.post("/api/generate", json={"model": "nope", "prompt": "x"}).status_code == 404
        )
        with client.websocket_connect("/ws/generate") as ws:
            for _ in range(2):
                ws.send_text(json.dumps(body))
                while "done" not in ws.receive_json():
                    pass
    records = log.records()
    endpoints = [(r.endpoint, r.status) for r in records]
    assert endpoints == [
        ("GET /api/health", 200),
        ("POST /api/generate", 200),
        ("POST /api/generate", 200),
        ("POST /api/generate", 404),
        ("WS /ws/generate", WEBSOCKET_OPEN),
        ("WS /ws/generate", WEBSOCKET_OPEN),
    ]
    for record in records[1:3] + records[4:]:
        assert record.model == SMOLLM2_NAME
        assert record.prompt_tokens and record.prompt_tokens > 0
        assert record.completion_tokens and 0 < record.completion_tokens <= 8
        assert record.time_to_first_token is not None
        assert record.done
    assert records[0].model is None and records[3].model is None
    assert records[0].client  # "testclient:50000" under TestClient
