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


def replace_subsections(heading: str, intro: str, blocks: list[str], path: Path = RESULTS) -> None:
    """In the section ``heading``, put ``intro`` first and each of ``blocks`` (each
    starting with a "### ..." line) in place of the block with the same "###" line,
    or after the others: a run of some of a benchmark's modes keeps the figures
    of the modes it did not run."""
    text = path.read_text() if path.exists() else ""
    start = text.find(heading + "\n")
    old = ""
    if start != -1:
        end = text.find("\n## ", start + len(heading))
        old = text[start : end if end != -1 else len(text)]
    kept = _blocks(old)
    for block in blocks:
        kept[block.strip("\n").split("\n", 1)[0]] = block.strip("\n")
    body = "\n\n".join([heading, intro.strip("\n"), *kept.values()])
    replace_section(heading, body + "\n", path)


def _blocks(section: str) -> dict[str, str]:
    """The "###" blocks of a section, by their heading line, in order."""
    blocks: dict[str, str] = {}
    parts = ("\n" + section).split("\n### ")[1:]
    for part in parts:
        block = ("### " + part).strip("\n")
        blocks[block.split("\n", 1)[0]] = block
    return blocks
