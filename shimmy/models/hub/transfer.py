"""Download a model file into the Hugging Face cache, laid out as
``hf_hub_download`` lays it out (:mod:`shimmy.models.hf_cache`), so discovery
source 4 lists a pulled model at once and other tools find it too.

huggingface_hub 2.4.0 throws away a partial download when the process dies and
checks LFS files by size only (DESIGN.md), so shimmy fetches the bytes itself:
into ``blobs/<etag>.shimmy.incomplete``, resumed with a Range request by the
next pull, hashed (sha256 for LFS files, the git blob id for files kept in git)
and compared with the hub's hash, then renamed to the blob and linked into the
snapshot. No more bytes are taken than the hub declared.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shimmy.models.hf_cache import (
    BLOBS,
    blob_path,
    huggingface_cache_dir,
    locks_path,
    ref_path,
    snapshot_path,
)
from shimmy.models.hub.checks import (
    COMMIT_RE,
    ETAG_RE,
    SHA256_RE,
    check_repo_path,
    check_revision,
    check_url,
    contained,
    download_failed,
    repo_storage,
    shown,
)
from shimmy.models.hub.client import ensure_online, hub_endpoint, hub_errors, streamed_get
from shimmy.models.hub.files import HubFile, HubPart
from shimmy.models.hub.pulled import pulled_records, record_pull

CHUNK_SIZE = 1024 * 1024  # progress and cancel are checked once per chunk
PARTIAL_SUFFIX = ".shimmy.incomplete"
TRANSFER_RETRIES = 3  # dropped connections resumed within one process


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


def _git_blob_digest(size: int) -> Any:
    """The hash git names a file by (its blob id): sha1 of a header, then the bytes."""
    return hashlib.sha1(b"blob %d\0" % size)


@dataclass(frozen=True)
class _Answer:
    """What the hub said about one file, checked: its blob name and hash (etag),
    commit, size and download address."""

    etag: str
    commit: str
    size: int
    location: str

    @property
    def checksum(self) -> str:
        return "sha256" if len(self.etag) == 64 else "git blob id"

    def new_digest(self) -> Any:
        return hashlib.sha256() if len(self.etag) == 64 else _git_blob_digest(self.size)


def _checked_answer(meta: Any, part: HubPart, url: str) -> _Answer:
    """The hub's metadata for ``part`` (get_hf_file_metadata's reading of ETag,
    X-Repo-Commit, X-Linked-Size and Location), refused unless it has the
    forms the hub sends and agrees with the repository's file list."""
    if not meta.etag or not meta.commit_hash or meta.size is None:
        raise download_failed(f"The hub sent no file metadata for {part.path}", url)
    etag, commit = str(meta.etag), str(meta.commit_hash)
    if not COMMIT_RE.fullmatch(commit):
        raise download_failed(
            f"The hub sent a commit id for {part.path} that is not one: {shown(commit)}",
            "a commit id is 40 hex digits",
        )
    if not ETAG_RE.fullmatch(etag):
        raise download_failed(
            f"The hub sent an ETag for {part.path} that is not a file hash: {shown(etag)}",
            "an ETag is a git blob id (40 hex digits) or a sha256 (64)",
        )
    if part.sha256 is not None and etag != part.sha256:
        raise download_failed(
            f"The hub's ETag for {part.path} is not its LFS sha256",
            f"ETag {etag}, LFS sha256 {part.sha256}; if the repository just changed, pull again",
        )
    if part.sha256 is None and len(etag) != 40:
        raise download_failed(
            f"The hub's ETag for {part.path} is not a git blob id",
            f"{etag}: a file kept in git is named by its 40-hex blob id",
        )
    if meta.size != part.size:
        raise download_failed(
            f"The hub says {part.path} is {shown(meta.size)} bytes, its file list said {part.size}",
            "if the repository just changed, pull again",
        )
    return _Answer(etag, commit, part.size, check_url(str(meta.location), "a download address"))


