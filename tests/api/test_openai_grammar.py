"""response_format -> GBNF (shimmy/models/grammar.py), checked with llama.cpp's own parser."""

from __future__ import annotations

import pytest

from shimmy.errors import ShimmyError
from shimmy.models.grammar import (
    JSON_OBJECT_GBNF,
    check_grammar,
    grammar_for_response_format,
    grammar_for_schema,
)


def test_text_and_missing_formats_need_no_grammar():
    assert grammar_for_response_format(None) is None
    assert grammar_for_response_format({}) is None
    assert grammar_for_response_format({"type": "text"}) is None


def test_json_object_is_an_object_grammar_llama_cpp_parses():
    grammar = grammar_for_response_format({"type": "json_object"})
    assert grammar == JSON_OBJECT_GBNF
    assert "root   ::= object" in grammar
    check_grammar(grammar)


def test_json_schema_gives_a_grammar_naming_each_property():
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3},
            "home": {"$ref": "#/$defs/place"},
        },
        "required": ["name", "home"],
        "additionalProperties": False,
        "$defs": {"place": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
    grammar = grammar_for_response_format(
        {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    )
    assert grammar is not None
    for name in ("name", "tags", "home", "city"):
        assert f'"\\"{name}\\""' in grammar
    check_grammar(grammar)


def test_json_object_with_a_schema_uses_it_like_llama_cpp_server():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    grammar = grammar_for_response_format({"type": "json_object", "schema": schema})
    assert grammar == grammar_for_schema(schema)


def test_json_schema_without_schema_is_any_object():
    fmt = {"type": "json_schema", "json_schema": {"name": "anything"}}
    assert grammar_for_response_format(fmt) == JSON_OBJECT_GBNF


@pytest.mark.parametrize(
    ("fmt", "words"),
    [
        ({"type": "xml"}, "'xml' is not supported"),
        ({"type": "json_schema"}, "json_schema is required"),
        ({"type": "json_schema", "json_schema": {"schema": [1]}}, "must be an object"),
        (
            {"type": "json_schema", "json_schema": {"schema": {"$ref": "https://example.com/s"}}},
            "cannot be turned into a grammar",
        ),
    ],
)
def test_unusable_formats_are_invalid_requests(fmt, words):
    with pytest.raises(ShimmyError) as err:
        grammar_for_response_format(fmt)
    assert err.value.code == "invalid_request"
    assert words in err.value.message


def test_check_grammar_rejects_what_llama_cpp_cannot_parse():
    with pytest.raises(ShimmyError) as err:
        check_grammar("root ::= undefined-rule")
    assert err.value.code == "invalid_request"
