"""Keep C-level stderr (llama.cpp, ggml) off the dashboard's screen.

llama.cpp writes some messages straight to file descriptor 2, below Python's
logging, and Textual draws on stderr too. While the dashboard runs, fd 2 points
at a log file and Textual draws on a duplicate of the original terminal
descriptor, handed to it as ``sys.__stderr__`` (which Textual reads when the app
is built).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def native_stderr_to(path: Path) -> Iterator[Path]:
    """Send fd 2 to ``path`` (appending) until the block ends; yields ``path``."""
    original = sys.__stderr__
    if original is None:
        yield path
        return
    try:
        original.flush()
        fd = original.fileno()
    except (OSError, ValueError):  # no real descriptor (e.g. under some test runners)
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(fd)
    screen = os.fdopen(saved, "w", encoding=original.encoding, errors="replace")
    with path.open("ab") as log_file:
        os.dup2(log_file.fileno(), fd)
        sys.__stderr__ = screen  # type: ignore[misc]
        try:
            yield path
        finally:
            sys.__stderr__ = original  # type: ignore[misc]
            screen.flush()
            os.dup2(saved, fd)
            screen.close()
