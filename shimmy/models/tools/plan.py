"""What a request with tools becomes before it is queued: the conversation in
the model's own format, the template's ``tools``, and the grammar."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models.chat import ChatTemplate
from shimmy.models.tools.formats import FORMATS, detect_format, tool_grammar
from shimmy.models.tools.parsing import ReplyParser
from shimmy.models.tools.spec import ToolRequest, check_tools

Message = Mapping[str, Any]


@dataclass(frozen=True)
class ToolPlan:
    """How one chat request is rendered and constrained (see :func:`plan_tools`)."""

    messages: list[dict[str, Any]]
    template_tools: list[dict[str, Any]] | None = None
    grammar: str | None = None
    grammar_trigger: str = ""
    preserved: tuple[str, ...] = ()
    tools: ToolRequest | None = None  # set when the reply is to be parsed for calls


def plan_tools(
    template: ChatTemplate,
    messages: Sequence[Message],
    tools: ToolRequest | None,
    grammar: str | None,
    marker_tokens: Callable[[Sequence[str]], frozenset[int]],
) -> ToolPlan:
    """Plan a chat request for ``template``'s model.

    Without tools and without calls in the history, the messages go as they
    are. Otherwise the format is read from the template; the history's calls
    and results are put in its shape; with a tool choice other than ``none``,
    the calls get a grammar (``marker_tokens`` says whether the model has the
    token a lazy grammar starts at; without it ``auto`` calls are parsed, not
    constrained) and the reply is to be parsed. ``invalid_request`` for bad
    tools, or tools together with a ``response_format`` grammar.
    """
    history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if tools is None and not history:
        return ToolPlan([dict(m) for m in messages], grammar=grammar)
    tool_format = detect_format(template.source, template.is_fallback)
    request = replace(tools or ToolRequest(()), format=tool_format.name)
    check_tools(request.tools, request.choice)
    converted = tool_format.messages(messages, request)
    template_tools = tool_format.template_tools(request) if request.tools else None
    if request.choice.mode == "none" or not request.tools:
        return ToolPlan(converted, template_tools, grammar)
    if grammar is not None:
        raise ShimmyError(
            "invalid_request",
            "response_format cannot be combined with tools",
            "ask for the structure as a tool's parameters, or set tool_choice to 'none'",
        )
    calls = tool_grammar(tool_format, request)
    text, trigger = None, ""
    if calls is not None and (not calls.trigger or marker_tokens([calls.trigger])):
        text, trigger = calls.text, calls.trigger
    return ToolPlan(converted, template_tools, text, trigger, tool_format.markers, request)


def reply_parser(request: ToolRequest) -> ReplyParser:
    """A parser for the reply to ``request`` (its format is set by :func:`plan_tools`)."""
    return FORMATS[request.format].parser()
