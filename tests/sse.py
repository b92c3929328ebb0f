"""Reading a server-sent event stream in tests: each event's name and data."""

from __future__ import annotations

import json
from typing import Any


def sse_events(text: str) -> list[tuple[str | None, dict[str, Any]]]:
    """The (event name, data) pairs of a server-sent event stream."""
    events = []
    for chunk in text.split("\n\n"):
        if not chunk.strip():
            continue
        name = None
        data = None
        for line in chunk.splitlines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
        assert data is not None, chunk
        events.append((name, data))
    return events
