"""sync_rows: the Server tab's tables change only the cells that changed."""

from __future__ import annotations

from typing import Any

import pytest
from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import DataTable

from shimmy.tui.tables import sync_rows

pytestmark = pytest.mark.anyio


class CountingTable(DataTable[Any]):
    def __init__(self) -> None:
        super().__init__()
        self.clears = 0
        self.updated: list[tuple[str, str]] = []

    def clear(self, columns: bool = False) -> Any:
        self.clears += 1
        return super().clear(columns)

    def update_cell(self, row_key: Any, column_key: Any, value: Any, **kwargs: Any) -> None:
        self.updated.append(
            (getattr(row_key, "value", row_key), getattr(column_key, "value", column_key))
        )
        super().update_cell(row_key, column_key, value, **kwargs)


class TableApp(App[None]):
    def compose(self) -> ComposeResult:
        yield CountingTable()

    def on_mount(self) -> None:
        table = self.query_one(CountingTable)
        table.add_column("Name", key="name")
        table.add_column("Tokens", key="tokens")


def shown(table: DataTable[Any]) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


async def test_only_changed_cells_are_updated_and_new_rows_rebuild() -> None:
    app = TableApp()
    async with app.run_test():
        table = app.query_one(CountingTable)
        sync_rows(table, [("1", ("a", Text("5"))), ("2", ("b", Text("7")))])
        assert shown(table) == [["a", "5"], ["b", "7"]] and table.clears == 1

        sync_rows(table, [("1", ("a", Text("5"))), ("2", ("b", Text("7")))])  # the same
        assert table.clears == 1 and table.updated == []

        sync_rows(table, [("1", ("a", Text("5"))), ("2", ("b", Text("9")))])  # one cell
        assert table.clears == 1 and table.updated == [("2", "tokens")]
        assert shown(table) == [["a", "5"], ["b", "9"]]

        sync_rows(table, [("3", ("c", "1")), ("1", ("a", "5")), ("2", ("b", "9"))])  # a new row
        assert table.clears == 2
        assert shown(table) == [["c", "1"], ["a", "5"], ["b", "9"]]

        sync_rows(table, [])
        assert table.row_count == 0
