"""Find GGUF model files in every place DESIGN.md lists, and name them.

Sources are searched in a fixed order (given paths, ./models, shimmy's own
folder, the Hugging Face cache, Ollama, LM Studio, installed Python
distributions: :mod:`shimmy.models.sources`). The same file found twice is
listed once, for the first source that found it. Split GGUFs become one entry.
Files that fail the GGUF check are listed as unusable with the reason; mmproj,
LoRA and vocab-only files are not listed at all (:mod:`shimmy.models.grouping`).
Headers are read through :class:`~shimmy.models.header_cache.HeaderCache`,
which persists across processes, so listing thousands of files reads no
header twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from shimmy.config import Paths
from shimmy.models.gguf import GGUFInfo
from shimmy.models.grouping import (
    assign_names,
    group_found,
    model_name,
    read_parts,
    split_parts,
    stat_file,
)
from shimmy.models.header_cache import HeaderCache
from shimmy.models.sources import SearchPlace, search_sources


@dataclass(frozen=True)
class ModelEntry:
    """One chat model shimmy can offer, usable or not."""

    name: str  # lowercase, stable, unique
    path: Path  # the file (first part of a split model)
    parts: tuple[Path, ...]  # all parts, in order (one element for an unsplit file)
    source: str  # one of shimmy.models.sources.SOURCES
    size: int  # bytes, all parts
    info: GGUFInfo | None
    error: str | None  # why it is unusable, or None
    origin: str | None = None  # HF repo id, Ollama "library/llama3:8b", distribution name
    # When the file arrived on this machine (its newest part's mtime; 0: unknown):
    # the default model, when nobody chose one, is the one here longest.
    modified: float = 0.0
    # A preset's Hugging Face model (hf.co/ORG/REPO[:QUANT]) not on this machine
    # yet: the entry stands for it (no file, no header), and loading it pulls it
    # first (presets.py, first_use_pull.py). Only the operator's config makes one.
    pull: str | None = None

    @property
    def usable(self) -> bool:
        return self.error is None and self.info is not None

    @property
    def offered(self) -> bool:
        """Whether clients are offered it: usable, or a preset's model that is
        pulled when it is first loaded."""
        return self.usable or (self.pull is not None and self.error is None)

    @property
    def architecture(self) -> str | None:
        return self.info.architecture if self.info else None

    @property
    def quantization(self) -> str | None:
        return self.info.quantization if self.info else None

    @property
    def parameter_count(self) -> int | None:
        return self.info.parameter_count if self.info else None

    @property
    def context_length(self) -> int | None:
        return self.info.context_length if self.info else None

    @property
    def chat_template(self) -> str | None:
        return self.info.chat_template if self.info else None


@dataclass(frozen=True)
class Discovery:
    """The result of one discovery run."""

    entries: list[ModelEntry]  # sorted by name
    places: list[SearchPlace]


def discover_models(
    model_dirs: Sequence[str | Path] = (),
    *,
    paths: Paths | None = None,
    cache: HeaderCache | None = None,
) -> Discovery:
    """Search every source in order and return the named, de-duplicated entries."""
    paths = paths or Paths.from_env()
    if cache is None:
        cache = HeaderCache(paths.cache_dir)
    search = search_sources(model_dirs, paths)

    drafts = group_found(search.found, cache)
    cache.save()
    entries = []
    counts = [0] * len(search.places)
    for draft, name in zip(drafts, assign_names(drafts), strict=True):
        counts[draft.found.place] += 1
        entries.append(
            ModelEntry(
                name=name,
                path=draft.parts[0],
                parts=draft.parts,
                source=draft.found.source,
                size=draft.size,
                info=draft.info,
                error=draft.error,
                origin=draft.found.origin,
                modified=draft.modified,
            )
        )
    places = [dataclasses.replace(p, count=n) for p, n in zip(search.places, counts, strict=True)]
    return Discovery(sorted(entries, key=lambda e: e.name), places)


_KIND_WORDS = {
    "lora": "LoRA adapter",
    "mmproj": "multimodal projector (mmproj)",
    "vocab": "vocabulary-only file",
    "other": "GGUF file that is not a model",
}


def describe_file(
    path: Path, cache: HeaderCache, *, name: str | None = None, source: str = "path"
) -> ModelEntry:
    """An entry for one file named by path (split parts grouped), listed or not.

    Unlike discovery, a file that is not a chat model comes back as an
    unusable entry saying what it is, so the caller can tell the user.
    """
    split = split_parts(path)
    base, parts = split if split else (path.name, (path,))
    stats = [stat_file(p) for p in parts]
    info, size, error = read_parts(parts, stats, cache)
    if error is None and info is not None and info.kind != "model":
        error = f"Not a chat model: {path.name} is a {_KIND_WORDS.get(info.kind, info.kind)}"
    modified = max((st.st_mtime for st in stats if st is not None), default=0.0)
    return ModelEntry(
        name or model_name(base), parts[0], parts, source, size, info, error, modified=modified
    )
