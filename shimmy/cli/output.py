"""How the commands print results on stdout: tables and key/value lines.

Diagnostics and errors go to stderr and are not drawn here.
"""

from __future__ import annotations

from collections.abc import Sequence


def print_table(rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` (the first is the header) in columns two spaces apart.

    The last column is not padded, so a long cell there (an error, a file name)
    leaves the other columns aligned and no line ends in spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*padded, row[-1]]))


def print_fields(pairs: Sequence[tuple[str, str]], *, width: int | None = None) -> None:
    """Print one ``key  value`` line per pair, the values lined up: at ``width``
    columns, or two spaces after the longest key."""
    if width is None:
        width = max(len(key) for key, _ in pairs) + 2
    for key, value in pairs:
        print(f"{key.ljust(width)}{value}")
