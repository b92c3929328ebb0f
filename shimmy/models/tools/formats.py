"""Tool-call formats: how a model family is told about tools, how it writes a
call, and the grammar that keeps its calls valid.

The format is read from the model's own chat template, never from its file
name: a template that writes ``<tool_call>`` is Hermes/Qwen's, one that writes
``[TOOL_CALLS]`` is Mistral's, one that asks for ``{"name": ..., "parameters":
...}`` (with ``<|python_tag|>``) is Llama 3.1-3.3's. A template that knows
nothing of tools (SmolLM2's is one) gets the generic format: the tools are
described in a system message and the reply is one JSON envelope, written
under a grammar, as llama.cpp's generic handler did.

Grammars. A forced call (``required`` or a named tool) is constrained from the
first token, so any model, however small, returns a call whose arguments match
the tool's schema. With ``auto``, a format whose opening marker is one token of
the model's vocabulary gets a lazy grammar triggered by that token: the reply
is free until the marker and the call after it is valid. The trigger is a
token, never a text pattern: llama.cpp replays the text that completed a
pattern into the grammar and aborts the process if the grammar rejects it,
which text around a pattern can make it do; a token's own text is always
accepted. Llama 3's bare-JSON calls have no marker token, so in ``auto`` they
are parsed but not constrained (a botched one comes back as text). The generic
envelope is constrained whole.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from shimmy.errors import ShimmyError
from shimmy.models.grammar import check_grammar, on_grammar_thread
from shimmy.models.grammar_limits import check_schema
from shimmy.models.tools.parsing import (
    EnvelopeParser,
    LeadingJsonCallsParser,
    MarkedCallsParser,
    MistralNamedCallsParser,
    ReplyParser,
)
from shimmy.models.tools.spec import Tool, ToolRequest, new_call_id

Message = Mapping[str, Any]

# Calls in one reply: a small model allowed "one or more" may go on calling until
# max_tokens cuts the last call short.
MAX_CALLS_PER_REPLY = 8
MORE_CALLS = f"{{0,{MAX_CALLS_PER_REPLY - 1}}}"


@dataclass(frozen=True)
class ToolGrammar:
    """GBNF for a request's calls; ``trigger`` names the marker text whose token
    starts it (lazy), or is empty when it applies from the first token."""

    text: str
    trigger: str = ""


class ToolFormat(ABC):
    """One model family's way of calling tools (see the module docstring)."""

    name: ClassVar[str]
    # Marker texts the reply must keep (special tokens are otherwise dropped).
    markers: ClassVar[tuple[str, ...]] = ()
    arguments_key: ClassVar[str] = "arguments"

    def messages(self, messages: Sequence[Message], request: ToolRequest) -> list[dict[str, Any]]:
        """The conversation as this family's template expects it: calls' arguments
        as objects (transformers' convention), tool results named after their call."""
        return _template_messages(messages, self.call_id)

    def template_tools(self, request: ToolRequest) -> list[dict[str, Any]] | None:
        """What the template's ``tools`` variable holds (None: the template is not told)."""
        return [tool.as_openai() for tool in request.tools]

    def call_id(self, original: str) -> str:
        """The id a call has in the prompt (Mistral's templates insist on their own)."""
        return original

    def new_id(self) -> str:
        return new_call_id()

    @abstractmethod
    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None: ...

    @abstractmethod
    def parser(self) -> ReplyParser: ...

    def _call_rule(self, rules: ArgumentRules, tools: Sequence[Tool]) -> str:
        """``call ::= `` each chosen tool's call object, in this format's keys."""
        alternatives = []
        for tool in tools:
            arguments = rules.arguments(tool)
            alternatives.append(
                f'"{{" space "\\"name\\"" space ":" space "\\"{tool.name}\\"" space "," space '
                f'"\\"{self.arguments_key}\\"" space ":" space {arguments} "}}"'
            )
        return rules.add("call", " | ".join(alternatives))


class HermesFormat(ToolFormat):
    """Hermes, Qwen 2.5 and Qwen 3: ``<tool_call>`` ``{"name": ..., "arguments":
    ...}`` ``</tool_call>``, one block per call."""

    name = "hermes"
    markers = ("<tool_call>", "</tool_call>")

    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None:
        call = self._call_rule(rules, request.chosen())
        # Qwen and Hermes write a newline inside the markers and between calls.
        one = rules.add("one-call", f'"<tool_call>" [ \\n]? {call} [ \\n]? "</tool_call>"')
        root = f"{one} ([ \\n]? {one}){MORE_CALLS}" if request.choice.parallel else one
        return ToolGrammar(rules.text(root), "" if request.choice.forced else "<tool_call>")

    def parser(self) -> ReplyParser:
        return MarkedCallsParser("<tool_call>", "</tool_call>", new_id=self.new_id)


