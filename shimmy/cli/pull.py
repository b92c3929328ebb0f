"""``shimmy pull`` and ``shimmy rm``: download a GGUF model from Hugging Face, and
delete one that was downloaded so.

The work is done by :mod:`shimmy.models.hub`; this module picks a file with a
person at a terminal, asks before deleting, and draws the progress bar on
stderr. huggingface_hub is imported only when one of these commands runs.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from shimmy.cli.output import print_table
from shimmy.errors import ExitCode, ShimmyError

if TYPE_CHECKING:
    from shimmy.models.hub import DownloadProgress, HubFile


class ProgressBar:
    """Draws a download's progress on stderr: one redrawn line on a terminal,
    a line every tenth of the way otherwise (logs, pipes, tests)."""

    def __init__(self, stream: Any = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.last_tenth = -1
        self.last_phase = ""

    def __call__(self, p: DownloadProgress) -> None:
        from shimmy.units import format_bytes, format_time_left

        speed = f"{format_bytes(p.bytes_per_second)}/s" if p.bytes_per_second else "-"
        text = (
            f"{p.phase:<11} {p.fraction * 100:5.1f}%  "
            f"{format_bytes(p.done)} / {format_bytes(p.total)}  {speed}  "
            f"ETA {format_time_left(p.eta_seconds)}"
        )
        if self.tty:
            width = 24
            filled = int(width * p.fraction)
            bar = "#" * filled + "-" * (width - filled)
            end = "\n" if p.phase == "done" else ""
            self.stream.write(f"\r[{bar}] {text}\033[K{end}")
        else:
            tenth = int(p.fraction * 10)
            if tenth == self.last_tenth and p.phase == self.last_phase:
                return
            self.last_tenth, self.last_phase = tenth, p.phase
            self.stream.write(text + "\n")
        self.stream.flush()


def _print_files(files: list[HubFile]) -> None:
    from shimmy.units import format_bytes

    rows = [("#", "QUANT", "SIZE", "PARTS", "FIT", "FILE")]
    for i, f in enumerate(files, 1):
        rows.append(
            (
                str(i),
                f.quantization or "-",
                format_bytes(f.size),
                str(len(f.parts)),
                f.fit().verdict,
                f.name,
            )
        )
    print_table(rows)


def _ask_for_file(files: list[HubFile], error: ShimmyError) -> HubFile:
    """Let a person at a terminal pick a file when the default cannot."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        raise error
    print(error.message, file=sys.stderr)
    _print_files(files)
    answer = input(f"Which file? [1-{len(files)}] ").strip()
    if not answer.isdigit() or not 1 <= int(answer) <= len(files):
        raise ShimmyError("invalid_request", "No file chosen")
    return files[int(answer) - 1]


def cmd_pull(args: argparse.Namespace) -> int:
    """Download (or resume) the file that the spec names; print its name in `shimmy list`."""
    from shimmy.models import hub
    from shimmy.units import format_bytes

    spec = hub.parse_pull_spec(args.model)
    files = hub.list_gguf_files(spec.repo_id, spec.revision)
    if args.files:
        if not files:
            raise ShimmyError("model_not_found", f"'{spec.repo_id}' has no GGUF model files")
        _print_files(files)
        return ExitCode.OK
    try:
        hub.choose_file(files, spec)
    except ShimmyError as exc:
        if exc.code != "invalid_request":
            raise
        chosen = _ask_for_file(files, exc)
        spec = hub.PullSpec(spec.repo_id, filename=chosen.name, revision=spec.revision)
    plan = hub.plan_pull(spec, files=files)
    file = plan.file
    parts = f" in {len(file.parts)} parts" if len(file.parts) > 1 else ""
    print(
        f"pulling {file.repo_id}/{file.name}: {format_bytes(file.size)}{parts}, "
        f"{format_bytes(plan.free)} free on disk",
        file=sys.stderr,
    )
    print(f"memory: {plan.fit.describe()}", file=sys.stderr)
    if plan.already >= file.size:
        print("already downloaded: linking it and checking with the hub", file=sys.stderr)
    elif plan.already:
        print(f"resuming: {format_bytes(plan.already)} already downloaded", file=sys.stderr)
    started = time.monotonic()
    cancel = threading.Event()
    try:
        path = hub.download(file, revision=plan.revision, progress=ProgressBar(), cancel=cancel)
    except KeyboardInterrupt:
        kept = hub.partial_bytes(file, plan.cache_dir)
        print(
            f"\ninterrupted: {format_bytes(kept)} kept; run the same command to resume",
            file=sys.stderr,
        )
        return ExitCode.INTERRUPTED
    name = _registry_name(args, path)
    print(
        f"pulled {file.name} in {time.monotonic() - started:.1f}s, {file.checksums} verified; "
        f"try it: shimmy generate --model {name} -p 'Hello'",
        file=sys.stderr,
    )
    print(name)
    return ExitCode.OK


def _registry_name(args: argparse.Namespace, path: Any) -> str:
    """The name `shimmy list` gives the pulled file."""
    from shimmy.config import load_settings
    from shimmy.models.hub import registered_name
    from shimmy.models.registry import ModelRegistry

    registry = ModelRegistry(load_settings().model_dirs)
    return registered_name(registry.entries(), path) or str(path)


def cmd_rm(args: argparse.Namespace) -> int:
    """Delete a pulled model (asking first unless --yes); others are refused."""
    from shimmy.config import load_settings
    from shimmy.models import hub
    from shimmy.models.registry import ModelRegistry
    from shimmy.units import format_bytes

    settings = load_settings(model_dirs=tuple(getattr(args, "model_dirs", None) or ()) or None)
    # The person at the command line may name a file too (resolve() takes names only).
    entry = ModelRegistry(settings.model_dirs).resolve_operator(args.name)
    record = next((r for r in map(hub.find_pulled, entry.parts) if r is not None), None)
    if record is None:
        raise ShimmyError(
            "invalid_request",
            f"'{entry.name}' was not downloaded by shimmy, so shimmy will not delete it",
            f"{entry.path} ({entry.source})",
        )
    if not args.yes:
        if not sys.stdin.isatty():
            raise ShimmyError("invalid_request", f"Not deleting '{entry.name}' without --yes")
        answer = input(
            f"Delete {entry.name} ({format_bytes(entry.size)}, from {record['repo_id']})? [y/N] "
        )
        if answer.strip().lower() not in {"y", "yes"}:
            print("not deleted", file=sys.stderr)
            return ExitCode.OK
    freed = hub.remove_pulled(record)
    print(f"deleted {entry.name} ({format_bytes(freed)} freed)")
    return ExitCode.OK
