"""A reply as an ordered list of blocks: runs of text and tool calls.

Anthropic's ``content`` and the Responses API's ``output`` are such lists, in
the order the model wrote them (text, a call, more text...), and their streams
say when each block opens, grows and closes. :class:`ReplyBlocks` folds a
reply's events (text deltas, calls starting, arguments arriving) into blocks and
says exactly that as it goes. A whole reply is the same fold over the events of
its whole output (:func:`whole_blocks`), so a stream, assembled, is the whole
answer, block for block.

Whitespace alone opens no block, and whitespace between text and a call belongs
to neither: the newlines a model writes around its calls are dropped (a reply
that is only whitespace keeps it as its one text block, and a reply's own
trailing whitespace is kept). A call cut short by ``max_tokens`` stays the call block the
stream announced, with the arguments it got (the last block); one cut before
its name was read is text, as in :func:`~shimmy.api.core.replies.whole_reply`:
a botched call is never an error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from shimmy.models.generation import Generation
from shimmy.models.tools import (
    CallArguments,
    CallStarted,
    ReplyParser,
    TextDelta,
    ToolCall,
    ToolEvent,
    reply_parser,
)


@dataclass
class Block:
    """One block of a reply: text, or a call (``call`` set) whose ``text`` is its
    arguments as JSON text. ``last`` is set on the block the reply ended in (a
    ``max_tokens`` cut lands there)."""

    index: int
    call: CallStarted | None = None
    text: str = ""
    last: bool = False

    @property
    def is_call(self) -> bool:
        return self.call is not None

    def tool_call(self) -> ToolCall:
        """The call this block is (only for a call block)."""
        assert self.call is not None
        return ToolCall(self.call.id, self.call.name, self.text)


@dataclass(frozen=True)
class BlockOpened:
    block: Block


@dataclass(frozen=True)
class BlockDelta:
    block: Block
    text: str


@dataclass(frozen=True)
class BlockClosed:
    block: Block


BlockEvent = BlockOpened | BlockDelta | BlockClosed


class ReplyBlocks:
    """Folds a reply's events into :attr:`blocks` (see the module docstring); each
    call answers with the block events it causes, each carrying a copy of its
    block as it was then (opened: empty; closed: whole). At most one block is
    open."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._open: Block | None = None
        self._held = ""  # whitespace that would open a text block

    def feed(self, event: ToolEvent) -> list[BlockEvent]:
        if isinstance(event, TextDelta):
            return self._text(event.text)
        if isinstance(event, CallStarted):
            self._held = ""
            return [*self._close(), *self._new(event)]
        return self._arguments(event)

    def close(self) -> list[BlockEvent]:
        """The events that end the reply: the open block closes (marked ``last``)."""
        events: list[BlockEvent] = []
        if self._held and not self.blocks:  # a reply of whitespace only
            events += self._new(None)
        if self._held and self._open is not None and not self._open.is_call:
            events += self._grow(self._held)
        self._held = ""
        if self._open is not None:
            self._open.last = True
        events += self._close()
        return events

    def _text(self, text: str) -> list[BlockEvent]:
        text, self._held = self._held + text, ""
        if not text.strip():
            self._held = text
            return []
        # Trailing whitespace waits for what follows: more text takes it along, a
        # call drops it, the reply's end lets it out.
        kept = text.rstrip()
        self._held = text[len(kept) :]
        if self._open is not None and not self._open.is_call:
            return self._grow(kept)
        return [*self._close(), *self._new(None), *self._grow(kept)]

    def _arguments(self, event: CallArguments) -> list[BlockEvent]:
        if self._open is None or self._open.call is None or self._open.call.index != event.index:
            return []  # the parsers send a call's arguments only while it is open
        return self._grow(event.text)

    def _new(self, call: CallStarted | None) -> list[BlockEvent]:
        block = Block(len(self.blocks), call)
        self.blocks.append(block)
        self._open = block
        return [BlockOpened(replace(block))]

    def _grow(self, text: str) -> list[BlockEvent]:
        assert self._open is not None
        if not text:
            return []
        self._open.text += text
        return [BlockDelta(replace(self._open), text)]

    def _close(self) -> list[BlockEvent]:
        if self._open is None:
            return []
        block, self._open = self._open, None
        return [BlockClosed(replace(block))]


class _ReplyReader:
    """A reply's text in, its events out: the model's tool-call parser when the
    request had tools, else the text as it is."""

    def __init__(self, generation: Generation) -> None:
        tools = generation.request.tools
        self._parser: ReplyParser | None = reply_parser(tools) if tools is not None else None
        self._started = 0  # calls announced

    def feed(self, text: str) -> list[ToolEvent]:
        if self._parser is None:
            return [TextDelta(text)] if text else []
        return self._counted(self._parser.feed(text))

    def close(self) -> list[ToolEvent]:
        if self._parser is None:
            return []
        events = self._counted(self._parser.close())
        # A call cut short before its name was read is text; one already
        # announced stays the call block it is, with the arguments it got.
        if self._parser.unfinished and self._started == len(self._parser.calls):
            events.append(TextDelta(self._parser.unfinished))
        return events

    def _counted(self, events: list[ToolEvent]) -> list[ToolEvent]:
        self._started += sum(isinstance(e, CallStarted) for e in events)
        return events


async def block_events(generation: Generation) -> AsyncIterator[BlockEvent]:
    """The block events of a generation as it streams (raises the generation's
    error at the end, as :meth:`Generation.stream` does)."""
    reader = _ReplyReader(generation)
    blocks = ReplyBlocks()
    async for piece in generation.stream():
        for event in reader.feed(piece.text):
            for change in blocks.feed(event):
                yield change
    for event in reader.close():
        for change in blocks.feed(event):
            yield change
    for change in blocks.close():
        yield change


def whole_blocks(generation: Generation) -> list[Block]:
    """The blocks of a finished generation: those its stream would have given."""
    reader = _ReplyReader(generation)
    blocks = ReplyBlocks()
    for event in [*reader.feed(generation.output), *reader.close()]:
        blocks.feed(event)
    blocks.close()
    return blocks.blocks
