"""A model file whose chat template is hostile, served by the real `shimmy serve`.

The GGUF is SmolLM2 with its ``tokenizer.chat_template`` replaced by a template
that loops, doubles a string or floods output, depending on the last message
(and renders like ChatML otherwise). Each hostile request must be answered
``model_invalid`` within the render time limit, the server must keep serving,
and its memory (with its renderer workers) must not grow by gigabytes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import websockets

from shimmy.models.template_render import RENDER_TIMEOUT_S
from tests.e2e.harness import Server, isolated_env, start_server
from tests.process_tree import tree_rss
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

HOSTILE = "hostile-template"
GOOD = "smollm2-135m-instruct-q4_1"  # the packaged model, discovered beside it
# Without limits each branch takes minutes or ~2 GB (bounded so that a server
# without the limits still survives this test on a small machine).
TEMPLATE = (
    "{% set last = messages[-1]['content'] %}"
    "{% if last == 'loop' %}"
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    "{% elif last == 'double' %}"
    "{% set ns = namespace(x='a') %}{% for i in range(30) %}{% set ns.x = ns.x ~ ns.x %}"
    "{% endfor %}{{ ns.x | length }}"
    "{% elif last == 'flood' %}"
    "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}"
    "{% else %}"
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    "{% endif %}"
)
# A refused render costs its time limit, a worker kill and a fresh worker's start.
ANSWER_WITHIN_S = RENDER_TIMEOUT_S + 5
RSS_GROWTH_LIMIT = 100 << 20


def copy_with_chat_template(source: Path, dest: Path, template: str) -> Path:
    """``source`` rewritten to ``dest`` with every key, tensor and byte kept but
    its ``tokenizer.chat_template``, written with the gguf package's writer."""
    import gguf

    reader = gguf.GGUFReader(source)
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
    assert arch is not None
    writer = gguf.GGUFWriter(str(dest), str(arch.contents()), endianess=reader.endianess)
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in (
            gguf.Keys.General.ARCHITECTURE,
            gguf.Keys.Tokenizer.CHAT_TEMPLATE,
        ):
            continue
        if field.name == gguf.Keys.General.ALIGNMENT:
            writer.data_alignment = int(field.contents())
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_chat_template(template)
    for t in reader.tensors:
        writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
    writer.close()
    return dest


@pytest.fixture(scope="module")
def served(tmp_path_factory, smollm2_path) -> Iterator[tuple[Server, httpx.Client]]:
    root = tmp_path_factory.mktemp("hostile-template")
    folder = root / "models"
    folder.mkdir()
    copy_with_chat_template(smollm2_path, folder / f"{HOSTILE}.gguf", TEMPLATE)
    args = ["--model-dirs", str(folder), "--no-preload", "--ctx-size", "512"]
    server = start_server(args, isolated_env(root), cwd=root)
    try:
        with httpx.Client(base_url=server.url, timeout=ANSWER_WITHIN_S + 60) as client:
            # Load both models and start a renderer, so that what follows
            # measures renders, not loads.
            for model in (HOSTILE, GOOD):
                assert chat(client, model, "Hi").status_code == 200
            yield server, client
    finally:
        server.stop()


def chat(client: httpx.Client, model: str, content: str, timeout: float = 120) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return client.post("/v1/chat/completions", json=body, timeout=timeout)


class PeakRss:
    """Samples the server tree's RSS in a thread while a request runs."""

    def __init__(self, server: Server) -> None:
        self.process = psutil.Process(server.process.pid)
        self.start = tree_rss(self.process)
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.005):
            self.peak = max(self.peak, tree_rss(self.process))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, tree_rss(self.process))

    @property
    def growth(self) -> int:
        return self.peak - self.start


def assert_refused(response: httpx.Response, words: str) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "model_invalid"
    assert error["message"].startswith(f"The model's chat template ran too {words}")


@pytest.mark.parametrize(
    ("content", "words"), [("loop", "long"), ("double", "large"), ("flood", "large")]
)
def test_hostile_template_is_refused_in_time_and_memory(served, content, words):
    server, client = served
    started = time.monotonic()
    with PeakRss(server) as rss:
        response = chat(client, HOSTILE, content, timeout=ANSWER_WITHIN_S)
    elapsed = time.monotonic() - started
    assert_refused(response, words)
    assert elapsed < ANSWER_WITHIN_S
    assert rss.growth < RSS_GROWTH_LIMIT, f"RSS grew by {rss.growth >> 20} MB"
    # The same model still answers messages its template renders.
    assert chat(client, HOSTILE, "Hi").status_code == 200


