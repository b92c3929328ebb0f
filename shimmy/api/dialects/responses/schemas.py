"""Request bodies of OpenAI's Responses API (``POST /v1/responses``).

Field names, types and defaults follow OpenAI's API reference. Unknown fields
are ignored (``include``, ``reasoning``, ``prompt_cache_key``, ``user``...);
what would change the answer in a way shimmy cannot honour is a clear 400:
image, file and audio input (text-only models), tools other than functions
(web search, file search, computer use, code interpreter, MCP, custom tools:
they would run on OpenAI's side or need a freeform grammar), ``background``,
``conversation``, stored ``prompt`` templates, ``top_logprobs`` and input items
other than messages, function calls and their outputs (``reasoning`` items from
an earlier turn are dropped). llama.cpp-server extensions (``top_k``,
``min_p``, ``repeat_penalty``, ``seed``) are accepted, as in the OpenAI dialect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    model_validator,
)

from shimmy.api.core.fields import MAX_TOP_K, sampling_of
from shimmy.errors import ShimmyError
from shimmy.models.generation import SamplingParams
from shimmy.models.grammar import JSON_OBJECT_GBNF, grammar_for_schema
from shimmy.models.tools import Tool, ToolChoice, ToolRequest
from shimmy.models.tools.spec import MAX_DESCRIPTION, MAX_TOOLS, check_tools

_ENGINE = SamplingParams()

MAX_ARGUMENTS = 256 * 1024  # a call's arguments in the input, as JSON text
MAX_METADATA_KEYS = 16


def _refused(message: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("invalid_request", message, details)


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Body):
    """Text in a message: the user's ``input_text`` or an earlier answer's ``output_text``."""

    type: Literal["input_text", "output_text"]
    text: str


class RefusalPart(_Body):
    type: Literal["refusal"]
    refusal: str


class OtherPart(_Body):
    """Image, file and audio parts: recognised so the error names them."""

    type: str


def _part_tag(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    if kind in ("input_text", "output_text"):
        return "text"
    return "refusal" if kind == "refusal" else "other"


Part = Annotated[
    Annotated[TextPart, Tag("text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_tag),
]


def _parts_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for part in content:
        if isinstance(part, TextPart):
            texts.append(part.text)
        elif isinstance(part, RefusalPart):
            texts.append(part.refusal)
        else:
            raise _refused(
                f"Content parts of type '{part.type[:64]}' are not supported",
                "shimmy serves text-only models; send input_text parts",
            )
    return "\n".join(texts)


class MessageItem(_Body):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]


class FunctionCallItem(_Body):
    """A call the model made, given back in a later turn's input."""

    type: Literal["function_call"]
    call_id: str = Field(max_length=256)
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(default="{}", max_length=MAX_ARGUMENTS)


class FunctionCallOutputItem(_Body):
    type: Literal["function_call_output"]
    call_id: str = Field(max_length=256)
    output: str | list[Part]


class ReasoningItem(_Body):
    """An earlier turn's reasoning: dropped (shimmy's answers have none)."""

    type: Literal["reasoning"]


class OtherItem(_Body):
    type: str


def _item_tag(value: Any) -> str | None:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", None)
    if not isinstance(kind, str):
        return None
    known = ("message", "function_call", "function_call_output", "reasoning")
    return kind if kind in known else "other"


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_tag),
]


def items_to_messages(items: list[Any]) -> list[dict[str, Any]]:
    """Input items as the chat template's messages (OpenAI's chat shape, which the
    tool formats convert): ``developer`` as ``system``; function calls as the
    ``tool_calls`` of the assistant message they follow (a reply's text and its
    calls are one turn); their outputs as ``tool`` messages."""
    out: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, MessageItem):
            role = "system" if item.role == "developer" else item.role
            out.append({"role": role, "content": _parts_text(item.content)})
        elif isinstance(item, FunctionCallItem):
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            if out and out[-1]["role"] == "assistant":
                out[-1].setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif isinstance(item, FunctionCallOutputItem):
            content = _parts_text(item.output)
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
        elif isinstance(item, OtherItem):
            raise _refused(
                f"Input items of type '{item.type[:64]}' are not supported",
                "shimmy reads message, function_call, function_call_output and reasoning items",
            )
    return out


_ITEMS: TypeAdapter[list[Item]] = TypeAdapter(list[Item])


