"""`shimmy serve` with several models loaded at once, `--max-loaded-models`,
`--memory-limit`, and `shimmy ps` asking the running server, with the real
SmolLM2 file under two names."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Server, isolated_env, run_shimmy, start_server
from tests.real_model import SMOLLM2_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.model]

TWIN = "smollm2-twin"
SMALL = ["--ctx-size", "256", "--parallel", "1", "--no-preload", "--keep-alive", "-1"]


@pytest.fixture(scope="module")
def root(tmp_path_factory, smollm2_path) -> Path:
    root = tmp_path_factory.mktemp("loaded")
    (root / "twins").mkdir()
    shutil.copyfile(smollm2_path, root / "twins" / f"{TWIN}.gguf")
    return root


@pytest.fixture
def serve(root) -> Iterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        server.stop()


def start(root: Path, servers: list[Server], *args: str) -> Server:
    server = start_server(
        ["--model-dirs", str(root / "twins"), *SMALL, *args], isolated_env(root), cwd=root
    )
    servers.append(server)
    return server


def generate(server: Server, model: str) -> httpx.Response:
    body = {"model": model, "prompt": "Say hi.", "max_tokens": 5, "temperature": 0}
    return httpx.post(server.url + "/api/generate", json=body, timeout=120)


def ps(root: Path, server: Server, *args: str) -> str:
    bind = server.url.removeprefix("http://")
    done = run_shimmy(["ps", "--bind", bind, *args], isolated_env(root), cwd=root)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_two_models_serve_at_once_and_ps_lists_them(root, serve):
    server = start(root, serve)
    answers: dict[str, httpx.Response] = {}
    threads = [
        threading.Thread(target=lambda m=m: answers.__setitem__(m, generate(server, m)))
        for m in (SMOLLM2_NAME, TWIN)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    texts = {m: r.json()["choices"][0]["text"] for m, r in answers.items()}
    assert texts[SMOLLM2_NAME] == texts[TWIN] != ""
    listed = json.loads(ps(root, server, "--json"))
    assert [m["name"] for m in listed["models"]] == sorted([SMOLLM2_NAME, TWIN])
    for model in listed["models"]:
        assert model["memory_bytes"] > 100_000_000
        assert model["slots"] == 1 and model["context_length"] == 256
        assert model["unloads_in_seconds"] is None  # --keep-alive -1
        assert model["gpu_memory_bytes"] == 0  # no GPU here: all of it in host memory
    assert listed["memory"]["used_bytes"] == sum(m["memory_bytes"] for m in listed["models"])
    assert "cgroup_limit_bytes" in listed["memory"]  # null without a cgroup limit
    table = ps(root, server)
    assert table.splitlines()[0].split() == [
        "NAME",
        "MEMORY",
        "CONTEXT",
        "SLOTS",
        "QUEUED",
        "UNLOADS",
    ]
    assert TWIN in table and "0/1 busy" in table and "never" in table
    assert "estimated for loaded models" in table


def test_max_loaded_models_1_swaps_them(root, serve):
    server = start(root, serve, "--max-loaded-models", "1")
    first = generate(server, SMOLLM2_NAME)
    assert first.status_code == 200, first.text
    swapped = generate(server, TWIN)
    assert swapped.status_code == 200, swapped.text
    assert swapped.json()["choices"][0]["text"] == first.json()["choices"][0]["text"]
    listed = json.loads(ps(root, server, "--json"))
    assert [m["name"] for m in listed["models"]] == [TWIN]
    assert listed["memory"]["max_loaded_models"] == 1


def test_a_memory_limit_below_the_estimate_refuses_and_the_server_serves_on(root, serve):
    server = start(root, serve, "--memory-limit", "64MB")
    refused = generate(server, TWIN)
    assert refused.status_code == 500, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "needs about 1" in error["message"] and "only 64MB is free" in error["message"]
    assert "--memory-limit 64MB" in error["details"]
    health = httpx.get(server.url + "/api/health", timeout=10)
    assert health.status_code == 200 and health.json()["models_loaded"] == 0
    assert "No models loaded" in ps(root, server)


def test_bad_memory_flags_are_one_line_errors(root):
    env = isolated_env(root)
    for args in (["--memory-limit", "lots"], ["--max-loaded-models", "-3"]):
        done = run_shimmy(["serve", "--bind", "127.0.0.1:0", *args], env, cwd=root)
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_ps_without_a_server_says_how_to_start_one(root):
    done = run_shimmy(["ps", "--bind", "127.0.0.1:9"], isolated_env(root), cwd=root)
    assert done.returncode == 1
    assert "No shimmy server answers at http://127.0.0.1:9" in done.stderr
    assert "shimmy serve" in done.stderr