class Llama3Format(ToolFormat):
    """Llama 3.1-3.3: ``{"name": ..., "parameters": ...}`` as the whole reply,
    after an optional ``<|python_tag|>``; one call at a time."""

    name = "llama3"
    markers = ("<|python_tag|>",)
    arguments_key = "parameters"

    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None:
        call = self._call_rule(rules, request.chosen())
        if request.choice.forced:
            return ToolGrammar(rules.text(call))
        # <|python_tag|> is a token of Llama 3's vocabulary: after it, a valid call.
        return ToolGrammar(rules.text(f'"<|python_tag|>" space {call}'), "<|python_tag|>")

    def parser(self) -> ReplyParser:
        return LeadingJsonCallsParser(new_id=self.new_id)


class MistralFormat(ToolFormat):
    """Mistral (Nemo, 7B v0.3): ``[TOOL_CALLS][{"name": ..., "arguments": ...}, ...]``;
    its templates want call ids of nine letters and digits."""

    name = "mistral"
    markers = ("[TOOL_CALLS]",)

    def call_id(self, original: str) -> str:
        return _nine_alphanumerics(original)

    def new_id(self) -> str:
        return new_call_id(9, prefix="")

    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None:
        call = self._call_rule(rules, request.chosen())
        calls = f'{call} (space "," space {call}){MORE_CALLS}' if request.choice.parallel else call
        root = f'"[TOOL_CALLS]" space "[" space {calls} space "]"'
        return ToolGrammar(rules.text(root), "" if request.choice.forced else "[TOOL_CALLS]")

    def parser(self) -> ReplyParser:
        return MarkedCallsParser("[TOOL_CALLS]", array=True, new_id=self.new_id)


class MistralNamedFormat(MistralFormat):
    """Newer Mistral templates (Small 3.2, Devstral, Magistral):
    ``[TOOL_CALLS]name[ARGS]{...}`` for each call."""

    name = "mistral-args"

    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None:
        call_id = '("[CALL_ID]" [a-zA-Z0-9]{9})?'
        alternatives = [
            f'"{tool.name}" {call_id} "[ARGS]" {rules.arguments(tool)}' for tool in request.chosen()
        ]
        named = rules.add("named-call", " | ".join(alternatives))
        one = rules.add("one-call", f'"[TOOL_CALLS]" {named}')
        root = f"{one} ({one}){MORE_CALLS}" if request.choice.parallel else one
        return ToolGrammar(rules.text(root), "" if request.choice.forced else "[TOOL_CALLS]")

    def parser(self) -> ReplyParser:
        return MistralNamedCallsParser(new_id=self.new_id)


