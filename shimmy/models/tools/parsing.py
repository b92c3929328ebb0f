"""Splitting a model's reply into text and tool calls, as it streams.

Each tool-call format has a parser here. A parser is fed the reply's text as
it arrives and answers with events: text for the reply's content, the start of
a call (its id and name) and fragments of a call's arguments. Markers are
never part of the content, even when they arrive split across tokens: text
that could still become a marker is held back until it is decided. The same
parser reads a whole reply for a non-streamed answer, so a streamed call,
assembled from its events, is the non-streamed one.

A call the model botched (a marker followed by no JSON object) is content. A
call cut short (``max_tokens``) is left out of :attr:`ReplyParser.calls` and
its text is in :attr:`ReplyParser.unfinished`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from shimmy.models.tools.jsonstream import CallObject, JsonStringReader
from shimmy.models.tools.spec import ToolCall, new_call_id


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class CallStarted:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class CallArguments:
    index: int
    text: str


ToolEvent = TextDelta | CallStarted | CallArguments


def held_prefix(text: str, marker: str) -> int:
    """Length of the longest end of ``text`` that begins ``marker`` (to hold back)."""
    for length in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:length]):
            return length
    return 0


class ReplyParser(ABC):
    """Events from a reply's text, fed as it arrives (see the module docstring)."""

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        self._new_id = new_id
        self.content = ""
        self.calls: list[ToolCall] = []
        self.unfinished = ""
        self._events: list[ToolEvent] = []
        self._call: CallObject | None = None
        self._call_index = -1
        self._call_id = ""
        self._call_announced = False
        self._arguments = ""

    def feed(self, text: str) -> list[ToolEvent]:
        """The events ``text`` completes."""
        self._events = []
        self._read(text)
        return self._events

    def close(self) -> list[ToolEvent]:
        """The events of what was held back, once the reply has ended."""
        self._events = []
        self._end()
        if self._call is not None:  # cut short: its text is not a call
            self.unfinished = self._call.text
            self._call = None
        return self._events

    @abstractmethod
    def _read(self, text: str) -> None: ...

    @abstractmethod
    def _end(self) -> None: ...

    # -- for the formats ------------------------------------------------------------

    def _text(self, text: str) -> None:
        if text:
            self.content += text
            self._events.append(TextDelta(text))

    def _open_call(self, **keys: Sequence[str]) -> CallObject:
        self._call = CallObject(**keys)
        self._call_announced = False
        self._arguments = ""
        return self._call

    def _feed_call(self, text: str) -> int:
        """Feed the open call; announces it and its new arguments; returns what it used."""
        call = self._call
        assert call is not None
        used = call.feed(text)
        if call.name is not None and not self._call_announced:
            self._call_index += 1
            self._call_id = self._new_id()
            self._call_announced = True
            self._events.append(CallStarted(self._call_index, self._call_id, call.name))
        fragment = call.new_arguments()
        if fragment:
            self._arguments += fragment
            self._events.append(CallArguments(self._call_index, fragment))
        if call.done:
            self._close_call()
        return used

    def _close_call(self) -> None:
        call = self._call
        assert call is not None and call.done
        self._call = None
        if call.name is None or not isinstance(call.parsed(), dict):
            self._text(call.text)  # no name, or not JSON: a botched call is content
            return
        arguments = call.arguments_text()
        rest = arguments[len(self._arguments) :] if arguments.startswith(self._arguments) else ""
        if rest:
            self._events.append(CallArguments(self._call_index, rest))
            self._arguments += rest
        self.calls.append(ToolCall(self._call_id, call.name, self._arguments))


