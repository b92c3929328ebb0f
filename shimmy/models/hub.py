"""Hugging Face Hub: search GGUF repositories, list their model files, pick a
quantization, check disk and memory, and download into the Hugging Face cache.

Downloads land in the hub cache (``HF_HUB_CACHE`` / ``HF_HOME``), laid out as
``hf_hub_download`` lays it out (``blobs/<etag>``, ``snapshots/<commit>/<file>``
linking to it, ``refs/<revision>``), so discovery source 4 lists a pulled model
at once and other tools find it too. huggingface_hub 2.4.0 throws away a
partial download when the process dies and checks LFS files by size only
(DESIGN.md), so shimmy fetches the bytes itself: into
``blobs/<etag>.shimmy.incomplete``, resumed with a Range request by the next
pull, hashed and compared with the hub's hash, then renamed to the blob and
linked into the snapshot.

Every hub answer is untrusted input (a mirror in ``HF_ENDPOINT`` may be hostile):
ETags and commit ids must be the hex hashes the hub sends, file and repository
names must be plain relative names, every path built from them is checked to
stay inside the cache, every file is hashed (sha256 for LFS files, the git blob
id for files kept in git), no more bytes are taken than the hub declared, and
listings are read with bounds on their size, pages and entries.

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
from urllib.parse import quote, urljoin, urlsplit

from shimmy.config import Paths
from shimmy.errors import ShimmyError
from shimmy.models.grouping import SPLIT_RE
from shimmy.models.hf_cache import (
    BLOBS,
    SNAPSHOTS,
    blob_path,
    huggingface_cache_dir,
    locks_path,
    ref_path,
    repo_folder_name,
    repo_folder_of,
    snapshot_path,
)

DEFAULT_ENDPOINT = "https://huggingface.co"
SORTS: dict[str, str] = {"downloads": "downloads", "likes": "likes", "updated": "lastModified"}
DEFAULT_QUANT = "Q4_K_M"
CHUNK_SIZE = 1024 * 1024  # progress and cancel are checked once per chunk
PARTIAL_SUFFIX = ".shimmy.incomplete"
DISK_MARGIN = 200 * 1000**2  # never fill a disk to the last byte
TRANSFER_RETRIES = 3  # dropped connections resumed within one process

# Bounds on what a hub answer may make shimmy read or keep. The real hub sends
# tree pages of at most 1000 entries (~300 kB) and search pages of `limit` items.
MAX_ANSWER_BYTES = 16 * 1024**2  # one JSON page of a listing
MAX_ERROR_BYTES = 64 * 1024  # the body of an error answer, for its message
MAX_PAGES = 50  # pages of one listing
MAX_TREE_ENTRIES = 50_000  # files and folders of one repository
MAX_SEARCH_RESULTS = 1000  # the hub's own page limit
MAX_FILE_SIZE = 2**50  # 1 PiB: a larger "size" is a lie
MAX_COUNT = 10**15  # downloads, likes, parameters: larger is a lie, shown as unknown
MAX_REDIRECTS = 5

# "Q4_K_M", "IQ4_XS", "Q8_0", "F16", "BF16" in a file name; the last one wins.
QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Za-z0-9]+)*|BF16|FP16|FP32|F16|F32)(?![A-Za-z0-9])", re.I
)

# The forms of the hub's answers, as huggingface_hub reads them: an ETag (after
# `_normalize_etag` drops W/ and the quotes) is a file's git blob id (40 hex) or
# its LFS sha256 (64 hex); X-Repo-Commit is a commit id (`REGEX_COMMIT_HASH`).
ETAG_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
COMMIT_RE = re.compile(r"[0-9a-f]{40}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
# huggingface_hub's `validate_repo_id`: [namespace/]name, each 1-96 of letters,
# digits, "_", "-", ".", starting and ending with a letter, digit or "_".
REPO_ID_RE = re.compile(r"(?:\w(?:[\w.-]{0,94}\w)?/)?\w(?:[\w.-]{0,94}\w)?", re.ASCII)
# A branch, tag or commit: path segments of the same characters.
REVISION_RE = re.compile(r"[\w.-]+(?:/[\w.-]+)*", re.ASCII)


# -- environment ----------------------------------------------------------------


def hub_endpoint() -> str:
    """The hub's base URL, from ``HF_ENDPOINT`` now."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _download_failed(message: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("download_failed", message, details)


def _shown(text: object, limit: int = 80) -> str:
    """A hub-sent string fit for one error line: quoted, escapes visible, cut short."""
    value = text if isinstance(text, str) else repr(text)
    short = value[:limit] + ("…" if len(value) > limit else "")
    return repr(short) if isinstance(text, str) else short


