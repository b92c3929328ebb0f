"""Memory of a process with its children (shimmy's chat-template renderer workers)."""

from __future__ import annotations

import psutil


def tree_rss(process: psutil.Process) -> int:
    """RSS of ``process`` and every child it has now, in bytes."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:  # a worker killed as we looked
            pass
    return total