class MarkedCallsParser(ReplyParser):
    """Calls between markers in free text: Hermes and Qwen's ``<tool_call>{...}
    </tool_call>``; with ``array`` true, Mistral's ``[TOOL_CALLS][{...}, ...]``."""

    def __init__(
        self,
        opening: str,
        closing: str = "",
        *,
        array: bool = False,
        arguments_keys: Sequence[str] = ("arguments", "parameters"),
        new_id: Callable[[], str] = new_call_id,
    ) -> None:
        super().__init__(new_id)
        self._opening = opening
        self._closing = closing
        self._array = array
        self._arguments_keys = arguments_keys
        self._state = "text"  # text, before-call, call, after-call
        self._held = ""
        self._in_array = False

    def _read(self, text: str) -> None:
        self._held += text
        while self._held:
            if self._state == "text":
                index = self._held.find(self._opening)
                if index < 0:
                    keep = held_prefix(self._held, self._opening)
                    self._text(self._held[: len(self._held) - keep])
                    self._held = self._held[len(self._held) - keep :]
                    return
                self._text(self._held[:index])
                self._held = self._held[index + len(self._opening) :]
                self._state = "before-call"
                self._in_array = False
            elif self._state == "before-call":
                stripped = self._held.lstrip()
                if not stripped:
                    return
                if self._array and not self._in_array:
                    if stripped[0] != "[":
                        self._botched()
                        continue
                    self._in_array = True
                    self._held = stripped[1:]
                    continue
                if stripped[0] != "{":
                    self._botched()
                    continue
                self._held = stripped
                self._open_call(arguments_keys=self._arguments_keys)
                self._state = "call"
            elif self._state == "call":
                used = self._feed_call(self._held)
                self._held = self._held[used:]
                if self._call is None:
                    self._state = "after-call"
            else:  # after-call
                stripped = self._held.lstrip()
                if not stripped:
                    self._held = ""
                    return
                if self._array:
                    if stripped[0] == ",":
                        self._held = stripped[1:]
                        self._state = "before-call"
                        continue
                    if stripped[0] == "]":
                        self._held = stripped[1:]
                        self._state = "text"
                        continue
                elif self._closing:
                    if stripped.startswith(self._closing):
                        self._held = stripped[len(self._closing) :]
                        self._state = "text"
                        continue
                    if self._closing.startswith(stripped):
                        return  # the closing marker, not complete yet
                self._held = stripped
                self._state = "text"

    def _botched(self) -> None:
        """The opening marker with no call after it: it was text."""
        self._text(self._opening + ("[" if self._in_array else ""))
        self._state = "text"

    def _end(self) -> None:
        if self._state == "text":
            self._text(self._held)
        elif self._state == "before-call" and self._held.strip():
            self._text(self._opening + self._held)
        self._held = ""


class MistralNamedCallsParser(ReplyParser):
    """Mistral's newer form: ``[TOOL_CALLS]name[ARGS]{...}`` (``name[CALL_ID]id[ARGS]``
    in some templates), once per call."""

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        super().__init__(new_id)
        self._state = "text"  # text, name, arguments
        self._held = ""
        self._name = ""

    def _read(self, text: str) -> None:
        self._held += text
        while self._held:
            if self._state == "text":
                index = self._held.find("[TOOL_CALLS]")
                if index < 0:
                    keep = held_prefix(self._held, "[TOOL_CALLS]")
                    self._text(self._held[: len(self._held) - keep])
                    self._held = self._held[len(self._held) - keep :]
                    return
                self._text(self._held[:index])
                self._held = self._held[index + len("[TOOL_CALLS]") :]
                self._state = "name"
            elif self._state == "name":
                index = self._held.find("[ARGS]")
                if index < 0:
                    return
                # Newer templates show a call's id too: name[CALL_ID]id[ARGS]{...}.
                self._name = self._held[:index].split("[CALL_ID]")[0].strip()
                self._held = self._held[index + len("[ARGS]") :].lstrip()
                call = self._open_call()
                # The name comes before the arguments here: read them as the
                # object's value, so one reader serves every format.
                call.feed('{"name": ' + _json_string(self._name) + ', "arguments": ')
                self._state = "arguments"
            else:  # arguments
                used = self._feed_arguments(self._held)
                self._held = self._held[used:]
                if self._call is not None:
                    return  # more of the arguments to come
                self._state = "text"

    def _feed_arguments(self, text: str) -> int:
        """Feed the arguments value a character at a time; once it is whole, close
        the object (what follows is the next call or text)."""
        call = self._call
        assert call is not None
        for used, char in enumerate(text, 1):
            self._feed_call(char)
            if call.arguments_complete:
                self._feed_call("}")
                return used
        return len(text)

    def _end(self) -> None:
        if self._state == "text":
            self._text(self._held)
        elif self._state == "name":
            self._text("[TOOL_CALLS]" + self._held)
        self._held = ""


