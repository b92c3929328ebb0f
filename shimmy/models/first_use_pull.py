"""Pull a preset's Hugging Face model the first time it is loaded.

A ``[models.NAME]`` preset may name ``hf.co/ORG/REPO[:QUANT]`` that is not on
this machine yet: presets.py lists it as a model to pull
(:attr:`~shimmy.models.discovery.ModelEntry.pull`), and its first load (a
request, the dashboard, ``shimmy generate``) downloads it here with the hub code
``shimmy pull`` uses (:mod:`shimmy.models.hub`: the file chosen the same way,
the disk checked, every answer checked, the bytes resumed, bounded by the size
the hub declared, and hashed) into the Hugging Face cache, and then loads it.
Only the operator's config can name such a model: requests name listed models,
never hub repositories (registry.py), so naming a model never starts a download
that the config did not ask for.

Whoever asks for the same model while it downloads waits for that one download
(two presets of one hub model share it too: a second download of the same file
would find the first one's lock and fail). The wait is the download's own: its
progress goes to the log, a tenth of the way at a time. A failure is
``download_failed`` naming the preset, with the hub's reason; nothing is
remembered of it, so the next request tries again and resumes what was kept.
Closing the manager stops a download under way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shimmy.errors import ShimmyError

if TYPE_CHECKING:
    from shimmy.models.discovery import ModelEntry
    from shimmy.models.hub import DownloadProgress

log = logging.getLogger(__name__)

# Downloads ``spec`` (hf.co/...) for the model ``name``, stopping when the event is set.
Fetch = Callable[[str, str, threading.Event], Path]


@dataclass
class _Download:
    """One download under way, and what its waiters are told when it ends."""

    done: threading.Event = field(default_factory=threading.Event)
    path: Path | None = None
    failure: str | None = None  # why it failed: the details of each waiter's error


class FirstUsePulls:
    """The downloads of presets' hub models, one per model at a time; thread-safe."""

    def __init__(self, fetch: Fetch | None = None) -> None:
        self._fetch = fetch or fetch_from_hub
        self._lock = threading.Lock()
        self._running: dict[str, _Download] = {}
        self._stop = threading.Event()

    def pull(self, entry: ModelEntry) -> Path:
        """Download ``entry``'s hub model (:attr:`ModelEntry.pull`), or wait for
        the download of it already under way; the file's path. Raises
        ``download_failed`` naming ``entry``."""
        spec = entry.pull
        if spec is None:
            raise ValueError(f"{entry.name} has no model to pull")
        key = _key(spec)
        with self._lock:
            download = self._running.get(key)
            first = download is None
            if download is None:
                download = self._running[key] = _Download()
        if not first:
            log.info("%s: waiting for the download of %s under way", entry.name, spec)
            download.done.wait()
            if download.path is None:
                raise _download_failed(entry.name, spec, download.failure or "it failed")
            return download.path
        try:
            download.path = self._fetch(entry.name, spec, self._stop)
            return download.path
        except Exception as exc:  # the hub, the disk or a lie: never a traceback to a client
            download.failure = _reason(exc)
            if not isinstance(exc, (ShimmyError, _cancelled())):
                log.exception("pulling %s for %s failed", spec, entry.name)
            error = _download_failed(entry.name, spec, download.failure)
            log.warning("%s (%s)", error.message, error.details)
            raise error from exc
        finally:
            download.done.set()  # first: whoever finds it still listed gets its outcome
            with self._lock:
                del self._running[key]

    def close(self) -> None:
        """Stop every download under way (what was fetched is kept, to resume)."""
        self._stop.set()


def _key(spec: str) -> str:
    """One download per hub file whichever way its spec is written (case, prefix)."""
    from shimmy.models.hub import parse_pull_spec

    try:
        parsed = parse_pull_spec(spec)
    except ShimmyError:
        return spec
    return f"{parsed.repo_id.lower()}@{parsed.revision}:{parsed.filename or parsed.quantization}"


def _cancelled() -> type[Exception]:
    from shimmy.models.hub import DownloadCancelled

    return DownloadCancelled


def _reason(exc: Exception) -> str:
    """Why a download failed, in one line: the hub's error as it said it."""
    if isinstance(exc, _cancelled()):
        return "stopped: the server is shutting down"
    if isinstance(exc, ShimmyError):
        return f"{exc.message}: {exc.details}" if exc.details else exc.message
    return f"{type(exc).__name__}: {exc}"


def _download_failed(name: str, spec: str, reason: str) -> ShimmyError:
    return ShimmyError(
        "download_failed", f"Model '{name}' could not be pulled from Hugging Face ({spec})", reason
    )


def fetch_from_hub(name: str, spec: str, stop: threading.Event) -> Path:
    """Download ``spec`` as ``shimmy pull`` does, logging its progress; the file's path."""
    from shimmy.models import hub
    from shimmy.units import format_bytes

    plan = hub.plan_pull(hub.parse_pull_spec(spec))
    file = plan.file
    log.info(
        "%s: pulling %s/%s (%s, first use): %s",
        name,
        file.repo_id,
        file.name,
        format_bytes(file.size),
        plan.fit.describe(),
    )
    return hub.download(file, revision=plan.revision, progress=ProgressLog(name), cancel=stop)


class ProgressLog:
    """A download's progress in the log: each tenth of the way, and each phase."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.last: tuple[str, int] | None = None

    def __call__(self, progress: DownloadProgress) -> None:
        from shimmy.units import format_bytes

        step = (progress.phase, int(progress.fraction * 10))
        if step == self.last:
            return
        self.last = step
        log.info(
            "%s: %s %.0f%% (%s of %s)",
            self.name,
            progress.phase,
            progress.fraction * 100,
            format_bytes(progress.done),
            format_bytes(progress.total),
        )
