"""The places discovery searches for GGUF files, in the order DESIGN.md lists
them: given paths, ./models, shimmy's own folder, the Hugging Face cache,
Ollama, LM Studio, installed Python distributions.

:func:`search_sources` only finds files and says where it looked; reading,
grouping and naming them is :mod:`shimmy.models.grouping`'s job.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shimmy.config import Paths
from shimmy.models.hf_cache import huggingface_cache_dir

log = logging.getLogger(__name__)

SOURCES = ("path", "local", "shimmy", "huggingface", "ollama", "lmstudio", "python")
MAX_DEPTH = 6
# Folders that never hold models but can hold very many files.
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages"})
OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
_OLLAMA_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@dataclass(frozen=True)
class SearchPlace:
    """A place discovery looked in, for ``shimmy diag``."""

    source: str
    path: Path
    exists: bool
    count: int = 0  # entries listed from this place
    note: str | None = None  # why it was skipped or only partly read


@dataclass
class Found:
    """A file some source offered, before grouping and naming."""

    path: Path
    source: str
    place: int  # index into the places list
    origin: str | None = None
    name: str | None = None  # set when the source names the model (Ollama)
    missing: str | None = None  # set when the source points at a file that is not there


@dataclass
class Search:
    """The running state of one discovery run."""

    places: list[SearchPlace] = dataclasses.field(default_factory=list)
    found: list[Found] = dataclasses.field(default_factory=list)

    def place(self, source: str, path: Path, note: str | None = None) -> int:
        self.places.append(SearchPlace(source, path, path.exists(), 0, note))
        return len(self.places) - 1

    def add(self, path: Path, source: str, place: int, **extra: Any) -> None:
        self.found.append(Found(path, source, place, **extra))


def search_sources(model_dirs: Sequence[str | Path], paths: Paths) -> Search:
    """Every source in order: the files each offers, and the places looked in."""
    search = Search()
    _search_given(search, model_dirs)
    _search_folder(search, "local", Path.cwd() / "models")
    _search_folder(search, "shimmy", paths.models_dir, origins=True)
    _search_huggingface(search)
    _search_ollama(search)
    _search_lmstudio(search)
    _search_python(search)
    return search


def walk_gguf_files(root: Path, max_depth: int = MAX_DEPTH) -> Iterator[Path]:
    """``*.gguf`` files under ``root`` in a stable order, skipping hidden entries.

    Symlinked folders are followed (people link model folders around) but
    each folder is entered once, so link loops end.
    """
    seen: set[tuple[int, int]] = set()

    def walk(folder: str, depth: int) -> Iterator[Path]:
        try:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        for item in items:
            if item.name.startswith("."):
                continue
            try:
                if item.is_dir():
                    if depth < max_depth and item.name not in SKIP_DIRS:
                        yield from walk(item.path, depth + 1)
                elif item.name.lower().endswith(".gguf") and item.is_file():
                    yield Path(item.path)
            except OSError:
                continue

    yield from walk(os.fspath(root), 1)


def _relative_origin(path: Path, root: Path) -> str | None:
    """The folders between root and the file ("publisher/repo"), or None."""
    try:
        rel = path.parent.relative_to(root)
    except ValueError:
        return None
    return rel.as_posix() if rel.parts else None


def _search_folder(search: Search, source: str, root: Path, origins: bool = False) -> None:
    place = search.place(source, root)
    for path in walk_gguf_files(root):
        search.add(path, source, place, origin=_relative_origin(path, root) if origins else None)


def _search_given(search: Search, model_dirs: Sequence[str | Path]) -> None:
    for given in model_dirs:
        path = Path(given).expanduser()
        if path.is_file():
            # A file named explicitly is read whatever its extension.
            search.add(path, "path", search.place("path", path))
        elif path.is_dir():
            _search_folder(search, "path", path)
        else:
            search.place("path", path, "does not exist")


def _search_huggingface(search: Search) -> None:
    cache_dir = huggingface_cache_dir()
    if not cache_dir.is_dir():
        search.place("huggingface", cache_dir)
        return
    # Imported here: huggingface_hub takes a quarter of a second to import.
    from huggingface_hub import scan_cache_dir

    try:
        cache = scan_cache_dir(cache_dir)
    except Exception as exc:  # CacheNotFound, ValueError, OSError: treat as empty
        search.place("huggingface", cache_dir, f"cannot scan: {exc}")
        return
    note = f"{len(cache.warnings)} damaged repos skipped" if cache.warnings else None
    place = search.place("huggingface", cache_dir, note)
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # Each file from the latest revision that has it.
        newest: dict[str, Path] = {}
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for file in revision.files:
                if file.file_name.lower().endswith(".gguf"):
                    rel = file.file_path.relative_to(revision.snapshot_path).as_posix()
                    newest.setdefault(rel, file.file_path)
        for rel in sorted(newest):
            search.add(newest[rel], "huggingface", place, origin=repo.repo_id)


def _ollama_root() -> Path:
    configured = os.environ.get("OLLAMA_MODELS")
    return Path(configured).expanduser() if configured else Path.home() / ".ollama" / "models"


def _sorted_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _search_ollama(search: Search) -> None:
    root = _ollama_root()
    place = search.place("ollama", root)
    manifests = root / "manifests"
    # manifests/<host>/<namespace>/<model>/<tag>
    for host in _sorted_dirs(manifests):
        for namespace in _sorted_dirs(host):
            for model in _sorted_dirs(namespace):
                try:
                    tags = sorted(p for p in model.iterdir() if p.is_file())
                except OSError:
                    continue
                for tag in tags:
                    if tag.name.startswith("."):
                        continue
                    _add_ollama_model(search, place, root, host.name, namespace.name, model, tag)


def _add_ollama_model(
    search: Search, place: int, root: Path, host: str, namespace: str, model: Path, tag: Path
) -> None:
    short = f"{model.name}:{tag.name}"
    if namespace != "library":
        short = f"{namespace}/{short}"
    if host != OLLAMA_DEFAULT_HOST:
        short = f"{host}/{short}"
    origin = short if host != OLLAMA_DEFAULT_HOST or namespace != "library" else f"library/{short}"
    name = short.lower()
    try:
        manifest = json.loads(tag.read_text(encoding="utf-8"))
        layers = manifest.get("layers") or []
        digests = [
            layer.get("digest", "")
            for layer in layers
            if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_MEDIA_TYPE
        ]
    except (OSError, ValueError, AttributeError) as exc:
        search.add(tag, "ollama", place, origin=origin, name=name, missing=f"bad manifest: {exc}")
        return
    if not digests:
        return  # not a model (Ollama also stores other kinds of manifests)
    match = _OLLAMA_DIGEST_RE.match(str(digests[0]))
    if match is None:  # never build a path from an unchecked digest
        search.add(tag, "ollama", place, origin=origin, name=name, missing="bad digest in manifest")
        return
    blob = root / "blobs" / f"sha256-{match.group(1)}"
    missing = None if blob.is_file() else f"Ollama blob missing: {blob.name}"
    search.add(blob, "ollama", place, origin=origin, name=name, missing=missing)


def _search_lmstudio(search: Search) -> None:
    home = Path.home()
    for root in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"):
        _search_folder(search, "lmstudio", root, origins=True)


def _search_python(search: Search) -> None:
    """GGUF files listed in installed distributions' RECORD files.

    Reading RECORD as text and looking for ".gguf" is ten times faster than
    ``dist.files``, which builds an object per file of every distribution.
    """
    place = search.place("python", Path(sys.prefix), "installed Python distributions")
    for dist in importlib.metadata.distributions():
        try:
            record = dist.read_text("RECORD")
            if record is not None:
                if ".gguf" not in record.lower():
                    continue
                rels = [row[0] for row in csv.reader(record.splitlines()) if row]
            else:
                rels = [str(f) for f in dist.files or ()]
            ggufs = [r for r in rels if r.lower().endswith(".gguf")]
            if not ggufs:
                continue
            origin = dist.metadata["Name"]
            for rel in sorted(ggufs):
                path = Path(str(dist.locate_file(rel)))
                if path.is_file():
                    search.add(path, "python", place, origin=origin)
        except Exception as exc:  # one broken distribution must not hide the others
            log.debug("skipping distribution %r: %s", dist, exc)
