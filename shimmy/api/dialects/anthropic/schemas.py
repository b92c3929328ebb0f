"""Request bodies of Anthropic's Messages API.

Field names, types and defaults follow Anthropic's API reference. Unknown
fields are ignored (Claude Code sends many: ``metadata``, ``cache_control`` on
blocks, betas); ``thinking`` is accepted and ignored (the reply simply has no
thinking blocks, as a model without extended thinking answers). What would
change the answer in a way shimmy cannot honour is a clear 400 instead:
``image`` and ``document`` blocks (shimmy serves text-only models), Anthropic's
server tools (web search, code execution: they run on Anthropic's side), and a
last message from the assistant (prefill: the model would have to continue that
turn, which a chat template cannot render).

Sampling settings (``temperature``, ``top_p``, ``top_k``) are read from the
body however they got there: newer Anthropic SDKs send them only as extra body
fields. ``seed`` is accepted as an extension, as in the OpenAI dialect.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from shimmy.api.core.fields import MAX_TOP_K, check_stop, stop_strings
from shimmy.api.core.streams import compact_json
from shimmy.errors import ShimmyError
from shimmy.models.generation import SamplingParams
from shimmy.models.grammar import grammar_for_schema
from shimmy.models.tools import Tool, ToolChoice, ToolRequest
from shimmy.models.tools.spec import MAX_DESCRIPTION, MAX_TOOLS, check_tools

# Fields Anthropic leaves unset by default (top_k) take the engine's own value,
# stated once in SamplingParams, as the OpenAI dialect's extensions do.
_ENGINE = SamplingParams()

MAX_INPUT_JSON = 256 * 1024  # a tool_use's input in the history, as JSON text


def _refused(message: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("invalid_request", message, details)


class _Body(BaseModel):
    # Strict: a string where a number belongs is an error, as it is for Anthropic.
    model_config = ConfigDict(extra="ignore", strict=True)


class TextBlock(_Body):
    type: Literal["text"]
    text: str


class ToolUseBlock(_Body):
    """A call the assistant made, in the history."""

    type: Literal["tool_use"]
    id: str = Field(max_length=256)
    name: str = Field(min_length=1, max_length=64)
    input: dict[str, Any]


class OtherBlock(_Body):
    """Images, documents, server tools' blocks: recognised so the error names them."""

    type: str


def _tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    if kind == "redacted_thinking":
        return "thinking"
    return kind if kind in ("text", "tool_use", "tool_result", "thinking") else "other"


ResultPart = Annotated[
    Annotated[TextBlock, Tag("text")] | Annotated[OtherBlock, Tag("other")],
    Discriminator(lambda v: "text" if _tag(v) == "text" else ("other" if _tag(v) else None)),
]


class ToolResultBlock(_Body):
    """What a call returned, in a user message."""

    type: Literal["tool_result"]
    tool_use_id: str = Field(max_length=256)
    content: str | list[ResultPart] | None = None
    is_error: bool = False

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            text = self.content or ""
        else:
            parts = []
            for part in self.content:
                if not isinstance(part, TextBlock):
                    raise _unsupported_block(part.type, "in a tool_result")
                parts.append(part.text)
            text = "\n".join(parts)
        # The envelope has no place for the flag in a chat template: say it.
        return f"Error: {text}" if self.is_error else text


class ThinkingBlock(_Body):
    """A thinking block from an earlier turn: dropped, as Anthropic drops them."""

    type: Literal["thinking", "redacted_thinking"]


ContentBlock = Annotated[
    Annotated[TextBlock, Tag("text")]
    | Annotated[ToolUseBlock, Tag("tool_use")]
    | Annotated[ToolResultBlock, Tag("tool_result")]
    | Annotated[ThinkingBlock, Tag("thinking")]
    | Annotated[OtherBlock, Tag("other")],
    Discriminator(_tag),
]


def _unsupported_block(kind: str, where: str = "") -> ShimmyError:
    where = f" {where}" if where else ""
    if kind in ("image", "document"):
        return _refused(
            f"Content blocks of type '{kind}'{where} are not supported",
            "shimmy serves text-only models; send text blocks",
        )
    return _refused(
        f"Content blocks of type '{kind[:64]}'{where} are not supported",
        "shimmy reads text, tool_use, tool_result and thinking blocks",
    )


class Message(_Body):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]

    def blocks(self) -> list[Any]:
        if isinstance(self.content, str):
            return [TextBlock(type="text", text=self.content)]
        return list(self.content)


class ToolDefinition(_Body):
    name: str
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    input_schema: dict[str, Any] | None = None
    type: str | None = None

    @model_validator(mode="after")
    def _client_tool(self) -> ToolDefinition:
        if self.type not in (None, "custom"):
            raise ValueError(
                f"tools of type '{self.type[:64]}' are Anthropic's server tools, which shimmy"
                " does not run: send client tools with an input_schema"
            )
        if self.input_schema is None:
            raise ValueError(f"tool '{self.name[:64]}' needs an input_schema")
        return self


