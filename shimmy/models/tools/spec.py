"""What a request says about tools, and what a reply's tool call is.

These are the dialect-neutral shapes: OpenAI's ``tools``/``tool_choice``,
Ollama's ``tools`` and Anthropic's ``tools``/``tool_choice`` all map onto them,
and every dialect shapes a :class:`ToolCall` its own way.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from shimmy.errors import ShimmyError

# OpenAI's rule for function names; it also keeps names safe inside grammar
# literals, prompts and JSON without escaping.
TOOL_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TOOLS = 128
MAX_DESCRIPTION = 8192

ChoiceMode = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True)
class Tool:
    """A function the model may call: its name, what it does, and a JSON schema
    of its arguments (an object)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(
        default_factory=lambda: {"type": "object", "properties": {}}
    )

    def as_openai(self) -> dict[str, Any]:
        """The tool as chat templates receive it (the shape transformers'
        ``apply_chat_template`` passes: OpenAI's)."""
        function: dict[str, Any] = {"name": self.name}
        if self.description:
            function["description"] = self.description
        function["parameters"] = dict(self.parameters)
        return {"type": "function", "function": function}


@dataclass(frozen=True)
class ToolChoice:
    """Whether the model may, must or must not call a tool (``named``: that one)."""

    mode: ChoiceMode = "auto"
    name: str | None = None
    parallel: bool = True  # more than one call in a reply

    @property
    def forced(self) -> bool:
        return self.mode in ("required", "named")


@dataclass(frozen=True)
class ToolCall:
    """One call in a reply: ``arguments`` is the JSON text of an object, as the
    model wrote it (the streamed fragments joined give exactly this)."""

    id: str
    name: str
    arguments: str

    def arguments_object(self) -> Any:
        """The arguments parsed (for dialects whose calls carry an object)."""
        import json

        try:
            return json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return {}


@dataclass(frozen=True)
class ToolRequest:
    """The tools of one request and the choice over them; ``format`` is the model's
    tool-call format (:mod:`shimmy.models.tools.formats`), set when the request is
    submitted to a model."""

    tools: tuple[Tool, ...]
    choice: ToolChoice = ToolChoice()
    format: str = ""

    def chosen(self) -> tuple[Tool, ...]:
        """The tools the model may call: all of them, or the named one."""
        if self.choice.mode == "named":
            return tuple(t for t in self.tools if t.name == self.choice.name)
        return self.tools


def check_tools(tools: Sequence[Tool], choice: ToolChoice) -> None:
    """``invalid_request`` naming exactly what is wrong with a request's tools."""
    if len(tools) > MAX_TOOLS:
        raise ShimmyError("invalid_request", f"At most {MAX_TOOLS} tools are allowed")
    seen: set[str] = set()
    for index, tool in enumerate(tools):
        if not TOOL_NAME_RE.fullmatch(tool.name):
            raise ShimmyError(
                "invalid_request",
                f"tools[{index}].function.name must be 1-64 letters, digits, '_' or '-'",
                f"got {tool.name[:80]!r}",
            )
        if tool.name in seen:
            raise ShimmyError("invalid_request", f"Two tools are named '{tool.name}'")
        seen.add(tool.name)
        if len(tool.description) > MAX_DESCRIPTION:
            raise ShimmyError(
                "invalid_request",
                f"The description of tool '{tool.name}' is over {MAX_DESCRIPTION} characters",
            )
        if not isinstance(tool.parameters, Mapping):
            raise ShimmyError(
                "invalid_request", f"The parameters of tool '{tool.name}' must be a JSON schema"
            )
    if choice.forced and not tools:
        raise ShimmyError("invalid_request", "tool_choice asks for a tool call, but no tools")
    if choice.mode == "named" and choice.name not in seen:
        raise ShimmyError(
            "invalid_request",
            f"tool_choice names the tool '{str(choice.name)[:80]}', which is not in tools",
            f"tools: {', '.join(sorted(seen)) or 'none'}",
        )


_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id(length: int = 24, prefix: str = "call_") -> str:
    """A fresh tool call id (OpenAI's look: ``call_`` and 24 letters and digits)."""
    return prefix + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))
