"""The chat-template renderer's worker process (the child side of template_render.py).

A model's chat template is a stranger's Jinja program. This process renders
templates for its parent, one at a time, under limits that hold whatever the
template does: ``RLIMIT_AS`` bounds its memory (an allocation past it raises
``MemoryError`` here, in C code too, where no sandbox hook reaches),
``RLIMIT_CPU`` bounds each render's CPU time even if the parent is gone, the
output is counted as the template produces it, and the parent kills the process
when a render runs out of wall-clock time or its client leaves.

It is started as a script (``python -I path/to/template_worker.py``), so it
imports nothing of shimmy: only the standard library and Jinja2, which keeps it
small (about 20 MB) and quick to start. It exits when its stdin reaches EOF, so
it ends with shimmy even if shimmy is killed.

Protocol, on stdin and stdout: the worker writes ``READY`` once set up; then
each request is a frame (4-byte big-endian length, then UTF-8 JSON
``{"source", "context", "max_output", "memory"}``), and each reply is a frame
of one status byte (the ``STATUS_*`` constants) and UTF-8 text: the prompt, or
what went wrong.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import sys
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import jinja2

# Jinja is imported by the worker only (main warms it up before READY): shimmy
# imports this module for the protocol's constants, and Jinja would add 9 MB to
# its resident memory.

READY = b"R"
STATUS_OK = b"o"  # the rendered prompt
STATUS_COMPILE = b"c"  # the template does not compile
STATUS_REJECTED = b"r"  # the template's raise_exception(...) refused the messages
STATUS_FAILED = b"f"  # rendering raised (an undefined name, a type error, ...)
STATUS_OUTPUT = b"x"  # the output passed max_output characters
STATUS_MEMORY = b"m"  # the render needed more memory than allowed
STATUS_DEPTH = b"d"  # the template recursed past Python's recursion limit
HEADER = struct.Struct(">I")

# Text is UTF-8 both ways; lone surrogates (JSON allows "\ud800") pass through
# unchanged rather than failing the render.
TEXT_ERRORS = "surrogatepass"


class _TemplateError(Exception):
    """Raised by a template's own ``raise_exception(...)`` call."""


def _raise_exception(message: str) -> None:
    raise _TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # transformers renders tojson without escaping non-ASCII text; match it so
    # prompts are byte-identical to what the model was trained on.
    return json.dumps(value, ensure_ascii=False, indent=indent)


@lru_cache(maxsize=32)
def _compile(source: str) -> jinja2.Template:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    # As transformers renders chat templates: some use {% break %} / {% continue %}.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.ChainableUndefined,
        extensions=["jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(source)


def render(source: str, context: dict[str, Any], max_output: int) -> tuple[bytes, str]:
    """``(status, text)`` for one render; never raises but for ``MemoryError``."""
    import jinja2

    try:
        template = _compile(source)
    except jinja2.TemplateError as exc:
        return STATUS_COMPILE, str(exc)
    pieces: list[str] = []
    size = 0
    try:
        # generate() hands over the output piece by piece, so an endless stream
        # of text is stopped at the limit instead of being joined first.
        for piece in template.generate(**context):
            size += len(piece)
            if size > max_output:
                return STATUS_OUTPUT, f"{size} characters"
            pieces.append(piece)
    except _TemplateError as exc:
        return STATUS_REJECTED, str(exc)
    except MemoryError:
        raise
    except RecursionError as exc:
        return STATUS_DEPTH, str(exc)
    except Exception as exc:  # the template's own failure, whatever Jinja raised
        return STATUS_FAILED, f"{type(exc).__name__}: {exc}"
    return STATUS_OK, "".join(pieces)


def _address_space() -> int | None:
    """Bytes of address space this process maps now (Linux), else None."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _limit_cpu(seconds: float) -> None:
    # A backstop for the parent's wall-clock kill: if the parent died mid-render
    # (nobody left to kill us), the kernel ends a render that loops forever.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _limit_memory(allowance: int | None) -> None:
    """Let the coming render map ``allowance`` more bytes (None: no limit)."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = hard
    if allowance is not None:
        mapped = _address_space()
        if mapped is not None:
            soft = mapped + allowance
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def serve(stdin: BinaryIO, stdout: BinaryIO, cpu_seconds: float) -> None:
    """Answer render requests until stdin ends (or the parent stops reading)."""
    stdout.write(READY)
    stdout.flush()
    while True:
        header = _read_exactly(stdin, HEADER.size)
        if header is None:
            return
        body = _read_exactly(stdin, HEADER.unpack(header)[0])
        if body is None:
            return
        request = json.loads(body.decode("utf-8", TEXT_ERRORS))
        _limit_cpu(cpu_seconds)
        _limit_memory(request["memory"])
        try:
            status, text = render(request["source"], request["context"], request["max_output"])
        except MemoryError:
            status, text = STATUS_MEMORY, "an allocation failed"
        _limit_memory(None)  # the reply itself must never fail for want of memory
        reply = status + text.encode("utf-8", TEXT_ERRORS)
        try:
            stdout.write(HEADER.pack(len(reply)) + reply)
            stdout.flush()
        except BrokenPipeError:  # the parent is gone
            return
        if status == STATUS_MEMORY:
            return  # start the next render in a fresh heap; the parent respawns us


def main(argv: list[str]) -> int:
    cpu_seconds = float(argv[1]) if len(argv) > 1 else 10.0
    # Ctrl-C in the terminal reaches the whole process group: the parent decides
    # when we stop (it closes our stdin), not the keyboard.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU must not dump core
    _compile("{{ '' }}")  # import Jinja's compiler now, not during the first render
    serve(sys.stdin.buffer, sys.stdout.buffer, cpu_seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
