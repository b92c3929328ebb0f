"""Which model "default" means when this run was not told.

The user's choice (the dashboard's ``d``) is remembered in shimmy's data folder
and wins at every start, in the dashboard and in ``shimmy serve`` alike. Without
one, the default is the usable model that has been on this machine longest (its
file's modification time, discovery order on a tie): downloading a model never
makes it the default, whichever folder the download lands in (the Hugging Face
cache is searched before Ollama's and the Python packages', so "first found"
let every pull take over).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from shimmy.models.discovery import ModelEntry
from shimmy.models.sources import SOURCES

log = logging.getLogger(__name__)

FILE_NAME = "default-model.json"


class RememberedDefault:
    """The default model the user chose last, kept in ``path`` (JSON)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._name: str | None = self._read()

    @property
    def name(self) -> str | None:
        return self._name

    def remember(self, name: str) -> None:
        """Keep ``name`` for later runs (written whole, then renamed into place)."""
        self._name = name
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"model": name}), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # the choice still holds for this run
            log.warning("could not remember the default model in %s: %s", self.path, exc)

    def _read(self) -> str | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        name = data.get("model") if isinstance(data, dict) else None
        return name if isinstance(name, str) and name else None


def longest_here(entries: Iterable[ModelEntry]) -> ModelEntry | None:
    """The usable model whose file is oldest; on a tie the first in discovery
    order, then by name."""
    rank = {source: i for i, source in enumerate(SOURCES)}
    usable = [e for e in entries if e.usable]
    if not usable:
        return None
    return min(usable, key=lambda e: (e.modified, rank.get(e.source, len(rank)), e.name))
