"""The Hugging Face hub cache: where it is and how it is laid out.

Discovery lists the GGUF files in it (source 4) and ``shimmy pull`` downloads
into it, so both take its place and its layout from here. The layout is the one
``hf_hub_download`` makes, so other tools find what shimmy pulled::

    <cache>/models--OWNER--NAME/             one repository (repo_folder_name)
        blobs/<etag>                         a file's bytes, named by their hash
        snapshots/<commit>/<path>            relative symlinks to the blobs
        refs/<revision>                      the commit a branch or tag named
    <cache>/.locks/models--OWNER--NAME/      locks of downloads in progress

The ``*_path`` functions give paths relative to a repository's folder (or to
the cache) without checking them: their parts come from the hub's answers, so
the hub checks that each stays inside the cache before it becomes a path.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_FOLDER_PREFIX = "models--"
BLOBS = "blobs"
SNAPSHOTS = "snapshots"
REFS = "refs"
LOCKS = ".locks"


def huggingface_cache_dir() -> Path:
    """The hub cache folder, computed from the environment now (huggingface_hub's
    own constant is fixed when it is imported)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.path.expanduser(os.environ[var])))
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def repo_folder_name(repo_id: str) -> str:
    """A model repository's folder in the cache, ``models--OWNER--NAME``, named
    as huggingface_hub's ``repo_folder_name`` names it; check ``repo_id`` first."""
    return "--".join(["models", *repo_id.split("/")])


def blob_path(etag: str) -> str:
    """The blob holding the bytes the hub's ETag names, in the repository's folder."""
    return f"{BLOBS}/{etag}"


def snapshot_path(commit: str) -> str:
    """The snapshot folder of a commit, in the repository's folder."""
    return f"{SNAPSHOTS}/{commit}"


def ref_path(revision: str) -> str:
    """The file naming a branch's or tag's commit, in the repository's folder."""
    return f"{REFS}/{revision}"


def locks_path(repo_folder: str) -> str:
    """The folder of a repository's download locks, in the cache."""
    return f"{LOCKS}/{repo_folder}"


def repo_folder_of(pointer: Path, cache: Path) -> Path | None:
    """The repository folder of a snapshot file in ``cache``
    (``cache/models--*/snapshots/COMMIT/...``), or None for any other path."""
    try:
        pieces = Path(os.path.normpath(pointer)).relative_to(cache).parts
    except ValueError:
        return None
    if len(pieces) < 4 or not pieces[0].startswith(REPO_FOLDER_PREFIX) or pieces[1] != SNAPSHOTS:
        return None
    return cache / pieces[0]
