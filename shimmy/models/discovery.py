"""Find GGUF model files in every place DESIGN.md lists, and name them.

Sources are searched in a fixed order (given paths, ./models, shimmy's own
folder, the Hugging Face cache, Ollama, LM Studio, installed Python
distributions). The same file found twice is listed once, for the first source
that found it. Split GGUFs become one entry. Files that fail the GGUF check are
listed as unusable with the reason; mmproj, LoRA and vocab-only files are not
listed at all. Headers are read through :class:`HeaderCache`, which persists
across processes, so listing thousands of files reads no header twice.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import json
import logging
import os
import re
import stat
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shimmy.config import Paths
from shimmy.errors import ShimmyError
from shimmy.models.gguf import GGUFInfo, read_gguf_info
from shimmy.models.hf_cache import huggingface_cache_dir

log = logging.getLogger(__name__)

SOURCES = ("path", "local", "shimmy", "huggingface", "ollama", "lmstudio", "python")
# Prefixes that tell clashing names apart ("hf/qwen2-0-5b-instruct-q4_k_m").
SOURCE_PREFIXES = {
    "path": "path",
    "local": "local",
    "shimmy": "shimmy",
    "huggingface": "hf",
    "ollama": "ollama",
    "lmstudio": "lmstudio",
    "python": "python",
}
MAX_DEPTH = 6
# Folders that never hold models but can hold very many files.
SKIP_DIRS = frozenset({"node_modules", "__pycache__", "site-packages"})
MAX_SPLIT_PARTS = 1000  # more is a strange name, not a split model
SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$", re.I)
OLLAMA_MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
OLLAMA_DEFAULT_HOST = "registry.ollama.ai"
_OLLAMA_DIGEST_RE = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


@dataclass(frozen=True)
class ModelEntry:
    """One chat model shimmy can offer, usable or not."""

    name: str  # lowercase, stable, unique
    path: Path  # the file (first part of a split model)
    parts: tuple[Path, ...]  # all parts, in order (one element for an unsplit file)
    source: str  # one of SOURCES
    size: int  # bytes, all parts
    info: GGUFInfo | None
    error: str | None  # why it is unusable, or None
    origin: str | None = None  # HF repo id, Ollama "library/llama3:8b", distribution name

    @property
    def usable(self) -> bool:
        return self.error is None and self.info is not None

    @property
    def architecture(self) -> str | None:
        return self.info.architecture if self.info else None

    @property
    def quantization(self) -> str | None:
        return self.info.quantization if self.info else None

    @property
    def parameter_count(self) -> int | None:
        return self.info.parameter_count if self.info else None

    @property
    def context_length(self) -> int | None:
        return self.info.context_length if self.info else None

    @property
    def chat_template(self) -> str | None:
        return self.info.chat_template if self.info else None


@dataclass(frozen=True)
class SearchPlace:
    """A place discovery looked in, for ``shimmy diag``."""

    source: str
    path: Path
    exists: bool
    count: int = 0  # entries listed from this place
    note: str | None = None  # why it was skipped or only partly read


@dataclass(frozen=True)
class Discovery:
    """The result of one discovery run."""

    entries: list[ModelEntry]  # sorted by name
    places: list[SearchPlace]


# --------------------------------------------------------------------------
# Header cache


class HeaderCache:
    """GGUF header results keyed by (resolved path, mtime_ns, size).

    Kept in memory and persisted as JSON in ``cache_dir`` so that the next
    process does not read headers again. Failures are cached too (a corrupt
    file stays corrupt until it changes), except failures to open the file.
    """

    FILE_NAME = "gguf-headers.json"
    # Bump when GGUFInfo or the reader changes, so old results are not reused.
    FORMAT = 1

    def __init__(self, cache_dir: Path | None) -> None:
        self.file = cache_dir / self.FILE_NAME if cache_dir else None
        self._entries: dict[str, dict[str, Any]] = {}
        self._loaded = False
        self._dirty = False
        self._lock = threading.Lock()

    def _load(self) -> None:
        self._loaded = True
        if self.file is None:
            return
        try:
            data = json.loads(self.file.read_text(encoding="utf-8"))
            if data.get("format") == self.FORMAT and isinstance(data.get("entries"), dict):
                self._entries = data["entries"]
        except (OSError, ValueError, AttributeError) as exc:  # missing or corrupt: start afresh
            log.debug("header cache %s ignored: %s", self.file, exc)

    def read(self, path: Path, stat: os.stat_result) -> GGUFInfo:
        """The header of ``path`` (whose ``os.stat`` is given); raises ShimmyError."""
        key = os.path.realpath(path)
        with self._lock:
            if not self._loaded:
                self._load()
            cached = self._entries.get(key)
        if (
            isinstance(cached, dict)
            and cached.get("mtime_ns") == stat.st_mtime_ns
            and cached.get("size") == stat.st_size
        ):
            try:
                if "error" in cached:
                    message, details = cached["error"]
                    raise ShimmyError("model_invalid", str(message), details)
                return dataclasses.replace(GGUFInfo.from_json(cached["info"]), path=path)
            except (KeyError, TypeError, ValueError):
                pass  # a damaged record: read the file again
        record: dict[str, Any] = {"mtime_ns": stat.st_mtime_ns, "size": stat.st_size}
        try:
            info = read_gguf_info(path)
        except ShimmyError as exc:
            if exc.message not in ("Model file not found", "Cannot read model file"):
                record["error"] = [exc.message, exc.details]
                self._store(key, record)
            raise
        record["info"] = info.to_json()
        self._store(key, record)
        return info

    def _store(self, key: str, record: dict[str, Any]) -> None:
        with self._lock:
            self._entries[key] = record
            self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if it changed; forget files that are gone."""
        with self._lock:
            if self.file is None or not self._dirty:
                return
            entries = {k: v for k, v in self._entries.items() if os.path.exists(k)}
            self._entries = entries
            self._dirty = False
            data = json.dumps({"format": self.FORMAT, "entries": entries})
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.file.parent, prefix=".gguf-headers.")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as out:
                    out.write(data)
                os.replace(tmp, self.file)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:  # a read-only cache folder only costs speed
            log.debug("cannot write header cache %s: %s", self.file, exc)


