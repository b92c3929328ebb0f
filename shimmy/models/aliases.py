"""Other names a model answers to: the name it was pulled by through Ollama's API
(``hf.co/ORG/REPO:QUANT``) and the copies ``/api/copy`` makes.

An alias names a model's file, not its registry name: a discovery name can
change when another model with the same file name turns up, the file cannot.
Aliases live in ``aliases.json`` in shimmy's data folder, so they survive a
restart; a name is matched without regard to case, and shown as it was given.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shimmy.config import Paths

MAX_ALIAS_LENGTH = 300


@dataclass(frozen=True)
class Alias:
    """``name`` stands for the model whose (first) file is ``path``; ``pulled``
    says it was made by a pull, so deleting it may delete the files too."""

    name: str
    path: Path
    pulled: bool = False

    @property
    def key(self) -> str:
        return self.name.strip().lower()


class ModelAliases:
    """The aliases of one shimmy home; thread-safe, written through at each change."""

    def __init__(self, paths: Paths) -> None:
        self._file = paths.data_dir / "aliases.json"
        self._lock = threading.Lock()
        self._aliases: dict[str, Alias] | None = None

    def _loaded(self) -> dict[str, Alias]:
        if self._aliases is None:
            self._aliases = {alias.key: alias for alias in _read(self._file)}
        return self._aliases

    def get(self, name: str) -> Alias | None:
        with self._lock:
            return self._loaded().get(name.strip().lower())

    def all(self) -> list[Alias]:
        """Every alias, by name."""
        with self._lock:
            return sorted(self._loaded().values(), key=lambda a: a.key)

    def add(self, alias: Alias) -> None:
        """Add ``alias``, replacing one of the same name."""
        with self._lock:
            aliases = self._loaded()
            aliases[alias.key] = alias
            _write(self._file, aliases.values())

    def remove(self, name: str) -> Alias | None:
        """Forget ``name``; what it was, or None."""
        with self._lock:
            aliases = self._loaded()
            alias = aliases.pop(name.strip().lower(), None)
            if alias is not None:
                _write(self._file, aliases.values())
            return alias

    def pointing_at(self, path: Path) -> list[Alias]:
        """The aliases of the model whose file is ``path``."""
        return [alias for alias in self.all() if same_file(alias.path, path)]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: as written, or once links are followed
    (a pulled model's path is a snapshot link to its blob)."""
    return os.path.normpath(a) == os.path.normpath(b) or os.path.realpath(a) == os.path.realpath(b)


def _read(file: Path) -> list[Alias]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [alias for alias in map(_alias_of, data) if alias is not None]


def _alias_of(item: Any) -> Alias | None:
    if not isinstance(item, dict):
        return None
    name, path = item.get("name"), item.get("path")
    if not isinstance(name, str) or not isinstance(path, str) or not name.strip():
        return None
    return Alias(name.strip(), Path(path), bool(item.get("pulled", False)))


def _write(file: Path, aliases: Any) -> None:
    records = [
        {"name": a.name, "path": str(a.path), "pulled": a.pulled}
        for a in sorted(aliases, key=lambda a: a.key)
    ]
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_suffix(".tmp")
    tmp.write_text(json.dumps(records, indent=2), encoding="utf-8")
    os.replace(tmp, file)
