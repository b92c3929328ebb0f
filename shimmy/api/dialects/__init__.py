"""The API's dialects: each maps its own request and response shapes onto the
API core (:mod:`shimmy.api.core`, whose docstring says how to add one).

``DIALECTS`` is the registration list: every router here is served by
:func:`shimmy.api.app.create_app`. The Ollama listener (``--ollama``,
:func:`shimmy.api.app.create_ollama_app`) serves Ollama's API and, as Ollama
does on its port, every dialect under /v1; not the native API, whose
/api/generate has another shape than Ollama's.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter

from shimmy.api.dialects.anthropic import routes as anthropic
from shimmy.api.dialects.native import routes as native
from shimmy.api.dialects.ollama import routes as ollama
from shimmy.api.dialects.openai import routes as openai
from shimmy.api.dialects.responses import routes as responses
from shimmy.models.manager import ModelManager

BuildRouter = Callable[[ModelManager], APIRouter]

DIALECTS: tuple[BuildRouter, ...] = (
    native.build_router,  # SEED-API.md: /api/generate, /api/models, /api/health, /ws/generate
    openai.build_router,  # /v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings
    anthropic.build_router,  # Anthropic's Messages API: /v1/messages, /v1/messages/count_tokens
    responses.build_router,  # OpenAI's Responses API: /v1/responses, /v1/responses/{id}
)

OLLAMA_LISTENER_DIALECTS: tuple[BuildRouter, ...] = (
    ollama.build_router,  # /, /api/version, /api/tags, /api/chat, /api/generate, ...
    *(build for build in DIALECTS if build is not native.build_router),
)
