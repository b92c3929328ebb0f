"""GPU layers, flash attention, KV cache types, GPU split and RPC workers:
checked from the settings, and passed to llama.cpp as asked."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import llama_cpp
import pytest

from shimmy.config import Settings, load_settings
from shimmy.errors import ShimmyError
from shimmy.models import placement
from shimmy.models.engine import EngineOptions, _load
from shimmy.models.gguf import read_gguf_info
from shimmy.models.memory import MemoryEstimate
from shimmy.models.offload import AUTO_HEADROOM_BYTES, Offload, parse_gpu_layers
from shimmy.models.registry import ModelRegistry

GIB = 1024**3


@pytest.mark.parametrize(
    ("raw", "layers"), [("auto", None), ("ALL", -1), ("0", 0), ("33", 33), (" 7 ", 7)]
)
def test_gpu_layers_take_a_count_auto_or_all(raw: str, layers: int | None) -> None:
    assert parse_gpu_layers(raw) == layers


@pytest.mark.parametrize("raw", ["-1", "lots", "1.5", "", "99999", "1e3"])
def test_bad_gpu_layers_are_refused_with_what_is_allowed(raw: str) -> None:
    with pytest.raises(ShimmyError, match="gpu-layers") as caught:
        parse_gpu_layers(raw)
    assert caught.value.code == "invalid_request"
    assert "auto or all" in (caught.value.details or "")


def test_settings_become_llama_cpp_values() -> None:
    settings = Settings(
        gpu_layers="12",
        flash_attn="on",
        cache_type_k="q8_0",
        cache_type_v="q4_0",
        main_gpu=1,
        tensor_split=("3", "1"),
        rpc=("10.0.0.2:50052", "[::1]:50053", "10.0.0.2:50052"),
    )
    offload = Offload.from_settings(settings)
    assert offload.gpu_layers == 12
    assert offload.flash_attn == llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
    assert offload.type_ids() == (llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_Q4_0)
    assert offload.main_gpu == 1
    assert offload.tensor_split == (3.0, 1.0)
    assert offload.rpc == ("10.0.0.2:50052", "[::1]:50053")  # each worker once
    assert Offload.from_settings(Settings()) == Offload()


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"flash_attn": "maybe"}, "--flash-attn"),
        ({"cache_type_k": "q3_k"}, "--cache-type-k"),
        ({"cache_type_v": "q8_0", "flash_attn": "off"}, "needs flash attention"),
        ({"main_gpu": -1}, "--main-gpu"),
        ({"tensor_split": ("1", "x")}, "--tensor-split"),
        ({"tensor_split": ("0", "0")}, "--tensor-split"),
        ({"tensor_split": ("nan",)}, "--tensor-split"),
        ({"tensor_split": ("1",) * 17}, "--tensor-split"),
        ({"rpc": ("no-port",)}, "--rpc"),
        ({"rpc": ("host:99999",)}, "--rpc"),
        ({"rpc": ("a b:1",)}, "--rpc"),
        ({"rpc": tuple(f"h{i}:1" for i in range(17))}, "--rpc"),
    ],
)
def test_bad_offload_settings_are_refused_naming_the_flag(fields: dict, says: str) -> None:
    with pytest.raises(ShimmyError, match=says) as caught:
        Offload.from_settings(Settings(**fields))
    assert caught.value.code == "invalid_request"


def test_offload_settings_come_from_the_config_file_and_environment(
    isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = isolated_home / "config.toml"
    config.write_text('gpu-layers = "all"\ntensor-split = ["3", "1"]\nflash-attn = "on"\n')
    monkeypatch.setenv("SHIMMY_CONFIG", str(config))
    monkeypatch.setenv("SHIMMY_CACHE_TYPE_K", "q8_0")
    monkeypatch.setenv("SHIMMY_RPC", "127.0.0.1:50052,127.0.0.1:50053")
    offload = Offload.from_settings(load_settings(flash_attn="off"))  # a flag beats the file
    assert (offload.gpu_layers, offload.type_k, offload.tensor_split) == (-1, "q8_0", (3.0, 1.0))
    assert offload.flash_attn == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
    assert offload.rpc == ("127.0.0.1:50052", "127.0.0.1:50053")


def test_auto_offloads_what_fits_beside_the_kv_cache_and_headroom() -> None:
    auto = Offload()
    sizes = {"n_layer": 30, "weights_bytes": 31 * GIB // 8, "kv_bytes": GIB}
    assert auto.layers_to_offload(**sizes, free_bytes=0) == 0  # no GPU
    assert auto.layers_to_offload(**sizes, free_bytes=8 * GIB) == -1  # all of it
    # 3 GiB free: 1 GiB headroom and 1 GiB of KV leave 1 GiB, 8 of the 31 layer-sized parts
    assert auto.layers_to_offload(**sizes, free_bytes=AUTO_HEADROOM_BYTES + 2 * GIB) == 8
    assert auto.layers_to_offload(**sizes, free_bytes=GIB) == 0
    assert Offload(gpu_layers=5).layers_to_offload(**sizes, free_bytes=0) == 5  # as asked


def test_q8_0_cache_takes_about_half_the_bytes_per_token() -> None:
    f16 = Offload().kv_bytes_per_token(30, 192, 192)
    q8 = Offload(type_k="q8_0", type_v="q8_0").kv_bytes_per_token(30, 192, 192)
    assert f16 == 30 * 2 * 192 * 2
    assert q8 / f16 == pytest.approx(34 / 64)


@pytest.mark.model
def test_flags_reach_llama_cpp_model_and_context_parameters(
    smollm2_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    seen: dict[str, object] = {}
    load_model, init_context = llama_cpp.llama_model_load_from_file, llama_cpp.llama_init_from_model

    def record_model(path: bytes, params: Any) -> Any:
        split = list(params.tensor_split[:2]) if params.tensor_split else None
        seen["model"] = (params.n_gpu_layers, params.main_gpu, split)
        return load_model(path, params)

    def record_context(model: Any, params: Any) -> Any:
        seen["context"] = (params.flash_attn_type, params.type_k, params.type_v)
        return init_context(model, params)

    monkeypatch.setattr(llama_cpp, "llama_model_load_from_file", record_model)
    monkeypatch.setattr(llama_cpp, "llama_init_from_model", record_context)
    monkeypatch.setattr(placement, "_warned", placement.threading.Event())
    entry = ModelRegistry([]).resolve_operator(str(smollm2_path))
    offload = Offload(
        gpu_layers=None, flash_attn=1, type_k="q8_0", type_v="q8_0", main_gpu=0, tensor_split=(1.0,)
    )
    options = EngineOptions.from_settings(Settings(ctx_size=256, parallel=1, threads=2))
    with caplog.at_level(logging.WARNING):
        model, context, _estimate, _placement = _load(entry, _with(options, offload))
    context.close()
    model.close()
    assert seen["model"] == (0, 0, [1.0, 0.0])  # auto: no GPU here, so no layers
    assert seen["context"] == (1, llama_cpp.GGML_TYPE_Q8_0, llama_cpp.GGML_TYPE_Q8_0)
    assert placement.NO_GPU_WARNING not in caplog.text  # auto asks for nothing


@pytest.mark.model
def test_gpu_layers_on_a_cpu_only_build_warn_once_and_run_on_the_cpu(
    smollm2_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(placement, "_warned", placement.threading.Event())
    monkeypatch.setattr("shimmy.models.backends.offload_devices", lambda: [])
    info = read_gguf_info(smollm2_path)
    estimate = MemoryEstimate(weights=10**8, kv_cache=10**6, compute=0, runtime=0)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert placement.placement_for(info, estimate, Offload(gpu_layers=-1)).gpu_layers == 0
    assert caplog.text.count(placement.NO_GPU_WARNING) == 1


MEASURE_KV = """
import json, sys
from pathlib import Path
import psutil
from shimmy.models.llamacpp import Context, Model
from shimmy.models.offload import Offload

