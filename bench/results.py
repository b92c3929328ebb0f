"""bench/RESULTS.md holds one section per benchmark; each run replaces its own."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def replace_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Put ``body`` (which starts with ``heading``, a "## ..." line) in place of the
    section with that heading, or at the end; other sections stay as they were."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(heading + "\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body.strip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end:] if end != -1 else "\n"
        text = text[:start] + body.strip("\n") + "\n" + rest
    path.write_text(text)