class GenericFormat(ToolFormat):
    """For templates that know nothing of tools: the tools go into a system
    message and the reply is a JSON envelope, constrained whole."""

    name = "generic"

    def template_tools(self, request: ToolRequest) -> list[dict[str, Any]] | None:
        return None

    def messages(self, messages: Sequence[Message], request: ToolRequest) -> list[dict[str, Any]]:
        converted: list[dict[str, Any]] = []
        for message in _template_messages(messages, self.call_id):
            if message.get("tool_calls"):
                calls = [
                    {"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                    for c in message["tool_calls"]
                ]
                envelope = {"tool_call": calls[0]} if len(calls) == 1 else {"tool_calls": calls}
                converted.append({"role": "assistant", "content": json.dumps(envelope)})
            elif message.get("role") == "tool":
                result = {"name": message.get("name", ""), "content": message.get("content", "")}
                text = json.dumps({"tool_response": result})
                if converted and converted[-1].get("tool_results"):
                    converted[-1]["content"] += "\n" + text  # several results: one turn
                else:
                    converted.append({"role": "user", "content": text, "tool_results": True})
            else:
                converted.append(dict(message))
        for message in converted:
            message.pop("tool_results", None)
        if request.choice.mode == "none" or not request.chosen():
            return converted  # the history's calls are shown; no new ones are asked for
        return _with_system_prompt(converted, _generic_instructions(request))

    def grammar(self, request: ToolRequest, rules: ArgumentRules) -> ToolGrammar | None:
        call = self._call_rule(rules, request.chosen())
        if request.choice.parallel:
            calls = f'"{{\\"tool_calls\\": [" {call} (", " {call}){MORE_CALLS} "]}}"'
        else:
            calls = f'"{{\\"tool_call\\": " {call} "}}"'
        if request.choice.forced:
            return ToolGrammar(rules.text(calls))
        reply = f'"{{\\"response\\": " {rules.string()} "}}"'
        return ToolGrammar(rules.text(f"{calls} | {reply}"))

    def parser(self) -> ReplyParser:
        return EnvelopeParser(new_id=self.new_id)


FORMATS: dict[str, ToolFormat] = {
    f.name: f
    for f in (
        HermesFormat(),
        Llama3Format(),
        MistralFormat(),
        MistralNamedFormat(),
        GenericFormat(),
    )
}


def tool_grammar(tool_format: ToolFormat, request: ToolRequest) -> ToolGrammar | None:
    """The grammar of ``request``'s calls in ``tool_format``, built and checked by
    llama.cpp's parser on the big-stack grammar thread (shimmy/models/grammar.py);
    None when the reply is free (``tool_choice`` none). ``invalid_request`` names
    the tool whose schema is over a limit or cannot be turned into a grammar."""
    if request.choice.mode == "none" or not request.chosen():
        return None

    def build() -> ToolGrammar | None:
        grammar = tool_format.grammar(request, ArgumentRules())
        if grammar is not None:
            check_grammar(grammar.text)
        return grammar

    return on_grammar_thread(build)


def detect_format(template_source: str, is_fallback: bool = False) -> ToolFormat:
    """The tool-call format a chat template writes (generic when it writes none)."""
    if is_fallback:
        return FORMATS["generic"]
    if "<tool_call>" in template_source:
        return FORMATS["hermes"]
    if "[TOOL_CALLS]" in template_source:
        return FORMATS["mistral-args" if "[ARGS]" in template_source else "mistral"]
    if "<|python_tag|>" in template_source or (
        '"parameters"' in template_source and "<|eot_id|>" in template_source
    ):
        return FORMATS["llama3"]
    return FORMATS["generic"]


class ArgumentRules:
    """The GBNF rules of a request's grammar: each tool's arguments from its JSON
    schema (llama.cpp's converter, as for response_format), plus the format's own."""

    def __init__(self) -> None:
        from shimmy.models.llama_bindings import llama_grammar

        self._converter = llama_grammar.SchemaConverter(
            prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False
        )
        self._arguments: dict[str, str] = {}
        self._string = ""

    def arguments(self, tool: Tool) -> str:
        """The rule for ``tool``'s arguments object."""
        if tool.name not in self._arguments:
            schema = _object_schema(tool)
            check_schema(schema)
            try:
                resolved = self._converter.resolve_refs(dict(schema), f"tool-{tool.name}")
                rule = self._converter.visit(resolved, f"{tool.name}-arguments")
            except Exception as exc:  # the converter raises bare errors
                raise ShimmyError(
                    "invalid_request",
                    f"The parameters schema of tool '{tool.name}' cannot be turned into a grammar",
                    f"{type(exc).__name__}: {str(exc)[:200]}",
                ) from exc
            self._arguments[tool.name] = rule
        return self._arguments[tool.name]

    def add(self, name: str, rule: str) -> str:
        return str(self._converter._add_rule(name, rule))

    def string(self) -> str:
        """The rule for any JSON string."""
        return str(self._converter.visit({"type": "string"}, "reply-text"))

    def text(self, root: str) -> str:
        """The whole grammar, with ``root`` as its root rule."""
        self.add("root", root)
        return str(self._converter.format_grammar())


def _object_schema(tool: Tool) -> Mapping[str, Any]:
    """A tool's parameters as an object schema (an empty one takes no arguments)."""
    schema = tool.parameters
    if not schema or not schema.get("type") and "properties" not in schema:
        return {"type": "object", "properties": {}}
    return schema


def _template_messages(
    messages: Sequence[Message], call_id: Callable[[str], str]
) -> list[dict[str, Any]]:
    names: dict[str, str] = {}
    converted: list[dict[str, Any]] = []
    for message in messages:
        out = dict(message)
        calls = message.get("tool_calls")
        if calls:
            out["tool_calls"] = []
            for call in calls:
                function = call.get("function", {})
                arguments = function.get("arguments", "{}")
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    except ValueError:
                        pass  # kept as the text it is
                names[str(call.get("id", ""))] = function.get("name", "")
                out["tool_calls"].append(
                    {
                        "id": call_id(str(call.get("id", ""))),
                        "type": "function",
                        "function": {"name": function.get("name", ""), "arguments": arguments},
                    }
                )
        else:
            out.pop("tool_calls", None)
        if message.get("role") == "tool":
            original = str(message.get("tool_call_id", ""))
            out["tool_call_id"] = call_id(original)
            out.setdefault("name", names.get(original, ""))
        converted.append(out)
    return converted


def _with_system_prompt(messages: list[dict[str, Any]], prompt: str) -> list[dict[str, Any]]:
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content') or ''}\n\n{prompt}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": prompt}, *messages]


def _generic_instructions(request: ToolRequest) -> str:
    tools = "\n".join(json.dumps(t.as_openai()["function"]) for t in request.chosen())
    call = '{"name": <tool name>, "arguments": <arguments object>}'
    calls = (
        f'{{"tool_calls": [{call}, ...]}} to call tools'
        if request.choice.parallel
        else f'{{"tool_call": {call}}} to call a tool'
    )
    if request.choice.forced:
        answer = f"Answer with one JSON object: {calls}."
    else:
        answer = (
            f'Answer with one JSON object: {calls}, or {{"response": "<your reply>"}} '
            "to reply to the user."
        )
    return f"You can use these tools:\n{tools}\n\n{answer}"


def _nine_alphanumerics(original: str) -> str:
    """A stable nine-character id for ``original`` (kept if it already is one)."""
    if len(original) == 9 and original.isalnum():
        return original
    digest = hashlib.sha256(original.encode()).hexdigest()
    return digest[:9]
