"""`shimmy worker` and `shimmy serve --rpc`: a model spread over two llama.cpp
RPC workers on loopback writes what the same model writes locally."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import SHIMMY, isolated_env, run_shimmy, start_server
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

PROMPTS = ["Name three colors.", "Write a haiku about the sea."]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rpc")


@pytest.fixture(scope="module")
def workers(home) -> Iterator[list[str]]:
    env = isolated_env(home)
    started: list[subprocess.Popen[bytes]] = []
    endpoints = []
    try:
        for _ in range(2):
            port = free_port()
            started.append(
                subprocess.Popen(
                    [SHIMMY, "worker", "--bind", f"127.0.0.1:{port}", "--threads", "1"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            eventually(partial(accepts, port), 30, what=f"a worker on port {port}")
            endpoints.append(f"127.0.0.1:{port}")
        yield endpoints
    finally:
        for process in started:
            process.terminate()
            process.wait(10)


def greedy(url: str) -> list[str]:
    texts = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for prompt in PROMPTS:
            reply = client.post(
                "/api/generate",
                json={"model": "default", "prompt": prompt, "max_tokens": 32, "temperature": 0},
            )
            assert reply.status_code == 200, reply.text
            texts.append(reply.json()["choices"][0]["text"])
    return texts


def test_a_model_spread_over_two_workers_writes_the_local_text(home, workers):
    env = isolated_env(home)
    local = start_server(["--ctx-size", "512", "--parallel", "1"], env, cwd=home)
    try:
        expected = greedy(local.url)
    finally:
        local.stop()
    spread = start_server(
        ["-v", "--ctx-size", "512", "--parallel", "1", "--rpc", ",".join(workers)], env, cwd=home
    )
    try:
        assert greedy(spread.url) == expected
        log = spread.log()
    finally:
        spread.stop()
    # Both workers hold layers and KV cache; none of the model's layers stayed here.
    for endpoint in workers:
        assert f"[{endpoint}] model buffer size" in log
        assert f"[{endpoint}] KV buffer size" in log
    assert "offloaded 31/31 layers" in log


def test_a_worker_that_is_not_there_is_a_clear_error_and_the_server_keeps_serving(home):
    env = isolated_env(home)
    nobody = f"127.0.0.1:{free_port()}"
    server = start_server(["--no-preload", "--rpc", nobody], env, cwd=home)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            for _ in range(2):
                reply = client.post(
                    "/api/generate", json={"model": "default", "prompt": "hi", "max_tokens": 4}
                )
                assert reply.status_code == 500
                error = reply.json()["error"]
                assert error["code"] == "model_load_failed"
                assert nobody in error["message"]
            assert client.get("/api/health").status_code == 200
    finally:
        assert server.stop() == 0


def test_a_worker_refuses_a_non_loopback_address_without_insecure(home):
    result = run_shimmy(["worker", "--bind", "0.0.0.0:50052"], isolated_env(home), cwd=home)
    assert result.returncode == 2
    assert "Refusing to lend this machine on 0.0.0.0" in result.stderr
    assert "--insecure" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--gpu-layers", "lots"], "Bad --gpu-layers 'lots'"),
        (["--cache-type-v", "q8_0", "--flash-attn", "off"], "needs flash attention"),
        (["--rpc", "no-port"], "Bad --rpc worker 'no-port'"),
        (["--tensor-split", "1,x"], "Bad --tensor-split value 'x'"),
    ],
)
def test_bad_offload_flags_are_usage_errors_before_anything_loads(home, flags, says):
    result = run_shimmy(["generate", "-p", "hi", *flags], isolated_env(home), cwd=home)
    assert result.returncode == 2
    assert says in result.stderr and "Traceback" not in result.stderr


def test_diag_lists_the_devices_llama_cpp_sees(home):
    import json

    result = run_shimmy(["diag", "--json"], isolated_env(home), cwd=home)
    assert result.returncode == 0, result.stderr
    llama = json.loads(result.stdout)["llama_cpp"]
    assert llama["rpc"] is True
    cpu = [d for d in llama["devices"] if d["kind"] == "cpu"]
    assert cpu and cpu[0]["total_bytes"] > 0
    text = run_shimmy(["diag"], isolated_env(home), cwd=home).stdout
    assert "devices (llama.cpp):" in text and "CPU" in text


def test_a_worker_asked_for_a_device_that_is_not_there_names_the_ones_that_are(home):
    result = run_shimmy(
        ["worker", "--bind", f"127.0.0.1:{free_port()}", "--device", "CUDA7"],
        isolated_env(home),
        cwd=home,
    )
    assert result.returncode == 2
    assert "No device named 'CUDA7'" in result.stderr and "CPU" in result.stderr
    assert "Traceback" not in result.stderr
