"""A repository's GGUF model files, from its tree: each file's size and LFS
hash checked, the parts of a split model grouped into one, projector files left
out, the quantization read from the name, and a rough answer to "will it run
here?" (:func:`estimate_fit`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from shimmy.models.grouping import SPLIT_RE
from shimmy.models.hub.checks import (
    SHA256_RE,
    check_repo_id,
    check_repo_path,
    check_revision,
    download_failed,
    shown,
)
from shimmy.models.hub.client import ensure_online, hub_endpoint, hub_errors, hub_list

# Bounds on what a repository's tree may make shimmy keep.
MAX_TREE_ENTRIES = 50_000  # files and folders of one repository
MAX_FILE_SIZE = 2**50  # 1 PiB: a larger "size" is a lie

# "Q4_K_M", "IQ4_XS", "Q8_0", "F16", "BF16" in a file name; the last one wins.
QUANT_RE = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d+(?:_[A-Za-z0-9]+)*|BF16|FP16|FP32|F16|F32)(?![A-Za-z0-9])", re.I
)


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
    roughly a quarter of the weights again (at least 256 MB). Memory is what
    this process may use: the RAM, or less under a cgroup limit."""
    from shimmy.models.memory import file_needs, system_memory

    memory = system_memory()
    needed = file_needs(size)
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
        raise download_failed(f"The hub listed {shown(item)} in '{repo_id}', not a file entry")
    if item.get("type") != "file":
        return None
    path = check_repo_path(item.get("path"), repo_id)
    size = item.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_FILE_SIZE:
        raise download_failed(f"The hub lists {path} in '{repo_id}' as {shown(size)} bytes")
    lfs = item.get("lfs")
    if lfs is None:
        return HubPart(path, size, None)
    oid = lfs.get("oid") if isinstance(lfs, dict) else None
    if not isinstance(oid, str) or not SHA256_RE.fullmatch(oid):
        raise download_failed(
            f"The hub sent no LFS sha256 for {path} in '{repo_id}'", f"oid {shown(oid)}"
        )
    if lfs.get("size") != size:
        raise download_failed(
            f"The hub lists {path} in '{repo_id}' with two sizes",
            f"{size} and LFS {shown(lfs.get('size'))}",
        )
    return HubPart(path, size, oid)


def list_gguf_files(repo_id: str, revision: str = "main") -> list[HubFile]:
    """The GGUF model files of a repository, with sizes and LFS hashes (from the repo tree)."""
    repo_id, revision = check_repo_id(repo_id), check_revision(revision)
    endpoint = hub_endpoint()
    ensure_online(endpoint)
    url = f"{endpoint}/api/models/{repo_id}/tree/{quote(revision, safe='')}"
    with hub_errors(repo_id):
        tree = hub_list(
            url,
            {"recursive": "true", "expand": "false"},
            f"'{repo_id}'",
            wanted=MAX_TREE_ENTRIES + 1,
        )
    if len(tree) > MAX_TREE_ENTRIES:
        raise download_failed(f"The hub lists more than {MAX_TREE_ENTRIES:,} files in '{repo_id}'")
    parts: dict[str, HubPart] = {}
    for item in tree:
        part = _hub_part(item, repo_id)
        if part is not None:
            parts[part.path] = part
    return group_gguf_files(repo_id, list(parts.values()))
