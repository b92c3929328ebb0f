"""Model management in Ollama's API: /api/pull through shimmy's hub, /api/delete
and /api/copy.

A pull takes Hugging Face names as Ollama does (``hf.co/ORG/REPO[:QUANT]``,
``huggingface.co/...``) and fetches the file with :mod:`shimmy.models.hub`
(resumed, every part's sha256 checked), reporting as Ollama does: ``pulling
manifest``, ``{status, digest, total, completed}`` per file part, ``verifying
sha256 digest``, ``writing manifest``, ``success``. The model then answers to
the name it was pulled by, in every endpoint and after a restart (an alias, kept
in shimmy's data folder). A client that leaves stops the download; what was
fetched is kept for the next pull to resume.

Delete removes only what shimmy pulled (as ``shimmy rm``), and names made by
/api/copy (an alias, nothing more).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from shimmy.api.core import NDJSON_MEDIA_TYPE, EventStream, ndjson_line, read_body, watching
from shimmy.api.core.bodies import InvalidBody
from shimmy.api.dialects.ollama import names
from shimmy.api.dialects.ollama.errors import error_line
from shimmy.api.dialects.ollama.schemas import CopyBody, PullBody
from shimmy.errors import ShimmyError
from shimmy.models.aliases import Alias
from shimmy.models.manager import ModelManager

_END = object()  # the download thread is done


def pull_route(
    manager: ModelManager, invalid: InvalidBody
) -> Callable[[Request], Awaitable[Response]]:
    """The /api/pull endpoint over ``manager`` (``invalid``: the dialect's 400)."""

    async def pull(request: Request) -> Response:
        body = await read_body(request, PullBody, invalid)
        spec_text = names.hugging_face_spec(body.wanted)
        if spec_text is None:
            raise ShimmyError(
                "invalid_request",
                f"shimmy pulls models from Hugging Face only: '{body.wanted}' is not one",
                "name a GGUF repository as hf.co/ORG/REPO or hf.co/ORG/REPO:QUANT",
            )
        from shimmy.models import hub

        spec = hub.parse_pull_spec(spec_text)
        alias = names.without_latest(body.wanted)
        async with watching(request) as watch:
            # Listing the repository and choosing its file: a 404 or 400 before any
            # line is sent, as Ollama answers an unknown model.
            plan = await watch.run(run_in_threadpool(hub.plan_pull, spec), [])
            download = _Download(manager, plan, alias)
            if body.stream:
                return EventStream(
                    download.lines(), watch=watch, generations=[], media_type=NDJSON_MEDIA_TYPE
                )
            try:
                await watch.run(download.finished(), [])
            finally:
                download.cancel.set()
        return JSONResponse({"status": "success"})

    return pull


class _Download:
    """One pull's download, on a thread, its progress handed to the event loop."""

    def __init__(self, manager: ModelManager, plan: Any, alias: str) -> None:
        self.manager = manager
        self.plan = plan
        self.alias = alias
        self.cancel = threading.Event()
        self._loop = asyncio.get_running_loop()
        self._progress: asyncio.Queue[Any] = asyncio.Queue()

    def _start(self) -> asyncio.Future[Path]:
        from shimmy.models import hub

        def report(progress: Any) -> None:
            self._loop.call_soon_threadsafe(self._progress.put_nowait, progress)

        def run() -> Path:
            try:
                path = hub.download(
                    self.plan.file, revision=self.plan.revision, progress=report, cancel=self.cancel
                )
                self._record(path)
                return path
            finally:
                self._loop.call_soon_threadsafe(self._progress.put_nowait, _END)

        future = self._loop.run_in_executor(None, run)
        # A client that left is not there to read the outcome (DownloadCancelled).
        future.add_done_callback(lambda f: f.cancelled() or f.exception())
        return future

    def _record(self, path: Path) -> None:
        """The pulled model answers to the name it was pulled by, from now on."""
        registry = self.manager.registry
        registry.aliases.add(Alias(self.alias, path, pulled=True))
        registry.refresh()

    async def finished(self) -> Path:
        future = self._start()
        try:
            return await future
        except Exception as exc:
            raise _as_error(exc) from exc

    async def lines(self) -> AsyncIterator[str]:
        """Ollama's progress lines, then ``success``; an error is the last line."""
        parts = self.plan.file.parts
        offsets, total = [], 0
        for part in parts:
            offsets.append(total)
            total += part.size
        said_verifying = False
        shown = [-1] * len(parts)  # the bytes each part's last line said

        def part_line(index: int, completed: int) -> str:
            part = parts[index]
            shown[index] = completed
            return ndjson_line(
                {
                    "status": f"pulling {(part.sha256 or part.path)[:12]}",
                    "digest": f"sha256:{part.sha256}" if part.sha256 else "",
                    "total": part.size,
                    "completed": completed,
                }
            )

        try:
            yield ndjson_line({"status": "pulling manifest"})
            future = self._start()
            while True:
                progress = await self._progress.get()
                if progress is _END:
                    break
                index = next(
                    (i for i, p in enumerate(parts) if p.path == progress.part), len(parts) - 1
                )
                if progress.phase in ("verifying", "done"):
                    # The part is all on disk (progress is reported a few times a
                    # second, so its last download line may fall short of it).
                    if shown[index] != parts[index].size:
                        yield part_line(index, parts[index].size)
                    if index == len(parts) - 1 and not said_verifying:
                        said_verifying = True
                        yield ndjson_line({"status": "verifying sha256 digest"})
                    continue
                done = progress.done - offsets[index]
                yield part_line(index, max(0, min(parts[index].size, done)))
            try:
                await future
            except Exception as exc:
                raise _as_error(exc) from exc
            if not said_verifying:
                yield ndjson_line({"status": "verifying sha256 digest"})
            yield ndjson_line({"status": "writing manifest"})
            yield ndjson_line({"status": "success"})
        except ShimmyError as exc:
            yield ndjson_line(error_line(exc))
        finally:
            self.cancel.set()  # a no-op once done; stops the download if the client left


def _as_error(exc: Exception) -> ShimmyError:
    if isinstance(exc, ShimmyError):
        return exc
    from shimmy.models.hub import DownloadCancelled

    if isinstance(exc, DownloadCancelled):
        return ShimmyError("download_failed", "The pull was stopped", "pull again to resume")
    return ShimmyError("download_failed", "The pull failed", f"{type(exc).__name__}: {exc}")


def delete_model(manager: ModelManager, name: str) -> None:
    """/api/delete: a name /api/copy made is forgotten; a model shimmy pulled is
    unloaded and its files deleted, with every name it had; anything else is
    refused (shimmy deletes only what it downloaded, as ``shimmy rm``)."""
    from shimmy.models import hub

    registry = manager.registry
    alias = registry.aliases.get(names.without_latest(name)) or registry.aliases.get(name)
    if alias is not None and not alias.pulled:
        registry.aliases.remove(alias.name)
        return
    try:
        entry = registry.aliased(alias) if alias is not None else names.resolve(manager, name)
    except ShimmyError:
        if alias is not None:  # its file is gone already: forget the name
            registry.aliases.remove(alias.name)
            return
        raise
    record = next((r for r in map(hub.find_pulled, entry.parts) if r is not None), None)
    if record is None:
        raise ShimmyError(
            "invalid_request",
            f"'{name}' was not downloaded by shimmy, so shimmy will not delete it",
            f"its file is in {entry.source}",
        )
    manager.unload(entry.name)
    hub.remove_pulled(record)
    for other in registry.aliases.pointing_at(entry.path):
        registry.aliases.remove(other.name)
    registry.refresh()


async def copy_model(manager: ModelManager, request: Request, invalid: InvalidBody) -> None:
    """/api/copy: ``destination`` names the model ``source`` names (an alias)."""
    body = await read_body(request, CopyBody, invalid)
    destination = names.without_latest(body.destination)

    def run() -> None:
        entry = names.resolve(manager, body.source)
        registry = manager.registry
        if any(e.name == destination.lower() for e in registry.entries()):
            raise ShimmyError(
                "invalid_request",
                f"'{body.destination}' already names a model shimmy found",
                "choose another name",
            )
        existing = registry.aliases.get(destination)
        if existing is not None and existing.pulled:
            raise ShimmyError(
                "invalid_request",
                f"'{body.destination}' names a pulled model",
                "delete it first, or choose another name",
            )
        registry.aliases.add(Alias(destination, entry.path))

    await run_in_threadpool(run)