def _hash_file(path: Path, tracker: _Tracker, part: str, digest: Any, phase: str) -> Any:
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_SIZE * 8):
            digest.update(chunk)
            done += len(chunk)
            tracker.report(part, done, phase)
    return digest


def _fetch(url: str, partial: Path, answer: _Answer, tracker: _Tracker, part: str) -> str:
    """Fetch ``url`` into ``partial``, resuming from its length; return its hash
    (the kind ``answer.etag`` is). Never more than ``answer.size`` bytes are kept:
    a hub that sends more is ``download_failed`` and the partial file is deleted."""
    import httpx2

    size = answer.size
    if partial.exists() and partial.stat().st_size > size:
        partial.unlink()  # a different file was here: start over
    digest = answer.new_digest()
    if partial.exists():
        digest = _hash_file(partial, tracker, part, digest, "checking")
    retries = TRANSFER_RETRIES
    with partial.open("ab", buffering=0) as out:
        while True:
            have = out.tell()
            if have == size:
                return str(digest.hexdigest())
            try:
                with streamed_get(
                    url, headers={"Range": f"bytes={have}-"} if have else None
                ) as response:
                    if have and response.status_code != 206:  # Range ignored: whole file again
                        out.truncate(0)
                        out.seek(0)
                        digest = answer.new_digest()
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        tracker.report(part, out.tell(), "downloading")
                        if out.tell() + len(chunk) > size:
                            out.truncate(0)  # not the file the hub described: never resume it
                            partial.unlink(missing_ok=True)
                            raise download_failed(
                                f"The hub sent more than the {size:,} bytes it declared for "
                                f"{part}: the download was deleted"
                            )
                        _write_all(out, chunk, part, partial, size)
                        digest.update(chunk)
                        tracker.fetched += len(chunk)
                        retries = TRANSFER_RETRIES  # progress was made
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
                raise download_failed(
                    f"No room left to write {part}: {os.strerror(exc.errno or 0).lower()}",
                    f"{kept}; free some space (or set HF_HOME to another disk) "
                    "and pull again to resume",
                ) from exc
            raise download_failed(f"Cannot write the download: {exc.strerror}", kept) from exc
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

    Every part is hashed before this returns (:attr:`HubFile.checksums`): what
    this pull fetched, and what an earlier pull or another tool left in the
    cache. Resumes what an earlier, stopped pull kept. Raises
    :class:`DownloadCancelled` when ``cancel`` is set (the partial file stays),
    ``download_failed`` when the hub cannot be reached, answers in a form the
    hub never uses, or sends bytes that are not the file's (the file is
    deleted), ``model_not_found`` for an unknown repository or file.
    """
    import filelock
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    revision = check_revision(revision)
    endpoint = hub_endpoint()
    ensure_online(endpoint)
    cache = cache_dir or huggingface_cache_dir()
    storage = repo_storage(file.repo_id, cache)
    tracker = _Tracker(file, progress, cancel)
    paths: list[Path] = []
    for part in file.parts:
        name = check_repo_path(part.path, file.repo_id)
        with hub_errors(file.repo_id):
            url = hf_hub_url(file.repo_id, name, revision=revision, endpoint=endpoint)
            meta = get_hf_file_metadata(url, endpoint=endpoint)
        answer = _checked_answer(meta, part, url)
        snapshot = contained(storage, snapshot_path(answer.commit), "the snapshot")
        pointer = contained(snapshot, name, name)
        blob = contained(storage, blob_path(answer.etag), "the blob")
        locks = contained(cache, locks_path(storage.name), "the lock")
        lock_path = contained(locks, f"{answer.etag}.shimmy.lock", "the lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with filelock.FileLock(str(lock_path), timeout=0):
                _fetch_blob(answer, part, blob, tracker)
                _link(blob, pointer)
        except filelock.Timeout as exc:
            raise download_failed(
                f"{part.path} is being downloaded by another shimmy process"
            ) from exc
        _write_ref(storage, revision, answer.commit)
        paths.append(pointer)
        tracker.done_before += part.size
    tracker.report(file.parts[-1].path, 0, "done", force=True)
    record_pull(file, paths, revision, cache)
    return paths[0]


def _fetch_blob(answer: _Answer, part: HubPart, blob: Path, tracker: _Tracker) -> None:
    """Put the bytes the hub's hash names at ``blob``, hashed: a blob already
    there is checked, and fetched again when its bytes are not its name's."""
    if os.path.lexists(blob):
        if not blob.is_file():
            raise download_failed(f"{blob} is in the way of {part.path}: not a file")
        digest = _hash_file(blob, tracker, part.path, answer.new_digest(), "verifying")
        if digest.hexdigest() == answer.etag:
            return
        blob.unlink()  # damaged: a blob is named after the hash of its bytes
    partial = contained(blob.parent, blob.name + PARTIAL_SUFFIX, "the partial download")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with hub_errors(tracker.file.repo_id):
        actual = _fetch(answer.location, partial, answer, tracker, part.path)
    tracker.report(part.path, answer.size, "verifying", force=True)
    if actual != answer.etag:
        partial.unlink(missing_ok=True)
        raise download_failed(
            f"Checksum mismatch for {part.path}: the download was deleted",
            f"{answer.checksum} {actual}, the hub says {answer.etag}",
        )
    os.replace(partial, blob)


