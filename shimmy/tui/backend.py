"""What the dashboard needs from the model manager, as Protocols.

The app and its panes take a :class:`DashboardBackend` rather than a
``ModelManager``: it names every member they use and nothing more, so mypy
checks both that the real manager still offers them and that the test fakes
(tests/tui/fakes.py) offer the same (tests/tui/test_backend.py). The types it
names are imported for type checking only: the dashboard's start-up loads none
of the model code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from shimmy.models.chat import Message
    from shimmy.models.generation import Piece, SamplingParams
    from shimmy.models.manager import ChatSize, ManagerStats
    from shimmy.models.registry import ModelEntry


class ModelCatalog(Protocol):
    """The models discovery found (a ``ModelRegistry``)."""

    def entries(self) -> list[ModelEntry]:
        """The models of the last discovery (discovers on the first call)."""
        ...

    def refresh(self) -> list[ModelEntry]:
        """Run discovery again and return what it found."""
        ...


class ChatReply(Protocol):
    """A reply being written, as the Chat tab reads it (a ``Generation``)."""

    @property
    def model(self) -> str:
        """The name of the model writing it."""
        ...

    @property
    def done(self) -> bool: ...

    @property
    def completion_tokens(self) -> int: ...

    @property
    def finish_reason(self) -> str | None: ...

    @property
    def tokens_per_second(self) -> float | None: ...

    @property
    def time_to_first_token(self) -> float | None: ...

    @property
    def output(self) -> str:
        """The text written so far."""
        ...

    def stream(self) -> AsyncIterator[Piece]:
        """The pieces as they come, on the event loop."""
        ...

    def cancel(self) -> None:
        """Stop writing; what was written stays."""
        ...


@runtime_checkable
class DashboardBackend(Protocol):
    """The model manager as the dashboard uses it (a ``ModelManager``).

    Discovery, loading, unloading and submitting block, so the dashboard calls
    them from thread workers (``stats`` about once a second); ``is_loaded``,
    ``loaded_names`` and ``set_default`` are quick and run on the UI thread too."""

    @property
    def registry(self) -> ModelCatalog: ...

    @property
    def default_model_name(self) -> str | None: ...

    def loaded_names(self) -> list[str]: ...

    def is_loaded(self, name: str) -> bool: ...

    # The dashboard ignores what load and set_default return (an engine, an entry).
    def load(self, name: str | None) -> object: ...

    def unload(self, name: str | None) -> bool: ...

    def set_default(self, name: str) -> object:
        """Make ``name`` the default model; ``ShimmyError`` when there is no such model."""
        ...

    def measure_chat(self, name: str | None, messages: Sequence[Message]) -> ChatSize:
        """How many tokens ``messages`` take with the model's template, and how many
        its context holds per request (loads the model)."""
        ...

    def submit_chat(
        self,
        name: str | None,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        sampling: SamplingParams,
        label: str = "",
    ) -> ChatReply:
        """Render ``messages`` with the model's template and start a reply."""
        ...

    def stats(self) -> ManagerStats: ...
