"""response_format -> GBNF (shimmy/models/grammar.py), checked with llama.cpp's own parser."""

from __future__ import annotations

import threading

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


# -- limits on what a schema may ask (shimmy/models/grammar_limits.py) ----------------


def schema_format(schema):
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def nested_objects(levels: int, leaf=None):
    schema = leaf or {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def refused(schema) -> ShimmyError:
    with pytest.raises(ShimmyError) as err:
        grammar_for_response_format(schema_format(schema))
    assert err.value.code == "invalid_request"
    assert err.value.status == 400
    return err.value


def string_with(**keywords):
    return {"type": "string", **keywords}


def integers(**keywords):
    return {"type": "array", "items": {"type": "integer"}, **keywords}


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        # The bombs of issue 12: each of these ended the process with SIGSEGV.
        (string_with(maxLength=20000), "maxLength 20000 (the limit is 1000)"),
        (string_with(pattern="^a{0,20000}$"), "repeat count of 20000 (the limit is 1000)"),
        (integers(maxItems=20000), "maxItems 20000 (the limit is 1000)"),
        # Each bound, just over it.
        (string_with(maxLength=1001), "maxLength 1001 (the limit is 1000)"),
        (string_with(minLength=1001), "minLength 1001 (the limit is 1000)"),
        (integers(minItems=1001), "minItems 1001 (the limit is 1000)"),
        (integers(maxItems=1001), "maxItems 1001 (the limit is 1000)"),
        (
            {"type": "array", "prefixItems": [{"type": "integer"}] * 1001},
            "1001 prefixItems entries (the limit is 1000)",
        ),
        (string_with(pattern="^a{1001}$"), "repeat count of 1001 (the limit is 1000)"),
        (string_with(pattern="^a{1001,}$"), "repeat count of 1001 (the limit is 1000)"),
        (string_with(pattern="^a{2,1001}$"), "repeat count of 1001 (the limit is 1000)"),
        (
            string_with(pattern="^a{0,600}b{0,401}$"),
            "pattern repeats adding up to 1001 (the limit is 1000)",
        ),
        (
            string_with(pattern="^([a-z]{1,20}){0,20}$"),
            "nested pattern repeats of 20 x 20 (the limit is 100)",
        ),
        # Unbounded repeats weigh 10 (nested ones are cheap for llama.cpp, which
        # folds equal parse stacks, but three deep is more than schemas need).
        (string_with(pattern="^((a+)+)+$"), "nested pattern repeats of 10 x 100"),
        (string_with(pattern="^(a?){0,100}$"), "repeats a part that can match nothing"),
        (string_with(pattern="^(a*)+$"), "repeats a part that can match nothing"),
        (string_with(pattern="^(|a){0,5}$"), "repeats a part that can match nothing"),
        (string_with(pattern="^(a{0,3}b?){2}$"), "repeats a part that can match nothing"),
        (string_with(pattern="^" + "a" * 1000 + "$"), "a pattern of 1002 characters"),
        (nested_objects(40), "nesting 65 levels deep (the limit is 64)"),
        (
            {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(257)}},
            "257 properties in one object (the limit is 256)",
        ),
        (
            {
                "type": "object",
                "properties": {
                    f"o{j}": {
                        "type": "object",
                        "properties": {f"p{i}": {"type": "integer"} for i in range(250)},
                    }
                    for j in range(4)
                },
            },
            "1004 properties in all (the limit is 1000)",
        ),
        ({"enum": list(range(1001))}, "1001 enum values (the limit is 1000)"),
        (
            {"anyOf": [{"enum": list(range(600))}, {"enum": list(range(400))}, {"const": 1}]},
            "1001 enum values (the limit is 1000)",
        ),
        (
            {"anyOf": [{"type": "integer"}] * 257},
            "257 anyOf/oneOf/allOf branches and types (the limit is 256)",
        ),
        (
            {"type": "object", "description": "x" * 140_000},
            "a schema of 140034 bytes (the limit is 131072)",
        ),
        # maxItems copies the item rule's name, which grows with every level.
        (
            nested_objects(
                0,
                {
                    "type": "object",
                    "properties": {
                        "n" * 600: {
                            "type": "object",
                            "properties": {"m" * 600: integers(minItems=1000)},
                        }
                    },
                },
            ),
            "a grammar of about",
        ),
    ],
)
def test_a_schema_over_a_limit_is_a_400_naming_it(schema, words):
    error = refused(schema)
    assert "more than shimmy allows" in error.message
    assert words in error.message


