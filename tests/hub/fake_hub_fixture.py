"""The ``fake_hub`` fixture: a fake hub on 127.0.0.1 serving the real SmolLM2 bytes.

A pytest plugin (tests/conftest.py names it in ``pytest_plugins``), so the hub's
tests and the dashboard's Hub tab tests share it without importing a conftest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.fakehub import FakeHub, smollm2_repos


@pytest.fixture
def fake_hub(
    smollm2_path: Path,
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[FakeHub]:
    """A started fake hub that ``HF_ENDPOINT`` points at, in an isolated home.

    Its split model (a real llama.cpp split of SmolLM2) is built once per test
    session, in the session's temporary folder, and shared by every test."""
    with FakeHub() as hub:
        for repo in smollm2_repos(smollm2_path, tmp_path_factory.getbasetemp() / "fakehub"):
            hub.add(repo)
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub
