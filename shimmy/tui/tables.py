"""Keeping a DataTable in step with rows computed again and again (the Server
tab's live tables, once a second).

``clear()`` and ``add_row`` measure every cell again and drop every render
cache; on a two-core machine that redraw competes with llama.cpp for the CPU.
:func:`sync_rows` touches only the cells whose value changed, and rebuilds the
table only when rows come, go or move.

Every ``str`` cell is made literal first (:func:`~shimmy.tui.plain.plain_cells`):
the rows hold request paths, client addresses and model names from outside, and
DataTable reads a ``str`` cell as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import RenderableType
from textual.widgets import DataTable

from shimmy.tui.plain import plain_cells

Row = tuple[str, Sequence[RenderableType]]  # (row key, cells in column order)


def sync_rows(table: DataTable[RenderableType], rows: Sequence[Row]) -> None:
    """Make ``table`` show ``rows``, in that order, doing as little as it can."""
    literal = [(key, plain_cells(cells)) for key, cells in rows]
    keys = [key for key, _ in literal]
    shown = [row_key.value for row_key in table.rows]
    if keys != shown:
        table.clear()
        for key, cells in literal:
            table.add_row(*cells, key=key)
        return
    columns = list(table.columns)
    for key, cells in literal:
        for column, old, new in zip(columns, table.get_row(key), cells, strict=True):
            if old != new:
                table.update_cell(key, column, new, update_width=True)
