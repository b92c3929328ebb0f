"""A preset's Hugging Face model pulled on first use (shimmy/models/first_use_pull.py):
one download per model whoever asks, failures said as download_failed and never
remembered. The download itself is a stand-in here; tests/e2e/test_preset_pull.py
runs the real one against the fake hub."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models.discovery import ModelEntry
from shimmy.models.first_use_pull import FirstUsePulls, ProgressLog
from shimmy.models.hub import DownloadCancelled, DownloadProgress, HubFile, HubPart
from tests.waiting import eventually

SPEC = "hf.co/shimmy-test/Some-GGUF:Q8_0"


def to_pull(name: str, spec: str = SPEC) -> ModelEntry:
    return ModelEntry(name, Path("-"), (), "preset", 0, None, None, origin=spec, pull=spec)


class Hub:
    """A download that waits to be released, counting its calls."""

    def __init__(self, path: Path, error: Exception | None = None) -> None:
        self.path = path
        self.error = error
        self.calls: list[str] = []
        self.release = threading.Event()

    def __call__(self, name: str, spec: str, stop: threading.Event) -> Path:
        self.calls.append(spec)
        assert self.release.wait(30)
        if self.error is not None:
            raise self.error
        return self.path


def pull_in_threads(pulls: FirstUsePulls, entries: list[ModelEntry], hub: Hub, caplog) -> list:
    """Each entry pulled on its own thread; the first downloads, the rest wait for it."""
    outcomes: list = [None] * len(entries)

    def run(i: int) -> None:
        try:
            outcomes[i] = pulls.pull(entries[i])
        except ShimmyError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(entries))]
    with caplog.at_level(logging.INFO, logger="shimmy.models.first_use_pull"):
        threads[0].start()
        eventually(lambda: hub.calls, 10, what="the download to start")
        for thread in threads[1:]:
            thread.start()
        eventually(
            lambda: caplog.text.count("waiting for the download") == len(entries) - 1,
            10,
            what="the others to wait for it",
        )
        hub.release.set()
        for thread in threads:
            thread.join(30)
    return outcomes


def test_everyone_asking_while_it_downloads_shares_one_download(tmp_path, caplog):
    hub = Hub(tmp_path / "model.gguf")
    pulls = FirstUsePulls(hub)
    # The same file named three ways: two presets, the hub's other host name, any case.
    entries = [
        to_pull("fresh"),
        to_pull("fresh"),
        to_pull("twin", "huggingface.co/Shimmy-Test/some-gguf:q8_0"),
    ]
    assert pull_in_threads(pulls, entries, hub, caplog) == [hub.path] * 3
    assert hub.calls == [SPEC]


def test_a_failure_is_download_failed_for_every_waiter_and_is_tried_again(tmp_path, caplog):
    hub = Hub(
        tmp_path / "model.gguf",
        ShimmyError(
            "model_not_found", "'shimmy-test/Some-GGUF' has no Q8_0 file", "choose one of: Q4_K_M"
        ),
    )
    pulls = FirstUsePulls(hub)
    first, second = pull_in_threads(pulls, [to_pull("fresh"), to_pull("twin")], hub, caplog)
    for error, name in ((first, "fresh"), (second, "twin")):
        assert isinstance(error, ShimmyError) and error.code == "download_failed"
        assert error.status == 502
        assert error.message == f"Model '{name}' could not be pulled from Hugging Face ({SPEC})"
        assert error.details == "'shimmy-test/Some-GGUF' has no Q8_0 file: choose one of: Q4_K_M"
    # Nothing is remembered of a failure: the next request tries again.
    hub.error = None
    assert pulls.pull(to_pull("fresh")) == hub.path
    assert hub.calls == [SPEC, SPEC]


def test_an_unexpected_error_is_download_failed_not_a_traceback(tmp_path, caplog):
    hub = Hub(tmp_path / "model.gguf", OSError(28, "No space left on device"))
    hub.release.set()
    with caplog.at_level(logging.ERROR), pytest.raises(ShimmyError) as caught:
        FirstUsePulls(hub).pull(to_pull("fresh"))
    assert caught.value.code == "download_failed"
    assert "No space left on device" in (caught.value.details or "")
    assert "Traceback" in caplog.text  # in the server's log, for whoever runs it


def test_closing_stops_a_download_under_way(tmp_path):
    seen: list[threading.Event] = []

    def fetch(name: str, spec: str, stop: threading.Event) -> Path:
        seen.append(stop)
        assert stop.wait(30)
        raise DownloadCancelled("model.gguf")

    pulls = FirstUsePulls(fetch)
    outcome: list[ShimmyError] = []
    thread = threading.Thread(target=lambda: _catch(pulls, outcome))
    thread.start()
    eventually(lambda: seen, 10, what="the download to start")
    pulls.close()
    thread.join(30)
    assert outcome[0].code == "download_failed"
    assert outcome[0].details == "stopped: the server is shutting down"


def _catch(pulls: FirstUsePulls, into: list[ShimmyError]) -> None:
    try:
        pulls.pull(to_pull("fresh"))
    except ShimmyError as exc:
        into.append(exc)


def test_an_entry_without_a_model_to_pull_is_a_mistake():
    entry = ModelEntry("x", Path("x.gguf"), (), "path", 0, None, None)
    with pytest.raises(ValueError):
        FirstUsePulls(lambda *_: Path("x")).pull(entry)


def test_progress_goes_to_the_log_a_tenth_at_a_time(caplog):
    file = HubFile("o/r", "m.gguf", (HubPart("m.gguf", 1000, None),), None)
    report = ProgressLog("fresh")
    with caplog.at_level(logging.INFO, logger="shimmy.models.first_use_pull"):
        for done in range(0, 1001, 10):
            report(DownloadProgress(file, "m.gguf", done, 1000, 1e6, "downloading"))
        report(DownloadProgress(file, "m.gguf", 1000, 1000, 1e6, "verifying"))
        report(DownloadProgress(file, "m.gguf", 1000, 1000, 1e6, "done"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 13  # 0%, 10%, ... 100% downloading, then verifying and done
    assert lines[5] == "fresh: downloading 50% (500 B of 1.0 KB)"
    assert lines[-1].startswith("fresh: done 100%")
