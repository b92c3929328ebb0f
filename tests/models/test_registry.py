"""The registry: resolving names and paths, refresh, places."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models import registry as registry_module
from shimmy.models.registry import Alias, ModelEntry, ModelRegistry, SearchPlace
from tests.gguf_writer import gguf_bytes, write_model

SMOLLM2 = "smollm2-135m-instruct-q4_1"


@pytest.fixture
def models(isolated_home: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    write_model(folder / "Alpha-7B.Q4_K_M.gguf", name="alpha")
    write_model(folder / "beta-q8_0.gguf", name="beta")
    write_model(folder / "beta-f16.gguf", name="beta16")
    return folder


def not_found(registry: ModelRegistry, name: str) -> ShimmyError:
    with pytest.raises(ShimmyError) as caught:
        registry.resolve(name)
    assert caught.value.code == "model_not_found"
    return caught.value


def test_entries_sorted_and_cached(models: Path) -> None:
    registry = ModelRegistry()
    names = [e.name for e in registry.entries()]
    assert names == sorted(names)
    assert {"alpha-7b-q4_k_m", "beta-q8_0", "beta-f16"} <= set(names)
    write_model(models / "later.gguf")
    assert "later" not in {e.name for e in registry.entries()}  # cached
    assert "later" in {e.name for e in registry.refresh()}
    assert "later" in {e.name for e in registry.entries()}


@pytest.mark.model
def test_resolve_the_real_model_by_name(isolated_home: Path, smollm2_path: Path) -> None:
    registry = ModelRegistry()
    entry = registry.resolve(SMOLLM2)
    assert isinstance(entry, ModelEntry) and entry.usable
    assert registry.resolve(SMOLLM2.upper()) == entry
    assert registry.resolve("  smollm2-135m-instruct-q4_1 ") == entry


def test_resolve_by_exact_name_prefix_and_substring(models: Path) -> None:
    registry = ModelRegistry()
    assert registry.resolve("Alpha-7B-Q4_K_M").name == "alpha-7b-q4_k_m"
    assert registry.resolve("alpha").name == "alpha-7b-q4_k_m"  # unique prefix
    assert registry.resolve("q8_0").name == "beta-q8_0"  # unique substring


def test_ambiguous_and_unknown_names(models: Path) -> None:
    registry = ModelRegistry()
    error = not_found(registry, "beta")
    assert "ambiguous" in (error.details or "") and "beta-f16" in (error.details or "")
    error = not_found(registry, "no-such-model")
    assert error.details == "Model 'no-such-model' is not available"
    assert error.status == 404
    not_found(registry, "")
    # Names no file system takes (found by the schemathesis fuzzing of /v1/models/{id}).
    assert not_found(registry, "é" * 300).status == 404  # ENAMETOOLONG
    assert not_found(registry, "a\x00b").status == 404  # NUL byte
    assert not_found(registry, "~no-such-user-here/m.gguf").status == 404  # unknown ~user


def test_a_client_name_is_never_a_path(isolated_home: Path, tmp_path: Path) -> None:
    """Over the API a name is only a name: an existing GGUF, an existing other file
    and a missing file all answer the same model_not_found, and nothing is read."""
    model = write_model(tmp_path / "elsewhere" / "Mine.gguf")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    registry = ModelRegistry()
    for text in (str(model), str(secret), str(tmp_path / "missing.gguf"), "/etc/passwd"):
        error = not_found(registry, text)
        assert error.message == "The specified model was not found"
        assert error.details == f"Model '{text}' is not available"
    assert all(e.path != model for e in registry.entries())


def test_a_file_the_operator_named_is_listed_and_resolves_by_name(
    isolated_home: Path, tmp_path: Path
) -> None:
    model = write_model(tmp_path / "elsewhere" / "Mine.gguf")
    registry = ModelRegistry()
    assert registry.resolve_operator(str(model)).name == "mine"
    assert registry.resolve("mine").path == model
    assert [e.name for e in registry.entries() if e.path == model] == ["mine"]


def test_the_operator_names_an_unlisted_file_by_path(isolated_home: Path, tmp_path: Path) -> None:
    path = write_model(tmp_path / "elsewhere" / "Mine.gguf")
    entry = ModelRegistry().resolve_operator(str(path))
    assert entry.source == "path"
    assert entry.name == "mine"
    assert entry.path == path and entry.usable


def test_the_operator_names_a_relative_path(isolated_home: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "rel.gguf")  # cwd is tmp_path
    assert ModelRegistry().resolve_operator("rel.gguf").path == Path("rel.gguf")


def test_path_of_a_listed_file_keeps_its_name(models: Path) -> None:
    registry = ModelRegistry()
    entry = registry.resolve_operator(str(models / "beta-q8_0.gguf"))
    assert entry.name == "beta-q8_0"
    assert entry.source == "path"


def test_unlisted_path_with_a_listed_name_is_qualified(models: Path, tmp_path: Path) -> None:
    other = write_model(tmp_path / "other" / "beta-q8_0.gguf", name="other")
    entry = ModelRegistry().resolve_operator(str(other))
    assert entry.name == "path/beta-q8_0"
    assert entry.info is not None and entry.info.name == "other"


def test_path_to_a_non_chat_file_is_unusable(isolated_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "mmproj.gguf"
    path.write_bytes(gguf_bytes({"general.architecture": "clip"}))
    entry = ModelRegistry().resolve_operator(str(path))
    assert not entry.usable
    assert entry.error and "mmproj" in entry.error


def test_path_to_a_corrupt_file_is_unusable(isolated_home: Path, tmp_path: Path) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"junk")
    entry = ModelRegistry().resolve_operator(str(path))
    assert not entry.usable and entry.error and entry.error.startswith("Not a GGUF file")


def test_given_model_dirs(isolated_home: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "given" / "g.gguf")
    registry = ModelRegistry([tmp_path / "given"])
    assert registry.resolve("g").source == "path"


def test_places(models: Path) -> None:
    places = ModelRegistry().places()
    assert all(isinstance(p, SearchPlace) for p in places)
    assert [p.source for p in places][:2] == ["local", "shimmy"]
    local = places[0]
    assert local.path == models and local.exists and local.count == 3
    sources = {p.source for p in places}
    assert sources == {"local", "shimmy", "huggingface", "ollama", "lmstudio", "python"}


def test_concurrent_refreshes_run_one_at_a_time(
    models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = registry_module.discover_models
    active = 0
    most = 0
    lock = threading.Lock()

    def slow_discovery(*args, **kwargs):
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
        try:
            time.sleep(0.01)  # not synchronisation: a slower discovery widens the race
            return real(*args, **kwargs)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(registry_module, "discover_models", slow_discovery)
    registry = ModelRegistry()
    errors: list[BaseException] = []
    seen: list[int] = []

    def worker(i: int) -> None:
        try:
            for _ in range(3):
                entries = registry.refresh() if i % 2 else registry.entries()
                seen.append(len([e for e in entries if e.source == "local"]))
                registry.resolve("alpha")
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert most == 1
    assert seen and all(n == 3 for n in seen)


# -- aliases ------------------------------------------------------------------


def test_an_alias_resolves_to_its_file_and_survives_a_new_registry(models: Path) -> None:
    registry = ModelRegistry()
    beta = registry.resolve("beta-q8_0")
    registry.aliases.add(Alias("hf.co/Someone/Beta-GGUF:Q8_0", beta.path, pulled=True))
    assert registry.resolve("hf.co/someone/beta-gguf:q8_0") == beta
    # A name that only starts the alias is not it: aliases match whole.
    not_found(registry, "hf.co/someone")
    again = ModelRegistry()  # a restart: the alias is read back from the data folder
    (alias,) = again.aliases.all()
    assert (alias.name, alias.pulled) == ("hf.co/Someone/Beta-GGUF:Q8_0", True)
    assert again.resolve("HF.CO/Someone/Beta-GGUF:Q8_0").name == "beta-q8_0"
    assert again.aliases.pointing_at(beta.path) == [alias]
    assert again.aliases.remove("hf.co/someone/beta-gguf:Q8_0") == alias
    not_found(ModelRegistry(), "hf.co/Someone/Beta-GGUF:Q8_0")


def test_a_discovered_name_wins_over_an_alias_and_a_lost_file_is_not_found(
    models: Path,
) -> None:
    registry = ModelRegistry()
    alpha, beta = registry.resolve("alpha"), registry.resolve("beta-q8_0")
    registry.aliases.add(Alias("beta-q8_0", alpha.path))
    assert registry.resolve("beta-q8_0") == beta
    registry.aliases.add(Alias("mine", beta.path))
    (models / "beta-q8_0.gguf").unlink()
    registry.refresh()
    error = not_found(registry, "mine")
    assert "no longer listed" in str(error.details)


def test_a_damaged_alias_file_is_no_alias(models: Path, isolated_home: Path) -> None:
    registry = ModelRegistry()
    file = registry.paths.data_dir / "aliases.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text('[{"name": 3}, "x", {"name": "ok", "path": "/nowhere.gguf"}]')
    assert [a.name for a in ModelRegistry().aliases.all()] == ["ok"]
    file.write_text("{not json")
    assert ModelRegistry().aliases.all() == []
