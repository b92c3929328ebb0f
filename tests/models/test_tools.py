"""Tool calls in the models layer: each family's format read from its real chat
template (carried in a small synthetic GGUF), tools and calls rendered as the
template wants them, replies parsed as they stream, and the grammars llama.cpp
builds from the tools."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shimmy.errors import ShimmyError
from shimmy.models.chat import ChatTemplate
from shimmy.models.gguf import read_gguf_info
from shimmy.models.grammar import init_grammar_sampler
from shimmy.models.tools import (
    CallArguments,
    CallStarted,
    TextDelta,
    Tool,
    ToolChoice,
    ToolRequest,
    plan_tools,
    reply_parser,
)
from shimmy.models.tools.formats import FORMATS, detect_format, tool_grammar
from shimmy.models.tools.spec import check_tools
from tests.gguf_writer import write_model

TEMPLATES = Path(__file__).parent.parent / "data" / "chat_templates"
FAMILIES = {
    "qwen2.5-7b-instruct": "hermes",
    "qwen3-0.6b": "hermes",
    "hermes-3-llama-3.1-8b-tool-use": "hermes",
    "llama-3.1-8b-instruct": "llama3",
    "llama-3.2-3b-instruct": "llama3",
    "llama-3.3-70b-instruct": "llama3",
    "mistral-nemo-instruct-2407": "mistral",
    "mistral-small-3.2-24b-instruct-2506": "mistral-args",
}

WEATHER = Tool(
    "get_weather",
    "The weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
TIME = Tool("get_time", "The time now", {"type": "object", "properties": {}})

# A conversation with a call and its result, in OpenAI's shapes (what dialects pass).
HISTORY: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_abc123",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_abc123", "content": "21 C, sunny"},
]


def template_of(name: str, tmp_path: Path) -> ChatTemplate:
    """The template as shimmy reads it from a GGUF that carries it."""
    source = (TEMPLATES / f"{name}.jinja").read_text()
    path = write_model(tmp_path / f"{name}.gguf", name=name, **{"tokenizer.chat_template": source})
    info = read_gguf_info(path)
    assert info.chat_template == source
    return ChatTemplate.for_model(info.chat_template, "<s>", "</s>")


def no_markers(_: object) -> frozenset[int]:
    return frozenset()


def some_markers(_: object) -> frozenset[int]:
    return frozenset({7})


@pytest.mark.parametrize(("name", "family"), FAMILIES.items())
def test_each_family_is_read_from_its_own_template(name, family, tmp_path):
    template = template_of(name, tmp_path)
    assert detect_format(template.source).name == family


def test_a_template_that_knows_nothing_of_tools_is_generic(smollm2_path):
    info = read_gguf_info(smollm2_path)
    assert info.chat_template is not None
    assert detect_format(info.chat_template).name == "generic"
    assert detect_format("", is_fallback=True).name == "generic"


# What each family's own template makes of the history's call and result.
RENDERED_CALL = {
    "hermes": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>',
    "llama3": '{"name": "get_weather", "parameters": {"city": "Paris"}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}, "id": "',
    "mistral-args": '[ARGS]{"city": "Paris"}',  # after [TOOL_CALLS]get_weather[CALL_ID]id
}


@pytest.mark.parametrize(("name", "family"), FAMILIES.items())
def test_tools_calls_and_results_render_through_the_models_own_template(name, family, tmp_path):
    template = template_of(name, tmp_path)
    request = ToolRequest((WEATHER, TIME), ToolChoice("auto"))
    plan = plan_tools(template, HISTORY, request, None, some_markers)
    prompt = template.render(plan.messages, tools=plan.template_tools)
    assert "The weather in a city" in prompt and "get_time" in prompt  # the tools
    assert RENDERED_CALL[family] in prompt  # the call, as the family writes it
    assert "21 C, sunny" in prompt  # the result
    assert plan.tools is not None and plan.tools.format == family
    assert plan.grammar is not None


def test_mistral_ids_are_nine_letters_and_digits_in_the_prompt(tmp_path):
    template = template_of("mistral-nemo-instruct-2407", tmp_path)
    plan = plan_tools(template, HISTORY, ToolRequest((WEATHER,)), None, some_markers)
    prompt = template.render(plan.messages, tools=plan.template_tools)
    call_id = plan.messages[2]["tool_calls"][0]["id"]
    assert len(call_id) == 9 and call_id.isalnum()
    assert f'"call_id": "{call_id}"' in prompt  # the result names the same call


def test_the_generic_format_describes_the_tools_and_shows_calls_as_envelopes(smollm2_path):
    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    plan = plan_tools(template, HISTORY, ToolRequest((WEATHER,)), None, no_markers)
    prompt = template.render(plan.messages, tools=plan.template_tools)
    assert plan.template_tools is None  # the template is not told: the system message is
    assert "You are terse." in prompt and '"name": "get_weather"' in prompt
    assert '{"response": "<your reply>"}' in prompt
    assert '{"tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}}' in prompt
    assert '{"tool_response": {"name": "get_weather", "content": "21 C, sunny"}}' in prompt


def test_tool_choice_none_renders_without_asking_for_calls(smollm2_path):
    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    request = ToolRequest((WEATHER,), ToolChoice("none"))
    plan = plan_tools(template, HISTORY, request, None, no_markers)
    assert plan.grammar is None and plan.tools is None
    assert "You can use these tools" not in template.render(plan.messages)


def test_auto_without_the_marker_token_is_parsed_but_not_constrained(tmp_path):
    template = template_of("qwen2.5-7b-instruct", tmp_path)
    request = ToolRequest((WEATHER,), ToolChoice("auto"))
    free = plan_tools(template, HISTORY[:2], request, None, no_markers)
    assert free.grammar is None and free.tools is not None
    lazy = plan_tools(template, HISTORY[:2], request, None, some_markers)
    assert lazy.grammar is not None and lazy.grammar_trigger == "<tool_call>"
    forced = plan_tools(
        template, HISTORY[:2], ToolRequest((WEATHER,), ToolChoice("required")), None, no_markers
    )
    assert forced.grammar is not None and forced.grammar_trigger == ""


def test_response_format_and_tools_together_are_refused(smollm2_path):
    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    with pytest.raises(ShimmyError, match="response_format cannot be combined with tools"):
        plan_tools(template, HISTORY[:2], ToolRequest((WEATHER,)), "root ::= x", no_markers)


# -- bad tools ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tools", "choice", "message"),
    [
        ((Tool(""),), ToolChoice(), "must be 1-64 letters"),
        ((Tool("a b"),), ToolChoice(), "must be 1-64 letters"),
        ((Tool("x" * 65),), ToolChoice(), "must be 1-64 letters"),
        ((WEATHER, WEATHER), ToolChoice(), "Two tools are named 'get_weather'"),
        ((WEATHER,), ToolChoice("named", "get_time"), "names the tool 'get_time'"),
        ((), ToolChoice("required"), "no tools"),
        (tuple(Tool(f"t{i}") for i in range(129)), ToolChoice(), "At most 128 tools"),
    ],
)
def test_bad_tools_are_named_exactly(tools, choice, message):
    with pytest.raises(ShimmyError, match=message) as error:
        check_tools(tools, choice)
    assert error.value.code == "invalid_request"


def test_a_schema_over_the_grammar_limits_names_its_tool():
    huge = Tool(
        "big",
        parameters={"type": "object", "properties": {"s": {"type": "string", "maxLength": 20000}}},
    )
    with pytest.raises(ShimmyError, match="maxLength") as error:
        tool_grammar(FORMATS["generic"], ToolRequest((huge,), ToolChoice("required")))
    assert error.value.code == "invalid_request"


# -- grammars ---------------------------------------------------------------------------


@pytest.mark.parametrize("family", sorted(FORMATS))
@pytest.mark.parametrize(
    "choice",
    [
        ToolChoice("auto"),
        ToolChoice("auto", parallel=False),
        ToolChoice("required"),
        ToolChoice("named", "get_weather", parallel=False),
    ],
    ids=lambda c: f"{c.mode}-{'parallel' if c.parallel else 'single'}",
)
def test_every_grammar_parses_in_llama_cpp_with_a_real_vocabulary(family, choice, smollm2_vocab):
    import llama_cpp

    grammar = tool_grammar(FORMATS[family], ToolRequest((WEATHER, TIME), choice))
    assert grammar is not None
    assert "root ::=" in grammar.text
    if choice.mode == "named":
        assert "get-time-arguments" not in grammar.text  # only the named tool
    assert bool(grammar.trigger) == (not choice.forced and family != "generic")
    # The engine's parse, with a vocabulary; lazy when there is a trigger token.
    sampler = init_grammar_sampler(smollm2_vocab, grammar.text, (1,) if grammar.trigger else ())
    assert sampler
    llama_cpp.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def smollm2_vocab(smollm2_path) -> Iterator[Any]:
    from shimmy.models.llamacpp import Model

    model = Model(smollm2_path)
    yield model.vocab
    model.close()


# -- parsing replies ----------------------------------------------------------------------

REPLIES = {
    "hermes": (
        'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", '
        '"unit": "celsius"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}'
        "\n</tool_call>"
    ),
    "llama3": '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "celsius"}}; '
    '{"name": "get_time", "parameters": {}}',
    "mistral": '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": '
    '"celsius"}, "id": "a1b2c3d4e"}, {"name": "get_time", "arguments": {}}]',
    "mistral-args": '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris", "unit": "celsius"}'
    "[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{}",
    "generic": '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", '
    '"unit": "celsius"}}, {"name": "get_time", "arguments": {}}]}',
}
CALLS = [("get_weather", {"city": "Paris", "unit": "celsius"}), ("get_time", {})]


def parse(family: str, pieces: list[str]) -> tuple[Any, list[Any]]:
    parser = reply_parser(ToolRequest((WEATHER, TIME), format=family))
    events = [e for piece in pieces for e in parser.feed(piece)] + parser.close()
    return parser, events


def split_every(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("family", sorted(REPLIES))
@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, 1000])
def test_calls_parse_whatever_the_pieces_and_stream_what_they_are(family, size):
    """Markers split across pieces never reach the text; the events assembled
    give the calls the parser reports whole, and those are the model's calls."""
    parser, events = parse(family, split_every(REPLIES[family], size))
    assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == CALLS
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == parser.content
    for marker in ("<tool_call>", "</tool_call>", "[TOOL_CALLS]", "[ARGS]", "tool_calls"):
        assert marker not in text
    starts = [e for e in events if isinstance(e, CallStarted)]
    assert [(s.index, s.name) for s in starts] == [(0, "get_weather"), (1, "get_time")]
    assert len({s.id for s in starts}) == 2
    for index, call in enumerate(parser.calls):
        fragments = [e.text for e in events if isinstance(e, CallArguments) and e.index == index]
        assert "".join(fragments) == call.arguments
        assert call.id == starts[index].id
    if size < 5:  # arguments stream in fragments, not at the end in one piece
        assert len([e for e in events if isinstance(e, CallArguments)]) > 2


