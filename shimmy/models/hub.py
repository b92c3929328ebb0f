"""Hugging Face Hub: search GGUF repositories, list their model files, pick a
quantization, check disk and memory, and download into the Hugging Face cache.

Downloads land in the hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), laid out as
``hf_hub_download`` lays it out, so discovery source 4 lists a pulled model at
once and other tools find it too. huggingface_hub 2.4.0 throws away a partial
download when the process dies and checks LFS files by size only (DESIGN.md),
so shimmy fetches the bytes itself: into ``blobs/<etag>.shimmy.incomplete``,
resumed with a Range request by the next pull, hashed and compared with the
hub's LFS sha256, then renamed to the blob; ``hf_hub_download`` itself then
writes the snapshot link and the ref from that blob.

The environment (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``, ``HF_HOME``) is read at
each call, not when huggingface_hub is imported, so tests and long-running
processes see changes.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from shimmy.config import Paths
from shimmy.errors import ShimmyError
from shimmy.models.discovery import SPLIT_RE, huggingface_cache_dir

DEFAULT_ENDPOINT = "https://huggingface.co"
SORTS: dict[str, str] = {"downloads": "downloads", "likes": "likes", "updated": "last_modified"}
DEFAULT_QUANT = "Q4_K_M"
CHUNK_SIZE = 1024 * 1024  # progress and cancel are checked once per chunk
PARTIAL_SUFFIX = ".shimmy.incomplete"
DISK_MARGIN = 200 * 1000**2  # never fill a disk to the last byte
TRANSFER_RETRIES = 3  # dropped connections resumed within one process

# "Q4_K_M", "IQ4_XS", "Q8_0", "F16", "BF16" in a file name; the last one wins.
QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Za-z0-9]+)*|BF16|FP16|FP32|F16|F32)(?![A-Za-z0-9])", re.I
)


# -- environment ----------------------------------------------------------------


def hub_endpoint() -> str:
    """The hub's base URL, from ``HF_ENDPOINT`` now."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _download_failed(message: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("download_failed", message, details)


def _ensure_online(endpoint: str) -> None:
    """Fail fast when offline: huggingface_hub's listing calls retry a refused
    connection for about 20 seconds before giving up."""
    if hub_offline():
        raise _download_failed(
            "The Hugging Face Hub is switched off (HF_HUB_OFFLINE is set)",
            "unset HF_HUB_OFFLINE to search and download; local models still work",
        )
    import httpx2
    from huggingface_hub.utils import get_session

    try:
        get_session().head(endpoint + "/", timeout=10)
    except httpx2.TransportError as exc:
        raise _download_failed(
            f"Cannot reach the Hugging Face Hub at {endpoint}", f"{type(exc).__name__}: {exc}"
        ) from exc