process = psutil.Process()
model = Model(Path(sys.argv[1]))
offload = Offload(type_k=sys.argv[2], type_v=sys.argv[2], flash_attn=1)
before = process.memory_info().rss
context = Context(model, n_ctx=16384, n_seq=4, n_batch=256, threads=1, offload=offload)
grown = process.memory_info().rss - before
print(json.dumps({"grown": grown, "computed": model.kv_bytes_per_token(offload) * context.n_ctx}))
"""


@pytest.mark.model
def test_a_q8_0_kv_cache_halves_the_memory_measured(smollm2_path: Path) -> None:
    """RSS growth of a 16,384-token context, each cache type in a fresh process."""
    grown = {}
    for kind in ("f16", "q8_0"):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE_KV, str(smollm2_path), kind],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        grown[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    # f16: 30 layers x 2 x 192 x 2 bytes x 16,384 tokens = 360 MiB, plus compute buffers
    assert grown["f16"]["computed"] == 360 * 1024 * 1024
    assert grown["f16"]["grown"] > 0.9 * grown["f16"]["computed"]
    ratio = grown["q8_0"]["grown"] / grown["f16"]["grown"]
    assert 0.45 < ratio < 0.65, grown


def _with(options: EngineOptions, offload: Offload) -> EngineOptions:
    import dataclasses

    return dataclasses.replace(options, offload=offload)
