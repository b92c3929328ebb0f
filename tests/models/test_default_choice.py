"""Which model "default" means: a download never becomes it by itself (the Hugging
Face cache is searched first, so "first found" let every pull take over); the
user's choice is remembered across runs, in the API as in the dashboard."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shimmy.config import Paths, Settings
from shimmy.models.default_choice import FILE_NAME, RememberedDefault, longest_here
from shimmy.models.manager import ModelManager
from tests.gguf_writer import write_model
from tests.real_model import SMOLLM2_NAME

DAY = 86_400.0


def hf_model(hf_home: Path, repo_id: str, file: str, name: str) -> Path:
    """A file in the Hugging Face cache as a download leaves it (a blob, a link)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / (name * 8)[:64]
    blob.parent.mkdir(parents=True)
    write_model(blob, name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    link = repo / "snapshots" / ("a" * 40) / file
    link.parent.mkdir(parents=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return blob


def aged(path: Path, days: float) -> None:
    when = time.time() - days * DAY
    os.utime(path, (when, when))


def open_manager(model: str | None = None) -> ModelManager:
    return ModelManager(Settings(keep_alive=-1, preload=False, model=model))


@pytest.fixture
def pulled(isolated_home: Path, tmp_path: Path) -> Path:
    """A model just pulled into the Hugging Face cache, beside SmolLM2 (installed in
    a Python package with the test environment, so earlier)."""
    return hf_model(tmp_path / "hf", "someone/New-GGUF", "new-pulled.gguf", "new")


def names(manager: ModelManager) -> set[str]:
    return {e.name for e in manager.registry.entries()}


def test_a_pulled_model_does_not_become_the_default(pulled: Path) -> None:
    manager = open_manager()
    try:
        assert names(manager) == {"new-pulled", SMOLLM2_NAME}
        # The cache is searched before Python packages: "first found" chose the pull.
        first_found = manager.registry.entries()[0]
        assert (first_found.name, first_found.source) == ("new-pulled", "huggingface")
        assert manager.default_model_name == SMOLLM2_NAME
        assert manager.resolve("default").name == SMOLLM2_NAME  # what API clients get
    finally:
        manager.close()


def test_without_a_choice_the_oldest_file_wins(tmp_path: Path, isolated_home: Path) -> None:
    folder = tmp_path / "models"
    files = {n: write_model(folder / f"{n}.gguf", n) for n in ("aa", "bb", "cc")}
    for days, name in ((3, "aa"), (9, "bb"), (5, "cc")):
        aged(files[name], 100 + days)  # older than the SmolLM2 of the test environment
    manager = open_manager()
    try:
        assert manager.default_model_name == "bb"
        entries = manager.registry.entries()
        assert longest_here(entries) == next(e for e in entries if e.name == "bb")
        assert longest_here([e for e in entries if not e.usable]) is None
    finally:
        manager.close()


def test_the_users_choice_is_remembered_and_wins(pulled: Path) -> None:
    manager = open_manager()
    try:
        manager.set_default("new-pulled")
        assert manager.default_model_name == "new-pulled"
    finally:
        manager.close()
    remembered = Paths.from_env().data_dir / FILE_NAME
    assert remembered.exists()
    again = open_manager()  # the next run, dashboard or `shimmy serve`
    try:
        assert again.default_model_name == "new-pulled"
        assert again.resolve("default").name == "new-pulled"
    finally:
        again.close()
    # --model (or the config's model) is this run's choice and comes first.
    told = open_manager(model=SMOLLM2_NAME)
    try:
        assert told.default_model_name == SMOLLM2_NAME
    finally:
        told.close()


def test_a_remembered_model_that_is_gone_falls_back(pulled: Path) -> None:
    RememberedDefault(Paths.from_env().data_dir / FILE_NAME).remember("new-pulled")
    for path in pulled.parent.parent.rglob("*"):
        if path.is_symlink() or path.is_file():
            path.unlink()
    manager = open_manager()
    try:
        assert names(manager) == {SMOLLM2_NAME}
        assert manager.default_model_name == SMOLLM2_NAME
    finally:
        manager.close()


def test_a_damaged_remembered_file_is_no_choice(tmp_path: Path) -> None:
    path = tmp_path / FILE_NAME
    path.write_text("{not json")
    assert RememberedDefault(path).name is None
    path.write_text('{"model": 5}')
    assert RememberedDefault(path).name is None
