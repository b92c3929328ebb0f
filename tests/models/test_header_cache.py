"""The header cache keeps what a file's bytes say, and nothing about a moment
when the file could not be opened or read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models import header_cache
from shimmy.models.gguf import GGUFInfo
from shimmy.models.header_cache import HeaderCache
from tests.gguf_writer import write_model


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The paths whose headers the cache really read."""
    calls: list[Path] = []
    real = header_cache.read_gguf_info

    def counting(path: Path) -> GGUFInfo:
        calls.append(Path(path))
        return real(path)

    monkeypatch.setattr(header_cache, "read_gguf_info", counting)
    return calls


def failure(cache: HeaderCache, path: Path, st: os.stat_result) -> ShimmyError:
    with pytest.raises(ShimmyError) as caught:
        cache.read(path, st)
    assert caught.value.code == "model_invalid"
    return caught.value


def test_a_missing_file_is_not_remembered(tmp_path: Path, reads: list[Path]) -> None:
    path = write_model(tmp_path / "models" / "m.gguf")
    st = os.stat(path)
    away = path.rename(tmp_path / "away.gguf")
    cache = HeaderCache(tmp_path / "cache")
    assert failure(cache, path, st).message == "Model file not found"

    away.rename(path)  # back, unchanged: the same mtime and size
    assert os.stat(path).st_mtime_ns == st.st_mtime_ns
    assert cache.read(path, st).architecture == "llama"
    assert reads == [path, path]


def test_an_unreadable_file_is_not_remembered(tmp_path: Path, reads: list[Path]) -> None:
    folder = tmp_path / "models"
    path = write_model(folder / "m.gguf")
    st = os.stat(path)
    folder.rename(tmp_path / "moved")
    folder.write_bytes(b"")  # opening models/m.gguf now fails (ENOTDIR), even as root
    cache = HeaderCache(tmp_path / "cache")
    assert failure(cache, path, st).message == "Cannot read model file"

    folder.unlink()
    (tmp_path / "moved").rename(folder)
    assert cache.read(path, st).architecture == "llama"
    assert reads == [path, path]


def test_a_damaged_header_is_remembered(tmp_path: Path, reads: list[Path]) -> None:
    path = tmp_path / "bad.gguf"
    path.write_bytes(b"<html>not found</html>")
    st = os.stat(path)
    cache = HeaderCache(tmp_path / "cache")
    first = failure(cache, path, st)
    assert first.message == "Not a GGUF file"
    again = failure(cache, path, st)
    assert (again.message, again.details) == (first.message, first.details)
    assert reads == [path]

    cache.save()  # and the next process remembers it too
    fresh = failure(HeaderCache(tmp_path / "cache"), path, st)
    assert (fresh.message, fresh.details) == (first.message, first.details)
    assert reads == [path]
