"""Messages the dashboard posts app-wide (widget-local ones live in their widget)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from shimmy.models.manager import ManagerStats


@dataclass
class ServerStateChanged(Message):
    """The embedded server (or Ollama's listener, ``listener`` "ollama") started,
    stopped or failed to start."""

    running: bool
    url: str | None
    error: str | None
    listener: str = "api"


@dataclass
class StartServerRequested(Message):
    """The Server tab's Start: listen on ``bind`` (``HOST:PORT``) when it names a new
    address, else on the current one."""

    bind: str | None = None


@dataclass
class StatsUpdated(Message):
    """A fresh ``ManagerStats`` (taken in a thread worker about once a second)."""

    stats: ManagerStats
    live_completion_tokens: int = 0  # tokens of generations still running


@dataclass
class ModelsChanged(Message):
    """Discovery ran again, or a model was loaded, unloaded or made the default."""


@dataclass
class LogRecordPosted(Message):
    """One formatted logging record for the log pane."""

    level: int
    text: str

    def can_replace(self, message: Message) -> bool:
        return False