class ToolChoiceBody(_Body):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool = False

    @model_validator(mode="after")
    def _named(self) -> ToolChoiceBody:
        if self.type == "tool" and not self.name:
            raise ValueError("tool_choice of type 'tool' needs the tool's name")
        return self

    def choice(self) -> ToolChoice:
        parallel = not self.disable_parallel_tool_use
        if self.type == "any":
            return ToolChoice("required", None, parallel)
        if self.type == "tool":
            # One call of that tool, as the OpenAI dialect's named choice: a small
            # model allowed to repeat a forced call repeats it until max_tokens.
            return ToolChoice("named", self.name, parallel=False)
        return ToolChoice("none" if self.type == "none" else "auto", None, parallel)


class JsonOutputFormat(_Body):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Body):
    format: JsonOutputFormat | None = None


class CountTokensBody(_Body):
    """``POST /v1/messages/count_tokens``: what a prompt is made of."""

    model: str = Field(min_length=1)
    messages: list[Message]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoiceBody | None = None
    thinking: dict[str, Any] | None = None  # accepted and ignored (see the module docstring)

    @field_validator("messages")
    @classmethod
    def _some_messages(cls, value: list[Message]) -> list[Message]:
        if not value:
            raise ValueError("must contain at least one message")
        return value

    def tool_request(self) -> ToolRequest | None:
        """The tools and the choice over them (``auto`` when tools come without a
        choice), checked: a named tool must be one of them."""
        choice = self.tool_choice.choice() if self.tool_choice else ToolChoice("auto")
        if not self.tools and not choice.forced:
            return None
        tools = tuple(
            Tool(t.name, t.description or "", t.input_schema or {"type": "object"})
            for t in self.tools or ()
        )
        check_tools(tools, choice)
        return ToolRequest(tools, choice)

    def template_messages(self) -> list[dict[str, Any]]:
        """The conversation as chat templates take it (OpenAI's shape, which the
        tool formats convert): the system prompt first; consecutive turns of one
        role merged into one, as Anthropic merges them; a user turn's tool results
        as ``tool`` messages before its text; an assistant turn's tool_use blocks
        as its ``tool_calls``; thinking blocks dropped."""
        out: list[dict[str, Any]] = []
        system = self._system_text()
        if system:
            out.append({"role": "system", "content": system})
        for role, blocks in _merged_turns(self.messages):
            if role == "user":
                out.extend(_user_turn(blocks))
            else:
                out.append(_assistant_turn(blocks))
        return out

    def _system_text(self) -> str:
        if isinstance(self.system, list):
            return "\n".join(block.text for block in self.system)
        return self.system or ""


class MessagesBody(CountTokensBody):
    """``POST /v1/messages``."""

    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    stream: bool = False
    # Anthropic's own default; its range is 0-1.
    temperature: float = Field(default=1.0, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    seed: int | None = None  # an extension: repeatable sampling
    metadata: dict[str, Any] | None = None  # accepted and ignored
    output_config: OutputConfig | None = None

    @field_validator("stop_sequences")
    @classmethod
    def _few_stops(cls, value: list[str] | None) -> list[str] | None:
        check_stop(value)
        return value

    @model_validator(mode="after")
    def _no_prefill(self) -> MessagesBody:
        if self.messages and self.messages[-1].role == "assistant":
            raise ValueError(
                "the last message must be the user's: continuing an assistant message"
                " (prefill) is not supported"
            )
        return self

    def sampling(self) -> SamplingParams:
        return SamplingParams(
            temperature=self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=_ENGINE.top_k if self.top_k is None else self.top_k,
            seed=self.seed,
            # A model preset's defaults fill what the request did not send, and
            # the fields Anthropic's API has no name for.
            unset=frozenset(f.name for f in dataclasses.fields(SamplingParams))
            - {"unset"}
            - self.model_fields_set,
        )

    def stop_strings(self) -> tuple[str, ...]:
        return stop_strings(self.stop_sequences)

    def grammar(self) -> str | None:
        """The grammar of ``output_config.format`` (structured output), if any;
        builds it, so it is called off the event loop."""
        if self.output_config is None or self.output_config.format is None:
            return None
        return grammar_for_schema(self.output_config.format.schema_)


def _merged_turns(messages: list[Message]) -> list[tuple[str, list[Any]]]:
    turns: list[tuple[str, list[Any]]] = []
    for message in messages:
        if turns and turns[-1][0] == message.role:
            turns[-1][1].extend(message.blocks())
        else:
            turns.append((message.role, message.blocks()))
    return turns


def _user_turn(blocks: list[Any]) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    texts: list[str] = []
    for block in blocks:
        if isinstance(block, ToolResultBlock):
            results.append(
                {"role": "tool", "tool_call_id": block.tool_use_id, "content": block.text()}
            )
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolUseBlock):
            raise _refused("tool_use blocks belong in assistant messages")
        elif isinstance(block, OtherBlock):
            raise _unsupported_block(block.type)
    if texts or not results:
        return [*results, {"role": "user", "content": "\n".join(texts)}]
    return results


def _assistant_turn(blocks: list[Any]) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolUseBlock):
            arguments = compact_json(block.input)
            if len(arguments) > MAX_INPUT_JSON:
                raise _refused(f"The input of tool_use '{block.id[:64]}' is too large")
            calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {"name": block.name, "arguments": arguments},
                }
            )
        elif isinstance(block, TextBlock):
            texts.append(block.text)
        elif isinstance(block, ToolResultBlock):
            raise _refused("tool_result blocks belong in user messages")
        elif isinstance(block, OtherBlock):
            raise _unsupported_block(block.type)
    message: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        message["tool_calls"] = calls
    return message