# -- hub answers are untrusted ------------------------------------------------------


def check_repo_id(repo_id: object, code: str = "invalid_request") -> str:
    """``repo_id`` if it is a repository name the hub could have made (it becomes
    the cache folder ``models--owner--name``); a ShimmyError with ``code`` if not."""
    if (
        not isinstance(repo_id, str)
        or not REPO_ID_RE.fullmatch(repo_id)
        or ".." in repo_id
        or "--" in repo_id
        or repo_id.endswith(".git")
    ):
        raise ShimmyError(
            code,
            f"{_shown(repo_id)} is not a Hugging Face repository name",
            "a name is OWNER/REPO of letters, digits, '-', '_' and '.'",
        )
    return repo_id


def check_revision(revision: object) -> str:
    """``revision`` if it is a branch, tag or commit name that stays a plain
    relative path (it becomes ``refs/<revision>``); ``invalid_request`` if not."""
    if (
        not isinstance(revision, str)
        or len(revision) > 255
        or not REVISION_RE.fullmatch(revision)
        or any(piece in (".", "..") for piece in revision.split("/"))
    ):
        raise ShimmyError(
            "invalid_request",
            f"{_shown(revision)} is not a revision (a branch, tag or commit)",
        )
    return revision


def unsafe_repo_path(name: object) -> str | None:
    """Why a file name in a repository cannot become a path in the cache, or None
    when it is a plain relative name (``folder/file.gguf``)."""
    if not isinstance(name, str) or not name:
        return "no name"
    if len(name.encode("utf-8", "surrogatepass")) > 1024:
        return "longer than 1024 bytes"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return "a control character"  # NUL among them
    if "\\" in name:
        return "a backslash"
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    pieces = name.split("/")
    if any(piece in ("", ".", "..") for piece in pieces):
        return "an empty, '.' or '..' folder"
    if any(len(piece.encode("utf-8", "surrogatepass")) > 200 for piece in pieces):
        return "a name longer than 200 bytes"
    return None


def _check_repo_path(name: object, repo_id: str, code: str = "download_failed") -> str:
    reason = unsafe_repo_path(name)
    if reason is not None:
        raise ShimmyError(
            code,
            f"Refusing the file name {_shown(name)} in '{repo_id}'",
            f"it has {reason}; a file name must stay inside the repository",
        )
    assert isinstance(name, str)
    return name


def _contained(root: Path, relative: str, what: str) -> Path:
    """``root/relative``, refused (``download_failed``) unless it stays inside
    ``root`` once every folder on the way is resolved, symlinks included. The
    last name is not followed: a blob or a snapshot link may be a symlink."""
    path = root.joinpath(*relative.split("/"))
    real_root = root.resolve()
    parent = path.parent.resolve()
    if path.name in ("", ".", "..") or not (parent == real_root or real_root in parent.parents):
        raise _download_failed(
            f"Refusing to write {what} outside {root}", f"{_shown(relative)} leads to {path}"
        )
    return path


def _check_url(url: str, what: str) -> str:
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise _download_failed(
            f"The hub sent {what} that is not an http(s) URL: {_shown(url)}",
            "a hub and its file store answer over http or https only",
        )
    return url


def _count(value: object) -> int | None:
    """A count from a hub answer, or None when it is missing or absurd."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _date(value: object) -> datetime | None:
    """An ISO 8601 time from a hub answer ("2025-03-01T10:00:00.000Z"), or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


# -- talking to the hub ------------------------------------------------------------------


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

    if urlsplit(endpoint).scheme.lower() not in ("http", "https"):
        raise _download_failed(f"HF_ENDPOINT is not an http(s) URL: {_shown(endpoint)}")
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


def _auth_headers(url: str, endpoint: str) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    headers = dict(build_hf_headers())
    if urlsplit(url)[:2] != urlsplit(endpoint)[:2]:
        headers.pop("authorization", None)  # a CDN's signed URL needs no token
        headers.pop("Authorization", None)
    headers["Accept-Encoding"] = "identity"  # sizes are the bytes' sizes; no zip bombs
    return headers


def _read_capped(response: Any, limit: int, what: str) -> bytes:
    """The body of ``response``, refused once it passes ``limit`` bytes."""
    body = bytearray()
    for chunk in response.iter_bytes(64 * 1024):
        body += chunk
        if len(body) > limit:
            raise _download_failed(
                f"The hub's answer for {what} is larger than {limit:,} bytes", str(response.url)
            )
    return bytes(body)


