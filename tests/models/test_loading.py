"""Several models loaded at once within a memory budget, with the real SmolLM2
file under two names (a copy: a link is the same file, which discovery lists once)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shimmy.config import Settings
from shimmy.errors import ShimmyError
from shimmy.models import manager as manager_module
from shimmy.models.engine import Engine, EngineOptions
from shimmy.models.generation import SamplingParams
from shimmy.models.manager import ModelManager
from shimmy.models.memory import MIB, estimate_entry
from shimmy.models.registry import ModelRegistry
from tests.real_model import SMOLLM2_NAME
from tests.waiting import eventually

pytestmark = pytest.mark.model

TWIN = "smollm2-twin"
GREEDY = SamplingParams(temperature=0.0)
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def twin_dir(tmp_path_factory, smollm2_path) -> Path:
    folder = tmp_path_factory.mktemp("twins")
    shutil.copyfile(smollm2_path, folder / f"{TWIN}.gguf")
    return folder


def open_manager(twin_dir: Path, **values: object) -> ModelManager:
    settings = Settings(ctx_size=256, parallel=1, keep_alive=-1, cache_ram=0, **values)  # type: ignore[arg-type]
    return ModelManager(settings, ModelRegistry([twin_dir]))


def reply(manager: ModelManager, model: str) -> str:
    generation = manager.submit_prompt(model, "Say hi.", max_tokens=6, sampling=GREEDY)
    assert generation.wait(60)
    assert generation.finish_reason in ("stop", "length"), generation.error
    return generation.output


def test_two_models_are_loaded_and_serve_at_once(isolated_home, twin_dir):
    manager = open_manager(twin_dir)
    try:
        results: dict[str, str] = {}
        threads = [
            threading.Thread(target=lambda m=m: results.__setitem__(m, reply(manager, m)))
            for m in (SMOLLM2_NAME, TWIN)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert results[SMOLLM2_NAME] == results[TWIN] != ""  # the same weights, greedy
        assert manager.loaded_names() == sorted([SMOLLM2_NAME, TWIN])
        loaded = {m.name: m for m in manager.stats().loaded}
        assert loaded[TWIN].memory_bytes > 100 * MIB
    finally:
        manager.close()


def test_max_loaded_models_1_swaps_the_least_recently_used(isolated_home, twin_dir):
    manager = open_manager(twin_dir, max_loaded_models=1)
    try:
        first = reply(manager, SMOLLM2_NAME)
        assert manager.loaded_names() == [SMOLLM2_NAME]
        assert reply(manager, TWIN) == first
        assert manager.loaded_names() == [TWIN]
        reply(manager, SMOLLM2_NAME)
        assert manager.loaded_names() == [SMOLLM2_NAME]
    finally:
        manager.close()


def test_a_memory_limit_below_the_estimate_refuses_with_both_figures(isolated_home, twin_dir):
    manager = open_manager(twin_dir, memory_limit="64MB")
    try:
        with pytest.raises(ShimmyError) as caught:
            reply(manager, TWIN)
        error = caught.value
        assert error.code == "model_load_failed" and error.status == 500
        assert "needs about 1" in error.message and "only 64MB is free" in error.message
        assert "--memory-limit 64MB" in (error.details or "")
        assert manager.loaded_names() == []
    finally:
        manager.close()


def test_a_busy_model_in_the_way_is_server_busy_and_keeps_serving(isolated_home, twin_dir):
    entry = ModelRegistry([twin_dir]).resolve(TWIN)
    options = EngineOptions.from_settings(Settings(ctx_size=256, parallel=1, cache_ram=0))
    estimate = estimate_entry(entry, options)
    assert estimate is not None
    # Room for one of the two models, not both.
    limit = f"{(estimate.total * 3 // 2) // MIB}MB"
    manager = open_manager(twin_dir, memory_limit=limit)
    try:
        reply(manager, SMOLLM2_NAME)
        with manager.decode_lock:  # the loaded model's next request cannot end yet
            running = manager.submit_prompt(SMOLLM2_NAME, "Say hi.", max_tokens=6, sampling=GREEDY)
            with pytest.raises(ShimmyError) as caught:
                reply(manager, TWIN)
        error = caught.value
        assert error.code == "server_busy" and error.status == 503
        assert error.headers.get("Retry-After")
        assert f"{estimate.total / MIB:.0f}MB" in error.message and "is free" in error.message
        assert running.wait(60) and running.finish_reason in ("stop", "length")
        assert manager.loaded_names() == [SMOLLM2_NAME]
        # Once it is idle, it makes way.
        reply(manager, TWIN)
        assert manager.loaded_names() == [TWIN]
    finally:
        manager.close()


def test_a_load_never_holds_up_generation_on_loaded_models(isolated_home, twin_dir, monkeypatch):
    manager = open_manager(twin_dir)
    started, release = threading.Event(), threading.Event()

    class SlowLoad(Engine):
        def __init__(self, entry, *args, **kwargs):
            if entry.name == TWIN:
                started.set()
                assert release.wait(60)
            super().__init__(entry, *args, **kwargs)

    try:
        first = reply(manager, SMOLLM2_NAME)
        monkeypatch.setattr(manager_module, "Engine", SlowLoad)
        loader = threading.Thread(target=manager.load, args=(TWIN,))
        loader.start()
        assert started.wait(60)
        assert reply(manager, SMOLLM2_NAME) == first  # while the twin is still loading
        assert not manager.is_loaded(TWIN)
        release.set()
        loader.join(120)
        eventually(lambda: manager.is_loaded(TWIN), what="the twin to load")
    finally:
        release.set()
        manager.close()


@pytest.mark.parametrize(
    ("ctx", "parallel", "batch", "cache_type"),
    [(4096, 4, 512, "f16"), (1024, 1, 512, "f16"), (2048, 2, 256, "q8_0")],
)
def test_the_estimate_is_within_15_percent_of_the_memory_a_load_takes(
    ctx, parallel, batch, cache_type
):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "tests.models.rss_probe", str(ctx), str(parallel), str(batch)]
        + [cache_type],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
        env=env,
        check=True,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    estimate = figures["estimate"]
    for measured in (figures["after_short_generation"], figures["after_full_batches"]):
        assert abs(estimate - measured) <= 0.15 * measured, figures
