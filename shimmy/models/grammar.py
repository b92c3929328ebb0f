"""OpenAI's ``response_format`` as a llama.cpp grammar (GBNF), built and parsed
where no grammar can take the server down.

The grammar constrains sampling token by token, so JSON mode output always
parses and json_schema output always matches its schema, unless ``max_tokens``
cuts it short (the finish reason then says ``length``).

A schema comes from a client, and llama.cpp's grammar parser recurses once per
nested group with no limit of its own: one ``maxLength: 20000`` used to end the
process with SIGSEGV. Two things stop that:

1. :mod:`shimmy.models.grammar_limits` checks what a schema asks for before any
   grammar is built (lengths, repeats, items, nesting, sizes), each failure a 400
   naming the limit.
2. Every conversion and every llama.cpp parse (the check here, and the engine's
   own parse with the vocabulary, :func:`init_grammar_sampler`) runs on one
   thread with a 256 MiB stack. Measured: llama.cpp's parser takes 447 bytes of
   stack per nested group, so the default 8 MiB stack fails at 18,750 levels,
   a 64 MiB one at 150,000, and this one parsed 500,000. A grammar within
   :data:`~shimmy.models.grammar_limits.MAX_GRAMMAR_BYTES` (256 KiB) cannot nest
   deeper than 131,072 (and parsed that in 0.6 s), so even a grammar the limits
   did not foresee cannot overflow it. The stack is reserved address space, not
   memory: only the pages a parse touches are committed (RSS grew by under
   0.5 MiB with the thread started).

Why a thread and not a worker process: the engine must parse the grammar again
with the model's vocabulary and then sample with it, in this process, so a
worker process could only guard a copy of the parse, not the parse and the
sampling the server actually does. A worker also costs more: measured on the
2-core test machine, a spawned worker took 0.55 s to start and 43 MiB of RSS, and
a typical schema's check 0.79 ms through it (0.5 ms of that the round trip),
against 0.13 ms inline and 0.33 ms on the big-stack thread (40 us of it the
hand-off).

Sampling cannot run on that thread (it happens inside each decode step of the
engine), so what a grammar costs per token is bounded by the schema limits
alone; their module docstring has the measurements.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from shimmy.errors import ShimmyError
from shimmy.models.grammar_limits import check_grammar_text, check_schema

log = logging.getLogger(__name__)
T = TypeVar("T")

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


# The grammar thread's stack (see the module docstring for the measurements).
GRAMMAR_THREAD_STACK_BYTES = 256 * 1024 * 1024


class _GrammarThread:
    """One daemon thread with a big stack that runs grammar work handed to it, one
    job at a time (a job within the limits takes milliseconds)."""

    def __init__(self, stack_bytes: int) -> None:
        self._stack_bytes = stack_bytes
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _start(self) -> threading.Thread:
        with self._lock:
            if self._thread is None:
                # stack_size applies to threads started after it, process-wide, so
                # it is restored at once: a thread another part of shimmy starts
                # meanwhile at worst reserves the same address space.
                try:
                    previous = threading.stack_size(self._stack_bytes)
                except (ValueError, RuntimeError) as exc:  # a platform without it
                    log.warning("grammar thread keeps the default stack: %s", exc)
                    previous = None
                try:
                    thread = threading.Thread(
                        target=self._serve, name="shimmy-grammar", daemon=True
                    )
                    thread.start()
                finally:
                    if previous is not None:
                        threading.stack_size(previous)
                self._thread = thread
            return self._thread

    def _serve(self) -> None:
        while True:
            job, future = self._jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed back to the caller, never lost
                future.set_exception(exc)

    def run(self, job: Callable[[], T]) -> T:
        """``job()`` on the grammar thread; its result, or its exception raised here."""
        thread = self._start()
        if threading.current_thread() is thread:
            return job()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((job, future))
        return future.result()


_grammar_thread = _GrammarThread(GRAMMAR_THREAD_STACK_BYTES)


def on_grammar_thread(job: Callable[[], T]) -> T:
    """Run ``job`` on the big-stack grammar thread and return what it returns."""
    return _grammar_thread.run(job)


def grammar_for_schema(schema: Any) -> str:
    """GBNF that accepts exactly the JSON documents valid under ``schema``.

    Raises ``invalid_request`` for a schema over a limit of
    :mod:`shimmy.models.grammar_limits` or one that llama.cpp's converter or
    parser cannot handle.
    """
    if not isinstance(schema, Mapping):
        raise ShimmyError(
            "invalid_request",
            "The JSON schema must be an object",
            f"got {type(schema).__name__}",
        )
    check_schema(schema)
    return on_grammar_thread(lambda: _convert_and_parse(schema))


def _convert_and_parse(schema: Mapping[str, Any]) -> str:
    from shimmy.models.llama_bindings import llama_grammar

    try:
        grammar = llama_grammar.json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises bare ValueError/KeyError/...
        raise ShimmyError(
            "invalid_request",
            "The JSON schema cannot be turned into a grammar",
            f"{type(exc).__name__}: {str(exc)[:200]}",
        ) from exc
    check_grammar_text(grammar)
    _parse(None, grammar)
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
        f"response_format.type {str(kind)[:100]!r} is not supported",
        "Use 'text', 'json_object' or 'json_schema'",
    )


def _parse(vocab: Any, grammar: str, trigger_tokens: Sequence[int] = ()) -> Any:
    """llama.cpp's grammar sampler for ``grammar`` (call on the grammar thread);
    lazy, waiting for one of ``trigger_tokens``, when there are any."""
    import ctypes

    from shimmy.models.llama_bindings import llama_cpp

    if trigger_tokens:
        tokens = (llama_cpp.llama_token * len(trigger_tokens))(*trigger_tokens)
        sampler = llama_cpp.llama_sampler_init_grammar_lazy_patterns(
            vocab,
            grammar.encode("utf-8"),
            b"root",
            (ctypes.c_char_p * 0)(),
            0,
            tokens,
            len(trigger_tokens),
        )
    else:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
    if not sampler:
        raise ShimmyError("invalid_request", "The grammar does not parse", grammar[:200])
    if vocab is None:
        llama_cpp.llama_sampler_free(sampler)
        return None
    return sampler


def check_grammar(grammar: str) -> None:
    """Parse ``grammar`` with llama.cpp's own parser; ``invalid_request`` if it fails
    or is over the grammar limits.

    The engine must never be handed a grammar that llama.cpp rejects, so this
    runs before a request is queued. Parsing needs no model vocabulary.
    """
    check_grammar_text(grammar)
    on_grammar_thread(lambda: _parse(None, grammar))


def init_grammar_sampler(vocab: Any, grammar: str, trigger_tokens: Sequence[int] = ()) -> Any:
    """llama.cpp's grammar sampler for ``grammar`` with a model's vocabulary (the
    engine's parse), made on the grammar thread; the caller owns and frees it.
    With ``trigger_tokens`` it is lazy: free until one of them is sampled, whose
    text the grammar must begin with (a token, never a text pattern: see
    shimmy/models/tools/formats.py). ``invalid_request`` if llama.cpp rejects it."""
    if vocab is None:
        raise ValueError("init_grammar_sampler needs a vocabulary")
    check_grammar_text(grammar)
    return on_grammar_thread(lambda: _parse(vocab, grammar, tuple(trigger_tokens)))
