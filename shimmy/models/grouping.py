"""From files found to models: split parts grouped, the same file found twice
kept once (for the first source that found it), headers read, files that are
not chat models dropped, and every model given a unique, stable name.

Split GGUFs (``name-00001-of-00003.gguf``) become one model; the hub groups
the files of a repository by the same names (:data:`SPLIT_RE`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from shimmy.errors import ShimmyError
from shimmy.models.gguf import GGUFInfo
from shimmy.models.header_cache import HeaderCache
from shimmy.models.sources import Found

# Prefixes that tell clashing names apart ("hf/qwen2-0-5b-instruct-q4_k_m").
SOURCE_PREFIXES = {
    "path": "path",
    "local": "local",
    "shimmy": "shimmy",
    "huggingface": "hf",
    "ollama": "ollama",
    "lmstudio": "lmstudio",
    "python": "python",
}
MAX_SPLIT_PARTS = 1000  # more is a strange name, not a split model
SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})(?P<ext>\.gguf)$", re.I)


def model_name(filename: str) -> str:
    """The registry name of a file: its stem lowercased, '.' and spaces -> '-'."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else Path(filename).stem
    return re.sub(r"[.\s]", "-", stem.lower())


def split_parts(path: Path) -> tuple[str, tuple[Path, ...]] | None:
    """(the unsplit file name, all part paths) when ``path`` is one part of a
    split GGUF such as ``name-00002-of-00003.gguf``."""
    match = SPLIT_RE.match(path.name)
    if match is None:
        return None
    number, count = int(match["no"]), int(match["count"])
    if not 1 <= number <= count <= MAX_SPLIT_PARTS:
        return None  # not a name gguf-split writes: treat it as a plain file
    parts = tuple(
        path.with_name(f"{match['base']}-{i:05d}-of-{match['count']}{match['ext']}")
        for i in range(1, count + 1)
    )
    return match["base"] + match["ext"], parts


@dataclass
class Draft:
    """A model before its final name is known."""

    base: str
    found: Found
    parts: tuple[Path, ...]
    size: int
    info: GGUFInfo | None
    error: str | None
    modified: float = 0.0  # the newest part's mtime: when the file arrived


def _reason(exc: ShimmyError) -> str:
    return f"{exc.message} ({exc.details})" if exc.details else exc.message


def read_parts(
    parts: tuple[Path, ...], stats: list[os.stat_result | None], cache: HeaderCache
) -> tuple[GGUFInfo | None, int, str | None]:
    """Read every part; return (info of part 1, total size, error or None).

    For a split model the info's parameter count is that of all parts.
    """
    size = sum(st.st_size for st in stats if st is not None)
    count = len(parts)
    infos: list[GGUFInfo] = []
    for index, (part, st) in enumerate(zip(parts, stats, strict=True)):
        first = infos[0] if infos else None
        if st is None:
            return first, size, f"Missing part {index + 1} of {count}: {part.name}"
        try:
            infos.append(cache.read(part, st))
        except ShimmyError as exc:
            prefix = f"Part {index + 1} of {count} is invalid: " if count > 1 else ""
            return first, size, prefix + _reason(exc)
    first = infos[0]
    if count == 1:
        return first, size, None
    if first.split_count not in (None, count):
        error = (
            f"Split mismatch: {parts[0].name} says split.count={first.split_count}, "
            f"its file name says {count} parts"
        )
        return first, size, error
    counts = [i.parameter_count for i in infos if i.parameter_count is not None]
    total = sum(counts) if counts else None
    return dataclasses.replace(first, parameter_count=total), size, None


def stat_file(path: Path) -> os.stat_result | None:
    """os.stat of a regular file (following links), or None."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def group_found(found: list[Found], cache: HeaderCache) -> list[Draft]:
    """Group split parts, drop duplicates and non-chat files, read headers."""
    seen_files: set[tuple[int, int]] = set()
    seen_groups: set[tuple[Path, ...]] = set()
    drafts: list[Draft] = []
    for item in found:
        if item.missing is not None:
            name = item.name or model_name(item.path.name)
            drafts.append(Draft(name, item, (item.path,), 0, None, item.missing))
            continue
        split = split_parts(item.path)
        base, parts = split if split else (item.path.name, (item.path,))
        if parts in seen_groups:
            continue  # another part of a split model already taken
        stats = [stat_file(p) for p in parts]
        identities = {(st.st_dev, st.st_ino) for st in stats if st is not None}
        if identities & seen_files:
            continue  # the same file, already found by an earlier source
        seen_groups.add(parts)
        seen_files |= identities
        info, size, error = read_parts(parts, stats, cache)
        if info is not None and info.kind != "model" and error is None:
            continue  # mmproj, LoRA, vocab-only: not chat models
        modified = max((st.st_mtime for st in stats if st is not None), default=0.0)
        drafts.append(
            Draft(item.name or model_name(base), item, parts, size, info, error, modified)
        )
    return drafts


def _qualifier(draft: Draft) -> str:
    text = draft.found.origin or draft.found.path.parent.name or "file"
    return re.sub(r"\s", "-", text.lower())


def assign_names(drafts: list[Draft]) -> list[str]:
    """Unique names: the first holder of a name keeps it, later ones get a
    source prefix, then the origin or folder, then a number."""
    taken = {d.base for d in drafts}
    first_holder: set[str] = set()
    names: list[str] = []
    for draft in drafts:
        if draft.base not in first_holder:
            first_holder.add(draft.base)
            names.append(draft.base)
            continue
        prefix = SOURCE_PREFIXES[draft.found.source]
        qualified = f"{prefix}/{_qualifier(draft)}/{draft.base}"
        candidates = [f"{prefix}/{draft.base}", qualified]
        name = next((c for c in candidates if c not in taken), None)
        number = 2
        while name is None:
            if f"{qualified}-{number}" not in taken:
                name = f"{qualified}-{number}"
            number += 1
        taken.add(name)
        names.append(name)
    return names
