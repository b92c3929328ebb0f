"""Every hub answer is untrusted input (a mirror in ``HF_ENDPOINT`` may be
hostile): the checks a name, hash, count or address from the hub passes before
shimmy uses it.

ETags and commit ids must be the hex hashes the hub sends; repository, revision
and file names must be ones the hub could have made and plain relative names;
every path built from them is checked to stay inside the cache; a count or a
date that cannot be true is shown as unknown. How much of an answer is read at
all is bounded by :mod:`shimmy.models.hub.client`.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from shimmy.errors import ShimmyError
from shimmy.models.hf_cache import huggingface_cache_dir, repo_folder_name

MAX_COUNT = 10**15  # downloads, likes, parameters: larger is a lie, shown as unknown

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


def download_failed(message: str, details: str | None = None) -> ShimmyError:
    """The error of a hub that cannot be reached, refuses, or sends what it never would."""
    return ShimmyError("download_failed", message, details)


def shown(text: object, limit: int = 80) -> str:
    """A hub-sent string fit for one error line: quoted, escapes visible, cut short."""
    value = text if isinstance(text, str) else repr(text)
    short = value[:limit] + ("…" if len(value) > limit else "")
    return repr(short) if isinstance(text, str) else short


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
            f"{shown(repo_id)} is not a Hugging Face repository name",
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
            f"{shown(revision)} is not a revision (a branch, tag or commit)",
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


def check_repo_path(name: object, repo_id: str, code: str = "download_failed") -> str:
    reason = unsafe_repo_path(name)
    if reason is not None:
        raise ShimmyError(
            code,
            f"Refusing the file name {shown(name)} in '{repo_id}'",
            f"it has {reason}; a file name must stay inside the repository",
        )
    assert isinstance(name, str)
    return name


def contained(root: Path, relative: str, what: str) -> Path:
    """``root/relative``, refused (``download_failed``) unless it stays inside
    ``root`` once every folder on the way is resolved, symlinks included. The
    last name is not followed: a blob or a snapshot link may be a symlink."""
    path = root.joinpath(*relative.split("/"))
    real_root = root.resolve()
    parent = path.parent.resolve()
    if path.name in ("", ".", "..") or not (parent == real_root or real_root in parent.parents):
        raise download_failed(
            f"Refusing to write {what} outside {root}", f"{shown(relative)} leads to {path}"
        )
    return path


def check_url(url: str, what: str) -> str:
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise download_failed(
            f"The hub sent {what} that is not an http(s) URL: {shown(url)}",
            "a hub and its file store answer over http or https only",
        )
    return url


def checked_count(value: object) -> int | None:
    """A count from a hub answer, or None when it is missing or absurd."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def checked_date(value: object) -> datetime | None:
    """An ISO 8601 time from a hub answer ("2025-03-01T10:00:00.000Z"), or None."""
    if not isinstance(value, str) or len(value) > 40:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def repo_storage(repo_id: str, cache_dir: Path | None = None) -> Path:
    """The repository's folder in the hub cache (``models--owner--name``); a
    name that is not a repository's is refused before it becomes a path."""
    cache = cache_dir or huggingface_cache_dir()
    name = repo_folder_name(check_repo_id(repo_id))
    return contained(cache, name, "the repository's folder")
