"""Model names as Ollama's clients write them, and shimmy's registry names.

Ollama names a model ``NAME:TAG`` and reads a bare ``NAME`` as ``NAME:latest``.
shimmy's registry names have no tag (except models found in Ollama's own store,
``llama3:8b``), so every one is listed as ``NAME:latest`` and a request may say
``NAME`` or ``NAME:latest``. ``hf.co/ORG/REPO[:QUANT]`` (or ``huggingface.co/``)
is a Hugging Face model: /api/pull fetches it through shimmy's hub, and the name
it was pulled by then names it everywhere (an alias in the registry).
"""

from __future__ import annotations

import re

from shimmy.errors import ShimmyError
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelEntry

LATEST = ":latest"
_HUGGING_FACE = re.compile(r"^(https?://)?(www\.)?(hf\.co|huggingface\.co)/", re.IGNORECASE)


def shown_name(name: str) -> str:
    """A registry name or alias as Ollama lists it: with its tag, ``:latest`` if none."""
    return name if ":" in name.rsplit("/", 1)[-1] else name + LATEST


def without_latest(name: str) -> str:
    """``name`` without a ``:latest`` tag (which every untagged name has)."""
    wanted = name.strip()
    return wanted[: -len(LATEST)] if wanted.lower().endswith(LATEST) else wanted


def model_not_found(name: str, details: str | None = None) -> ShimmyError:
    """Ollama's words for an unknown model (clients look for "not found")."""
    return ShimmyError("model_not_found", f"model '{name}' not found", details)


def resolve(manager: ModelManager, name: str) -> ModelEntry:
    """The model an Ollama client means by ``name``: the exact name (an Ollama
    store model is named with its tag), else the name without ``:latest``, each
    as the registry resolves names (aliases included)."""
    wanted = name.strip()
    if not wanted:
        raise ShimmyError("invalid_request", "model is required")
    candidates = [wanted]
    if without_latest(wanted) != wanted:
        candidates.append(without_latest(wanted))
    details = None
    for candidate in candidates:
        try:
            return manager.registry.resolve(candidate)
        except ShimmyError as exc:
            if exc.code != "model_not_found":
                raise
            if exc.details and "ambiguous" in exc.details or "no longer listed" in str(exc.details):
                details = exc.details
    raise model_not_found(wanted, details)


def hugging_face_spec(name: str) -> str | None:
    """``ORG/REPO[:QUANT]`` for a Hugging Face name as Ollama takes them
    (``hf.co/ORG/REPO:Q4_K_M``; ``:latest`` means the default file), else None."""
    text = name.strip()
    if not _HUGGING_FACE.match(text):
        return None
    return without_latest(_HUGGING_FACE.sub("", text))
