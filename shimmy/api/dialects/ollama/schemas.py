"""Request bodies of Ollama's API (docs/api.md of Ollama), field by field.

Unknown fields are ignored, as Ollama ignores them. Fields that would change the
answer in a way shimmy cannot honour are refused with a 400 that says so, never
dropped: images (shimmy serves text-only models), ``think`` (no thinking
models' reasoning split), ``suffix`` (fill-in-the-middle), a Go ``template``,
the deprecated ``context`` tokens and ``logprobs``. Options shimmy has no use
for (``num_gpu``, ``num_thread``, ``mirostat``...) are accepted and ignored;
``num_ctx`` cannot resize a context at run time (each slot's is set when the
model loads, ``--ctx-size``): a larger one is served within the slot, whose
size /api/ps shows, and a prompt that does not fit is refused with 400.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from shimmy.api.core.fields import MAX_TOP_K, check_stop, stop_strings
from shimmy.models.generation import SamplingParams
from shimmy.models.grammar import JSON_OBJECT_GBNF, grammar_for_schema
from shimmy.models.tools import Tool, ToolRequest
from shimmy.models.tools.spec import MAX_DESCRIPTION, MAX_TOOLS, check_tools

MAX_EMBEDDING_INPUTS = 2048
MAX_MESSAGES = 4096
MAX_NAME = 300  # a model name, as long as an alias may be
MAX_ARGUMENTS = 256 * 1024  # a call's arguments in the history, as JSON text
MAX_DURATION_TEXT = 64
MAX_PENALTY_WINDOW = 1 << 20  # repeat_last_n, within llama.cpp's int32
FOREVER = -1.0  # a keep-alive that never runs out
# Longer than this is forever: Go's longest duration (about 292 years), which
# Ollama's clients cannot exceed, and what /api/ps can still write as a date.
LONGEST_KEEP_ALIVE = 292 * 365 * 86400.0

# Ollama's own defaults (its api.DefaultOptions), which its clients expect when
# they send no options: not the engine's.
SAMPLING_NAMES = frozenset(f.name for f in dataclasses.fields(SamplingParams)) - {"unset"}
OLLAMA_SAMPLING = SamplingParams(
    temperature=0.8,
    top_p=0.9,
    top_k=40,
    min_p=0.0,
    repeat_penalty=1.0,
    presence_penalty=0.0,
    frequency_penalty=0.0,
    seed=None,
    repeat_last_n=64,
)

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def keep_alive_seconds(value: float | str | None) -> float | None:
    """Ollama's ``keep_alive`` in seconds: a number of seconds or a Go duration
    ("5m", "1h30m", "300ms"); negative means forever (-1), 0 unload now, None the
    server's default. A bare number in a string is seconds too."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("keep_alive must be a duration like '5m' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if len(text) > MAX_DURATION_TEXT:
            raise ValueError(f"keep_alive may be at most {MAX_DURATION_TEXT} characters")
        if not text:
            return None
        try:
            seconds = float(text)
        except ValueError:
            seconds = _go_duration(text)
    if math.isnan(seconds):
        raise ValueError("keep_alive is not a number")
    return FOREVER if seconds < 0 or seconds >= LONGEST_KEEP_ALIVE else seconds


def _go_duration(text: str) -> float:
    sign, body = (-1.0, text[1:]) if text[:1] == "-" else (1.0, text.lstrip("+"))
    parts = _DURATION_PART.findall(body)
    if not parts or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(f"time: invalid duration {text[:40]!r}")
    return sign * sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _valid_keep_alive(value: Any) -> Any:
    if not isinstance(value, int | float | str | None):
        raise ValueError("keep_alive must be a duration like '5m' or a number of seconds")
    keep_alive_seconds(value)  # raises ValueError for what is no duration (or true)
    return value


# Checked as sent: pydantic would read true as 1 second.
KeepAlive = Annotated[float | str | None, BeforeValidator(_valid_keep_alive)]


class _Body(BaseModel):
    # No NaN or Infinity (which Python's JSON reads) where a number belongs.
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


