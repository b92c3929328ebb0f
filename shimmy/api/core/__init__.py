"""The API core: what every dialect of shimmy's API stands on.

A dialect (the native API of SEED-API.md, OpenAI's, and next Ollama's,
Anthropic's Messages and OpenAI's Responses) only maps its own request shape
onto the manager's calls and the generations' events onto its own response
shape. Everything they share lives here, once:

- :mod:`.bodies`: a body read into the dialect's typed request, JSON whatever
  the Content-Type, with the dialect's own wording for a body that does not
  validate;
- :mod:`.fields`: request fields every dialect has (sampling settings, stop
  strings and their bounds);
- :mod:`.watch`: submitting to the manager off the event loop, and the one
  disconnect path: a client that leaves while its request is prepared, queued,
  reading its prompt or streaming has its work stopped and its generations
  cancelled (a queued one never takes a slot), for JSON, SSE, NDJSON and
  WebSocket answers alike;
- :mod:`.streams`: the SSE and NDJSON framings and the response that sends
  them;
- :mod:`.replies`: a reply as text and tool calls, streamed or whole;
- :mod:`.blocks`: a reply as an ordered list of text and call blocks, streamed
  or whole (Anthropic's content blocks, the Responses API's output items);
- :mod:`.logprobs`: token log-probabilities handed out with their text;
- :mod:`.usage`: token counts for usage blocks.

Adding a dialect
----------------
1. ``shimmy/api/dialects/<name>/schemas.py``: its request bodies (pydantic,
   strict, unknown fields ignored), each able to say its sampling settings
   (:func:`.fields.sampling_of`) and stop strings.
2. ``shimmy/api/dialects/<name>/routes.py``: ``build_router(manager)``. A route
   reads its body with :func:`read_body`, opens ``async with watching(request)
   as watch``, submits with ``await watch.submit(lambda cancel: manager.submit_chat(...,
   cancel=cancel))``, then either returns ``EventStream(events, watch=watch,
   generations=[generation])`` for a stream, or ``await watch.finish([generation])``
   and a JSON body. Errors are ``ShimmyError``; the app turns them into the error
   shape (a dialect with its own error shape, as Anthropic's, has its paths
   rendered its way by :func:`shimmy.api.error_shapes.error_body`, for the guards'
   refusals too).
3. One line in ``shimmy/api/dialects/__init__.py``'s ``DIALECTS``.
Tests: a routes test over a fake manager (tests/api) and an end-to-end test that
drives the real ``shimmy serve`` with the vendor's own client library (tests/e2e).
"""

from shimmy.api.core.blocks import (
    Block,
    BlockClosed,
    BlockDelta,
    BlockEvent,
    BlockOpened,
    block_events,
    whole_blocks,
)
from shimmy.api.core.bodies import read_body
from shimmy.api.core.logprobs import LogprobCursor
from shimmy.api.core.replies import Reply, check_finished, reply_events, whole_reply
from shimmy.api.core.streams import (
    NDJSON_MEDIA_TYPE,
    SSE_DONE,
    SSE_MEDIA_TYPE,
    EventStream,
    compact_json,
    ndjson_line,
    sse_event,
)
from shimmy.api.core.usage import Usage
from shimmy.api.core.watch import ClientGone, Watch, cancel_all, watching

__all__ = [
    "Block",
    "BlockClosed",
    "BlockDelta",
    "BlockEvent",
    "BlockOpened",
    "NDJSON_MEDIA_TYPE",
    "SSE_DONE",
    "SSE_MEDIA_TYPE",
    "ClientGone",
    "EventStream",
    "LogprobCursor",
    "Reply",
    "Usage",
    "Watch",
    "block_events",
    "cancel_all",
    "check_finished",
    "compact_json",
    "ndjson_line",
    "read_body",
    "reply_events",
    "sse_event",
    "watching",
    "whole_blocks",
    "whole_reply",
]
