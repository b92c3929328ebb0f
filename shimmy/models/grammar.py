"""OpenAI's ``response_format`` as a llama.cpp grammar (GBNF).

The grammar constrains sampling token by token, so JSON mode output always
parses and json_schema output always matches its schema, unless ``max_tokens``
cuts it short (the finish reason then says ``length``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shimmy.errors import ShimmyError

# llama.cpp's JSON grammar (grammars/json.gbnf) with an object at the root, as
# OpenAI's JSON mode promises an object. Whitespace between tokens is bounded so
# a small model cannot spend its whole budget on indentation.
JSON_OBJECT_GBNF = r"""
root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4})
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

ws ::= | " " | "\n" [ \t]{0,20}
"""


def grammar_for_schema(schema: Any) -> str:
    """GBNF that accepts exactly the JSON documents valid under ``schema``.

    Raises ``invalid_request`` for a schema llama.cpp's converter cannot handle.
    """
    if not isinstance(schema, Mapping):
        raise ShimmyError(
            "invalid_request",
            "The JSON schema must be an object",
            f"got {type(schema).__name__}",
        )
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        grammar = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare ValueError/KeyError/...
        raise ShimmyError(
            "invalid_request",
            "The JSON schema cannot be turned into a grammar",
            f"{type(exc).__name__}: {exc}",
        ) from exc
    check_grammar(grammar)
    return grammar


def grammar_for_response_format(response_format: Mapping[str, Any] | None) -> str | None:
    """The grammar for an OpenAI ``response_format``, or None for plain text.

    ``{"type": "json_object"}`` gives any JSON object (llama.cpp's server also
    reads a ``schema`` beside it, and so do we); ``{"type": "json_schema",
    "json_schema": {"schema": {...}}}`` gives documents valid under the schema.
    """
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
        return JSON_OBJECT_GBNF if schema is None else grammar_for_schema(schema)
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, Mapping):
            raise ShimmyError(
                "invalid_request",
                "response_format.json_schema is required when type is 'json_schema'",
            )
        schema = spec.get("schema")
        return JSON_OBJECT_GBNF if schema is None else grammar_for_schema(schema)
    raise ShimmyError(
        "invalid_request",
        f"response_format.type {kind!r} is not supported",
        "Use 'text', 'json_object' or 'json_schema'",
    )


def check_grammar(grammar: str) -> None:
    """Parse ``grammar`` with llama.cpp's own parser; ``invalid_request`` if it fails.

    The engine must never be handed a grammar that llama.cpp rejects, so this
    runs before a request is queued. Parsing needs no model vocabulary.
    """
    import llama_cpp

    sampler = llama_cpp.llama_sampler_init_grammar(None, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise ShimmyError("invalid_request", "The grammar does not parse", grammar[:200])
    llama_cpp.llama_sampler_free(sampler)