def test_the_refusal_says_where_in_the_schema():
    schema = {"type": "object", "properties": {"bio": string_with(maxLength=5000)}}
    assert refused(schema).details == "at #/properties/bio"


def test_json_object_with_a_schema_beside_it_has_the_same_limits():
    with pytest.raises(ShimmyError) as err:
        grammar_for_response_format({"type": "json_object", "schema": string_with(maxLength=20000)})
    assert "maxLength 20000" in err.value.message


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        (string_with(maxLength="20"), "maxLength must be a whole number"),
        (string_with(maxLength=-1), "maxLength must be a whole number"),
        (string_with(minLength=2.5), "minLength must be a whole number"),
        (integers(maxItems=True), "maxItems must be a whole number"),
        (string_with(minLength=5, maxLength=2), "minLength is more than its maxLength"),
        (integers(minItems=3, maxItems=1), "minItems is more than its maxItems"),
        (string_with(pattern=5), "pattern must be a string"),
        ({"enum": "abc"}, "enum must be a list"),
        (string_with(pattern="^a{-5}$"), "must not be negative"),
    ],
)
def test_counting_keywords_of_the_wrong_kind_are_refused(schema, words):
    assert words in refused(schema).message


@pytest.mark.parametrize(
    "schema",
    [
        string_with(maxLength=1000),
        string_with(minLength=1000),
        string_with(minLength=10, maxLength=1000),
        integers(maxItems=1000),
        {"type": "array", "items": {"type": "string"}, "minItems": 1000},
        string_with(pattern="^a{0,1000}$"),
        string_with(pattern="^a{0,500}b{0,500}$"),
        string_with(pattern="^([0-9]{1,3}[.]){3}[0-9]{1,3}$"),
        string_with(pattern="^([a-z]{1,10}){0,10}$"),
        string_with(pattern="^[a-z0-9._%+-]{1,64}@[a-z0-9.-]{1,255}[.][a-z]{2,10}$"),
        string_with(pattern="^([a-z]+ )*[a-z]+$"),
        string_with(pattern="^(ab?)+$"),
        string_with(pattern="^(a+)*$"),
        string_with(pattern="^[+]?[0-9]{1,3}[- ]?[0-9]{3,14}$"),
        nested_objects(30),
        {"enum": [f"value-{i}" for i in range(1000)]},
        {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(256)}},
        {"anyOf": [{"type": "integer"}] * 256},
        # Property names that are keywords are names, not keywords.
        {
            "type": "object",
            "properties": {
                "maxLength": {"type": "string"},
                "pattern": {"type": "integer"},
                "enum": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            },
            "required": ["maxLength", "pattern", "enum"],
        },
    ],
)
def test_schemas_within_the_limits_give_grammars_llama_cpp_parses(schema):
    grammar = grammar_for_response_format(schema_format(schema))
    assert grammar is not None and "root ::=" in grammar
    check_grammar(grammar)


