"""Keeping a DataTable in step with rows computed again and again (the Server
tab's live tables, once a second).

``clear()`` and ``add_row`` measure every cell again and drop every render
cache; on a two-core machine that redraw competes with llama.cpp for the CPU.
:func:`sync_rows` touches only the cells whose value changed, and rebuilds the
table only when rows come, go or move.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual.widgets import DataTable

Row = tuple[str, Sequence[Any]]  # (row key, cells in column order)


def sync_rows(table: DataTable[Any], rows: Sequence[Row]) -> None:
    """Make ``table`` show ``rows``, in that order, doing as little as it can."""
    keys = [key for key, _ in rows]
    shown = [row_key.value for row_key in table.rows]
    if keys != shown:
        table.clear()
        for key, cells in rows:
            table.add_row(*cells, key=key)
        return
    columns = list(table.columns)
    for key, cells in rows:
        for column, old, new in zip(columns, table.get_row(key), cells, strict=True):
            if old != new:
                table.update_cell(key, column, new, update_width=True)