def _link(blob: Path, pointer: Path) -> None:
    """The snapshot's file: a relative symlink to the blob, as huggingface_hub makes it."""
    target = os.path.relpath(blob, pointer.parent)
    try:
        if pointer.is_symlink() and os.readlink(pointer) == target:
            return
        pointer.parent.mkdir(parents=True, exist_ok=True)
        tmp = pointer.with_name(f".shimmy-link-{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, pointer)
    except OSError as exc:
        raise download_failed(f"Cannot link {pointer} to its blob: {exc.strerror}") from exc


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """``refs/<revision>`` holds the commit a branch or tag named (a commit needs none)."""
    if revision == commit:
        return
    ref = contained(storage, ref_path(revision), "the ref")
    try:
        if ref.is_file() and ref.read_text(encoding="ascii", errors="replace") == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit, encoding="ascii")
        os.replace(tmp, ref)
    except OSError as exc:
        raise download_failed(f"Cannot write {ref}: {exc.strerror}") from exc


def partial_bytes(file: HubFile, cache_dir: Path | None = None) -> int:
    """Bytes of ``file`` already kept from an earlier, stopped pull (any etag)."""
    blobs = repo_storage(file.repo_id, cache_dir) / BLOBS
    total = 0
    for part in file.parts:
        if part.sha256 and SHA256_RE.fullmatch(part.sha256):
            for path in (blobs / part.sha256, blobs / (part.sha256 + PARTIAL_SUFFIX)):
                with contextlib.suppress(OSError):
                    total += path.stat().st_size
    return total


def on_disk(file: HubFile, cache_dir: Path | None = None) -> bool:
    """Whether ``file`` is in the cache whole: every part's blob (named by its
    sha256) at its full size, or, for parts kept in git (no sha256), a pull of
    it on record whose files are all there. Nothing is hashed here: a download
    hashes what it fetched, and downloading again checks a blob before use."""
    blobs = repo_storage(file.repo_id, cache_dir) / BLOBS
    if all(p.sha256 and SHA256_RE.fullmatch(p.sha256) for p in file.parts):
        for part in file.parts:
            try:
                if (blobs / str(part.sha256)).stat().st_size != part.size:
                    return False
            except OSError:
                return False
        return True
    return any(
        r.get("repo_id") == file.repo_id
        and r.get("name") == file.name
        and r.get("paths")
        and all(os.path.exists(p) for p in r["paths"])
        for r in pulled_records()
    )
