"""A reply as blocks (shimmy/api/core/blocks.py): the fold, and a stream that,
assembled, is the whole reply, however its text is cut into pieces."""

from __future__ import annotations

import asyncio

import pytest

from shimmy.api.core import (
    Block,
    BlockClosed,
    BlockDelta,
    BlockEvent,
    BlockOpened,
    block_events,
    whole_blocks,
    whole_reply,
)
from shimmy.api.core.blocks import ReplyBlocks
from shimmy.models.generation import Generation, GenerationRequest
from shimmy.models.tools import (
    CallArguments,
    CallStarted,
    TextDelta,
    Tool,
    ToolEvent,
    ToolRequest,
)

HERMES = ToolRequest((Tool("get_weather"),), format="hermes")
CALL = '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{}"}}}}\n</tool_call>'


def generation(pieces: list[str], reason: str = "stop", tools: ToolRequest | None = None):
    made = Generation(GenerationRequest(prompt_tokens=[1], tools=tools), "m")
    for piece in pieces:
        made.emit(piece, 1)
    made.finish(reason)
    return made


def streamed(made: Generation) -> list[BlockEvent]:
    async def collect() -> list[BlockEvent]:
        return [event async for event in block_events(made)]

    return asyncio.run(collect())


def assembled(events: list[BlockEvent]) -> list[tuple[str | None, str]]:
    """The blocks a client builds from the events: (call name or None, text)."""
    blocks: dict[int, list] = {}
    for event in events:
        if isinstance(event, BlockOpened):
            assert event.block.text == "" and event.block.index == len(blocks)
            blocks[event.block.index] = [event.block.call and event.block.call.name, ""]
        elif isinstance(event, BlockDelta):
            blocks[event.block.index][1] += event.text
    return [(name, text) for name, text in blocks.values()]


def shape(blocks: list[Block]) -> list[tuple[str | None, str]]:
    return [(b.call.name if b.call else None, b.text) for b in blocks]


def test_text_calls_and_text_fold_into_blocks_in_order_whitespace_around_calls_dropped():
    fold = ReplyBlocks()
    events: list[ToolEvent] = [
        TextDelta("  "),
        TextDelta("Checking."),
        TextDelta("\n"),
        CallStarted(0, "call_a", "get_weather"),
        CallArguments(0, '{"city": '),
        CallArguments(0, '"Paris"}'),
        TextDelta("\n"),
        CallStarted(1, "call_b", "get_weather"),
        CallArguments(1, "{}"),
        TextDelta("\n"),
        TextDelta("Done"),
        TextDelta(" now\n"),
    ]
    changes = [change for event in events for change in fold.feed(event)] + fold.close()
    kinds = [(type(c).__name__, c.block.index) for c in changes]
    assert kinds == [
        ("BlockOpened", 0),
        ("BlockDelta", 0),
        ("BlockClosed", 0),
        ("BlockOpened", 1),
        ("BlockDelta", 1),
        ("BlockDelta", 1),
        ("BlockClosed", 1),
        ("BlockOpened", 2),
        ("BlockDelta", 2),
        ("BlockClosed", 2),
        ("BlockOpened", 3),
        ("BlockDelta", 3),
        ("BlockDelta", 3),
        ("BlockDelta", 3),
        ("BlockClosed", 3),
    ]
    assert shape(fold.blocks) == [
        (None, "  Checking."),
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", "{}"),
        (None, "\nDone now\n"),
    ]
    assert [b.last for b in fold.blocks] == [False, False, False, True]
    closed = [c.block for c in changes if isinstance(c, BlockClosed)]
    assert [b.text for b in closed] == [b.text for b in fold.blocks]


def test_a_reply_of_whitespace_only_keeps_it_and_an_empty_one_has_no_block():
    fold = ReplyBlocks()
    fold.feed(TextDelta(" \n"))
    fold.close()
    assert shape(fold.blocks) == [(None, " \n")]
    empty = ReplyBlocks()
    assert empty.close() == [] and empty.blocks == []


@pytest.mark.parametrize("cut", [1, 3, 7, 1000])
def test_a_stream_assembled_is_the_whole_reply_however_it_is_cut(cut):
    text = "Let me look." + CALL.format("Paris") + "\n" + CALL.format("Rome") + " Bye."
    pieces = [text[i : i + cut] for i in range(0, len(text), cut)]
    made = generation(pieces, tools=HERMES)
    whole = whole_blocks(made)
    assert shape(whole) == [
        (None, "Let me look."),
        ("get_weather", '{"city": "Paris"}'),
        ("get_weather", '{"city": "Rome"}'),
        (None, " Bye."),
    ]
    assert assembled(streamed(made)) == shape(whole)


def test_without_tools_the_text_is_one_block_as_it_came():
    made = generation(["Hello", ",", " <tool_call> world"])
    assert shape(whole_blocks(made)) == [(None, "Hello, <tool_call> world")]
    assert assembled(streamed(made)) == shape(whole_blocks(made))


def test_a_call_cut_short_stays_the_call_announced_one_cut_before_its_name_is_text():
    announced = generation(
        ['<tool_call>\n{"name": "get_weather", "arguments": {"ci'], "length", HERMES
    )
    blocks = whole_blocks(announced)
    assert shape(blocks) == [("get_weather", '{"ci')] and blocks[0].last
    assert assembled(streamed(announced)) == shape(blocks)
    nameless = generation(['Sure. <tool_call>\n{"na'], "length", HERMES)
    assert shape(whole_blocks(nameless)) == [(None, whole_reply(nameless).content)]
    assert assembled(streamed(nameless)) == shape(whole_blocks(nameless))