def _raise_for_status(response: Any) -> None:
    """huggingface_hub's errors for an error answer, read from its first
    MAX_ERROR_BYTES only (hf_raise_for_status would read all of it)."""
    import httpx2
    from huggingface_hub.utils import hf_raise_for_status

    if 200 <= response.status_code < 300:
        return
    body = bytearray()
    for chunk in response.iter_bytes(MAX_ERROR_BYTES):
        body += chunk
        if len(body) >= MAX_ERROR_BYTES:
            break
    headers = [
        (k, v)
        for k, v in response.headers.multi_items()
        if k.lower() not in ("content-length", "content-encoding", "transfer-encoding")
    ]
    read = httpx2.Response(
        response.status_code,
        headers=headers,
        content=bytes(body[:MAX_ERROR_BYTES]),
        request=response.request,
    )
    hf_raise_for_status(read)
    raise _download_failed(f"The Hugging Face Hub answered HTTP {response.status_code}")


@contextlib.contextmanager
def _get(
    url: str, *, params: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Iterator[Any]:
    """A streamed GET of ``url``: redirects followed (at most MAX_REDIRECTS, to
    http(s) URLs only, the token sent only to the hub itself), error answers
    raised as huggingface_hub raises them."""
    from huggingface_hub.utils import get_session

    endpoint = hub_endpoint()
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(url, "a download address")
        sent = {**_auth_headers(url, endpoint), **(headers or {})}
        with get_session().stream(
            "GET", url, params=params, headers=sent, follow_redirects=False, timeout=30
        ) as response:
            if not response.has_redirect_location:
                _raise_for_status(response)
                yield response
                return
            location = response.headers["Location"]
            url = urljoin(str(response.url), location)
            params = None  # the new address carries its own query
            _check_url(url, "a redirect")
    raise _download_failed(f"The hub redirected more than {MAX_REDIRECTS} times", url)


def _hub_list(url: str, params: dict[str, Any], what: str, *, wanted: int) -> list[Any]:
    """The items of a paginated JSON listing (the hub's ``Link: rel="next"``
    pages), at most ``wanted``; each page, the page count and the item count
    bounded, and every next page on the hub's own origin."""
    items: list[Any] = []
    origin = urlsplit(hub_endpoint())[:2]
    for _ in range(MAX_PAGES):
        with _get(url, params=params) as response:
            body = _read_capped(response, MAX_ANSWER_BYTES, what)
            next_url = response.links.get("next", {}).get("url")
            here = str(response.url)
        try:
            page = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _download_failed(f"The hub's answer for {what} is not JSON", here) from exc
        if not isinstance(page, list):
            raise _download_failed(f"The hub's answer for {what} is not a list", here)
        items.extend(page)
        if len(items) >= wanted or not next_url:
            return items[:wanted]
        url, params = urljoin(here, next_url), {}
        if urlsplit(url)[:2] != origin:
            raise _download_failed(f"The hub's next page of {what} is on another site", _shown(url))
    raise _download_failed(f"The hub's listing of {what} has more than {MAX_PAGES} pages")


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


def _parameters(item: dict[str, Any]) -> int | None:
    for summary in (item.get("gguf"), item.get("safetensors")):
        if isinstance(summary, dict) and _count(summary.get("total")) is not None:
            return _count(summary["total"])
    return None


def _hub_model(item: object) -> HubModel:
    """One search result, its name checked and its numbers bounded."""
    if not isinstance(item, dict):
        raise _download_failed(
            f"The hub sent a search result that is not an object: {_shown(item)}"
        )
    repo_id = check_repo_id(item.get("id"), "download_failed")
    return HubModel(
        repo_id,
        _count(item.get("downloads")),
        _count(item.get("likes")),
        _date(item.get("lastModified")),
        _parameters(item),
    )


def search_models(query: str, *, limit: int = 20, sort: str = "downloads") -> list[HubModel]:
    """GGUF repositories matching ``query``, best first by ``sort``
    (one of :data:`SORTS`: downloads, likes, updated); at most ``limit``
    (1 to :data:`MAX_SEARCH_RESULTS`)."""
    if sort not in SORTS:
        raise ShimmyError("invalid_request", f"Unknown sort '{sort}'", f"use {', '.join(SORTS)}")
    if not 1 <= limit <= MAX_SEARCH_RESULTS:
        raise ShimmyError("invalid_request", f"The limit must be 1 to {MAX_SEARCH_RESULTS}")
    endpoint = hub_endpoint()
    _ensure_online(endpoint)
    params = {
        "filter": "gguf",
        "sort": SORTS[sort],
        "limit": limit,
        "expand": ["downloads", "likes", "lastModified", "gguf", "safetensors"],
    }
    if query:
        params["search"] = query
    with _hub_errors():
        items = _hub_list(endpoint + "/api/models", params, "the search", wanted=limit)
    return [_hub_model(item) for item in items]


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

    @property
    def checksums(self) -> str:
        """The hashes a download of this file compares: "sha256" (LFS files),
        "git blob id" (files kept in git), or both."""
        kinds = ["sha256"] * any(p.sha256 for p in self.parts)
        kinds += ["git blob id"] * any(p.sha256 is None for p in self.parts)
        return " and ".join(kinds)

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


def _hub_part(item: object, repo_id: str) -> HubPart | None:
    """One entry of a repository tree as a file, None for a folder; a name,
    size or LFS hash that could not be the hub's is ``download_failed``."""
    if not isinstance(item, dict):
        raise _download_failed(f"The hub listed {_shown(item)} in '{repo_id}', not a file entry")
    if item.get("type") != "file":
        return None
    path = _check_repo_path(item.get("path"), repo_id)
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
        raise _download_failed(f"The hub lists {path} in '{repo_id}' as {_shown(size)} bytes")
    lfs = item.get("lfs")
    if lfs is None:
        return HubPart(path, size, None)
    oid = lfs.get("oid") if isinstance(lfs, dict) else None
    if not isinstance(oid, str) or not SHA256_RE.fullmatch(oid):
        raise _download_failed(
            f"The hub sent no LFS sha256 for {path} in '{repo_id}'", f"oid {_shown(oid)}"
        )
    if lfs.get("size") != size:
        raise _download_failed(
            f"The hub lists {path} in '{repo_id}' with two sizes",
            f"{size} and LFS {_shown(lfs.get('size'))}",
        )
    return HubPart(path, size, oid)


def list_gguf_files(repo_id: str, revision: str = "main") -> list[HubFile]:
    """The GGUF model files of a repository, with sizes and LFS hashes (from the repo tree)."""
    repo_id, revision = check_repo_id(repo_id), check_revision(revision)
    endpoint = hub_endpoint()
    _ensure_online(endpoint)
    url = f"{endpoint}/api/models/{repo_id}/tree/{quote(revision, safe='')}"
    with _hub_errors(repo_id):
        tree = _hub_list(
            url,
            {"recursive": "true", "expand": "false"},
            f"'{repo_id}'",
            wanted=MAX_TREE_ENTRIES + 1,
        )
    if len(tree) > MAX_TREE_ENTRIES:
        raise _download_failed(f"The hub lists more than {MAX_TREE_ENTRIES:,} files in '{repo_id}'")
    parts: dict[str, HubPart] = {}
    for item in tree:
        part = _hub_part(item, repo_id)
        if part is not None:
            parts[part.path] = part
    return group_gguf_files(repo_id, list(parts.values()))


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
    check_repo_id(repo_id)
    check_revision(revision)
    if filename is not None:
        _check_repo_path(filename, repo_id, "invalid_request")
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
    """The repository's folder in the hub cache (``models--owner--name``); a
    name that is not a repository's is refused before it becomes a path."""
    cache = cache_dir or huggingface_cache_dir()
    name = repo_folder_name(check_repo_id(repo_id))
    return _contained(cache, name, "the repository's folder")


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


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
        raise _download_failed(f"The hub sent no file metadata for {part.path}", url)
    etag, commit = str(meta.etag), str(meta.commit_hash)
    if not COMMIT_RE.fullmatch(commit):
        raise _download_failed(
            f"The hub sent a commit id for {part.path} that is not one: {_shown(commit)}",
            "a commit id is 40 hex digits",
        )
    if not ETAG_RE.fullmatch(etag):
        raise _download_failed(
            f"The hub sent an ETag for {part.path} that is not a file hash: {_shown(etag)}",
            "an ETag is a git blob id (40 hex digits) or a sha256 (64)",
        )
    if part.sha256 is not None and etag != part.sha256:
        raise _download_failed(
            f"The hub's ETag for {part.path} is not its LFS sha256",
            f"ETag {etag}, LFS sha256 {part.sha256}; if the repository just changed, pull again",
        )
    if part.sha256 is None and len(etag) != 40:
        raise _download_failed(
            f"The hub's ETag for {part.path} is not a git blob id",
            f"{etag}: a file kept in git is named by its 40-hex blob id",
        )
    if meta.size != part.size:
        raise _download_failed(
            f"The hub says {part.path} is {_shown(meta.size)} bytes, "
            f"its file list said {part.size}",
            "if the repository just changed, pull again",
        )
    return _Answer(etag, commit, part.size, _check_url(str(meta.location), "a download address"))


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
                with _get(url, headers={"Range": f"bytes={have}-"} if have else None) as response:
                    if have and response.status_code != 206:  # Range ignored: whole file again
                        out.truncate(0)
                        out.seek(0)
                        digest = answer.new_digest()
                    for chunk in response.iter_bytes(CHUNK_SIZE):
                        tracker.report(part, out.tell(), "downloading")
                        if out.tell() + len(chunk) > size:
                            out.truncate(0)  # not the file the hub described: never resume it
                            partial.unlink(missing_ok=True)
                            raise _download_failed(
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
    _ensure_online(endpoint)
    cache = cache_dir or huggingface_cache_dir()
    storage = repo_storage(file.repo_id, cache)
    tracker = _Tracker(file, progress, cancel)
    paths: list[Path] = []
    for part in file.parts:
        name = _check_repo_path(part.path, file.repo_id)
        with _hub_errors(file.repo_id):
            url = hf_hub_url(file.repo_id, name, revision=revision, endpoint=endpoint)
            meta = get_hf_file_metadata(url, endpoint=endpoint)
        answer = _checked_answer(meta, part, url)
        snapshot = _contained(storage, snapshot_path(answer.commit), "the snapshot")
        pointer = _contained(snapshot, name, name)
        blob = _contained(storage, blob_path(answer.etag), "the blob")
        locks = _contained(cache, locks_path(storage.name), "the lock")
        lock_path = _contained(locks, f"{answer.etag}.shimmy.lock", "the lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with filelock.FileLock(str(lock_path), timeout=0):
                _fetch_blob(answer, part, blob, tracker)
                _link(blob, pointer)
        except filelock.Timeout as exc:
            raise _download_failed(
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
            raise _download_failed(f"{blob} is in the way of {part.path}: not a file")
        digest = _hash_file(blob, tracker, part.path, answer.new_digest(), "verifying")
        if digest.hexdigest() == answer.etag:
            return
        blob.unlink()  # damaged: a blob is named after the hash of its bytes
    partial = _contained(blob.parent, blob.name + PARTIAL_SUFFIX, "the partial download")
    partial.parent.mkdir(parents=True, exist_ok=True)
    with _hub_errors(tracker.file.repo_id):
        actual = _fetch(answer.location, partial, answer, tracker, part.path)
    tracker.report(part.path, answer.size, "verifying", force=True)
    if actual != answer.etag:
        partial.unlink(missing_ok=True)
        raise _download_failed(
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
        raise _download_failed(f"Cannot link {pointer} to its blob: {exc.strerror}") from exc


def _write_ref(storage: Path, revision: str, commit: str) -> None:
    """``refs/<revision>`` holds the commit a branch or tag named (a commit needs none)."""
    if revision == commit:
        return
    ref = _contained(storage, ref_path(revision), "the ref")
    try:
        if ref.is_file() and ref.read_text(encoding="ascii", errors="replace") == commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(commit, encoding="ascii")
        os.replace(tmp, ref)
    except OSError as exc:
        raise _download_failed(f"Cannot write {ref}: {exc.strerror}") from exc


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


def record_pull(
    file: HubFile, paths: list[Path], revision: str, cache_dir: Path | None = None
) -> None:
    """Remember that shimmy downloaded these files, so ``shimmy rm`` may delete
    them; only snapshot files inside the cache are ever recorded."""
    cache = cache_dir or huggingface_cache_dir()
    for path in paths:
        if repo_folder_of(path, cache) is None:
            raise _download_failed(f"Refusing to record {path}: not a file in {cache}")
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


def remove_pulled(record: dict[str, Any], cache_dir: Path | None = None) -> int:
    """Delete a pulled model's snapshot links and the blobs no other link uses;
    tidy empty folders; forget the record. Returns the bytes freed. A recorded
    path that is not a snapshot file in the cache is left alone."""
    cache = cache_dir or huggingface_cache_dir()
    freed = 0
    for name in record.get("paths", []):
        pointer = Path(name)
        storage = repo_folder_of(pointer, cache)
        if storage is None:
            continue
        snapshots = storage / SNAPSHOTS
        blob = Path(os.path.realpath(pointer))
        pointer.unlink(missing_ok=True)
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
