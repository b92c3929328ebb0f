"""OpenAI's response shapes: the pieces every /v1 answer and chunk is built of."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import Sequence
from typing import Any

from shimmy import __version__
from shimmy.api.core import Usage
from shimmy.errors import ShimmyError
from shimmy.models.generation import FINISH_CANCELLED, FINISH_LENGTH, Generation, TokenLogprob
from shimmy.models.registry import ModelEntry
from shimmy.models.tools import ToolCall

SYSTEM_FINGERPRINT = f"shimmy-{__version__}"


def usage(generations: Sequence[Generation]) -> dict[str, Any]:
    """OpenAI's usage block, summed over a request's generations."""
    counts = Usage.of_all(generations)
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
        "prompt_tokens_details": {"cached_tokens": counts.cached_tokens},
    }


def tool_call(call: ToolCall) -> dict[str, Any]:
    """A call as OpenAI writes it in a message (and in a stream's first delta of it)."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat ``logprobs``: each token with its log-probability, its bytes
    and the most likely tokens at that step."""

    def token(piece: bytes, logprob: float) -> dict[str, Any]:
        return {
            "token": piece.decode("utf-8", errors="replace"),
            "logprob": logprob,
            "bytes": list(piece),
        }

    return {
        "content": [
            {
                **token(e.piece, e.logprob),
                "top_logprobs": [token(piece, lp) for _, piece, lp in e.top],
            }
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """The legacy completions ``logprobs``; ``offset`` is where the first token's
    text begins in the choice's text."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.text)
    return {
        "tokens": [e.text for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [
            {piece.decode("utf-8", errors="replace"): lp for _, piece, lp in e.top} for e in entries
        ],
        "text_offset": offsets,
    }


def finish_reason(generation: Generation) -> str:
    """OpenAI's finish reason: "length" when max_tokens or the context ran out,
    else "stop"; a failed or cancelled generation raises instead."""
    if generation.error is not None:
        raise generation.error
    if generation.finish_reason == FINISH_CANCELLED:
        raise ShimmyError(
            "generation_failed",
            "The generation was cancelled",
            "The model was unloaded or the server is shutting down",
        )
    return "length" if generation.finish_reason == FINISH_LENGTH else "stop"


def header(prefix: str, obj: str, model: str) -> dict[str, Any]:
    """The fields every completion and chunk starts with, in OpenAI's order."""
    return {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def encode_vector(vector: Sequence[float], encoding: str) -> list[float] | str:
    """A vector as floats, or as OpenAI's base64 of little-endian float32s (what
    the openai SDKs ask for by default)."""
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return list(vector)


def model_object(entry: ModelEntry, loaded: bool) -> dict[str, Any]:
    """An OpenAI model object; the fields after ``owned_by`` are shimmy's own."""
    try:
        created = int(entry.path.stat().st_mtime)
    except OSError:
        created = 0
    return {
        "id": entry.name,
        "object": "model",
        "created": created,
        "owned_by": entry.origin or entry.source,
        "source": entry.source,
        "size": entry.size,
        "context_length": entry.context_length,
        "quantization": entry.quantization,
        "loaded": loaded,
    }
