"""Request bodies of the OpenAI-compatible /v1 API.

Field names, types and defaults follow OpenAI's API reference. Unknown fields
are ignored (clients send many we have no use for); fields that would change
the answer in a way shimmy cannot honour (``n`` > 1, ``logprobs``, ``suffix``,
images) are a clear ``invalid_request`` instead of being dropped silently. A
few llama.cpp-server extensions (``top_k``, ``min_p``, ``repeat_penalty``) are
accepted too. Tools (``tools``, ``tool_choice``, ``parallel_tool_calls``, calls
and results in the history) map onto shimmy.models.tools.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shimmy.api.core.fields import (
    MAX_TOP_K,
    check_logit_bias,
    check_stop,
    sampling_of,
    stop_strings,
)
from shimmy.errors import ShimmyError
from shimmy.models.generation import SamplingParams
from shimmy.models.tools import Tool, ToolChoice, ToolRequest
from shimmy.models.tools.spec import MAX_DESCRIPTION, MAX_TOOLS, check_tools

# Fields OpenAI does not define (llama.cpp's server extensions, the penalties'
# neutral values) default to the engine's own, stated once in SamplingParams.
_ENGINE = SamplingParams()

MAX_PROMPTS = 16
MAX_TOKEN_ARRAY = 128 * 1024  # ids in one token-array prompt or input
MAX_CHOICES = 128  # n; a model's --parallel slots are the real bound
MAX_TOP_LOGPROBS = 20  # OpenAI's bound for chat; completions take as many
MAX_ARGUMENTS = 256 * 1024  # a call's arguments in the history, as JSON text
MAX_EMBEDDING_INPUTS = 2048


def _unsupported(message: str, details: str | None = None) -> ShimmyError:
    return ShimmyError("invalid_request", message, details)


class _Body(BaseModel):
    # Strict: a string where a number belongs is an error, as it is for OpenAI.
    model_config = ConfigDict(extra="ignore", strict=True)


# Token ids are the model's own (its vocabulary, not OpenAI's); the engine
# checks each is one of the model's tokens.
Tokens = Annotated[
    list[Annotated[int, Field(ge=0)]], Field(min_length=1, max_length=MAX_TOKEN_ARRAY)
]


def one_of_each(value: Any) -> list[Any]:
    """A prompt or input as a list of its items: a string or a token array alone
    is one item; a list of strings or of token arrays is several."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [value]
    return list(value)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class OtherPart(_Body):
    """Image, audio and file parts: recognised, so the error can name them."""

    type: str

    @field_validator("type")
    @classmethod
    def _not_text(cls, value: str) -> str:
        if value == "text":
            raise ValueError("a text part needs a 'text' string")
        return value


class FunctionCall(_Body):
    name: str = Field(min_length=1, max_length=64)
    arguments: str = Field(default="{}", max_length=MAX_ARGUMENTS)


class ToolCallPart(_Body):
    """A call in an assistant message of the history."""

    id: str = Field(default="", max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart | OtherPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallPart] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(default=None, max_length=256)

    def for_template(self) -> dict[str, Any]:
        """The message as chat templates expect it: plain string content, and
        OpenAI's newer "developer" role as the "system" role templates know."""
        if isinstance(self.content, list):
            texts = []
            for part in self.content:
                if not isinstance(part, TextPart):
                    raise _unsupported(
                        f"Content parts of type '{part.type}' are not supported",
                        "shimmy serves text-only models; send text parts only",
                    )
                texts.append(part.text)
            content = "\n".join(texts)
        else:
            content = self.content or ""
        message: dict[str, Any] = {
            "role": "system" if self.role == "developer" else self.role,
            "content": content,
        }
        if self.name:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


class FunctionDefinition(_Body):
    name: str
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None  # accepted: calls always follow the schema here


class ToolDefinition(_Body):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Body):
    name: str


class NamedToolChoice(_Body):
    type: Literal["function"]
    function: NamedFunction


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    """Sampling fields shared by chat and text completions."""

    model: str = Field(min_length=1)
    # OpenAI's own defaults, not the engine's: clients expect them.
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=_ENGINE.presence_penalty, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=_ENGINE.frequency_penalty, ge=-2.0, le=2.0)
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)  # the model's slots bound it too
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None  # accepted and ignored
    # llama.cpp server extensions.
    top_k: int = Field(default=_ENGINE.top_k, ge=0, le=MAX_TOP_K)
    min_p: float = Field(default=_ENGINE.min_p, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=_ENGINE.repeat_penalty, gt=0.0)
    logit_bias: dict[str, float] | None = None

    @field_validator("logit_bias")
    @classmethod
    def _bounded_bias(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        return check_logit_bias(value)

    @field_validator("stop")
    @classmethod
    def _few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_stop(value)

    def sampling(self) -> SamplingParams:
        return sampling_of(self)

    def stop_strings(self) -> tuple[str, ...]:
        return stop_strings(self.stop)

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionBody(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    tools: list[ToolDefinition] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True

    @field_validator("messages")
    @classmethod
    def _some_messages(cls, value: list[ChatMessage]) -> list[ChatMessage]:
        if not value:
            raise ValueError("must contain at least one message")
        return value

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionBody:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs to be true")
        return self

    @property
    def logprob_count(self) -> int:
        """The engine's ``logprobs``: -1 none, else how many alternatives per token."""
        return (self.top_logprobs or 0) if self.logprobs else -1

    def tool_request(self) -> ToolRequest | None:
        """The tools and the choice over them (``auto`` when tools are given and no
        choice is), checked: a named tool must be one of them."""
        if not self.tools and self.tool_choice in (None, "none", "auto"):
            return None
        tools = tuple(
            Tool(
                name=t.function.name,
                description=t.function.description or "",
                parameters=t.function.parameters or {"type": "object", "properties": {}},
            )
            for t in self.tools or ()
        )
        choice = self.tool_choice or "auto"
        if isinstance(choice, NamedToolChoice):
            mode = ToolChoice("named", choice.function.name, parallel=False)  # that one call
        else:
            mode = ToolChoice(choice, None, self.parallel_tool_calls)
        check_tools(tools, mode)
        return ToolRequest(tools, mode)

    @property
    def token_limit(self) -> int | None:
        """``max_completion_tokens`` (the current name) wins over ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        return [m.for_template() for m in self.messages]


class CompletionBody(_Sampling):
    """``POST /v1/completions`` (the legacy text completion API)."""

    prompt: str | Tokens | list[str | Tokens]
    max_tokens: int | None = Field(default=16, ge=1)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None
    logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: Any) -> Any:
        prompts = one_of_each(value)
        if not prompts:
            raise ValueError("must contain at least one prompt")
        if len(prompts) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts are allowed in one request")
        return value

    @model_validator(mode="after")
    def _supported(self) -> CompletionBody:
        if self.suffix:
            raise ValueError("suffix (fill-in-the-middle) is not supported")
        if self.best_of not in (None, 1):
            raise ValueError("only best_of=1 is supported")
        return self

    @property
    def logprob_count(self) -> int:
        return -1 if self.logprobs is None else self.logprobs

    @property
    def prompts(self) -> list[str | list[int]]:
        """Each prompt: text, or the model's token ids."""
        return one_of_each(self.prompt)


class EmbeddingBody(_Body):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1)
    input: (
        str
        | Tokens
        | Annotated[list[str | Tokens], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None

    @property
    def inputs(self) -> list[str | list[int]]:
        """Each input: text, or the model's token ids."""
        return one_of_each(self.input)