def test_text_around_hermes_calls_is_content():
    parser, _ = parse("hermes", split_every(REPLIES["hermes"], 4))
    assert parser.content.strip() == "Let me check."


@pytest.mark.parametrize(
    ("family", "reply"),
    [
        ("hermes", "I would use <tool_call> here, but no."),
        ("hermes", "A <tool_call> with <b>text</b>"),
        ("mistral", "[TOOL_CALLS] is a marker"),
        ("llama3", '{"answer": 4} is JSON, not a call'),
        ("llama3", "Plain words."),
        ("generic", "not an envelope at all"),
    ],
)
def test_a_botched_call_is_text_never_an_error(family, reply):
    for size in (1, 3, 100):
        parser, _ = parse(family, split_every(reply, size))
        assert parser.calls == []
        assert parser.content == reply and parser.unfinished == ""


def test_a_call_cut_short_is_unfinished_not_a_call():
    reply = 'Sure <tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa'
    parser, events = parse("hermes", split_every(reply, 3))
    assert parser.calls == [] and parser.content == "Sure "
    assert parser.unfinished.startswith('{"name": "get_weather"')
    assert any(isinstance(e, CallStarted) for e in events)  # a stream had begun it


def test_the_generic_reply_text_is_decoded_as_it_streams():
    reply = '{"response": "Caf\\u00e9 \\"ok\\"\\nline \\ud83d\\ude00"}'
    for size in (1, 2, 7):
        parser, events = parse("generic", split_every(reply, size))
        assert parser.calls == []
        assert parser.content == 'Café "ok"\nline 😀'


def test_mistral_call_ids_are_nine_alphanumerics():
    parser, _ = parse("mistral", [REPLIES["mistral"]])
    assert all(len(c.id) == 9 and c.id.isalnum() for c in parser.calls)
