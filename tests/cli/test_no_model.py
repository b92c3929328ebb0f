"""A first run with no model: every empty state says how to get one (the Hub tab
and `shimmy pull` with a small instruct model that fits), while the codes and
exit codes stay SEED-API.md's. Discovery's seven places are emptied: the home
is isolated and the packaged SmolLM2 (source 7) is hidden."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from shimmy.api.app import create_app
from shimmy.cli.entry import main
from shimmy.config import Settings
from shimmy.models import sources
from shimmy.models.first_model import SUGGESTED_MODELS, suggest_model
from shimmy.models.manager import ModelManager

GB = 1_000_000_000


@pytest.fixture
def no_models(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "_search_python", lambda search: None)


def said_how_to_get_one(text: str) -> bool:
    return "shimmy pull Qwen/" in text and "Hub tab" in text and "--model-dirs" in text


@pytest.mark.parametrize(
    ("available", "repo", "fits"),
    [
        (16 * GB, SUGGESTED_MODELS[2][0], True),
        (3 * GB, SUGGESTED_MODELS[1][0], True),
        (int(1.6 * GB), SUGGESTED_MODELS[0][0], True),
        (GB, SUGGESTED_MODELS[0][0], False),
    ],
)
def test_the_suggested_model_fits_the_memory_available(available, repo, fits):
    pick = suggest_model(available)
    assert (pick.repo, pick.fits) == (repo, fits)
    assert pick.command == f"shimmy pull {repo}"


def test_list_says_how_to_get_a_model(no_models, capsys):
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("No models found. ") and said_how_to_get_one(err)
    assert main(["list", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"


@pytest.mark.parametrize("argv", [["generate", "-p", "Hi"], ["probe"]])
def test_generate_and_probe_exit_3_and_say_how_to_get_a_model(no_models, capsys, argv):
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: The specified model was not found (No usable model")
    assert said_how_to_get_one(err)


def test_a_servers_first_request_says_how_to_get_a_model(no_models):
    manager = ModelManager(Settings(preload=False))
    try:
        app = create_app(manager, preload=False)

        async def ask() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                body = {"model": "default", "prompt": "Hi"}
                return await client.post("/api/generate", json=body)

        answer = asyncio.run(ask())
    finally:
        manager.close()
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert (error["code"], error["message"]) == (
        "model_not_found",
        "The specified model was not found",
    )
    assert said_how_to_get_one(error["details"])
