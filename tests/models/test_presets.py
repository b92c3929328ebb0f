"""Presets: the config file's [models.NAME] tables, read and checked, listed as
models, loaded with their own settings, and their defaults under the request's."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shimmy.config import ModelPreset, Paths, Settings, load_settings, parse_presets
from shimmy.errors import ShimmyError
from shimmy.models.discovery import ModelEntry
from shimmy.models.generation import SamplingParams
from shimmy.models.gguf import read_gguf_info
from shimmy.models.manager import ModelManager
from shimmy.models.presets import apply_sampling, preset_entries, with_system
from shimmy.models.registry import ModelRegistry
from tests.real_model import SMOLLM2_NAME

PIRATE = "You are a pirate. Answer every question like a pirate would."


def paths_with(tmp_path: Path, text: str) -> Paths:
    paths = Paths(tmp_path / "c", tmp_path / "d", tmp_path / "k", tmp_path / "l")
    paths.config_dir.mkdir(exist_ok=True)
    paths.config_file.write_text(text)
    return paths


def test_a_models_table_becomes_a_preset(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIMMY_CONFIG", raising=False)
    paths = paths_with(
        tmp_path,
        f"""
ctx_size = 2048

[models.pirate]
model = "{SMOLLM2_NAME}"
description = "SmolLM2 as a pirate"
system = "{PIRATE}"
temperature = 0.2
top_k = 5
seed = 7
ctx_size = 512
parallel = 1
cache_type_k = "q8_0"
""",
    )
    settings = load_settings(paths)
    assert settings.ctx_size == 2048
    (preset,) = settings.presets
    assert preset == ModelPreset(
        name="pirate",
        model=SMOLLM2_NAME,
        engine=(("ctx_size", 512), ("parallel", 1), ("cache_type_k", "q8_0")),
        sampling=(("temperature", 0.2), ("top_k", 5), ("seed", 7)),
        system=PIRATE,
        description="SmolLM2 as a pirate",
    )


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"Bad Name!": {"model": "x"}}, "Bad model name"),
        ({"default": {"model": "x"}}, "Bad model name"),
        ({"a" * 101: {"model": "x"}}, "Bad model name"),
        ({"p": "not a table"}, "must be a table"),
        ({"p": {}}, "needs model"),
        ({"p": {"model": 3}}, "needs model"),
        ({"p": {"model": "x" * 5000}}, "needs model"),
        ({"p": {"model": "x", "temperature": 9}}, "Bad temperature"),
        ({"p": {"model": "x", "temperature": "hot"}}, "Bad temperature"),
        ({"p": {"model": "x", "temperature": float("nan")}}, "Bad temperature"),
        ({"p": {"model": "x", "top_k": 1.5}}, "Bad top_k"),
        ({"p": {"model": "x", "top_k": True}}, "Bad top_k"),
        ({"p": {"model": "x", "parallel": 0}}, "Bad parallel"),
        ({"p": {"model": "x", "ctx_size": 1 << 40}}, "Bad ctx_size"),
        ({"p": {"model": "x", "spec": "yes"}}, "Bad spec"),
        ({"p": {"model": "x", "system": ["a"]}}, "Bad system"),
        ({"p": {"model": "x", "system": "s" * 70_000}}, "Bad system"),
        ({"p": {"model": "x", "gpu_layers": [1]}}, "Bad gpu_layers"),
        ({"p": {"model": "x", "api_keys": ["k"]}}, "Unknown key 'api_keys'"),
        ({f"m{i}": {"model": "x"} for i in range(300)}, "more than 256"),
    ],
)
def test_bad_tables_are_refused_with_what_is_accepted(table, said):
    with pytest.raises(ShimmyError) as caught:
        parse_presets(table, "config.toml")
    assert caught.value.code == "invalid_request"
    assert said in caught.value.message


def test_models_must_be_tables_and_presets_are_no_setting(tmp_path, monkeypatch):
    monkeypatch.delenv("SHIMMY_CONFIG", raising=False)
    with pytest.raises(ShimmyError, match="must hold"):
        load_settings(paths_with(tmp_path, 'models = "x"\n'))
    with pytest.raises(ShimmyError, match="Unknown setting"):
        load_settings(paths_with(tmp_path, 'presets = ["x"]\n'))
    monkeypatch.setenv("SHIMMY_PRESETS", "x")  # no such variable: ignored
    assert load_settings(paths_with(tmp_path, "")).presets == ()


def test_a_bad_offload_value_names_the_preset(isolated_home):
    preset = ModelPreset("gpu", SMOLLM2_NAME, engine=(("flash_attn", "sometimes"),))
    with pytest.raises(ShimmyError) as caught:
        ModelManager(Settings(presets=(preset,)))
    assert "[models.gpu]" in caught.value.message and "--flash-attn" in caught.value.message


@pytest.mark.parametrize(
    "model", ["hf.co/only-one-part", "hf.co/a/b/notes.txt", "hf.co/bad name/x", "hf.co/a/.."]
)
def test_a_bad_hugging_face_name_names_the_preset(isolated_home, model):
    preset = ModelPreset("hub", model)
    with pytest.raises(ShimmyError) as caught:
        ModelManager(Settings(presets=(preset,)))
    assert caught.value.code == "invalid_request"
    assert "[models.hub]" in caught.value.message


def test_request_fields_win_over_the_preset():
    preset = ModelPreset("p", "m", sampling=(("temperature", 0.1), ("top_k", 3)))
    unset = frozenset({"top_k", "top_p"})
    sampling = apply_sampling(preset, SamplingParams(temperature=1.2, unset=unset))
    assert (sampling.temperature, sampling.top_k) == (1.2, 3)
    assert sampling.top_p == SamplingParams().top_p  # the preset says nothing of it
    assert apply_sampling(preset, SamplingParams(temperature=1.2)).top_k == 40  # all given


def test_the_system_prompt_opens_only_a_conversation_without_one():
    preset = ModelPreset("p", "m", system=PIRATE)
    asked = [{"role": "user", "content": "Hi"}]
    assert with_system(preset, asked) == [{"role": "system", "content": PIRATE}, *asked]
    own = [{"role": "system", "content": "Be brief."}, *asked]
    assert with_system(preset, own) == own


def test_presets_are_listed_and_resolved_like_models(isolated_home, smollm2_path, tmp_path):
    presets = (
        ModelPreset("pirate", SMOLLM2_NAME, system=PIRATE),
        ModelPreset("by-path", str(smollm2_path)),
        ModelPreset("gone", "no-such-model"),
        ModelPreset("hub", "hf.co/some-org/Some-GGUF:Q4_K_M"),
    )
    registry = ModelRegistry([])
    registry.set_presets(presets)
    entries = {e.name: e for e in registry.entries()}
    assert entries["pirate"].usable and entries["pirate"].source == "preset"
    assert entries["pirate"].origin == SMOLLM2_NAME
    assert entries["pirate"].path == smollm2_path
    assert entries["by-path"].usable
    assert entries[SMOLLM2_NAME].source == "python"  # the model itself stays listed
    assert not entries["gone"].usable and "no-such-model" in (entries["gone"].error or "")
    assert not entries["gone"].offered
    # A hub model not on this machine: offered, and pulled when first loaded.
    hub = entries["hub"]
    assert hub.offered and not hub.usable and hub.error is None
    assert (hub.pull, hub.source, hub.info) == ("hf.co/some-org/Some-GGUF:Q4_K_M", "preset", None)
    assert registry.resolve("pirate").name == "pirate"
    assert registry.resolve("hub") == hub


def test_a_client_naming_a_hub_model_no_preset_names_is_not_found(isolated_home):
    registry = ModelRegistry([])
    registry.set_presets((ModelPreset("hub", "hf.co/some-org/Some-GGUF:Q4_K_M"),))
    for name in ("hf.co/some-org/Some-GGUF:Q4_K_M", "hf.co/other/Repo-GGUF", "some-org/Some-GGUF"):
        with pytest.raises(ShimmyError) as caught:
            registry.resolve(name)
        assert caught.value.code == "model_not_found"


def pulled_file(tmp_path: Path, smollm2_path: Path, file_name: str) -> ModelEntry:
    """SmolLM2 (a Q4_1 header) as the Hugging Face cache lists a pulled file."""
    snapshot = tmp_path / "hub/models--Org--Repo-GGUF/snapshots/abc"
    snapshot.mkdir(parents=True, exist_ok=True)
    path = snapshot / file_name
    return ModelEntry(
        name=file_name.lower().removesuffix(".gguf"),
        path=path,
        parts=(path,),
        source="huggingface",
        size=smollm2_path.stat().st_size,
        info=read_gguf_info(smollm2_path),
        error=None,
        origin="Org/Repo-GGUF",
    )


def hub_preset(model: str, listed: list[ModelEntry]) -> ModelEntry:
    (entry,) = preset_entries(
        [ModelPreset("p", model)], listed, alias_of=lambda _: None, file_entry=lambda _: None
    )
    return entry


def test_a_pulled_file_is_found_by_the_quantization_its_name_or_header_says(tmp_path, smollm2_path):
    q8 = pulled_file(tmp_path, smollm2_path, "Model-Q8_0.gguf")
    # The repository names its file Q8_0 (what `shimmy pull REPO:Q8_0` fetched) ...
    assert hub_preset("hf.co/org/repo-gguf:q8_0", [q8]).origin == q8.name
    # ... and the header says Q4_1: both name it.
    assert hub_preset("hf.co/Org/Repo-GGUF:Q4_1", [q8]).origin == q8.name
    assert hub_preset("hf.co/Org/Repo-GGUF/Model-Q8_0.gguf", [q8]).origin == q8.name
    assert hub_preset("hf.co/Org/Repo-GGUF", [q8]).origin == q8.name  # the only file
    for missing in (
        "hf.co/Org/Repo-GGUF:Q5_K_M",
        "hf.co/Org/Other:Q8_0",
        "hf.co/Org/Repo-GGUF/x.gguf",
    ):
        assert hub_preset(missing, [q8]).pull == missing


def test_without_a_quantization_the_pull_default_is_preferred(tmp_path, smollm2_path):
    files = [
        pulled_file(tmp_path, smollm2_path, name)
        for name in ("Model-Q8_0.gguf", "Model-Q4_K_M.gguf", "Model-IQ4_XS.gguf")
    ]
    assert hub_preset("hf.co/Org/Repo-GGUF", files).origin == "model-q4_k_m"


def test_an_unusable_pulled_file_makes_the_preset_unusable_not_pulled_again(tmp_path, smollm2_path):
    broken = dataclasses.replace(
        pulled_file(tmp_path, smollm2_path, "Model-Q8_0.gguf"), info=None, error="bad header"
    )
    entry = hub_preset("hf.co/Org/Repo-GGUF:Q8_0", [broken])
    assert entry.pull is None and not entry.offered and "bad header" in (entry.error or "")


@pytest.fixture
def pirate_manager(isolated_home):
    preset = ModelPreset(
        "pirate",
        SMOLLM2_NAME,
        engine=(("ctx_size", 512), ("parallel", 1)),
        sampling=(("temperature", 1.5), ("top_k", 1), ("seed", 3)),
        system=PIRATE,
    )
    manager = ModelManager(
        Settings(keep_alive=-1, ctx_size=256, parallel=2, cache_ram=0, presets=(preset,))
    )
    yield manager
    manager.close()


@pytest.mark.model
def test_a_preset_loads_with_its_own_settings_beside_its_model(pirate_manager):
    pirate = pirate_manager.engine("pirate")
    plain = pirate_manager.engine(SMOLLM2_NAME)
    assert pirate is not plain
    assert (pirate.n_parallel, pirate.n_ctx) == (1, 512)
    assert (plain.n_parallel, plain.n_ctx) == (2, 256)


@pytest.mark.model
def test_the_preset_system_prompt_and_sampling_take_effect(pirate_manager):
    unset = frozenset(SamplingParams.__dataclass_fields__) - {"unset"}
    generation = pirate_manager.submit_chat(
        "pirate",
        [{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        sampling=SamplingParams(unset=unset),
    )
    assert generation.wait(60)
    engine = pirate_manager.engine("pirate")
    assert PIRATE in engine.detokenize(generation.request.prompt_tokens)
    sampling = generation.request.sampling
    assert (sampling.temperature, sampling.top_k, sampling.seed) == (1.5, 1, 3)
    # top_k 1 is greedy whatever the temperature: the preset's settings shaped the text.
    greedy = pirate_manager.submit_chat(
        "pirate",
        [{"role": "user", "content": "Name a colour."}],
        max_tokens=8,
        sampling=SamplingParams(temperature=0.0),
    )
    assert greedy.wait(60) and greedy.output == generation.output


@pytest.mark.model
def test_the_request_own_fields_and_system_prompt_override_the_preset(pirate_manager):
    unset = frozenset(SamplingParams.__dataclass_fields__) - {"unset", "temperature"}
    generation = pirate_manager.submit_chat(
        "pirate",
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        max_tokens=4,
        sampling=SamplingParams(temperature=0.3, unset=unset),
    )
    assert generation.wait(60)
    text = pirate_manager.engine("pirate").detokenize(generation.request.prompt_tokens)
    assert "Be brief." in text and PIRATE not in text
    sampling = generation.request.sampling
    assert (sampling.temperature, sampling.top_k) == (0.3, 1)