class LeadingJsonCallsParser(ReplyParser):
    """Llama 3.1-3.3: a reply that starts with ``{"name": ..., "parameters": ...}``
    (after an optional ``<|python_tag|>``) is a call, and several may follow,
    separated by ``;`` or whitespace; any other reply is text."""

    PYTHON_TAG = "<|python_tag|>"

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        super().__init__(new_id)
        self._state = "start"  # start, call, between, text
        self._held = ""

    def _read(self, text: str) -> None:
        self._held += text
        while self._held:
            if self._state == "text":
                self._text(self._held)
                self._held = ""
                return
            if self._state == "call":
                used = self._feed_call(self._held)
                self._held = self._held[used:]
                if self._call is None:
                    self._state = "between"
                continue
            # start, or between calls: is what comes next a call?
            stripped = self._held.lstrip()
            if self._state == "between":
                stripped = stripped.lstrip(";").lstrip()
            if not stripped:
                return
            if stripped.startswith(self.PYTHON_TAG):
                stripped = stripped[len(self.PYTHON_TAG) :].lstrip()
                if not stripped:
                    return
            elif self.PYTHON_TAG.startswith(stripped):
                return  # maybe the tag, not complete yet
            if self._is_call(stripped):
                self._held = stripped
                self._open_call(arguments_keys=("parameters", "arguments"))
                self._state = "call"
            elif stripped.startswith("{") and _could_be_call(stripped):
                return
            else:
                self._state = "text"  # not a call: the rest of the reply is text

    @staticmethod
    def _is_call(text: str) -> bool:
        return text.startswith("{") and text[1:].lstrip().startswith('"name"')

    def _end(self) -> None:
        if self._held.strip() and self._state != "call":
            self._text(self._held)
        self._held = ""


def _could_be_call(text: str) -> bool:
    """Whether ``text`` (starting with ``{``) may still turn out to be ``{"name"``."""
    rest = text[1:].lstrip()
    return '"name"'.startswith(rest)


class EnvelopeParser(ReplyParser):
    """The generic format: the whole reply is one JSON envelope, written under a
    grammar: ``{"tool_call": CALL}``, ``{"tool_calls": [CALL, ...]}`` or
    ``{"response": "text"}``."""

    PREFIXES = ('{"tool_calls": [', '{"tool_call": ', '{"response": "')

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        super().__init__(new_id)
        self._state = "start"  # start, response, call, between, done, text
        self._held = ""
        self._kind = ""
        self._string = JsonStringReader()

    def _read(self, text: str) -> None:
        self._held += text
        while self._held:
            if self._state == "start":
                for prefix in self.PREFIXES:
                    if self._held.startswith(prefix):
                        self._kind = prefix
                        self._held = self._held[len(prefix) :]
                        self._state = "response" if prefix.endswith('"') else "before-call"
                        break
                else:
                    if any(p.startswith(self._held) for p in self.PREFIXES):
                        return
                    self._state = "text"  # not an envelope: the model wrote text
                continue
            if self._state == "text":
                self._text(self._held)
                self._held = ""
            elif self._state == "response":
                decoded, used = self._string.feed(self._held)
                self._text(decoded)
                self._held = self._held[used:]
                if self._string.done:
                    self._state = "done"
            elif self._state == "before-call":
                stripped = self._held.lstrip()
                if not stripped:
                    return
                if stripped[0] != "{":
                    self._state = "done"
                    continue
                self._held = stripped
                self._open_call()
                self._state = "call"
            elif self._state == "call":
                used = self._feed_call(self._held)
                self._held = self._held[used:]
                if self._call is None:
                    self._state = "between" if self._kind.endswith("[") else "done"
            elif self._state == "between":
                stripped = self._held.lstrip()
                if not stripped:
                    return
                if stripped[0] == ",":
                    self._held = stripped[1:]
                    self._state = "before-call"
                else:
                    self._state = "done"
            else:  # done: the envelope's closing brackets
                self._held = ""

    def _end(self) -> None:
        if self._state in ("start", "text"):
            self._text(self._held)
        self._held = ""


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)