def test_generate_goes_through_the_same_limits(served):
    _, client = served
    body = {"model": HOSTILE, "prompt": "loop", "max_tokens": 2}
    started = time.monotonic()
    response = client.post("/api/generate", json=body, timeout=ANSWER_WITHIN_S)
    assert time.monotonic() - started < ANSWER_WITHIN_S
    assert_refused(response, "long")


def test_server_keeps_serving_while_a_template_loops(served):
    _, client = served
    answers: dict[str, httpx.Response] = {}
    refused_at: list[float] = []

    def hostile_request() -> None:
        answers["loop"] = chat(client, HOSTILE, "loop", ANSWER_WITHIN_S)
        refused_at.append(time.monotonic())

    hostile = threading.Thread(target=hostile_request)
    hostile.start()
    try:
        # Good requests are answered while the hostile render runs, not after it.
        for _ in range(3):
            started = time.monotonic()
            assert chat(client, GOOD, "Hi").status_code == 200
            assert client.get("/api/health").json()["status"] == "healthy"
            assert time.monotonic() - started < RENDER_TIMEOUT_S
        served_until = time.monotonic()
    finally:
        hostile.join(ANSWER_WITHIN_S + 5)
    assert_refused(answers["loop"], "long")
    assert refused_at[0] > served_until  # the loop ran all along


def busy_worker(server: Server, within: float = 10.0) -> psutil.Process:
    """The renderer worker that is using the CPU now (a looping render)."""
    process = psutil.Process(server.process.pid)
    seen: dict[int, float] = {}  # each child's CPU time at the last look

    def busy() -> psutil.Process | None:
        for child in process.children():
            try:
                used = sum(child.cpu_times()[:2])
            except psutil.NoSuchProcess:
                continue
            if child.pid in seen and used - seen[child.pid] > 0.02:
                return child
            seen[child.pid] = used
        return None

    return eventually(busy, within, interval=0.05, what="a renderer worker to get busy")


def raw_request(server: Server, path: str, body: dict) -> socket.socket:
    """An HTTP request sent by hand, so the test can hang up whenever it likes."""
    data = json.dumps(body).encode()
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return sock


def gone_within(worker: psutil.Process, seconds: float) -> float | None:
    started = time.monotonic()
    try:
        worker.wait(seconds)
    except psutil.TimeoutExpired:
        return None
    return time.monotonic() - started


LOOP_CHAT = {"model": HOSTILE, "messages": [{"role": "user", "content": "loop"}]}
LOOP_PROMPT = {"model": HOSTILE, "prompt": "loop"}


@pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", LOOP_CHAT), ("/api/generate", LOOP_PROMPT)]
)
def test_a_render_stops_when_its_http_client_leaves(served, path, body):
    server, client = served
    sock = raw_request(server, path, {**body, "max_tokens": 2})
    worker = busy_worker(server)
    sock.close()
    # Stopped at once, not at the end of its time limit.
    stopped_after = gone_within(worker, RENDER_TIMEOUT_S - 1)
    assert stopped_after is not None and stopped_after < 1.0, stopped_after
    assert chat(client, GOOD, "Hi").status_code == 200


def test_a_render_stops_when_its_websocket_client_leaves_or_cancels(served):
    server, client = served

    async def leave(then_cancel: bool) -> float | None:
        url = server.url.replace("http://", "ws://") + "/ws/generate"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({**LOOP_PROMPT, "max_tokens": 2}))
            worker = await asyncio.to_thread(busy_worker, server)
            if then_cancel:
                await ws.send(json.dumps({"cancel": True}))
                answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert answer["error"]["code"] == "generation_failed", answer
        return await asyncio.to_thread(gone_within, worker, RENDER_TIMEOUT_S - 1)

    for then_cancel in (False, True):
        stopped_after = asyncio.run(leave(then_cancel))
        assert stopped_after is not None and stopped_after < 1.0, (then_cancel, stopped_after)
    assert chat(client, GOOD, "Hi").status_code == 200
