"""Ollama's response shapes: timestamps, the nanosecond timings of a finished
reply, model details for /api/tags, /api/show and /api/ps, and tool calls.

Every timing is measured, never made up: ``total_duration`` from the request's
arrival to the generation's end, ``load_duration`` the time this request waited
for its model to load (near 0 when it was loaded), ``prompt_eval_duration`` from
the slot the engine gave the request to its first token, ``eval_duration`` from
the first token to the last.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from shimmy.errors import ShimmyError
from shimmy.models.chat import ChatTemplate
from shimmy.models.embeddings import POOLING_NONE, POOLING_RANK
from shimmy.models.generation import FINISH_CANCELLED, FINISH_LENGTH, Generation
from shimmy.models.registry import ModelEntry
from shimmy.models.tools import ToolCall
from shimmy.models.tools.formats import detect_format
from shimmy.units import format_params

# What /api/ps says for a model that stays loaded until it is unloaded: as
# Ollama does, a time about 292 years off (its longest duration).
FOREVER = timedelta(days=292 * 365)
_SHA256 = re.compile(r"(?:sha256-)?([0-9a-f]{64})")
# Header keys that /api/show lists elsewhere (the template) or that are not facts
# about the model's shape.
_NOT_MODEL_INFO = frozenset({"tokenizer.chat_template"})


def timestamp(at: float | None = None) -> str:
    """RFC 3339 in UTC with microseconds, as Ollama writes ``created_at``."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def nanoseconds(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


@dataclass
class Timing:
    """When a request arrived (``time.monotonic()``) and how long it waited for
    its model to load."""

    received: float = field(default_factory=time.monotonic)
    load_seconds: float = 0.0


def reply_metrics(generation: Generation, timing: Timing) -> dict[str, int]:
    """The timings and counts of a finished generation's last line."""
    finished = generation.finished_at or time.monotonic()
    started = generation.started_at or finished
    first = generation.first_token_at
    return {
        "total_duration": nanoseconds(finished - timing.received),
        "load_duration": nanoseconds(timing.load_seconds),
        "prompt_eval_count": generation.prompt_tokens,
        "prompt_eval_duration": nanoseconds((first or finished) - started),
        "eval_count": generation.completion_tokens,
        "eval_duration": nanoseconds(finished - first) if first is not None else 0,
    }


def done_reason(generation: Generation) -> str:
    """ "length" when num_predict or the context ran out, else "stop"; a failed or
    cancelled generation raises instead."""
    if generation.error is not None:
        raise generation.error
    if generation.finish_reason == FINISH_CANCELLED:
        raise ShimmyError(
            "generation_failed",
            "The generation was cancelled",
            "The model was unloaded or the server is shutting down",
        )
    return "length" if generation.finish_reason == FINISH_LENGTH else "stop"


def tool_call(call: ToolCall, index: int) -> dict[str, Any]:
    """A call as Ollama writes it: its arguments as a JSON object."""
    return {
        "id": call.id,
        "function": {"index": index, "name": call.name, "arguments": call.arguments_object()},
    }


def details(entry: ModelEntry) -> dict[str, Any]:
    """Ollama's ``details`` of a model, from its GGUF header."""
    family = entry.architecture or ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": format_params(entry.parameter_count) if entry.parameter_count else "",
        "quantization_level": entry.quantization or "",
    }


def modified_at(entry: ModelEntry) -> str:
    try:
        return timestamp(entry.path.stat().st_mtime)
    except OSError:
        return timestamp(0)


def digest(entry: ModelEntry) -> str:
    """The file's sha256 where its store names the file by it (the Hugging Face
    cache's blobs, Ollama's), else a sha256 of its path, size and time: hashing
    gigabytes for a listing would take minutes."""
    real = os.path.realpath(entry.path)
    match = _SHA256.fullmatch(os.path.basename(real))
    if match is not None:
        return match.group(1)
    try:
        stat = os.stat(real)
        identity = f"{real}:{stat.st_size}:{stat.st_mtime_ns}"
    except OSError:
        identity = real
    return hashlib.sha256(identity.encode()).hexdigest()


def listed(name: str, entry: ModelEntry) -> dict[str, Any]:
    """One model of /api/tags, under ``name`` (``NAME:TAG``)."""
    return {
        "name": name,
        "model": name,
        "modified_at": modified_at(entry),
        "size": entry.size,
        "digest": digest(entry),
        "details": details(entry),
    }


def model_info(entry: ModelEntry) -> dict[str, Any]:
    """The GGUF header's facts about the model, under their GGUF keys."""
    info = entry.info
    if info is None:
        return {}
    facts: dict[str, Any] = {k: v for k, v in info.metadata.items() if k not in _NOT_MODEL_INFO}
    arch = info.architecture
    if arch:
        facts["general.architecture"] = arch
        if info.context_length is not None:
            facts[f"{arch}.context_length"] = info.context_length
        if info.embedding_length is not None:
            facts[f"{arch}.embedding_length"] = info.embedding_length
    if info.parameter_count is not None:
        facts["general.parameter_count"] = info.parameter_count
    if info.file_type is not None:
        facts["general.file_type"] = info.file_type
    return dict(sorted(facts.items()))


def is_embedding_model(entry: ModelEntry) -> bool:
    """An embedding model names the pooling of its vectors in its header (chat
    models name none); shimmy embeds with chat models too, as Ollama does."""
    info = entry.info
    if info is None or not info.architecture:
        return False
    pooling = info.metadata.get(f"{info.architecture}.pooling_type")
    return isinstance(pooling, int) and pooling not in (POOLING_NONE, POOLING_RANK)


def template_of(entry: ModelEntry) -> ChatTemplate:
    info = entry.info
    return ChatTemplate.for_model(
        info.chat_template if info else None,
        info.bos_token if info else None,
        info.eos_token if info else None,
    )


def capabilities(entry: ModelEntry) -> list[str]:
    """What a client may ask of the model: ``embedding`` for an embedding model,
    else ``completion``, and ``tools`` when its chat template knows tools (shimmy
    calls tools with any model, through a generic format, but a client choosing a
    model for tools wants one trained for them)."""
    if is_embedding_model(entry):
        return ["embedding"]
    template = template_of(entry)
    found = ["completion"]
    if detect_format(template.source, template.is_fallback).name != "generic":
        found.append("tools")
    return found


def parameters(entry: ModelEntry, context: int) -> str:
    """Ollama's ``parameters`` text: the context a request gets and the stops."""
    lines = [f"{'num_ctx':<30} {context}"]
    lines += [f'{"stop":<30} "{stop}"' for stop in template_of(entry).stop_strings()]
    return "\n".join(lines)


def expires_at(unloads_in: float | None) -> str:
    """When a loaded model will be unloaded, from the seconds until then."""
    now = datetime.now(UTC)
    moment = now + (FOREVER if unloads_in is None else timedelta(seconds=unloads_in))
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