@contextlib.contextmanager
def _hub_errors(repo_id: str | None = None) -> Iterator[None]:
    """huggingface_hub's exceptions as ShimmyErrors with a message a user can act on."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except errors.GatedRepoError as exc:
        raise _download_failed(
            f"Repository '{repo_id}' is gated",
            "accept its terms on huggingface.co and log in with `hf auth login`",
        ) from exc
    except errors.RepositoryNotFoundError as exc:
        raise ShimmyError(
            "model_not_found",
            f"Repository '{repo_id}' was not found on the Hugging Face Hub",
            "check the name with `shimmy search`; private repos need `hf auth login`",
        ) from exc
    except errors.RevisionNotFoundError as exc:
        raise ShimmyError("model_not_found", f"Revision not found in '{repo_id}'") from exc
    except errors.EntryNotFoundError as exc:
        raise ShimmyError("model_not_found", f"File not found in '{repo_id}'", str(exc)) from exc
    except errors.OfflineModeIsEnabled as exc:
        raise _download_failed("The Hugging Face Hub is switched off (HF_HUB_OFFLINE)") from exc
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise _download_failed(f"The Hugging Face Hub answered HTTP {status}", str(exc)) from exc
    except httpx2.TransportError as exc:
        raise _download_failed(
            f"Cannot reach the Hugging Face Hub at {hub_endpoint()}",
            f"{type(exc).__name__}: {exc}",
        ) from exc


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub_endpoint())


# -- search -----------------------------------------------------------------------


@dataclass(frozen=True)
class HubModel:
    """One GGUF repository found by :func:`search_models`."""

    repo_id: str
    downloads: int | None
    likes: int | None
    last_modified: datetime | None
    parameters: int | None  # from the hub's GGUF or safetensors summary, where known

    def to_json(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "downloads": self.downloads,
            "likes": self.likes,
            "last_modified": self.last_modified.isoformat() if self.last_modified else None,
            "parameters": self.parameters,
        }


def _parameters(info: Any) -> int | None:
    gguf = getattr(info, "gguf", None)
    if isinstance(gguf, dict) and isinstance(gguf.get("total"), int):
        return int(gguf["total"])
    safetensors = getattr(info, "safetensors", None)
    total = getattr(safetensors, "total", None)
    return int(total) if isinstance(total, int) else None


def search_models(query: str, *, limit: int = 20, sort: str = "downloads") -> list[HubModel]:
    """GGUF repositories matching ``query``, best first by ``sort``
    (one of :data:`SORTS`: downloads, likes, updated)."""
    if sort not in SORTS:
        raise ShimmyError("invalid_request", f"Unknown sort '{sort}'", f"use {', '.join(SORTS)}")
    if limit < 1:
        raise ShimmyError("invalid_request", "The limit must be at least 1")
    endpoint = hub_endpoint()
    _ensure_online(endpoint)
    with _hub_errors():
        models = _api().list_models(
            search=query or None,
            filter="gguf",
            sort=SORTS[sort],
            limit=limit,
            expand=["downloads", "likes", "lastModified", "gguf", "safetensors"],
        )
        return [
            HubModel(m.id, m.downloads, m.likes, m.last_modified, _parameters(m)) for m in models
        ]


# -- a repository's GGUF files ------------------------------------------------------


@dataclass(frozen=True)
class HubPart:
    """One file in the repository (a whole model, or one part of a split one)."""

    path: str
    size: int
    sha256: str | None  # the LFS object id; None for a file stored in git itself


@dataclass(frozen=True)
class Fit:
    """A rough answer to "will it run here?": the weights plus room for context."""

    needed: int
    total: int
    available: int
    verdict: Literal["fits", "tight", "too_large"]

    def describe(self) -> str:
        from shimmy.units import format_bytes

        words = {
            "fits": "fits in memory",
            "tight": "fits only if other programs free memory",
            "too_large": "larger than this machine's memory",
        }
        return (
            f"{words[self.verdict]} (needs about {format_bytes(self.needed)}, "
            f"{format_bytes(self.available)} of {format_bytes(self.total)} available)"
        )


def estimate_fit(size: int) -> Fit:
    """Memory for a model file of ``size`` bytes with room for its context: the
    weights are mapped whole, and the KV cache of shimmy's default slots takes
    roughly a quarter of the weights again (at least 256 MB)."""
    import psutil

    memory = psutil.virtual_memory()
    needed = size + max(256 * 1000**2, size // 4)
    if needed <= memory.available:
        verdict: Literal["fits", "tight", "too_large"] = "fits"
    elif needed <= memory.total:
        verdict = "tight"
    else:
        verdict = "too_large"
    return Fit(needed, memory.total, memory.available, verdict)


@dataclass(frozen=True)
class HubFile:
    """One downloadable model in a repository: a GGUF file, or every part of a split one."""

    repo_id: str
    name: str  # the repo path, without the -00001-of-0000N suffix for split models
    parts: tuple[HubPart, ...]
    quantization: str | None

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def is_4bit(self) -> bool:
        return (self.quantization or "").upper().startswith(("Q4", "IQ4"))

    def fit(self) -> Fit:
        return estimate_fit(self.size)

    def to_json(self) -> dict[str, Any]:
        fit = self.fit()
        return {
            "repo_id": self.repo_id,
            "name": self.name,
            "quantization": self.quantization,
            "size": self.size,
            "parts": [{"path": p.path, "size": p.size, "sha256": p.sha256} for p in self.parts],
            "fit": {"verdict": fit.verdict, "needed": fit.needed, "available": fit.available},
        }


def quantization_of(path: str) -> str | None:
    """The quantization named in a file name ("Q4_K_M"), or None."""
    name = path.rsplit("/", 1)[-1]
    split = SPLIT_RE.match(name)
    stem = split["base"] if split else re.sub(r"\.gguf$", "", name, flags=re.I)
    found = QUANT_RE.findall(stem)
    if not found and "/" in path:  # "Q4_K_M/model-00001-of-00002.gguf"
        found = QUANT_RE.findall(path.rsplit("/", 1)[0])
    return found[-1].upper() if found else None


def group_gguf_files(repo_id: str, parts: list[HubPart]) -> list[HubFile]:
    """Model files from a repository listing: split parts grouped, projector
    (mmproj) files and non-GGUF files left out; sorted by size."""
    groups: dict[str, list[HubPart]] = {}
    for part in parts:
        folder, _, name = part.path.rpartition("/")
        if not name.lower().endswith(".gguf") or "mmproj" in name.lower():
            continue
        split = SPLIT_RE.match(name)
        base = split["base"] + split["ext"] if split else name
        groups.setdefault(f"{folder}/{base}" if folder else base, []).append(part)
    files = [
        HubFile(repo_id, name, tuple(sorted(group, key=lambda p: p.path)), quantization_of(name))
        for name, group in groups.items()
    ]
    return sorted(files, key=lambda f: (f.size, f.name))


def list_gguf_files(repo_id: str, revision: str = "main") -> list[HubFile]:
    """The GGUF model files of a repository, with sizes and LFS hashes (from the repo tree)."""
    from huggingface_hub.hf_api import RepoFile

    endpoint = hub_endpoint()
    _ensure_online(endpoint)
    with _hub_errors(repo_id):
        tree = _api().list_repo_tree(repo_id, recursive=True, revision=revision)
        parts = [
            HubPart(item.path, item.size, item.lfs.sha256 if item.lfs else None)
            for item in tree
            if isinstance(item, RepoFile)
        ]
    return group_gguf_files(repo_id, parts)


# -- what to pull ---------------------------------------------------------------------


@dataclass(frozen=True)
class PullSpec:
    """What ``shimmy pull`` was asked for: ``REPO[:QUANT]`` or ``REPO/FILE.gguf``."""

    repo_id: str
    quantization: str | None = None
    filename: str | None = None
    revision: str = "main"


def parse_pull_spec(text: str) -> PullSpec:
    """Read ``owner/repo``, ``owner/repo:Q4_K_M``, ``owner/repo/file.gguf``, with an
    optional ``hf.co/`` or ``https://huggingface.co/`` in front and ``blob/REV/`` or
    ``resolve/REV/`` in a copied file URL."""
    spec = text.strip()
    spec = re.sub(r"^(https?://)?(www\.)?(huggingface\.co|hf\.co)/", "", spec)
    quant = None
    if ":" in spec:
        spec, quant = spec.rsplit(":", 1)
        quant = quant.strip().upper() or None
    pieces = [p for p in spec.split("/") if p]
    usage = "use OWNER/REPO, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf"
    if len(pieces) < 2:
        raise ShimmyError("invalid_request", f"'{text}' is not a Hugging Face model", usage)
    repo_id, rest = "/".join(pieces[:2]), pieces[2:]
    revision = "main"
    if len(rest) >= 2 and rest[0] in {"blob", "resolve", "tree"}:
        revision, rest = rest[1], rest[2:]
    filename = "/".join(rest) or None
    if filename is not None and not filename.lower().endswith(".gguf"):
        raise ShimmyError("invalid_request", f"'{filename}' is not a .gguf file", usage)
    if filename is not None and quant is not None:
        raise ShimmyError("invalid_request", "Give a file or a quantization, not both", usage)
    return PullSpec(repo_id, quant, filename, revision)


def _choices(files: list[HubFile]) -> str:
    from shimmy.units import format_bytes

    return ", ".join(f"{f.quantization or f.name} ({format_bytes(f.size)})" for f in files)


def choose_file(files: list[HubFile], spec: PullSpec) -> HubFile:
    """The file a pull means: the named file, the named quantization, or the
    default (Q4_K_M, else the smallest 4-bit file, else the only file)."""
    if not files:
        raise ShimmyError("model_not_found", f"'{spec.repo_id}' has no GGUF model files")
    if spec.filename:
        for f in files:
            if spec.filename in (f.name, *(p.path for p in f.parts)):
                return f
        raise ShimmyError(
            "model_not_found",
            f"'{spec.filename}' is not a GGUF model file in '{spec.repo_id}'",
            "files: " + ", ".join(f.name for f in files),
        )
    if spec.quantization:
        for f in files:
            if (f.quantization or "") == spec.quantization:
                return f
        raise ShimmyError(
            "model_not_found",
            f"'{spec.repo_id}' has no {spec.quantization} file",
            "choose one of: " + _choices(files),
        )
    for f in files:
        if (f.quantization or "") == DEFAULT_QUANT:
            return f
    four_bit = [f for f in files if f.is_4bit]
    if four_bit:
        return min(four_bit, key=lambda f: f.size)
    if len(files) == 1:
        return files[0]
    raise ShimmyError(
        "invalid_request",
        f"'{spec.repo_id}' has several files and no 4-bit one: say which with REPO:QUANT",
        "choose one of: " + _choices(files),
    )


# -- where it goes, and whether it fits ------------------------------------------------


def repo_storage(repo_id: str, cache_dir: Path | None = None) -> Path:
    """The repository's folder in the hub cache (``models--owner--name``)."""
    from huggingface_hub.file_download import repo_folder_name

    cache = cache_dir or huggingface_cache_dir()
    return cache / repo_folder_name(repo_id=repo_id, repo_type="model")


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def partial_bytes(file: HubFile, cache_dir: Path | None = None) -> int:
    """Bytes of ``file`` already kept from an earlier, stopped pull (any etag)."""
    blobs = repo_storage(file.repo_id, cache_dir) / "blobs"
    total = 0
    for part in file.parts:
        if part.sha256:
            for path in (blobs / part.sha256, blobs / (part.sha256 + PARTIAL_SUFFIX)):
                with contextlib.suppress(OSError):
                    total += path.stat().st_size
    return total