# --------------------------------------------------------------------------
# Finding files


@dataclass
class _Found:
    """A file some source offered, before grouping and naming."""

    path: Path
    source: str
    place: int  # index into the places list
    origin: str | None = None
    name: str | None = None  # set when the source names the model (Ollama)
    missing: str | None = None  # set when the source points at a file that is not there


@dataclass
class _Search:
    """The running state of one discovery run."""

    places: list[SearchPlace] = dataclasses.field(default_factory=list)
    found: list[_Found] = dataclasses.field(default_factory=list)

    def place(self, source: str, path: Path, note: str | None = None) -> int:
        self.places.append(SearchPlace(source, path, path.exists(), 0, note))
        return len(self.places) - 1

    def add(self, path: Path, source: str, place: int, **extra: Any) -> None:
        self.found.append(_Found(path, source, place, **extra))


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


def _search_folder(search: _Search, source: str, root: Path, origins: bool = False) -> None:
    place = search.place(source, root)
    for path in walk_gguf_files(root):
        search.add(path, source, place, origin=_relative_origin(path, root) if origins else None)


def _search_given(search: _Search, model_dirs: Sequence[str | Path]) -> None:
    for given in model_dirs:
        path = Path(given).expanduser()
        if path.is_file():
            # A file named explicitly is read whatever its extension.
            search.add(path, "path", search.place("path", path))
        elif path.is_dir():
            _search_folder(search, "path", path)
        else:
            search.place("path", path, "does not exist")


def _search_huggingface(search: _Search) -> None:
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


def _search_ollama(search: _Search) -> None:
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
    search: _Search, place: int, root: Path, host: str, namespace: str, model: Path, tag: Path
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


