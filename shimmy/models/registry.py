"""The model registry: names -> :class:`ModelEntry`, from discovery.

One registry belongs to the process's ``ModelManager``. It runs discovery on
first use, caches the result, and re-runs it on :meth:`ModelRegistry.refresh`.
Readers never wait for a refresh: they see the previous list until the new one
is complete.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from shimmy.config import ModelPreset, Paths
from shimmy.errors import ShimmyError, model_not_found
from shimmy.models.aliases import Alias, ModelAliases, same_file
from shimmy.models.discovery import Discovery, ModelEntry, describe_file, discover_models
from shimmy.models.grouping import model_name, split_parts
from shimmy.models.header_cache import HeaderCache
from shimmy.models.presets import preset_entries
from shimmy.models.sources import SearchPlace

__all__ = ["Alias", "ModelEntry", "ModelRegistry", "SearchPlace"]


class ModelRegistry:
    """Every model shimmy can find, by name; thread-safe."""

    def __init__(
        self, model_dirs: Sequence[str | Path] = (), *, paths: Paths | None = None
    ) -> None:
        self.model_dirs = tuple(model_dirs)
        self.paths = paths or Paths.from_env()
        self._cache = HeaderCache(self.paths.cache_dir)
        # Other names of models (pulled by, or copied to, through Ollama's API).
        self.aliases = ModelAliases(self.paths)
        self._lock = threading.Lock()  # one discovery at a time
        self._discovery: Discovery | None = None
        self._operator_files: dict[str, ModelEntry] = {}
        self._presets: tuple[ModelPreset, ...] = ()
        # The presets' entries, for the discovery and operator files they were made from.
        self._preset_cache: tuple[object, list[ModelEntry]] | None = None

    def set_presets(self, presets: Sequence[ModelPreset]) -> None:
        """List these ``[models.NAME]`` presets as models (presets.py); a preset
        named as a discovered model takes its place."""
        with self._lock:
            self._presets = tuple(presets)
            self._preset_cache = None

    def refresh(self) -> list[ModelEntry]:
        """Run discovery again and return the new entries."""
        with self._lock:
            discovery = discover_models(self.model_dirs, paths=self.paths, cache=self._cache)
            self._discovery = discovery
        return list(discovery.entries)

    def _current(self) -> Discovery:
        discovery = self._discovery
        if discovery is None:
            with self._lock:
                if self._discovery is None:
                    self._discovery = discover_models(
                        self.model_dirs, paths=self.paths, cache=self._cache
                    )
                discovery = self._discovery
        return discovery

    def entries(self) -> list[ModelEntry]:
        """The listed models, sorted by name (discovers on the first call), with
        the files the operator named (``resolve_operator``)."""
        discovery = self._current()
        listed = list(discovery.entries)
        if self._operator_files:
            names = {e.name for e in listed}
            extra = [e for n, e in self._operator_files.items() if n not in names]
            listed = sorted(listed + extra, key=lambda e: e.name)
        if not self._presets:
            return listed
        presets = self._preset_entries(discovery, listed)
        named = {e.name for e in presets}
        return sorted([e for e in listed if e.name not in named] + presets, key=lambda e: e.name)

    def _preset_entries(self, discovery: Discovery, listed: list[ModelEntry]) -> list[ModelEntry]:
        key = (id(discovery), len(self._operator_files), self._presets)
        cached = self._preset_cache
        if cached is not None and cached[0] == key:  # discovery is kept: its id is its own
            return cached[1]

        def alias_of(name: str) -> ModelEntry | None:
            alias = self.aliases.get(name)
            if alias is None:
                return None
            try:
                return self.aliased(alias, listed)
            except ShimmyError:
                return None

        def file_entry(text: str) -> ModelEntry | None:
            path = _existing_file(text)
            return self._entry_for_path(path, listed) if path is not None else None

        entries = preset_entries(self._presets, listed, alias_of=alias_of, file_entry=file_entry)
        self._preset_cache = (key, entries)
        return entries

    def places(self) -> list[SearchPlace]:
        """Every place the last discovery searched, with how many models it found."""
        return list(self._current().places)

    def resolve(self, name: str) -> ModelEntry:
        """The entry for a model name, as a client sends it.

        Tried in order: an exact name (case-insensitive); an alias
        (:mod:`shimmy.models.aliases`); a name that is the only one starting
        with, or else the only one containing, the text.
        Raises ``model_not_found`` otherwise. Never a file path: which files
        are served is the choice of whoever starts shimmy (``--model``,
        ``--model-dirs``, the config file), so a client's text never reaches
        the file system, and a missing file and an unreadable one answer alike.
        """
        wanted = name.strip()
        key = wanted.lower()
        if not wanted:
            raise model_not_found(name)
        entries = self.entries()
        for entry in entries:
            if entry.name == key:
                return entry
        alias = self.aliases.get(wanted)
        if alias is not None:
            return self.aliased(alias, entries)
        for matches in (
            [e for e in entries if e.name.startswith(key)],
            [e for e in entries if key in e.name],
        ):
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(e.name for e in matches[:5])
                more = f" and {len(matches) - 5} more" if len(matches) > 5 else ""
                raise ShimmyError(
                    "model_not_found",
                    "The specified model was not found",
                    f"Model '{name}' is ambiguous: it matches {names}{more}",
                )
        raise model_not_found(name)

    def aliased(self, alias: Alias, entries: list[ModelEntry] | None = None) -> ModelEntry:
        """The listed model ``alias`` names; ``model_not_found`` when its file is
        no longer listed (deleted, or its folder no longer searched)."""
        for entry in self.entries() if entries is None else entries:
            if same_file(entry.path, alias.path):
                return entry
        raise ShimmyError(
            "model_not_found",
            "The specified model was not found",
            f"Model '{alias.name}' names {alias.path}, which is no longer listed",
        )

    def resolve_operator(self, name_or_path: str) -> ModelEntry:
        """The entry for a name or a file path given by whoever runs shimmy
        (``--model``, ``shimmy probe PATH``): a file is added to the registry
        (source "path"), so clients can then use it by its name."""
        wanted = name_or_path.strip()
        key = wanted.lower()
        for entry in self.entries():
            if entry.name == key:
                return entry
        path = _existing_file(wanted)
        if path is None:
            return self.resolve(wanted)
        entry = self._entry_for_path(path, self.entries())
        with self._lock:
            self._operator_files[entry.name] = entry
        return entry

    def _entry_for_path(self, path: Path, entries: list[ModelEntry]) -> ModelEntry:
        """An entry with source "path" for a file named on the command line.

        A file that discovery already listed keeps its listed name, so one
        model never runs under two names.
        """
        split = split_parts(path)
        first = split[1][0] if split else path
        identity = _identity(first)
        if identity is not None:
            for entry in entries:
                if _identity(entry.path) == identity:
                    return dataclasses.replace(entry, source="path")
        base = model_name(split[0] if split else path.name)
        taken = {e.name for e in entries}
        name = next(
            (n for n in (base, f"path/{base}") if n not in taken),
            f"path/{os.path.realpath(first).lower()}",
        )
        with self._lock:
            entry = describe_file(path, self._cache, name=name)
            self._cache.save()
        return entry


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _existing_file(text: str) -> Path | None:
    """The file ``text`` names (``~`` expanded), for any text a client sent: a name
    too long for the file system, one with a NUL byte or an unknown ``~user`` is no
    file, not an error."""
    try:
        path = Path(text).expanduser()
        return path if path.is_file() else None
    except (OSError, ValueError, RuntimeError):
        return None
