"""Presets ([models.NAME] in the config file) through the real `shimmy serve`:
listed in every API, their defaults applied, a request's own fields over them;
`shimmy list` shows them; a preset bigger than the memory limit is refused
while a small one serves on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import Server, isolated_env, run_shimmy, start_server
from tests.e2e.test_ollama import ollama_url
from tests.real_model import SMOLLM2_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.model]

CONFIG = f"""
[models.terse]
model = "{SMOLLM2_NAME}"
description = "SmolLM2, greedy and short"
system = "Answer in one word."
temperature = 0.0
ctx_size = 512
parallel = 1

[models.roomy]
model = "{SMOLLM2_NAME}"
ctx_size = 8192
parallel = 8
"""


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("presets")
    (root / "config.toml").write_text(CONFIG)
    return root


@pytest.fixture(scope="module")
def env(root) -> dict[str, str]:
    return isolated_env(root, SHIMMY_CONFIG=str(root / "config.toml"))


@pytest.fixture(scope="module")
def server(root, env) -> Iterator[Server]:
    # 300MB: room for the model and the terse preset (about 140MB each, with one
    # slot of 512 tokens), not for roomy's 8 slots of 8192 tokens.
    args = ["--no-preload", "--memory-limit", "300MB", "--ollama", "127.0.0.1:0"]
    args += ["--ctx-size", "512", "--parallel", "1"]
    srv = start_server(args, env, cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def test_presets_are_listed_in_every_api(server, client):
    native = {m["id"]: m for m in client.get("/api/models").json()["models"]}
    assert {"terse", "roomy", SMOLLM2_NAME} <= set(native)
    assert native["terse"]["source"] == "preset"
    openai = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert openai["terse"]["owned_by"] == SMOLLM2_NAME
    tags = httpx.get(ollama_url(server) + "/api/tags", timeout=30).json()["models"]
    assert {"terse:latest", "roomy:latest"} <= {m["name"] for m in tags}


def chat(client: httpx.Client, model: str, system: str | None, **fields: object) -> dict:
    messages = [{"role": "user", "content": "Name a colour."}]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    body = {"model": model, "messages": messages, "max_tokens": 6, **fields}
    answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


def text(answer: dict) -> str:
    return answer["choices"][0]["message"]["content"]


def test_a_preset_default_applies_and_a_request_field_overrides_it(client):
    body = {"model": "terse", "prompt": "Name a colour.", "max_tokens": 6}
    first = client.post("/api/generate", json=body).json()
    assert first["model"] == "terse"
    # The model itself, told what the preset says: the same prompt and, greedy, the same text.
    told = chat(client, SMOLLM2_NAME, "Answer in one word.", temperature=0)
    assert first["usage"]["prompt_tokens"] == told["usage"]["prompt_tokens"]
    assert first["choices"][0]["text"] == text(told)
    assert text(chat(client, "terse", None)) == text(told)  # no temperature: the preset's 0
    # The request's own system prompt and temperature win.
    own = chat(client, "terse", "Be brief.", temperature=0)
    assert (
        own["usage"]["prompt_tokens"]
        == chat(client, SMOLLM2_NAME, "Be brief.", temperature=0)["usage"]["prompt_tokens"]
    )
    hot = {text(chat(client, "terse", None, temperature=1.9, seed=seed)) for seed in (1, 2, 3)}
    assert hot != {text(told)}  # seeded, so the same every run


def test_a_preset_bigger_than_the_limit_is_refused_while_the_small_one_serves(client):
    refused = client.post("/api/generate", json={"model": "roomy", "prompt": "Hi"})
    assert refused.status_code == 500, refused.text
    error = refused.json()["error"]
    assert error["code"] == "model_load_failed"
    assert "Model 'roomy' needs about" in error["message"]
    assert "is free for it" in error["message"] and "300MB" in error["details"]
    served = client.post("/api/generate", json={"model": "terse", "prompt": "Hi", "max_tokens": 3})
    assert served.status_code == 200, served.text


def test_list_shows_presets(root, env):
    done = run_shimmy(["list"], env, cwd=root)
    assert done.returncode == 0, done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("terse "))
    assert "preset" in line and line.endswith("ok")


def test_a_bad_preset_is_one_line_error_at_start(root):
    (root / "bad.toml").write_text('[models.x]\nmodel = "m"\ntemperature = 7\n')
    env = isolated_env(root, SHIMMY_CONFIG=str(root / "bad.toml"))
    done = run_shimmy(["serve", "--bind", "127.0.0.1:0"], env, cwd=root)
    assert done.returncode == 2
    assert "Bad temperature [models.x]" in done.stderr
    assert done.stderr.count("\n") == 1