ModelName = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]


class Options(_Body):
    """The options Ollama's ``options`` holds that change shimmy's answer."""

    temperature: float | None = Field(default=None, ge=0.0, le=100.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0, le=MAX_TOP_K)
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    repeat_penalty: float | None = Field(default=None, ge=0.0, le=100.0)
    repeat_last_n: int | None = Field(default=None, ge=-1, le=MAX_PENALTY_WINDOW)
    presence_penalty: float | None = Field(default=None, ge=-100.0, le=100.0)
    frequency_penalty: float | None = Field(default=None, ge=-100.0, le=100.0)
    seed: int | None = Field(default=None, ge=-(2**63), lt=2**64)
    stop: list[str] | None = None
    num_predict: int | None = Field(default=None, ge=-2, lt=2**63)
    num_ctx: int | None = Field(default=None, ge=0, lt=2**63)  # see the module docstring

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: list[str] | None) -> list[str] | None:
        check_stop(value)
        return value

    def sampling(self) -> SamplingParams:
        """Ollama's defaults with these options over them (seed -1: a random one)."""
        values: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "temperature",
                "top_p",
                "top_k",
                "min_p",
                "repeat_penalty",
                "repeat_last_n",
                "presence_penalty",
                "frequency_penalty",
                "seed",
            )
            if getattr(self, name) is not None
        }
        given = frozenset(values)  # the options sent; a model preset fills the others
        if values.get("seed", 0) < 0:
            values["seed"] = None
        defaults = {k: v for k, v in vars(OLLAMA_SAMPLING).items() if k != "unset"}
        return SamplingParams(**{**defaults, **values}, unset=SAMPLING_NAMES - given)


class _Generating(_Body):
    """What /api/chat and /api/generate share."""

    model: ModelName
    stream: bool = True
    format: str | dict[str, Any] | None = None
    options: Options = Field(default_factory=Options)
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    logprobs: bool = False

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        if isinstance(value, str) and value not in ("", "json"):
            raise ValueError('format must be "json" or a JSON schema')
        return value

    @field_validator("think")
    @classmethod
    def _no_thinking(cls, value: bool | str | None) -> bool | str | None:
        if value not in (None, False, ""):
            raise ValueError("thinking is not supported: shimmy does not split a reasoning trace")
        return value

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value: bool) -> bool:
        if value:
            raise ValueError("logprobs are not supported")
        return value

    @property
    def keep_alive_seconds(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)

    def grammar(self) -> str | None:
        """The grammar ``format`` asks for (building one may take a moment: call it
        off the event loop)."""
        if not self.format:
            return None
        if self.format == "json":
            return JSON_OBJECT_GBNF
        return grammar_for_schema(self.format)

    def stop_strings(self) -> tuple[str, ...]:
        return stop_strings(self.options.stop)

    def token_limit(self, limit: int) -> int:
        """``num_predict`` within the server's limit; none, or -1 ("until the
        context is full"), -2 or 0 ask for as many as the limit allows."""
        wanted = self.options.num_predict
        return limit if wanted is None or wanted <= 0 else min(wanted, limit)


class ToolFunction(_Body):
    name: str = Field(max_length=64)  # which characters: check_tools
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    parameters: dict[str, Any] | None = None


class ToolDefinition(_Body):
    type: str = "function"
    function: ToolFunction

    @field_validator("type")
    @classmethod
    def _function(cls, value: str) -> str:
        if value != "function":
            raise ValueError("only tools of type 'function' are supported")
        return value


class CalledFunction(_Body):
    name: str = Field(min_length=1, max_length=64)
    arguments: dict[str, Any] | Annotated[str, Field(max_length=MAX_ARGUMENTS)] = Field(
        default_factory=dict
    )
    index: int | None = None


class ToolCallPart(_Body):
    """A call in an assistant message of the history (arguments as an object)."""

    id: str = Field(default="", max_length=256)
    function: CalledFunction