@dataclass(frozen=True)
class PullPlan:
    """What a pull will do, checked before any byte moves."""

    file: HubFile
    revision: str
    cache_dir: Path
    already: int  # bytes kept from an earlier pull
    free: int  # free disk where the file goes
    fit: Fit

    @property
    def remaining(self) -> int:
        return max(0, self.file.size - self.already)


def plan_pull(spec: PullSpec | str, *, files: list[HubFile] | None = None) -> PullPlan:
    """Pick the file for ``spec`` and check the disk can hold it (``download_failed``
    otherwise). ``files`` saves listing the repository again."""
    if isinstance(spec, str):
        spec = parse_pull_spec(spec)
    if files is None:
        files = list_gguf_files(spec.repo_id, spec.revision)
    file = choose_file(files, spec)
    cache_dir = huggingface_cache_dir()
    free = free_disk(repo_storage(file.repo_id, cache_dir))
    plan = PullPlan(
        file, spec.revision, cache_dir, partial_bytes(file, cache_dir), free, file.fit()
    )
    if plan.remaining + DISK_MARGIN > free:
        from shimmy.units import format_bytes

        raise _download_failed(
            f"Not enough disk space for {file.name}",
            f"{format_bytes(plan.remaining)} to download, {format_bytes(free)} free "
            f"in {cache_dir}; free some space or set HF_HOME to another disk",
        )
    return plan


