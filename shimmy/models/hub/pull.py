"""What a pull means, checked before any byte moves: ``REPO[:QUANT]`` or
``REPO/FILE.gguf`` read, the file chosen (Q4_K_M unless told), and the disk
checked for room.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from shimmy.errors import ShimmyError
from shimmy.models.hf_cache import huggingface_cache_dir
from shimmy.models.hub.checks import (
    check_repo_id,
    check_repo_path,
    check_revision,
    download_failed,
    repo_storage,
)
from shimmy.models.hub.files import Fit, HubFile, list_gguf_files
from shimmy.models.hub.transfer import partial_bytes

DEFAULT_QUANT = "Q4_K_M"
DISK_MARGIN = 200 * 1000**2  # never fill a disk to the last byte


@dataclass(frozen=True)
class PullSpec:
    """What ``shimmy pull`` was asked for: ``REPO[:QUANT]`` or ``REPO/FILE.gguf``."""

    repo_id: str
    quantization: str | None = None
    filename: str | None = None
    revision: str = "main"


def parse_pull_spec(text: str) -> PullSpec:
    """Read ``owner/repo``, ``owner/repo:Q4_K_M``, ``owner/repo/file.gguf``, with an
    optional ``hf.co/`` or ``https://huggingface.co/`` in front and ``blob/REV/`` or
    ``resolve/REV/`` in a copied file URL."""
    spec = text.strip()
    spec = re.sub(r"^(https?://)?(www\.)?(huggingface\.co|hf\.co)/", "", spec)
    quant = None
    if ":" in spec:
        spec, quant = spec.rsplit(":", 1)
        quant = quant.strip().upper() or None
    pieces = [p for p in spec.split("/") if p]
    usage = "use OWNER/REPO, OWNER/REPO:QUANT or OWNER/REPO/FILE.gguf"
    if len(pieces) < 2:
        raise ShimmyError("invalid_request", f"'{text}' is not a Hugging Face model", usage)
    repo_id, rest = "/".join(pieces[:2]), pieces[2:]
    revision = "main"
    if len(rest) >= 2 and rest[0] in {"blob", "resolve", "tree"}:
        revision, rest = rest[1], rest[2:]
    filename = "/".join(rest) or None
    check_repo_id(repo_id)
    check_revision(revision)
    if filename is not None:
        check_repo_path(filename, repo_id, "invalid_request")
    if filename is not None and not filename.lower().endswith(".gguf"):
        raise ShimmyError("invalid_request", f"'{filename}' is not a .gguf file", usage)
    if filename is not None and quant is not None:
        raise ShimmyError("invalid_request", "Give a file or a quantization, not both", usage)
    return PullSpec(repo_id, quant, filename, revision)


def _choices(files: list[HubFile]) -> str:
    from shimmy.units import format_bytes

    return ", ".join(f"{f.quantization or f.name} ({format_bytes(f.size)})" for f in files)


def choose_file(files: list[HubFile], spec: PullSpec) -> HubFile:
    """The file a pull means: the named file, the named quantization, or the
    default (Q4_K_M, else the smallest 4-bit file, else the only file)."""
    if not files:
        raise ShimmyError("model_not_found", f"'{spec.repo_id}' has no GGUF model files")
    if spec.filename:
        for f in files:
            if spec.filename in (f.name, *(p.path for p in f.parts)):
                return f
        raise ShimmyError(
            "model_not_found",
            f"'{spec.filename}' is not a GGUF model file in '{spec.repo_id}'",
            "files: " + ", ".join(f.name for f in files),
        )
    if spec.quantization:
        for f in files:
            if (f.quantization or "") == spec.quantization:
                return f
        raise ShimmyError(
            "model_not_found",
            f"'{spec.repo_id}' has no {spec.quantization} file",
            "choose one of: " + _choices(files),
        )
    for f in files:
        if (f.quantization or "") == DEFAULT_QUANT:
            return f
    four_bit = [f for f in files if f.is_4bit]
    if four_bit:
        return min(four_bit, key=lambda f: f.size)
    if len(files) == 1:
        return files[0]
    raise ShimmyError(
        "invalid_request",
        f"'{spec.repo_id}' has several files and no 4-bit one: say which with REPO:QUANT",
        "choose one of: " + _choices(files),
    )


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds ``folder`` (or its nearest existing parent)."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass(frozen=True)
class PullPlan:
    """What a pull will do, checked before any byte moves."""

    file: HubFile
    revision: str
    cache_dir: Path
    already: int  # bytes kept from an earlier pull
    free: int  # free disk where the file goes
    fit: Fit

    @property
    def remaining(self) -> int:
        return max(0, self.file.size - self.already)


def plan_pull(spec: PullSpec | str, *, files: list[HubFile] | None = None) -> PullPlan:
    """Pick the file for ``spec`` and check the disk can hold it (``download_failed``
    otherwise). ``files`` saves listing the repository again."""
    if isinstance(spec, str):
        spec = parse_pull_spec(spec)
    if files is None:
        files = list_gguf_files(spec.repo_id, spec.revision)
    file = choose_file(files, spec)
    cache_dir = huggingface_cache_dir()
    free = free_disk(repo_storage(file.repo_id, cache_dir))
    plan = PullPlan(
        file, spec.revision, cache_dir, partial_bytes(file, cache_dir), free, file.fit()
    )
    if plan.remaining + DISK_MARGIN > free:
        from shimmy.units import format_bytes

        raise download_failed(
            f"Not enough disk space for {file.name}",
            f"{format_bytes(plan.remaining)} to download, {format_bytes(free)} free "
            f"in {cache_dir}; free some space or set HF_HOME to another disk",
        )
    return plan