def test_a_realistic_structured_output_schema_fits_the_limits():
    item = {
        "type": "object",
        "properties": {
            "sku": string_with(pattern="^[A-Z]{3}-[0-9]{4}$"),
            "name": string_with(minLength=1, maxLength=200),
            "price": {"type": "number"},
            "tags": {"type": "array", "items": string_with(maxLength=30), "maxItems": 10},
            "status": {"enum": ["in_stock", "backorder", "discontinued"]},
            "dimensions": {
                "type": "object",
                "properties": {k: {"type": "number"} for k in ("w", "h", "d")},
                "required": ["w", "h", "d"],
                "additionalProperties": False,
            },
        },
        "required": ["sku", "name", "price", "status"],
    }
    schema = {
        "type": "object",
        "properties": {
            "order_id": string_with(format="uuid"),
            "customer": {"$ref": "#/$defs/customer"},
            "items": {"type": "array", "items": item, "minItems": 1, "maxItems": 50},
            "notes": {"anyOf": [string_with(maxLength=1000), {"type": "null"}]},
        },
        "required": ["order_id", "customer", "items"],
        "$defs": {
            "customer": {
                "type": "object",
                "properties": {
                    "email": string_with(pattern="^[a-z0-9._-]{1,64}@[a-z0-9.-]{1,100}$"),
                    "country": {"enum": [f"C{i:03d}" for i in range(250)]},
                },
                "required": ["email"],
            }
        },
    }
    grammar = grammar_for_schema(schema)
    assert '"\\"customer\\""' in grammar


# -- the grammar text, and where it is parsed ----------------------------------------


def test_a_grammar_nested_too_deep_is_refused_before_llama_cpp_parses_it():
    # 3,000 nested groups: llama.cpp would parse this (its stack fails at ~18,750 on
    # 8 MiB), but no schema within the limits makes more than ~1,000.
    grammar = "root ::= " + "(" * 3000 + '"a"' + ")" * 3000
    with pytest.raises(ShimmyError) as err:
        check_grammar(grammar)
    assert "grammar groups nested 3000 deep (the limit is 2000)" in err.value.message


def test_quoted_parentheses_do_not_count_as_nesting():
    check_grammar('root ::= "' + "(" * 3000 + '" [(]')


def test_a_grammar_over_the_size_limit_is_refused():
    grammar = "root ::= " + " | ".join(f'"w{i}"' for i in range(40_000))
    with pytest.raises(ShimmyError) as err:
        check_grammar(grammar)
    assert "(the limit is 262144)" in err.value.message


def test_grammars_are_parsed_on_the_big_stack_grammar_thread(monkeypatch):
    import llama_cpp

    from shimmy.models import grammar as grammar_module

    seen = []
    real = llama_cpp.llama_sampler_init_grammar

    def spy(vocab, text, root):
        seen.append(threading.current_thread().name)
        return real(vocab, text, root)

    monkeypatch.setattr(llama_cpp, "llama_sampler_init_grammar", spy)
    grammar_for_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    check_grammar(JSON_OBJECT_GBNF)
    assert seen == ["shimmy-grammar", "shimmy-grammar"]
    assert grammar_module.GRAMMAR_THREAD_STACK_BYTES >= 256 * 1024 * 1024


def test_an_exception_on_the_grammar_thread_reaches_the_caller_and_the_thread_lives():
    from shimmy.models.grammar import on_grammar_thread

    def fail():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        on_grammar_thread(fail)
    assert on_grammar_thread(lambda: threading.current_thread().name) == "shimmy-grammar"


@pytest.mark.parametrize("control", ["\x1b", "\x9b", "\x00", "\x7f"])
def test_control_characters_never_reach_llama_cpps_stderr(control):
    # llama.cpp prints a grammar it cannot parse onto stderr, the terminal of
    # `shimmy serve`: a pattern's raw escape codes would reach it.
    error = refused(string_with(pattern=f"^a{control}b$"))
    assert "may not contain control characters" in error.message


def test_escaped_control_characters_in_a_pattern_are_fine():
    grammar = grammar_for_schema(string_with(pattern="^a\\x1b\tb$"))
    assert "\x1b" not in grammar


def test_a_long_property_name_is_cut_in_the_refusal():
    schema = {"type": "object", "properties": {"n" * 100_000: string_with(maxLength=5000)}}
    details = refused(schema).details
    assert details is not None and len(details) < 300