# -- download --------------------------------------------------------------------------


class DownloadCancelled(Exception):
    """The cancel event was set; what was fetched is kept for the next pull."""


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands; handed to the progress callback several times a second."""

    file: HubFile
    part: str  # the repo path being fetched
    done: int  # bytes of the whole file on disk, earlier pulls included
    total: int
    bytes_per_second: float  # over this session's transfer
    phase: Literal["checking", "downloading", "verifying", "done"]

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def eta_seconds(self) -> float | None:
        if self.bytes_per_second <= 0:
            return None
        return (self.total - self.done) / self.bytes_per_second


ProgressCallback = Callable[[DownloadProgress], None]


@dataclass
class _Tracker:
    file: HubFile
    callback: ProgressCallback | None
    cancel: threading.Event | None
    done_before: int = 0  # bytes of finished parts
    started: float = field(default_factory=time.monotonic)
    fetched: int = 0  # bytes transferred by this session
    last: float = 0.0

    def report(self, part: str, on_disk: int, phase: Any, *, force: bool = False) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise DownloadCancelled(self.file.name)
        now = time.monotonic()
        if self.callback is None or (not force and now - self.last < 0.1):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-6)
        speed = self.fetched / elapsed if self.fetched else 0.0
        done = self.done_before + on_disk
        self.callback(DownloadProgress(self.file, part, done, self.file.size, speed, phase))


def _auth_headers(url: str, endpoint: str) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers())
    if urlsplit(url)[:2] != urlsplit(endpoint)[:2]:
        headers.pop("authorization", None)  # a CDN's signed URL needs no token
        headers.pop("Authorization", None)
    headers["Accept-Encoding"] = "identity"
    return headers


def _hash_file(path: Path, tracker: _Tracker, part: str) -> Any:
    digest = hashlib.sha256()
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE * 8):
            digest.update(chunk)
            done += len(chunk)
            tracker.report(part, done, "checking")
    return digest


def _fetch(url: str, partial: Path, size: int, tracker: _Tracker, part: str) -> str:
    """Fetch ``url`` into ``partial``, resuming from its length; return the sha256."""
    import httpx2
    from huggingface_hub.utils import get_session, hf_raise_for_status

    digest = _hash_file(partial, tracker, part) if partial.exists() else hashlib.sha256()
    retries = TRANSFER_RETRIES
    with partial.open("ab", buffering=0) as out:
        while True:
            have = out.tell()
            if have > size:  # a different file was here: start over
                out.truncate(0)
                out.seek(0)
                digest, have = hashlib.sha256(), 0
            if have == size:
                return str(digest.hexdigest())
            headers = _auth_headers(url, hub_endpoint())
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                with get_session().stream(
                    "GET", url, headers=headers, follow_redirects=True, timeout=30
                ) as response:
                    hf_raise_for_status(response)
                    if have and response.status_code != 206:  # Range ignored: whole file again
                        out.truncate(0)
                        out.seek(0)
                        digest = hashlib.sha256()
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        tracker.report(part, out.tell(), "downloading")
                        _write_all(out, chunk, part, partial, size)
                        digest.update(chunk)
                        tracker.fetched += len(chunk)
                        retries = TRANSFER_RETRIES  # progress was made
                if out.tell() > size:
                    out.truncate(0)  # not the file the hub described: never resume it
                    raise _download_failed(f"The hub sent more than {size} bytes for {part}")
                if out.tell() < size:
                    raise httpx2.RemoteProtocolError("connection closed early")
            except httpx2.TransportError:
                if retries <= 0:
                    raise
                retries -= 1
                time.sleep(1)


NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # disk full, quota, file size limit


def _write_all(out: Any, chunk: bytes, part: str, partial: Path, size: int) -> None:
    """Write all of ``chunk`` (an unbuffered write may take only part of it, as
    it does when the disk fills up). A failed write keeps what is on disk, so the
    next pull resumes from it; it never reaches the user as a traceback."""
    view = memoryview(chunk)
    while view:
        try:
            written = out.write(view)
        except OSError as exc:
            kept = f"{out.tell():,} of {size:,} bytes kept in {partial}"
            if exc.errno in NO_ROOM:
                raise _download_failed(
                    f"No room left to write {part}: {os.strerror(exc.errno or 0).lower()}",
                    f"{kept}; free some space (or set HF_HOME to another disk) "
                    "and pull again to resume",
                ) from exc
            raise _download_failed(f"Cannot write the download: {exc.strerror}", kept) from exc
        view = view[written:]


def download(
    file: HubFile,
    *,
    revision: str = "main",
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    cache_dir: Path | None = None,
) -> Path:
    """Download every part of ``file`` into the hub cache; return the first part's path.

    Resumes what an earlier, stopped pull kept. Raises :class:`DownloadCancelled`
    when ``cancel`` is set (the partial file stays), ``download_failed`` when the
    hub cannot be reached or a file's sha256 is not the hub's (the file is
    deleted), ``model_not_found`` for an unknown repository or file.
    """
    import filelock
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    endpoint = hub_endpoint()
    _ensure_online(endpoint)
    cache = cache_dir or huggingface_cache_dir()
    storage = repo_storage(file.repo_id, cache)
    tracker = _Tracker(file, progress, cancel)
    paths: list[Path] = []
    for part in file.parts:
        with _hub_errors(file.repo_id):
            url = hf_hub_url(file.repo_id, part.path, revision=revision, endpoint=endpoint)
            meta = get_hf_file_metadata(url, endpoint=endpoint)
        if not meta.etag or not meta.commit_hash or meta.size is None:
            raise _download_failed(f"The hub sent no file metadata for {part.path}", url)
        pointer = storage / "snapshots" / meta.commit_hash / part.path
        blob = storage / "blobs" / meta.etag
        if not pointer.exists() and not blob.exists():
            blob.parent.mkdir(parents=True, exist_ok=True)
            lock_path = cache / ".locks" / storage.name / f"{meta.etag}.shimmy.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with filelock.FileLock(str(lock_path), timeout=0):
                    _fetch_blob(meta, part, blob, tracker)
            except filelock.Timeout as exc:
                raise _download_failed(
                    f"{part.path} is being downloaded by another shimmy process"
                ) from exc
        with _hub_errors(file.repo_id):
            # The blob is in place: hf_hub_download only links it into the snapshot.
            path = hf_hub_download(
                file.repo_id, part.path, revision=revision, cache_dir=cache, endpoint=endpoint
            )
        paths.append(Path(path))
        tracker.done_before += part.size
    tracker.report(file.parts[-1].path, 0, "done", force=True)
    record_pull(file, paths, revision)
    return paths[0]


def _fetch_blob(meta: Any, part: HubPart, blob: Path, tracker: _Tracker) -> None:
    partial = blob.with_name(blob.name + PARTIAL_SUFFIX)
    with _hub_errors(tracker.file.repo_id):
        actual = _fetch(meta.location, partial, meta.size, tracker, part.path)
    tracker.report(part.path, meta.size, "verifying", force=True)
    expected = part.sha256 or (meta.etag if re.fullmatch(r"[0-9a-f]{64}", meta.etag) else None)
    if expected is not None and actual != expected.lower():
        partial.unlink(missing_ok=True)
        raise _download_failed(
            f"Checksum mismatch for {part.path}: the download was deleted",
            f"sha256 {actual}, the hub says {expected}",
        )
    os.replace(partial, blob)


# -- what shimmy pulled -------------------------------------------------------------------


def _pulled_file() -> Path:
    return Paths.from_env().data_dir / "pulled.json"


def pulled_records() -> list[dict[str, Any]]:
    """Every model shimmy downloaded, as recorded by :func:`record_pull`."""
    try:
        data = json.loads(_pulled_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in data if isinstance(r, dict)] if isinstance(data, list) else []


def _write_records(records: list[dict[str, Any]]) -> None:
    target = _pulled_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2), encoding="utf-8")
    os.replace(tmp, target)


def record_pull(file: HubFile, paths: list[Path], revision: str) -> None:
    """Remember that shimmy downloaded these files, so ``shimmy rm`` may delete them."""
    keys = {str(p) for p in paths}
    records = [r for r in pulled_records() if not keys & set(r.get("paths", []))]
    records.append(
        {
            "repo_id": file.repo_id,
            "name": file.name,
            "revision": revision,
            "paths": [str(p) for p in paths],
            "sha256": [p.sha256 for p in file.parts],
            "pulled_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        }
    )
    _write_records(records)


def find_pulled(path: Path) -> dict[str, Any] | None:
    """The pull record holding ``path`` (any part), or None."""
    wanted = os.path.normpath(path)
    for record in pulled_records():
        if wanted in {os.path.normpath(p) for p in record.get("paths", [])}:
            return record
    return None


def remove_pulled(record: dict[str, Any]) -> int:
    """Delete a pulled model's snapshot links and the blobs no other link uses;
    tidy empty folders; forget the record. Returns the bytes freed."""
    freed = 0
    for name in record.get("paths", []):
        pointer = Path(name)
        snapshots = next((p for p in pointer.parents if p.name == "snapshots"), None)
        blob = Path(os.path.realpath(pointer))
        pointer.unlink(missing_ok=True)
        if snapshots is None:
            continue
        storage = snapshots.parent
        still_used = any(
            Path(os.path.realpath(p)) == blob for p in snapshots.rglob("*") if p.is_symlink()
        )
        if not still_used and blob.is_file() and storage in blob.parents:
            freed += blob.stat().st_size
            blob.unlink()
        folder = pointer.parent
        while folder != snapshots.parent and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
        if not snapshots.is_dir():
            shutil.rmtree(storage, ignore_errors=True)  # refs and locks of an empty repo
    _write_records([r for r in pulled_records() if r.get("paths") != record.get("paths")])
    return freed
