"""The memory budget without a model: sizes, the plan of what to unload, the
settings that bound it (shimmy/models/memory.py)."""

from __future__ import annotations

import pytest

from shimmy.config import Paths, Settings, load_settings
from shimmy.errors import ShimmyError
from shimmy.models.memory import (
    MIB,
    Budget,
    Resident,
    check_memory_settings,
    headroom_bytes,
    parse_size,
    plan_room,
)

GIB = 1024 * MIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MB", 512 * MIB),
        ("8GB", 8 * GIB),
        ("8gb", 8 * GIB),
        ("1.5GiB", int(1.5 * GIB)),
        ("800M", 800 * MIB),
        (" 2 G ", 2 * GIB),
        ("1073741824", GIB),
        (1073741824, GIB),
    ],
)
def test_sizes_are_read_in_binary_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text", ["", "abc", "-1GB", "1e9", "8XB", "1KB", "10PB", "9" * 40, "1.2.3GB", "NaN"]
)
def test_bad_sizes_are_refused_with_what_is_accepted(text):
    with pytest.raises(ShimmyError) as caught:
        parse_size(text)
    assert caught.value.code == "invalid_request"
    assert "--memory-limit" in caught.value.message
    assert caught.value.details


def test_memory_settings_come_from_the_config_file_and_environment(tmp_path, monkeypatch):
    paths = Paths(tmp_path / "c", tmp_path / "d", tmp_path / "k", tmp_path / "l")
    paths.config_dir.mkdir()
    paths.config_file.write_text('memory_limit = "6GB"\nmax_loaded_models = 2\n')
    monkeypatch.delenv("SHIMMY_MEMORY_LIMIT", raising=False)
    monkeypatch.delenv("SHIMMY_MAX_LOADED_MODELS", raising=False)
    settings = load_settings(paths)
    assert check_memory_settings(settings) == (6 * GIB, 2)
    monkeypatch.setenv("SHIMMY_MEMORY_LIMIT", "512MB")
    assert check_memory_settings(load_settings(paths))[0] == 512 * MIB
    assert check_memory_settings(load_settings(paths, memory_limit="1GB"))[0] == GIB


@pytest.mark.parametrize(
    ("values", "flag"),
    [({"memory_limit": "lots"}, "--memory-limit"), ({"max_loaded_models": -1}, "--max-loaded")],
)
def test_bad_memory_settings_are_refused(values, flag):
    with pytest.raises(ShimmyError) as caught:
        check_memory_settings(Settings(**values))
    assert caught.value.code == "invalid_request" and flag in caught.value.message


def test_no_limit_means_none_and_no_cap():
    assert check_memory_settings(Settings()) == (None, 0)


def test_headroom_is_a_tenth_of_ram_within_bounds():
    assert headroom_bytes(1 * GIB) == 256 * MIB
    assert headroom_bytes(8 * GIB) == int(0.8 * GIB)
    assert headroom_bytes(256 * GIB) == 2 * GIB


def _budget(limit: int | None = None, available: int = 64 * GIB, max_models: int = 0) -> Budget:
    return Budget(limit=limit, available=available, headroom=GIB, max_models=max_models)


def test_a_model_that_fits_unloads_nothing():
    resident = [Resident("a", 2 * GIB, True, 1.0)]
    assert plan_room("b", 2 * GIB, resident, _budget(limit=5 * GIB)) == ()


def test_idle_models_go_least_recently_used_first_and_only_as_many_as_needed():
    resident = [
        Resident("newest", 2 * GIB, True, 30.0),
        Resident("oldest", 2 * GIB, True, 10.0),
        Resident("middle", 2 * GIB, True, 20.0),
    ]
    assert plan_room("x", 3 * GIB, resident, _budget(limit=7 * GIB)) == ("oldest",)
    assert plan_room("x", 5 * GIB, resident, _budget(limit=7 * GIB)) == ("oldest", "middle")


def test_the_ram_available_bounds_too():
    resident = [Resident("a", 2 * GIB, True, 1.0)]
    # 3 GiB available less 1 GiB headroom: the new 3 GiB needs the idle one gone.
    assert plan_room("b", 3 * GIB, resident, _budget(available=3 * GIB)) == ("a",)


def test_too_large_even_alone_is_model_load_failed_with_both_figures():
    resident = [Resident("a", 100 * MIB, True, 1.0)]
    with pytest.raises(ShimmyError) as caught:
        plan_room("big", 700 * MIB, resident, _budget(limit=512 * MIB))
    error = caught.value
    assert error.code == "model_load_failed" and error.status == 500
    assert "needs about 700MB" in error.message and "only 512MB is free" in error.message
    assert "--memory-limit 512MB" in (error.details or "")


def test_a_busy_model_that_could_make_room_is_server_busy():
    resident = [Resident("busy", 400 * MIB, False, 1.0)]
    with pytest.raises(ShimmyError) as caught:
        plan_room("b", 300 * MIB, resident, _budget(limit=512 * MIB))
    error = caught.value
    assert error.code == "server_busy" and error.status == 503
    assert error.headers.get("Retry-After")
    assert "needs about 300MB" in error.message and "only 112MB" in error.message


def test_nothing_is_unloaded_when_unloading_would_not_be_enough():
    resident = [Resident("idle", 100 * MIB, True, 1.0)]
    with pytest.raises(ShimmyError) as caught:
        plan_room("b", 2 * GIB, resident, _budget(limit=GIB))
    assert caught.value.code == "model_load_failed"


def test_the_count_cap_swaps_the_least_recently_used_idle_model():
    resident = [Resident("a", MIB, True, 2.0), Resident("b", MIB, True, 1.0)]
    assert plan_room("c", MIB, resident, _budget(max_models=2)) == ("b",)
    assert plan_room("c", MIB, resident[:1], _budget(max_models=2)) == ()


def test_the_count_cap_with_every_model_busy_is_server_busy():
    resident = [Resident("a", MIB, False, 2.0)]
    with pytest.raises(ShimmyError) as caught:
        plan_room("c", MIB, resident, _budget(max_models=1))
    assert caught.value.code == "server_busy"
    assert "--max-loaded-models" in caught.value.message


def test_loads_under_way_count_against_the_budget():
    with pytest.raises(ShimmyError):
        plan_room("c", 300 * MIB, [], _budget(limit=512 * MIB), loading=(300 * MIB,))
