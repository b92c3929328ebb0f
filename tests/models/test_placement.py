"""Layers offloaded to GPUs leave host memory (shimmy/models/placement.py), and
their weights and KV cache count against the GPUs' free memory instead
(memory.py's plan_room). This machine has no GPU: the devices are fakes handed
in as arguments, or put where the manager asks for them; a CPU-only run keeps
everything in host memory, as before."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from shimmy.config import Settings
from shimmy.errors import ShimmyError
from shimmy.models import placement
from shimmy.models.backends import Device
from shimmy.models.engine import EngineOptions
from shimmy.models.gguf import read_gguf_info
from shimmy.models.manager import ModelManager
from shimmy.models.memory import MIB, Budget, MemoryEstimate, Resident, estimate_entry, plan_room
from shimmy.models.offload import AUTO_HEADROOM_BYTES, Offload
from shimmy.models.placement import Placement, place, split_estimate
from shimmy.models.registry import ModelRegistry
from tests.real_model import SMOLLM2_NAME

GIB = 1024 * MIB
# 30 layers (SmolLM2's count): 31 equal weight shares with the output layer.
ESTIMATE = MemoryEstimate(
    weights=31 * 100 * MIB, kv_cache=30 * 10 * MIB, compute=50 * MIB, runtime=20 * MIB
)


def gpu(name: str = "CUDA0", free: int = 8 * GIB, total: int = 24 * GIB) -> Device:
    return Device(name, "a fake GPU", "gpu", "CUDA", free, total, handle=0)


# -- the arithmetic -----------------------------------------------------------------------


def test_no_gpu_layers_keep_everything_in_host_memory():
    assert split_estimate(ESTIMATE, 30, 0) == Placement(0, ESTIMATE.total, 0)


def test_some_layers_take_their_weights_and_kv_cache_to_the_gpus():
    half = split_estimate(ESTIMATE, 30, 15)
    # 15 of 31 weight shares, 15 of 30 layers' KV cache.
    assert half.gpu_bytes == 15 * 100 * MIB + 15 * 10 * MIB
    assert half.host_bytes == ESTIMATE.total - half.gpu_bytes
    assert half.gpu_layers == 15


@pytest.mark.parametrize("layers", [-1, 31, 99, 10_000])
def test_all_layers_leave_only_compute_and_runtime_in_host_memory(layers):
    everything = split_estimate(ESTIMATE, 30, layers)
    assert everything.gpu_bytes == ESTIMATE.weights + ESTIMATE.kv_cache
    assert everything.host_bytes == ESTIMATE.compute + ESTIMATE.runtime
    assert everything.gpu_layers == layers  # llama.cpp gets what was asked


def test_every_repeating_layer_but_not_the_output_layer():
    layers = split_estimate(ESTIMATE, 30, 30)
    assert layers.gpu_bytes == 30 * 100 * MIB + ESTIMATE.kv_cache


def test_a_header_without_a_layer_count_keeps_everything_in_host_memory():
    assert split_estimate(ESTIMATE, 0, -1) == Placement(-1, ESTIMATE.total, 0)


@pytest.fixture(scope="module")
def smollm2_info(smollm2_path: Path):
    return read_gguf_info(smollm2_path)


def test_without_gpus_the_placement_is_the_cpu_one_whatever_was_asked(smollm2_info):
    for offload in (Offload(), Offload(gpu_layers=-1), Offload(gpu_layers=12)):
        assert place(smollm2_info, ESTIMATE, offload, []) == Placement(0, ESTIMATE.total, 0)


def test_auto_places_what_fits_in_the_gpus_free_memory(smollm2_info):
    roomy = place(smollm2_info, ESTIMATE, Offload(), [gpu(free=8 * GIB)])
    assert roomy == split_estimate(ESTIMATE, 30, -1)
    # Two GPUs' free memory together: headroom and KV cache, then 8 weight shares.
    tight = place(
        smollm2_info,
        ESTIMATE,
        Offload(),
        [gpu("CUDA0", AUTO_HEADROOM_BYTES), gpu("CUDA1", 300 * MIB + 800 * MIB + MIB)],
    )
    assert tight.gpu_layers == 8
    assert tight.gpu_bytes == 8 * 100 * MIB + 8 * 10 * MIB


def test_asked_layers_are_placed_as_asked_even_when_they_do_not_fit(smollm2_info):
    # Whether they fit is plan_room's to say, with both figures.
    asked = place(smollm2_info, ESTIMATE, Offload(gpu_layers=-1), [gpu(free=MIB)])
    assert asked == split_estimate(ESTIMATE, 30, -1)


def test_placement_for_asks_this_process_for_its_devices(smollm2_info, monkeypatch, caplog):
    monkeypatch.setattr(placement, "_warned", placement.threading.Event())
    monkeypatch.setattr("shimmy.models.backends.offload_devices", lambda: [gpu()])
    assert placement.placement_for(smollm2_info, ESTIMATE, Offload()).gpu_layers == -1
    monkeypatch.setattr("shimmy.models.backends.offload_devices", lambda: [])
    with caplog.at_level(logging.WARNING):
        cpu = placement.placement_for(smollm2_info, ESTIMATE, Offload(gpu_layers=-1))
    assert cpu == Placement(0, ESTIMATE.total, 0)
    assert placement.NO_GPU_WARNING in caplog.text


# -- the budget: host memory and GPU memory -------------------------------------------------


def budget(*gpus: Device, available: int = 64 * GIB) -> Budget:
    return Budget(limit=None, available=available, headroom=GIB, gpus=gpus)


def test_offloaded_bytes_do_not_count_against_host_memory():
    # 3 GiB of host memory left after the headroom: the whole model would not fit,
    # its host part does, and its GPU part fits the GPU.
    split = split_estimate(ESTIMATE, 30, -1)
    assert ESTIMATE.total > 3 * GIB > split.host_bytes
    assert (
        plan_room(
            "m", split.host_bytes, [], budget(gpu(), available=4 * GIB), need_gpu=split.gpu_bytes
        )
        == ()
    )
    with pytest.raises(ShimmyError):
        plan_room("m", ESTIMATE.total, [], budget(available=4 * GIB))


def test_too_big_for_the_gpus_is_refused_with_both_figures():
    with pytest.raises(ShimmyError) as caught:
        plan_room("m", 70 * MIB, [], budget(gpu(free=2 * GIB, total=8 * GIB)), need_gpu=3 * GIB)
    error = caught.value
    assert error.code == "model_load_failed" and error.status == 500
    assert "needs about 3.0GB of GPU memory" in error.message
    assert "only 2.0GB is free on the GPUs" in error.message
    assert "CUDA0 2.0GB free of 8.0GB" in (error.details or "")
    assert "--gpu-layers" in (error.details or "")


def test_loads_under_way_hold_their_gpu_memory():
    with pytest.raises(ShimmyError) as caught:
        plan_room("m", MIB, [], budget(gpu(free=4 * GIB)), need_gpu=3 * GIB, loading_gpu=2 * GIB)
    assert "only 2.0GB is free on the GPUs" in caught.value.message


def test_only_models_on_the_gpus_make_way_when_gpu_memory_is_short():
    resident = [
        Resident("cpu-only", 2 * GIB, True, 1.0),  # least recently used, but holds no GPU memory
        Resident("on-gpu", 100 * MIB, True, 2.0, gpu_bytes=3 * GIB),
        Resident("also-on-gpu", 100 * MIB, True, 3.0, gpu_bytes=3 * GIB),
    ]
    assert plan_room("m", MIB, resident, budget(gpu(free=GIB)), need_gpu=3 * GIB) == ("on-gpu",)


def test_a_busy_model_on_the_gpus_is_server_busy():
    resident = [Resident("busy", 100 * MIB, False, 1.0, gpu_bytes=3 * GIB)]
    with pytest.raises(ShimmyError) as caught:
        plan_room("m", MIB, resident, budget(gpu(free=GIB)), need_gpu=3 * GIB)
    error = caught.value
    assert error.code == "server_busy" and error.headers.get("Retry-After")
    assert "loaded on the GPUs: busy 3.0GB" in (error.details or "")


def test_host_memory_short_is_said_before_gpu_memory():
    with pytest.raises(ShimmyError) as caught:
        plan_room("m", 8 * GIB, [], budget(gpu(free=GIB), available=4 * GIB), need_gpu=3 * GIB)
    assert "of memory, but only" in caught.value.message
    assert "GPU" not in caught.value.message


# -- the manager, with fake GPUs where it asks for them ------------------------------------


@pytest.fixture
def fake_gpus(monkeypatch):
    devices: list[Device] = []
    monkeypatch.setattr("shimmy.models.backends.offload_devices", lambda: list(devices))
    return devices


def open_manager(**values: object) -> ModelManager:
    settings = Settings(ctx_size=256, parallel=1, keep_alive=-1, cache_ram=0, **values)  # type: ignore[arg-type]
    return ModelManager(settings, ModelRegistry([]))


def smollm2_estimate(gpu_layers: str = "auto") -> MemoryEstimate:
    entry = ModelRegistry([]).resolve(SMOLLM2_NAME)
    options = EngineOptions.from_settings(
        Settings(ctx_size=256, parallel=1, cache_ram=0, gpu_layers=gpu_layers)
    )
    estimate = estimate_entry(entry, options)
    assert estimate is not None
    return estimate


def test_a_model_too_big_for_the_gpus_free_memory_is_refused_before_loading(
    isolated_home, fake_gpus
):
    fake_gpus.append(gpu(free=20 * MIB, total=GIB))
    manager = open_manager(gpu_layers="all")
    try:
        with pytest.raises(ShimmyError) as caught:
            manager.engine(SMOLLM2_NAME)
        error = caught.value
        assert error.code == "model_load_failed"
        assert "of GPU memory" in error.message and "only 20MB is free on the GPUs" in error.message
        assert manager.loaded_names() == []
    finally:
        manager.close()


@pytest.mark.model
def test_offloaded_layers_leave_the_host_budget(isolated_home, fake_gpus):
    estimate = smollm2_estimate("all")
    on_gpus = estimate.weights + estimate.kv_cache
    # A --memory-limit between the host part and the whole estimate.
    limit = (estimate.total - on_gpus // 2) // MIB
    assert (estimate.total - on_gpus) // MIB < limit < estimate.total // MIB
    fake_gpus.append(gpu(free=8 * GIB))
    manager = open_manager(gpu_layers="all", memory_limit=f"{limit}MB")
    try:
        engine = manager.engine(SMOLLM2_NAME)  # llama.cpp without a GPU backend runs it on the CPU
        assert engine.gpu_bytes == on_gpus
        assert engine.memory_bytes() == estimate.total - on_gpus
        (loaded,) = manager.stats().loaded
        assert (loaded.memory_bytes, loaded.gpu_memory_bytes) == (estimate.total - on_gpus, on_gpus)
    finally:
        manager.close()


@pytest.mark.model
def test_on_a_cpu_only_build_everything_counts_in_host_memory_as_before(isolated_home, monkeypatch):
    monkeypatch.setattr(placement, "_warned", placement.threading.Event())
    estimate = smollm2_estimate("all")
    limit = (estimate.total - (estimate.weights + estimate.kv_cache) // 2) // MIB
    manager = open_manager(gpu_layers="all", memory_limit=f"{limit}MB")
    try:
        with pytest.raises(ShimmyError) as caught:
            manager.engine(SMOLLM2_NAME)
        assert caught.value.code == "model_load_failed"
        assert f"needs about {estimate.total / MIB:.0f}MB of memory" in caught.value.message
    finally:
        manager.close()
    roomy = open_manager(gpu_layers="all")
    try:
        engine = roomy.engine(SMOLLM2_NAME)
        assert (engine.gpu_bytes, engine.memory_bytes()) == (0, estimate.total)
        assert engine.placement == Placement(0, estimate.total, 0)
    finally:
        roomy.close()