def _search_lmstudio(search: _Search) -> None:
    home = Path.home()
    for root in (home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"):
        _search_folder(search, "lmstudio", root, origins=True)


def _search_python(search: _Search) -> None:
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


# --------------------------------------------------------------------------
# Grouping, reading and naming


def model_name(filename: str) -> str:
    """The registry name of a file: its stem lowercased, '.' and spaces -> '-'."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else Path(filename).stem
    return re.sub(r"[.\s]", "-", stem.lower())


def split_parts(path: Path) -> tuple[str, tuple[Path, ...]] | None:
    """(the unsplit file name, all part paths) when ``path`` is one part of a
    split GGUF such as ``name-00002-of-00003.gguf``."""
    match = SPLIT_RE.match(path.name)
    if match is None:
        return None
    number, count = int(match["no"]), int(match["count"])
    if not 1 <= number <= count <= MAX_SPLIT_PARTS:
        return None  # not a name gguf-split writes: treat it as a plain file
    parts = tuple(
        path.with_name(f"{match['base']}-{i:05d}-of-{match['count']}{match['ext']}")
        for i in range(1, count + 1)
    )
    return match["base"] + match["ext"], parts


@dataclass
class _Draft:
    """An entry before its final name is known."""

    base: str
    found: _Found
    parts: tuple[Path, ...]
    size: int
    info: GGUFInfo | None
    error: str | None


def _reason(exc: ShimmyError) -> str:
    return f"{exc.message} ({exc.details})" if exc.details else exc.message


def _read_parts(
    parts: tuple[Path, ...], stats: list[os.stat_result | None], cache: HeaderCache
) -> tuple[GGUFInfo | None, int, str | None]:
    """Read every part; return (info of part 1, total size, error or None).

    For a split model the info's parameter count is that of all parts.
    """
    size = sum(st.st_size for st in stats if st is not None)
    count = len(parts)
    infos: list[GGUFInfo] = []
    for index, (part, st) in enumerate(zip(parts, stats, strict=True)):
        first = infos[0] if infos else None
        if st is None:
            return first, size, f"Missing part {index + 1} of {count}: {part.name}"
        try:
            infos.append(cache.read(part, st))
        except ShimmyError as exc:
            prefix = f"Part {index + 1} of {count} is invalid: " if count > 1 else ""
            return first, size, prefix + _reason(exc)
    first = infos[0]
    if count == 1:
        return first, size, None
    if first.split_count not in (None, count):
        error = (
            f"Split mismatch: {parts[0].name} says split.count={first.split_count}, "
            f"its file name says {count} parts"
        )
        return first, size, error
    counts = [i.parameter_count for i in infos if i.parameter_count is not None]
    total = sum(counts) if counts else None
    return dataclasses.replace(first, parameter_count=total), size, None


def _stat(path: Path) -> os.stat_result | None:
    """os.stat of a regular file (following links), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _drafts(found: list[_Found], cache: HeaderCache) -> list[_Draft]:
    """Group split parts, drop duplicates and non-chat files, read headers."""
    seen_files: set[tuple[int, int]] = set()
    seen_groups: set[tuple[Path, ...]] = set()
    drafts: list[_Draft] = []
    for item in found:
        if item.missing is not None:
            name = item.name or model_name(item.path.name)
            drafts.append(_Draft(name, item, (item.path,), 0, None, item.missing))
            continue
        split = split_parts(item.path)
        base, parts = split if split else (item.path.name, (item.path,))
        if parts in seen_groups:
            continue  # another part of a split model already taken
        stats = [_stat(p) for p in parts]
        identities = {(st.st_dev, st.st_ino) for st in stats if st is not None}
        if identities & seen_files:
            continue  # the same file, already found by an earlier source
        seen_groups.add(parts)
        seen_files |= identities
        info, size, error = _read_parts(parts, stats, cache)
        if info is not None and info.kind != "model" and error is None:
            continue  # mmproj, LoRA, vocab-only: not chat models
        drafts.append(_Draft(item.name or model_name(base), item, parts, size, info, error))
    return drafts


def _qualifier(draft: _Draft) -> str:
    text = draft.found.origin or draft.found.path.parent.name or "file"
    return re.sub(r"\s", "-", text.lower())


def _assign_names(drafts: list[_Draft]) -> list[str]:
    """Unique names: the first holder of a name keeps it, later ones get a
    source prefix, then the origin or folder, then a number."""
    taken = {d.base for d in drafts}
    first_holder: set[str] = set()
    names: list[str] = []
    for draft in drafts:
        if draft.base not in first_holder:
            first_holder.add(draft.base)
            names.append(draft.base)
            continue
        prefix = SOURCE_PREFIXES[draft.found.source]
        qualified = f"{prefix}/{_qualifier(draft)}/{draft.base}"
        candidates = [f"{prefix}/{draft.base}", qualified]
        name = next((c for c in candidates if c not in taken), None)
        number = 2
        while name is None:
            if f"{qualified}-{number}" not in taken:
                name = f"{qualified}-{number}"
            number += 1
        taken.add(name)
        names.append(name)
    return names


def discover_models(
    model_dirs: Sequence[str | Path] = (),
    *,
    paths: Paths | None = None,
    cache: HeaderCache | None = None,
) -> Discovery:
    """Search every source in order and return the named, de-duplicated entries."""
    paths = paths or Paths.from_env()
    if cache is None:
        cache = HeaderCache(paths.cache_dir)
    search = _Search()
    _search_given(search, model_dirs)
    _search_folder(search, "local", Path.cwd() / "models")
    _search_folder(search, "shimmy", paths.models_dir, origins=True)
    _search_huggingface(search)
    _search_ollama(search)
    _search_lmstudio(search)
    _search_python(search)

    drafts = _drafts(search.found, cache)
    cache.save()
    entries = []
    counts = [0] * len(search.places)
    for draft, name in zip(drafts, _assign_names(drafts), strict=True):
        counts[draft.found.place] += 1
        entries.append(
            ModelEntry(
                name=name,
                path=draft.parts[0],
                parts=draft.parts,
                source=draft.found.source,
                size=draft.size,
                info=draft.info,
                error=draft.error,
                origin=draft.found.origin,
            )
        )
    places = [dataclasses.replace(p, count=n) for p, n in zip(search.places, counts, strict=True)]
    return Discovery(sorted(entries, key=lambda e: e.name), places)


_KIND_WORDS = {
    "lora": "LoRA adapter",
    "mmproj": "multimodal projector (mmproj)",
    "vocab": "vocabulary-only file",
    "other": "GGUF file that is not a model",
}


def describe_file(
    path: Path, cache: HeaderCache, *, name: str | None = None, source: str = "path"
) -> ModelEntry:
    """An entry for one file named by path (split parts grouped), listed or not.

    Unlike discovery, a file that is not a chat model comes back as an
    unusable entry saying what it is, so the caller can tell the user.
    """
    split = split_parts(path)
    base, parts = split if split else (path.name, (path,))
    info, size, error = _read_parts(parts, [_stat(p) for p in parts], cache)
    if error is None and info is not None and info.kind != "model":
        error = f"Not a chat model: {path.name} is a {_KIND_WORDS.get(info.kind, info.kind)}"
    return ModelEntry(name or model_name(base), parts[0], parts, source, size, info, error)
