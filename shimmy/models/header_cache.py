"""GGUF header results kept across processes, so that listing thousands of
model files reads no header twice.

Discovery and the registry read every header through a :class:`HeaderCache`.
A result is keyed by the file's resolved path, modification time and size, so
a changed file is read again; failures are kept too (a corrupt file stays
corrupt until it changes), except a file that could not be opened or read at
all (:class:`~shimmy.models.gguf.ModelFileUnreadable`): that says nothing about
the file's bytes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models.gguf import GGUFInfo, ModelFileUnreadable, read_gguf_info

log = logging.getLogger(__name__)


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
            if not isinstance(exc, ModelFileUnreadable):
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
