"""The generate request that /api/generate and /ws/generate share: submitting it
and the seed's usage block and finish reason."""

from __future__ import annotations

import threading

from shimmy.api.core import Usage
from shimmy.api.dialects.native.schemas import GenerateBody
from shimmy.api.requestlog import attach_generation
from shimmy.models.generation import Generation
from shimmy.models.manager import ModelManager


def submit_generate(
    manager: ModelManager,
    body: GenerateBody,
    label: str,
    cancel: threading.Event | None = None,
    scope: str = "",
) -> Generation:
    """Resolve, load if needed, render, tokenize and queue: blocking, so run off the
    event loop; ``cancel`` stops the chat template's render (the client left)."""
    generation = manager.submit_prompt(
        body.model,
        body.prompt,
        max_tokens=min(body.max_tokens, manager.settings.max_tokens_limit),
        sampling=body.sampling(),
        stop=body.stop_strings(),
        raw=body.raw,
        label=label,
        cancel=cancel,
        cache_scope=scope,
    )
    attach_generation(generation)
    return generation


def usage(generation: Generation) -> dict[str, int]:
    """The seed's usage block."""
    counts = Usage.of(generation)
    return {
        "prompt_tokens": counts.prompt_tokens,
        "completion_tokens": counts.completion_tokens,
        "total_tokens": counts.total_tokens,
    }


def finish(generation: Generation) -> str | None:
    """The seed's finish reason; a generation that failed raises its error (the
    non-streaming answer is then the error shape)."""
    if generation.error is not None:
        raise generation.error
    return generation.finish_reason
