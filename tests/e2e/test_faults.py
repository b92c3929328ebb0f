"""Faults around model files: each gives a clear error and the server keeps serving."""

from __future__ import annotations

import os
import shutil

import httpx
import pytest

from tests.e2e.harness import isolated_env, start_server
from tests.gguf_writer import write_model
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

DEFAULT = "smollm2-135m-instruct-q4_1"


@pytest.fixture
def served(tmp_path, smollm2_path):
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(smollm2_path, folder / "mine.gguf")  # a copy: same-inode files list once
    write_model(folder / "alien.gguf", arch="notarealarch")
    env = isolated_env(tmp_path)
    args = ["--model-dirs", str(folder), "--model", DEFAULT, "--keep-alive", "1"]
    server = start_server([*args, "--ctx-size", "512"], env, cwd=tmp_path)
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield server, client, folder
    server.stop()


def generate(client: httpx.Client, model: str) -> httpx.Response:
    return client.post("/api/generate", json={"model": model, "prompt": "Hi", "max_tokens": 3})


def assert_still_serving(client: httpx.Client) -> None:
    assert client.get("/api/health").json()["status"] == "healthy"
    assert generate(client, DEFAULT).status_code == 200


def wait_unloaded(client: httpx.Client, model: str) -> None:
    def unloaded() -> bool:
        models = client.get("/api/models").json()["models"]
        return not any(m["id"] == model and m["loaded"] for m in models)

    eventually(unloaded, 30, interval=0.2, what="the idle model to be unloaded")


def test_model_whose_load_fails_is_a_clear_error(served):
    _, client, _ = served
    r = generate(client, "alien")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "model_load_failed" and "alien" in error["message"]
    assert "unknown model architecture: 'notarealarch'" in error["details"]
    assert_still_serving(client)


def test_model_file_deleted_while_loaded(served):
    _, client, folder = served
    assert generate(client, "mine").status_code == 200
    (folder / "mine.gguf").unlink()
    # The loaded copy keeps working (its pages are mapped)...
    assert generate(client, "mine").status_code == 200
    # ...and once it is unloaded, loading it again says the file is gone.
    wait_unloaded(client, "mine")
    r = generate(client, "mine")
    assert r.status_code == 500
    error = r.json()["error"]
    assert error["code"] == "model_load_failed" and "missing a file" in error["message"]
    assert_still_serving(client)


def test_model_file_replaced_by_a_bad_one_while_loaded(served):
    _, client, folder = served
    assert generate(client, "mine").status_code == 200
    bad = folder / "incoming.tmp"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    bad.replace(folder / "mine.gguf")  # as a download or an editor replaces a file
    assert generate(client, "mine").status_code == 200
    wait_unloaded(client, "mine")
    r = generate(client, "mine")
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_invalid"
    assert_still_serving(client)
