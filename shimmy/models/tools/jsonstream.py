"""Reading JSON as it streams, one piece of text at a time.

A tool call arrives token by token, and OpenAI's streaming shape sends its name
as soon as it is known and its arguments in fragments as they are written. So
the call's JSON is read incrementally: :class:`CallObject` follows one object
character by character (strings, escapes, nesting) and says what its name is
and which new text belongs to its arguments; :class:`JsonStringReader` decodes
a JSON string's escapes as they arrive (the generic format's reply text).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

_WHITESPACE = " \t\r\n"


class CallObject:
    """One JSON object holding a call, read as it arrives.

    ``name_keys`` and ``arguments_keys`` are the keys a format uses (Llama 3
    writes ``parameters`` where Hermes writes ``arguments``). Text after the
    object's closing brace is not consumed: :meth:`feed` says how much it took.
    """

    def __init__(
        self,
        name_keys: Sequence[str] = ("name",),
        arguments_keys: Sequence[str] = ("arguments", "parameters"),
    ) -> None:
        self._name_keys = tuple(name_keys)
        self._arguments_keys = tuple(arguments_keys)
        self.text = ""
        self.done = False
        self.name: str | None = None
        self._depth = 0
        self._in_string = False
        self._escape = False
        # Depth-1 bookkeeping: the key being read or just read, where its value began.
        self._expect = "key"  # "key", "colon", "value", "after"
        self._key_start = -1
        self._key: str | None = None
        self._value_start = -1
        self._value_kind = ""  # "{", "[", '"' or "scalar"
        self._arguments: tuple[int, int] | None = None  # where the arguments value lies
        self._arguments_open = -1  # start of an object/array arguments value still open
        self._sent = 0  # arguments characters handed out by new_arguments()

    @property
    def started(self) -> bool:
        return bool(self.text)

    @property
    def arguments_complete(self) -> bool:
        """Whether the arguments value has been read whole."""
        return self._arguments is not None

    def feed(self, text: str) -> int:
        """Read ``text``; returns how many characters belonged to the object."""
        for used, char in enumerate(text):
            if self.done:
                return used
            self._step(char)
        return len(text)

    def _step(self, char: str) -> None:
        index = len(self.text)
        self.text += char
        if not self.text.strip():
            self.text = ""  # whitespace before the object
            return
        if self._in_string:
            if self._escape:
                self._escape = False
            elif char == "\\":
                self._escape = True
            elif char == '"':
                self._in_string = False
                if self._depth == 1:
                    self._string_ended(index)
            return
        if char == '"':
            self._in_string = True
            if self._depth == 1:
                if self._expect == "key":
                    self._key_start = index
                elif self._expect == "value":
                    self._begin_value(index, '"')
            return
        if char in "{[":
            if self._depth == 1 and self._expect == "value":
                self._begin_value(index, char)
            self._depth += 1
            return
        if char in "}]":
            self._depth -= 1
            if self._depth == 1 and self._value_kind in ("{", "[") and self._value_start >= 0:
                self._end_value(index + 1)
            elif self._depth == 0:
                if self._value_kind == "scalar" and self._value_start >= 0:
                    self._end_value(index)
                self.done = True
            return
        if self._depth == 1:
            if char == ":" and self._expect == "colon":
                self._expect = "value"
            elif char == ",":
                if self._value_kind == "scalar" and self._value_start >= 0:
                    self._end_value(index)
                self._expect = "key"
            elif char not in _WHITESPACE and self._expect == "value":
                self._begin_value(index, "scalar")

    def _string_ended(self, index: int) -> None:
        if self._expect == "key":
            self._key = json.loads(self.text[self._key_start : index + 1])
            self._expect = "colon"
        elif self._value_kind == '"' and self._value_start >= 0:
            self._end_value(index + 1)

    def _begin_value(self, index: int, kind: str) -> None:
        self._value_start = index
        self._value_kind = kind
        self._expect = "after"
        if self._key in self._arguments_keys and kind in ("{", "["):
            self._arguments_open = index

    def _end_value(self, end: int) -> None:
        raw = self.text[self._value_start : end].strip()
        if self._key in self._name_keys and self._value_kind == '"' and self.name is None:
            self.name = json.loads(raw)
        elif self._key in self._arguments_keys and self._arguments is None:
            self._arguments = (self._value_start, self._value_start + len(raw))
            self._arguments_open = -1
        self._value_start = -1
        self._value_kind = ""
        self._expect = "after"

    def new_arguments(self) -> str:
        """Arguments text written since the last call: an object or array as it
        grows (``""`` until the call's name is known, then all that came)."""
        if self.name is None:
            return ""
        if self._arguments is not None:
            start, end = self._arguments
        elif self._arguments_open >= 0:
            start, end = self._arguments_open, len(self.text)
        else:
            return ""
        if self.text[start] == '"':  # arguments as a JSON string: handed out whole
            if self._arguments is None:
                return ""
            text = self.arguments_text()
            start, end = 0, len(text)
        else:
            text = self.text
            end = min(end, len(text))
        piece = text[start + self._sent : end]
        self._sent += len(piece)
        return piece

    def arguments_text(self) -> str:
        """The whole arguments as JSON text (a string value is decoded: some models
        write the arguments object as a string); ``"{}"`` when there are none."""
        if self._arguments is None:
            return "{}" if self.done else ""
        raw = self.text[self._arguments[0] : self._arguments[1]]
        if raw.startswith('"'):
            try:
                decoded = json.loads(raw)
            except ValueError:
                return raw
            return decoded if isinstance(decoded, str) else raw
        return raw

    def parsed(self) -> object:
        """The whole object, once done (``None`` if it is not valid JSON)."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None


class JsonStringReader:
    """The text of a JSON string as it arrives, its escapes decoded. Feed the
    characters after the opening quote; :attr:`done` once the closing one came."""

    def __init__(self) -> None:
        self.done = False
        self._pending = ""  # an escape not complete yet

    def feed(self, text: str) -> tuple[str, int]:
        """The decoded text now known, and how many characters were consumed."""
        out: list[str] = []
        for used, char in enumerate(text):
            if self.done:
                return "".join(out), used
            if self._pending:
                self._pending += char
                decoded = self._decode_escape()
                if decoded is not None:
                    out.append(decoded)
            elif char == "\\":
                self._pending = char
            elif char == '"':
                self.done = True
            else:
                out.append(char)
        return "".join(out), len(text)

    def _decode_escape(self) -> str | None:
        pending = self._pending
        if len(pending) < 2:
            return None
        if pending[1] != "u":
            self._pending = ""
            return json.loads(f'"{pending}"') if pending[1] in '"\\/bfnrt' else pending[1]
        if len(pending) < 6:
            return None
        high = int(pending[2:6], 16) if _is_hex(pending[2:6]) else -1
        if 0xD800 <= high <= 0xDBFF:  # a surrogate pair: wait for its second half
            if len(pending) >= 8 and pending[6:8] != "\\u":
                # A lone half: replace it; what followed is read again.
                self._pending = ""
                rest, _ = self.feed(pending[6:])
                return "\ufffd" + rest
            if len(pending) < 12:
                return None
            self._pending = ""
            try:
                return str(json.loads(f'"{pending[:12]}"'))
            except ValueError:
                return "\ufffd"
        self._pending = ""
        return chr(high) if high >= 0 else "\ufffd"


def _is_hex(text: str) -> bool:
    return len(text) == 4 and all(c in "0123456789abcdefABCDEF" for c in text)
