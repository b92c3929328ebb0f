"""What shimmy pulled: the record that ``shimmy rm`` reads before it deletes
anything (models shimmy downloaded, and only their snapshot files inside the
cache), and the name a pulled file is listed under.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shimmy.config import Paths
from shimmy.models.hf_cache import SNAPSHOTS, huggingface_cache_dir, repo_folder_of
from shimmy.models.hub.checks import download_failed
from shimmy.models.hub.files import HubFile

if TYPE_CHECKING:
    from shimmy.models.discovery import ModelEntry


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
            raise download_failed(f"Refusing to record {path}: not a file in {cache}")
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


def registered_name(entries: Sequence[ModelEntry], path: Path) -> str | None:
    """The name discovery gave a downloaded file (``path``, its snapshot link),
    or None when it is not listed. The link is matched first, then the blob it
    leads to: two quantizations with the same bytes share one blob, and
    discovery lists those bytes once."""
    for same in (os.path.normpath, os.path.realpath):
        for entry in entries:
            if same(entry.path) == same(path):
                return str(entry.name)
    return None
