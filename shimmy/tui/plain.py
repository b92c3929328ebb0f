"""Text from outside the dashboard, shown exactly as it is.

Textual and Rich read a ``str`` as markup almost everywhere: DataTable cells,
``Static``, Rich tables, notifications, border titles, option prompts. Request
paths, client addresses, model and file names, hub names, log lines, errors and
chat text all come from outside, and as markup ``/x[/bold]`` raises
``MarkupError`` (which ends the app) while ``[@click=app.quit]...[/]`` becomes
a clickable action. A Rich :class:`~rich.text.Text` is never parsed, so
outside text goes into widgets through :func:`plain`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import RenderableType
from rich.style import StyleType
from rich.text import Text


# text_options: Rich's own Text options, handed on as they are.
def plain(value: object, style: StyleType = "", **text_options: Any) -> Text:
    """``value`` as literal text; ``text_options`` are ``Text``'s (justify, overflow...)."""
    return Text(str(value), style=style, **text_options)


def plain_cells(cells: Iterable[RenderableType]) -> tuple[RenderableType, ...]:
    """DataTable cells with every ``str`` made literal; ``Text`` and other renderables
    are kept as they are."""
    return tuple(plain(cell) if isinstance(cell, str) else cell for cell in cells)
