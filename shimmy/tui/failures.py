"""Turning a failed thread worker into a notification (never a traceback)."""

from __future__ import annotations

from typing import Any

from textual.app import App
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from shimmy.errors import ShimmyError


# App[Any]: any app, whatever it returns on exit.
def notify_if_failed(node: Widget | App[Any], event: Worker.StateChanged) -> None:
    """Worker.StateChanged does not bubble, so each widget that starts workers
    forwards its own events here."""
    if event.state != WorkerState.ERROR:
        return
    error = event.worker.error
    text = (
        error.one_line() if isinstance(error, ShimmyError) else f"{type(error).__name__}: {error}"
    )
    node.log.error(f"worker {event.worker.description!r} failed: {text}")
    node.notify(text, title=event.worker.description or "Error", severity="error", timeout=8)