def output_messages(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A response's output items as the template messages a follow-up continues
    from: exactly what a client replaying them as input would send (an empty
    output is an empty assistant turn, so turns still alternate)."""
    return items_to_messages(_ITEMS.validate_python(output)) or [
        {"role": "assistant", "content": ""}
    ]


class FunctionTool(_Body):
    type: str
    name: str | None = None
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # accepted: calls always follow the schema here

    @model_validator(mode="after")
    def _function(self) -> FunctionTool:
        if self.type != "function":
            raise ValueError(
                f"tools of type '{self.type[:64]}' are not supported: shimmy runs function tools"
            )
        if not self.name:
            raise ValueError("a function tool needs a name")
        return self

    def echo(self) -> dict[str, Any]:
        """The tool as a response lists it."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "strict": self.strict if self.strict is not None else True,
        }


class FunctionChoice(_Body):
    type: Literal["function"]
    name: str


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class ResponsesBody(_Body):
    """``POST /v1/responses``."""

    model: str = Field(min_length=1)
    input: str | list[Item] | None = None
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    # OpenAI's own defaults, not the engine's: clients expect them.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    text: TextConfig | None = None
    stream: bool = False
    previous_response_id: str | None = Field(default=None, max_length=256)
    store: bool = True
    metadata: dict[str, str] | None = Field(default=None, max_length=MAX_METADATA_KEYS)
    truncation: Literal["auto", "disabled"] | None = None  # never truncated: too long is a 400
    background: bool | None = None
    conversation: Any = None
    prompt: Any = None
    top_logprobs: int | None = None
    # llama.cpp server extensions, as in the OpenAI dialect.
    seed: int | None = None
    top_k: int = Field(default=_ENGINE.top_k, ge=0, le=MAX_TOP_K)
    min_p: float = Field(default=_ENGINE.min_p, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=_ENGINE.repeat_penalty, gt=0.0)

    @model_validator(mode="after")
    def _supported(self) -> ResponsesBody:
        if not self.input and self.previous_response_id is None:
            raise ValueError("input is required (or previous_response_id to continue from)")
        if self.background:
            raise ValueError("background responses are not supported")
        if self.conversation is not None:
            raise ValueError("conversation is not supported: use previous_response_id")
        if self.prompt is not None:
            raise ValueError("prompt templates are not supported: send input")
        if self.top_logprobs:
            raise ValueError("top_logprobs are not supported")
        return self

    def sampling(self) -> SamplingParams:
        return sampling_of(self)

    def tool_request(self) -> ToolRequest | None:
        """The function tools and the choice over them (``auto`` when tools come
        without a choice), checked: a named function must be one of them."""
        if not self.tools and self.tool_choice in (None, "none", "auto"):
            return None
        tools = tuple(
            Tool(
                name=t.name or "",
                description=t.description or "",
                parameters=t.parameters or {"type": "object", "properties": {}},
            )
            for t in self.tools or ()
        )
        choice = self.tool_choice or "auto"
        if isinstance(choice, FunctionChoice):
            mode = ToolChoice("named", choice.name, parallel=False)  # that one call
        else:
            mode = ToolChoice(choice, None, self.parallel_tool_calls)
        check_tools(tools, mode)
        return ToolRequest(tools, mode)

    def input_messages(self) -> list[dict[str, Any]]:
        """This request's input as template messages (instructions left out)."""
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [{"role": "user", "content": self.input}]
        return items_to_messages(self.input)

    def instruction_messages(self) -> list[dict[str, Any]]:
        """The instructions as a system message: this request's only, never an
        earlier response's (as OpenAI does with previous_response_id)."""
        return [{"role": "system", "content": self.instructions}] if self.instructions else []

    def grammar(self) -> str | None:
        """The grammar of ``text.format`` (JSON mode or a schema), if any; builds it,
        so it is called off the event loop."""
        spec = self.text.format if self.text else None
        if spec is None or spec.type == "text":
            return None
        if spec.type == "json_schema" and spec.schema_ is None:
            raise _refused("text.format.schema is required when type is 'json_schema'")
        return JSON_OBJECT_GBNF if spec.schema_ is None else grammar_for_schema(spec.schema_)

    def echo_text(self) -> dict[str, Any]:
        """``text`` as a response lists it."""
        spec = self.text.format if self.text else None
        if spec is None:
            return {"format": {"type": "text"}}
        return {"format": spec.model_dump(by_alias=True, exclude_none=True)}

    def echo_tool_choice(self) -> Any:
        choice = self.tool_choice or "auto"
        return choice.model_dump() if isinstance(choice, FunctionChoice) else choice
