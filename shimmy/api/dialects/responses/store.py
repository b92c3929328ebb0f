"""Recent responses, kept so a follow-up can continue from one
(``previous_response_id``) and ``GET /v1/responses/{id}`` can return it.

Agents built on the Responses API (the openai-agents SDK, Codex-style CLIs)
continue conversations by id instead of sending the history again, so shimmy
keeps responses instead of refusing the field (llama.cpp's server refuses it).
The store is in memory and bounded, by count and by bytes, the oldest going
first: a server on a laptop must not grow without end, and a restart forgets
everything. A response asked not to be stored (``store: false``), evicted, or
from before a restart is a clear 404. Each response is kept under the cache
scope of the API key that made it (:func:`shimmy.api.security.cache_scope`), so
with several keys one key's clients cannot read or continue another's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shimmy.api.core import compact_json
from shimmy.errors import ShimmyError

MAX_STORED_RESPONSES = 1000
MAX_STORED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class StoredResponse:
    """A response as it was answered, and the conversation up to and including
    its output, as template messages (without its instructions, which a
    follow-up does not inherit)."""

    response: dict[str, Any]
    conversation: tuple[dict[str, Any], ...]

    @property
    def size(self) -> int:
        """Roughly what it holds in memory: its JSON's length."""
        return len(compact_json(self.response)) + len(compact_json(list(self.conversation)))


class ResponseStore:
    """Responses by (scope, id), least recently stored evicted first."""

    def __init__(
        self, max_responses: int = MAX_STORED_RESPONSES, max_bytes: int = MAX_STORED_BYTES
    ) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, str], tuple[StoredResponse, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def put(
        self, scope: str, response: dict[str, Any], conversation: Sequence[dict[str, Any]]
    ) -> None:
        """Keep ``response`` (its ``id``) and its conversation; one larger than the
        whole store is not kept."""
        stored = StoredResponse(response, tuple(conversation))
        size = stored.size
        if size > self.max_bytes:
            return
        key = (scope, str(response["id"]))
        with self._lock:
            self._remove(key)
            self._items[key] = (stored, size)
            self._bytes += size
            while len(self._items) > self.max_responses or self._bytes > self.max_bytes:
                self._remove(next(iter(self._items)))

    def get(self, scope: str, id: str) -> StoredResponse:
        """The stored response, else a 404 that says why it may be missing."""
        with self._lock:
            found = self._items.get((scope, id))
        if found is None:
            raise self.not_found(id)
        return found[0]

    def delete(self, scope: str, id: str) -> None:
        with self._lock:
            if (scope, id) not in self._items:
                raise self.not_found(id)
            self._remove((scope, id))

    def _remove(self, key: tuple[str, str]) -> None:
        found = self._items.pop(key, None)
        if found is not None:
            self._bytes -= found[1]

    def not_found(self, id: str) -> ShimmyError:
        """The 404 for a response that is not here, with the reasons it may not be."""
        return ShimmyError(
            "invalid_request",
            f"Response with id '{id[:100]}' not found",
            f"shimmy keeps the last {self.max_responses} responses in memory until it"
            " restarts; this one was not stored (store: false), was evicted, or was made"
            " with another API key",
            status=404,
        )
