"""The Models tab's columns: what each cell shows, and which columns a table of
a given width keeps.

At 90 columns the full table (eight columns beside the details panel) pushed
Quant, Arch, Params, Ctx and State off screen, so nothing said which model was
loaded or the default. :func:`fit_columns` drops the columns that matter least
first and always keeps Name and State; when even those two do not fit, the
name is cut with an ellipsis (the details panel shows it whole).

Names, sources, quantizations and errors come from files anyone may have
written: every cell is a literal ``Text`` (:func:`shimmy.tui.plain.plain`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from rich.text import Text

from shimmy.tui.plain import plain
from shimmy.units import format_bytes, format_params

if TYPE_CHECKING:
    from shimmy.models.registry import ModelEntry

# Column key -> heading, in the order they are shown.
COLUMNS: dict[str, str] = {
    "name": "Name",
    "source": "Source",
    "size": "Size",
    "quant": "Quant",
    "arch": "Arch",
    "params": "Params",
    "ctx": "Ctx",
    "state": "State",
}
# Dropped first when the table is too narrow, in this order; Name and State stay.
DROP_ORDER = ("ctx", "params", "arch", "source", "quant", "size")
CELL_PADDING = 1  # DataTable's default, on each side of every cell
MIN_NAME_WIDTH = 12


def model_state(entry: ModelEntry, *, loaded: bool, default: bool, busy: str | None) -> Text:
    """The State column: what is happening to the model, or why it cannot be used."""
    if busy:
        return Text(f"{busy}…", style="italic yellow")
    if entry.offered and not entry.usable:
        return Text("to pull", style="yellow")  # a preset's hub model: pulled when first loaded
    if not entry.usable:
        return Text("unusable", style="red")  # why: the details panel, beside it
    bits = []
    if loaded:
        bits.append("loaded")
    if default:
        bits.append("default")
    return Text(", ".join(bits) or "-", style="bold green" if loaded else "")


def model_cells(
    entry: ModelEntry, *, loaded: bool, default: bool, busy: str | None
) -> dict[str, Text]:
    """Every column's cell for ``entry``, by column key."""
    return {
        "name": plain(
            entry.name, style="bold" if default else "", overflow="ellipsis", no_wrap=True
        ),
        "source": plain(entry.source),
        "size": Text(format_bytes(entry.size), justify="right"),
        "quant": plain(entry.quantization or "-"),
        "arch": plain(entry.architecture or "-"),
        "params": Text(
            format_params(entry.parameter_count) if entry.parameter_count else "-",
            justify="right",
        ),
        "ctx": Text(str(entry.context_length or "-"), justify="right"),
        "state": model_state(entry, loaded=loaded, default=default, busy=busy),
    }


def content_widths(rows: Sequence[Mapping[str, Text]]) -> dict[str, int]:
    """Each column's natural width: its widest cell, or its heading."""
    return {
        key: max([len(label), *(row[key].cell_len for row in rows)])
        for key, label in COLUMNS.items()
    }


def fit_columns(widths: Mapping[str, int], room: int) -> tuple[list[str], int | None]:
    """The columns a table ``room`` cells wide shows, and a width for the Name
    column when it must be cut (None: as wide as its longest name).

    ``room`` 0 means the width is not known yet (before the first layout): every
    column is shown, and the first resize fits them."""

    def needed(keys: Sequence[str]) -> int:
        return sum(widths[k] + 2 * CELL_PADDING for k in keys)

    shown = list(COLUMNS)
    if room <= 0 or needed(shown) <= room:
        return shown, None
    dropped = []
    for key in DROP_ORDER:
        shown.remove(key)
        dropped.append(key)
        if needed(shown) <= room:
            break
    # A narrow column dropped early may fit in the room a wide one left.
    for key in dropped[-2::-1]:
        if needed([*shown, key]) <= room:
            shown.append(key)
    shown.sort(key=list(COLUMNS).index)
    if needed(shown) <= room:
        return shown, None
    others = needed([k for k in shown if k != "name"])
    return shown, max(MIN_NAME_WIDTH, room - others - 2 * CELL_PADDING)