class ChatMessage(_Body):
    role: str
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCallPart] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_name: str | None = Field(default=None, max_length=256)
    tool_call_id: str | None = Field(default=None, max_length=256)
    thinking: str | None = None  # an earlier reply's reasoning: not sent back to the model

    @field_validator("role")
    @classmethod
    def _known_role(cls, value: str) -> str:
        role = value.lower()
        if role not in ("system", "user", "assistant", "tool"):
            raise ValueError("role must be system, user, assistant or tool")
        return role

    @field_validator("images")
    @classmethod
    def _no_images(cls, value: list[str] | None) -> list[str] | None:
        if value:
            raise ValueError("images are not supported: shimmy serves text-only models")
        return value

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates take it (OpenAI's shape, which the tool
        formats of shimmy.models.tools read: calls' arguments stay objects)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content or ""}
        if self.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
                for call in self.tool_calls
            ]
        if self.role == "tool":
            if self.tool_name:
                message["name"] = self.tool_name
            message["tool_call_id"] = self.tool_call_id or ""
        return message


class ChatBody(_Generating):
    """``POST /api/chat``; no messages loads the model (or unloads it, with a
    keep-alive of 0)."""

    messages: list[ChatMessage] = Field(default_factory=list, max_length=MAX_MESSAGES)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)

    @model_validator(mode="after")
    def _format_or_tools(self) -> ChatBody:
        if self.tools and self.format:
            raise ValueError(
                "format cannot be combined with tools: ask for the structure as a tool's "
                "parameters, or send no tools"
            )
        return self

    def template_messages(self) -> list[dict[str, Any]]:
        return [m.for_template() for m in self.messages]

    def tool_request(self) -> ToolRequest | None:
        """The tools, which the model may call or not (Ollama has no tool_choice)."""
        if not self.tools:
            return None
        tools = tuple(
            Tool(
                name=t.function.name,
                description=t.function.description or "",
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in self.tools
        )
        request = ToolRequest(tools)
        check_tools(request.tools, request.choice)  # a clear 400 before any model loads
        return request


class GenerateBody(_Generating):
    """``POST /api/generate``; an empty prompt loads the model (or unloads it)."""

    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None

    @model_validator(mode="after")
    def _supported(self) -> GenerateBody:
        if self.suffix:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        if self.images:
            raise ValueError("images are not supported: shimmy serves text-only models")
        if self.template:
            raise ValueError(
                "template is not supported: shimmy renders the model's own chat template "
                "(send raw: true with a prompt you formatted yourself)"
            )
        if self.context:
            raise ValueError("context is not supported: send the conversation to /api/chat")
        if self.raw and self.system:
            raise ValueError("raw mode does not support system")
        return self


class EmbedBody(_Body):
    """``POST /api/embed``."""

    model: ModelName
    input: str | list[str] = Field(default_factory=list)
    truncate: bool = True
    dimensions: int | None = Field(default=None, ge=1)
    keep_alive: KeepAlive = None

    @field_validator("input")
    @classmethod
    def _few(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS:
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs are allowed")
        return value

    @property
    def inputs(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)

    @property
    def keep_alive_seconds(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)


class EmbeddingsBody(_Body):
    """``POST /api/embeddings`` (the older endpoint: one prompt, one vector)."""

    model: ModelName
    prompt: str = ""
    keep_alive: KeepAlive = None

    @property
    def keep_alive_seconds(self) -> float | None:
        return keep_alive_seconds(self.keep_alive)


class NamedBody(_Body):
    """A body that names one model: ``model``, or the deprecated ``name``."""

    model: str = Field(default="", max_length=MAX_NAME)
    name: str = Field(default="", max_length=MAX_NAME)

    @model_validator(mode="after")
    def _named(self) -> NamedBody:
        if not (self.model or self.name).strip():
            raise ValueError("model is required")
        return self

    @property
    def wanted(self) -> str:
        return (self.model or self.name).strip()


class PullBody(NamedBody):
    """``POST /api/pull`` (``insecure`` is accepted and ignored)."""

    stream: bool = True


class CopyBody(_Body):
    """``POST /api/copy``."""

    source: ModelName
    destination: ModelName
