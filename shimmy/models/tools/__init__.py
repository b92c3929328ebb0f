"""Tool calls: the tools a request offers, the model family's way of calling
them (read from its chat template), the grammar that keeps calls valid, and
parsing the reply into text and calls as it streams.

- :mod:`.spec`: ``Tool``, ``ToolChoice``, ``ToolRequest``, ``ToolCall``;
- :mod:`.formats`: Hermes/Qwen, Llama 3, Mistral and the generic format;
- :mod:`.plan`: what a chat request with tools becomes before it is queued;
- :mod:`.parsing`: reply parsers and their events; :mod:`.jsonstream` reads
  JSON as it arrives.
"""

from shimmy.models.tools.parsing import (
    CallArguments,
    CallStarted,
    ReplyParser,
    TextDelta,
    ToolEvent,
)
from shimmy.models.tools.plan import ToolPlan, plan_tools, reply_parser
from shimmy.models.tools.spec import Tool, ToolCall, ToolChoice, ToolRequest

__all__ = [
    "CallArguments",
    "CallStarted",
    "ReplyParser",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolEvent",
    "ToolPlan",
    "ToolRequest",
    "plan_tools",
    "reply_parser",
]
