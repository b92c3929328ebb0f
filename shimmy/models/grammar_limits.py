"""How much a JSON schema may ask of llama.cpp's grammar machinery, checked
before any grammar is built.

A client's ``response_format`` becomes a GBNF grammar (llama-cpp-python's
converter), which llama.cpp parses and then runs at every sampled token. Three
things can go wrong, and a web page can trigger all of them:

- **The parse overflows the stack.** llama.cpp's parser recurses once per
  nested group, and the converter writes ``maxLength: n``, ``maxItems: n`` and
  a pattern's ``{0,n}`` as ``n`` nested optional groups. Measured with
  llama-cpp-python 0.3.36 on x86-64 Linux: ``maxLength`` 18,750 (about 447 bytes
  of stack per level) kills the process on the main thread and on a default
  Python thread (8 MiB, the ``ulimit -s`` default), 2,343 on a 1 MiB thread;
  rule chains (``r0 ::= r1``, ...) cost about 128 bytes a rule (65,625 on
  8 MiB). llama.cpp itself refuses an optional run longer than 1,000 ("exceeds
  sane defaults"), but only after recursing through all of it.
- **Sampling gets slow without bound.** llama.cpp keeps one parse stack per
  way the text so far can be read. A repeated part that can match nothing,
  ``^(a?){0,100}$``, took 7.6 s for one token (SmolLM2's 49,152-token vocab, on
  the 2-core test machine; ``{0,1000}`` did not finish a token in two minutes);
  nested repeats multiply: ``([a-z]{1,20}){0,20}`` 0.7 s a token where
  ``([a-z]{1,10}){0,10}`` takes 52 ms and a plain schema 10-40 ms. Every
  alternative that is still open costs about as much again: 1,000 enum values
  with a shared prefix take 0.65 s a token while the prefix lasts, 300 take
  0.24 s, 100 take 46 ms.
- **The converter takes time and memory.** Optional properties cost it
  quadratic time (500 in one object: 0.53 s, 900: 2.7 s), and each repeat
  copies the repeated rule's name, which grows with every level of nesting.

The limits below sit where llama.cpp already stops (1,000 for one repeat) or
well under where the costs above start to matter, and every structured-output
schema seen in practice fits them with room to spare (OpenAI's own strict mode
allows 1,000 enum values and 10 levels of object nesting). The grammar itself
is then parsed on a thread with a far bigger stack (``shimmy.models.grammar``),
so even a grammar these checks failed to foresee cannot overflow it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from shimmy.errors import ShimmyError

# -- the limits -----------------------------------------------------------------------

# minLength / maxLength of a string. llama.cpp refuses an optional run over 1,000
# anyway; 1,000 is 18x under the 8 MiB stack's crash point (18,750).
MAX_STRING_LENGTH = 1000
# minItems / maxItems of an array, and the number of prefixItems (tuple) entries.
MAX_ARRAY_ITEMS = 1000
# One repeat count m or n in a pattern's {m}, {m,} or {m,n}.
MAX_PATTERN_REPEAT = 1000
# All of one pattern's repeats together, nested repeats multiplied: a pattern may
# ask for as much as one maxLength does (a{0,500}b{0,500} is 1,000).
MAX_PATTERN_REPEAT_TOTAL = 1000
# A repeat inside a repeated group, their counts multiplied: (\d{1,3}\.){3} is 9.
# 100 measured 52 ms a token, 400 0.7 s.
MAX_NESTED_PATTERN_REPEAT = 100
# What an unbounded repeat (*, +, {m,}) counts as in the two totals above.
UNBOUNDED_REPEAT_WEIGHT = 10
# Characters of one pattern.
MAX_PATTERN_CHARS = 1000
# Containers (objects and lists) inside one another in the schema's JSON: an object
# nested in an object is two (the "properties" map and the property's schema),
# so 64 allows 30 levels of objects. The converter recurses per level in Python.
MAX_SCHEMA_DEPTH = 64
# The schema as compact JSON.
MAX_SCHEMA_BYTES = 128 * 1024
# Properties of one object (the converter is quadratic in its optional ones), and
# of the whole schema.
MAX_OBJECT_PROPERTIES = 256
MAX_SCHEMA_PROPERTIES = 1000
# enum values plus const values in the whole schema (OpenAI's strict mode: 1,000).
MAX_ENUM_VALUES = 1000
# anyOf / oneOf / allOf branches and "type" list entries in the whole schema.
MAX_SCHEMA_CHOICES = 256
# The grammar text, estimated from the schema before building it and measured
# after. 256 KiB parses in a few ms; a schema's grammar is usually under 20 KiB.
MAX_GRAMMAR_BYTES = 256 * 1024
# Groups nested in one another in one grammar rule, counted in the text: a
# backstop for output of the converter these checks did not foresee (maxLength
# 1,000 nests 1,001 deep; an 8 MiB stack fails at 18,750, the grammar thread's
# 256 MiB one parsed 500,000).
MAX_GRAMMAR_NESTING = 2000

# Keywords whose value is a map of subschemas, a subschema, or a list of them.
_SCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)
_SCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems"})
_SCHEMA_VALUES = frozenset(
    {
        "items",
        "additionalProperties",
        "additionalItems",
        "unevaluatedProperties",
        "unevaluatedItems",
        "not",
        "if",
        "then",
        "else",
        "contains",
        "propertyNames",
    }
)


def over_limit(what: str, limit: int, where: str | None = None) -> ShimmyError:
    """The ``invalid_request`` for a schema or grammar over one of the limits."""
    return ShimmyError(
        "invalid_request",
        f"The JSON schema asks for more than shimmy allows: {what} (the limit is {limit})",
        f"at {_short(where)}" if where else None,
    )


def _bad_keyword(keyword: str, expected: str, where: str) -> ShimmyError:
    return ShimmyError(
        "invalid_request",
        f"The JSON schema's {keyword} must be {expected}",
        f"at {_short(where)}",
    )


# -- the schema -----------------------------------------------------------------------


@dataclass
class _Totals:
    properties: int = 0
    enum_values: int = 0
    choices: int = 0
    grammar_estimate: int = 0


@dataclass
class _Node:
    value: Any
    where: str
    depth: int
    is_schema: bool
    # Characters of the rule names the converter derives from the path so far.
    name_chars: int = 0


def _short(where: str) -> str:
    """A JSON pointer cut to a readable length (a deep one can be kilobytes)."""
    return where if len(where) <= 200 else where[:100] + "..." + where[-100:]


def _child(where: str, key: object) -> str:
    token = str(key).replace("~", "~0").replace("/", "~1")
    return f"{where}/{token}"


def _count(schema: Mapping[str, Any], keyword: str, limit: int, where: str) -> int | None:
    """A non-negative whole-number keyword, checked against ``limit``."""
    if keyword not in schema:
        return None
    value = schema[keyword]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad_keyword(keyword, "a whole number of at least 0", where)
    if value > limit:
        raise over_limit(f"{keyword} {value}", limit, where)
    return value


def _check_range(schema: Mapping[str, Any], low: str, high: str, limit: int, where: str) -> int:
    """min/max keywords of one kind; returns the larger bound (for the size estimate)."""
    least = _count(schema, low, limit, where)
    most = _count(schema, high, limit, where)
    if least is not None and most is not None and least > most:
        raise ShimmyError(
            "invalid_request",
            f"The JSON schema's {low} is more than its {high}",
            f"at {_short(where)}: {least} > {most}",
        )
    return max(least or 0, most or 0)


def _check_schema_keywords(node: _Node, totals: _Totals) -> None:
    schema = node.value
    where = node.where
    rule_name = node.name_chars + 16  # the name plus the separators around each copy
    length = _check_range(schema, "minLength", "maxLength", MAX_STRING_LENGTH, where)
    totals.grammar_estimate += 8 * length  # "(char " and ")?" per character
    items = _check_range(schema, "minItems", "maxItems", MAX_ARRAY_ITEMS, where)
    totals.grammar_estimate += items * rule_name
    for keyword in ("prefixItems", "items"):
        tuple_items = schema.get(keyword)
        if isinstance(tuple_items, list) and len(tuple_items) > MAX_ARRAY_ITEMS:
            raise over_limit(f"{len(tuple_items)} {keyword} entries", MAX_ARRAY_ITEMS, where)
    if "pattern" in schema:
        pattern = schema["pattern"]
        if not isinstance(pattern, str):
            raise _bad_keyword("pattern", "a string", where)
        units = check_pattern(pattern, _child(where, "pattern"))
        totals.grammar_estimate += (units + 1) * rule_name
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        if len(properties) > MAX_OBJECT_PROPERTIES:
            raise over_limit(
                f"{len(properties)} properties in one object", MAX_OBJECT_PROPERTIES, where
            )
        totals.properties += len(properties)
        if totals.properties > MAX_SCHEMA_PROPERTIES:
            raise over_limit(f"{totals.properties} properties in all", MAX_SCHEMA_PROPERTIES, where)
    if "enum" in schema:
        if not isinstance(schema["enum"], list):
            raise _bad_keyword("enum", "a list", where)
        totals.enum_values += len(schema["enum"])
    if "const" in schema:
        totals.enum_values += 1
    if totals.enum_values > MAX_ENUM_VALUES:
        raise over_limit(f"{totals.enum_values} enum values", MAX_ENUM_VALUES, where)
    for keyword in ("anyOf", "oneOf", "allOf", "type"):
        branches = schema.get(keyword)
        if isinstance(branches, list):
            totals.choices += len(branches)
    if totals.choices > MAX_SCHEMA_CHOICES:
        raise over_limit(
            f"{totals.choices} anyOf/oneOf/allOf branches and types",
            MAX_SCHEMA_CHOICES,
            where,
        )
    if totals.grammar_estimate > MAX_GRAMMAR_BYTES:
        raise over_limit(
            f"a grammar of about {totals.grammar_estimate} bytes", MAX_GRAMMAR_BYTES, where
        )


def _children(node: _Node) -> Iterator[_Node]:
    """The values inside ``node``, each marked as a subschema or as plain data."""
    value = node.value
    depth = node.depth + 1
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield _Node(item, _child(node.where, i), depth, node.is_schema, node.name_chars)
        return
    if not isinstance(value, Mapping):
        return
    for key, item in value.items():
        where = _child(node.where, key)
        schema_like = node.is_schema and isinstance(item, Mapping | list)
        if schema_like and key in _SCHEMA_MAPS and isinstance(item, Mapping):
            # A map of subschemas: each one's rule is named after its key (a $defs
            # entry starts a name of its own, a property extends its parent's).
            base = 0 if key in ("$defs", "definitions") else node.name_chars
            for name, sub in item.items():
                sub_where = _child(where, name)
                names = base + len(str(name)) + 1
                yield _Node(sub, sub_where, depth + 1, True, names)
        elif schema_like and key in _SCHEMA_LISTS | _SCHEMA_VALUES:
            yield _Node(item, where, depth, True, node.name_chars + len(key) + 3)
        else:
            yield _Node(item, where, depth, False)


def check_schema(schema: Any) -> None:
    """Raise ``invalid_request`` naming the limit if ``schema`` asks for more
    than the limits above allow, or uses a counting keyword with a value of the
    wrong kind. Walks the schema with its own stack, so no schema can make this
    check itself recurse too deep."""
    totals = _Totals()
    pending = [_Node(schema, "#", 1, True)]
    while pending:
        node = pending.pop()
        if isinstance(node.value, Mapping | list) and node.depth > MAX_SCHEMA_DEPTH:
            raise over_limit(f"nesting {node.depth} levels deep", MAX_SCHEMA_DEPTH, node.where)
        if node.is_schema and isinstance(node.value, Mapping):
            _check_schema_keywords(node, totals)
        pending.extend(_children(node))
    # Depth is bounded by now, so this cannot recurse too deep.
    size = len(json.dumps(schema, separators=(",", ":"), default=str))
    if size > MAX_SCHEMA_BYTES:
        raise over_limit(f"a schema of {size} bytes", MAX_SCHEMA_BYTES)


# -- patterns -------------------------------------------------------------------------


@dataclass
class _Piece:
    """What one part of a pattern asks for: whether it can match nothing, and its
    repeats (each repeat's count, times the repeats inside it)."""

    nullable: bool
    units: int = 0


@dataclass
class _Group:
    """A parenthesised group (or the whole pattern) being read."""

    start: int
    alternatives: list[list[_Piece]] = field(default_factory=lambda: [[]])

    def close(self) -> _Piece:
        nullable = any(all(p.nullable for p in alt) for alt in self.alternatives)
        units = sum(p.units for alt in self.alternatives for p in alt)
        return _Piece(nullable, units)


def _quantifier(pattern: str, i: int) -> tuple[int, int | None, int] | None:
    """The quantifier at ``pattern[i]`` as (least, most or None, index after it),
    read the way llama-cpp-python's converter reads it; None if there is none or
    the converter will refuse it (it says why itself)."""
    c = pattern[i]
    if c == "*":
        return 0, None, i + 1
    if c == "+":
        return 1, None, i + 1
    if c == "?":
        return 0, 1, i + 1
    if c != "{":
        return None
    end = pattern.find("}", i)
    if end < 0:
        return None
    nums = [s.strip() for s in pattern[i + 1 : end].split(",")]
    most: int | None
    try:
        if len(nums) == 1:
            least = most = int(nums[0])
        elif len(nums) == 2:
            least = int(nums[0]) if nums[0] else 0
            most = int(nums[1]) if nums[1] else None
        else:
            return None
    except ValueError:
        return None
    return least, most, end + 1


def _repeat(piece: _Piece, least: int, most: int | None, where: str) -> _Piece:
    for count in (least, most):
        if count is not None and count < 0:
            raise ShimmyError(
                "invalid_request",
                "A pattern's repeat count must not be negative",
                f"at {_short(where)}",
            )
        if count is not None and count > MAX_PATTERN_REPEAT:
            raise over_limit(f"a pattern repeat count of {count}", MAX_PATTERN_REPEAT, where)
    if piece.nullable and (most is None or most > 1):
        # (a?){0,n}: llama.cpp keeps a parse stack for every way of spreading the
        # text over the repeats; 7.6 s a token at n = 100.
        raise ShimmyError(
            "invalid_request",
            "The JSON schema asks for more than shimmy allows: a pattern repeats a part"
            " that can match nothing, like (a?)* (the limit is that a repeated part"
            " matches at least one character)",
            f"at {_short(where)}",
        )
    weight = max(least, UNBOUNDED_REPEAT_WEIGHT) if most is None else most
    if piece.units and weight * piece.units > MAX_NESTED_PATTERN_REPEAT:
        raise over_limit(
            f"nested pattern repeats of {weight} x {piece.units}",
            MAX_NESTED_PATTERN_REPEAT,
            where,
        )
    return _Piece(piece.nullable or least == 0, weight * max(1, piece.units))


def check_pattern(pattern: str, where: str) -> int:
    """Raise ``invalid_request`` if ``pattern`` asks for more than the limits
    allow; returns its repeat total. Syntax the converter refuses is left for it
    to refuse (with its own message)."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise over_limit(f"a pattern of {len(pattern)} characters", MAX_PATTERN_CHARS, where)
    body = pattern[1:] if pattern.startswith("^") else pattern
    body = body[:-1] if body.endswith("$") else body
    groups = [_Group(0)]
    i = 0
    while i < len(body):
        c = body[i]
        sequence = groups[-1].alternatives[-1]
        quantifier = _quantifier(body, i)
        if quantifier is not None:
            least, most, i = quantifier
            if sequence:
                sequence[-1] = _repeat(sequence[-1], least, most, where)
            continue
        if c == "(":
            groups.append(_Group(i))
        elif c == ")" and len(groups) > 1:
            piece = groups.pop().close()
            groups[-1].alternatives[-1].append(piece)
        elif c == "|":
            groups[-1].alternatives.append([])
        elif c == "[":
            # One character of a class, up to the first unescaped "]".
            i += 1
            while i < len(body) and body[i] != "]":
                i += 2 if body[i] == "\\" else 1
            sequence.append(_Piece(nullable=False))
        elif c == "\\":
            i += 1
            sequence.append(_Piece(nullable=False))
        else:
            sequence.append(_Piece(nullable=False))
        i += 1
    while len(groups) > 1:  # unbalanced: the converter will refuse it
        piece = groups.pop().close()
        groups[-1].alternatives[-1].append(piece)
    units = groups[0].close().units
    if units > MAX_PATTERN_REPEAT_TOTAL:
        raise over_limit(f"pattern repeats adding up to {units}", MAX_PATTERN_REPEAT_TOTAL, where)
    return units


# -- the grammar ----------------------------------------------------------------------

# C0 controls but tab, newline and carriage return; DEL; C1 controls (0x9b is CSI).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Quoted strings, character classes and comments, whose parentheses do not count
# (removed by the regex engine, fast even for 256 KiB), then all but parentheses.
_QUOTED = re.compile(r'"(?:\\.|[^"\\])*"?|\[(?:\\.|[^\]\\])*\]?|#[^\n]*')
_NOT_PAREN = re.compile(r"[^()]+")


def check_grammar_text(grammar: str) -> None:
    """Raise ``invalid_request`` if the GBNF text is over the size limit or nests
    groups deeper than :data:`MAX_GRAMMAR_NESTING` (quoted strings and character
    classes skipped, as llama.cpp's parser reads them)."""
    size = len(grammar.encode("utf-8"))
    if size > MAX_GRAMMAR_BYTES:
        raise over_limit(f"a grammar of {size} bytes", MAX_GRAMMAR_BYTES)
    control = _CONTROL.search(grammar)
    if control:
        # llama.cpp prints a grammar it cannot parse straight onto stderr (the
        # terminal of `shimmy serve`), so no client text may carry escape codes there.
        raise ShimmyError(
            "invalid_request",
            "The JSON schema's grammar may not contain control characters",
            f"found {control.group()!r} (write it escaped in the pattern, like \\x1b)",
        )
    parens = _NOT_PAREN.sub("", _QUOTED.sub("", grammar))
    if parens.count("(") <= MAX_GRAMMAR_NESTING:
        return  # cannot nest deeper than it has groups
    depth = deepest = 0
    for paren in parens:
        depth = depth + 1 if paren == "(" else max(0, depth - 1)
        deepest = max(deepest, depth)
    if deepest > MAX_GRAMMAR_NESTING:
        raise over_limit(f"grammar groups nested {deepest} deep", MAX_GRAMMAR_NESTING)
