"""Presets: the config file's ``[models.NAME]`` tables (:class:`~shimmy.config.ModelPreset`)
as models of their own.

A preset is listed like any model, under its own name, and points at a model
discovery found (by name), a file (by path: the operator's config may name
files, clients never do) or a Hugging Face model already pulled
(``hf.co/ORG/REPO[:QUANT]``). It loads as a model of its own, with its own
context, slots, threads and cache types, so two presets of one file are two
loaded models. Its sampling defaults fill the fields a request did not set
(:attr:`~shimmy.models.generation.SamplingParams.unset`), and its system prompt
opens a conversation that has none: a request's own fields always win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from shimmy.config import ModelPreset, Settings
from shimmy.errors import ShimmyError
from shimmy.models.chat import Message
from shimmy.models.discovery import ModelEntry
from shimmy.models.generation import SamplingParams

PRESET_SOURCE = "preset"
_HUB_PREFIXES = ("hf.co/", "huggingface.co/")
_PREFERRED_QUANT = "Q4_K_M"  # what `shimmy pull` takes when none is named


def preset_entries(
    presets: Sequence[ModelPreset],
    listed: Sequence[ModelEntry],
    *,
    alias_of: Callable[[str], ModelEntry | None],
    file_entry: Callable[[str], ModelEntry | None],
) -> list[ModelEntry]:
    """An entry per preset: its target's, under the preset's name, source
    "preset" and the target's name as origin; unusable (with the reason) when
    the target is not there. ``alias_of``: the entry a pulled name stands for;
    ``file_entry``: the entry for a file path (None when no such file)."""
    entries = []
    for preset in presets:
        target, reason = _target(preset.model, listed, alias_of, file_entry)
        if target is None:
            entries.append(
                ModelEntry(
                    name=preset.name,
                    path=_placeholder(preset.model),
                    parts=(),
                    source=PRESET_SOURCE,
                    size=0,
                    info=None,
                    error=reason,
                    origin=preset.model,
                )
            )
            continue
        entries.append(
            dataclasses.replace(target, name=preset.name, source=PRESET_SOURCE, origin=target.name)
        )
    return entries


def _placeholder(model: str) -> Path:
    return Path(model) if not model.lower().startswith(_HUB_PREFIXES) else Path("-")


def _target(
    model: str,
    listed: Sequence[ModelEntry],
    alias_of: Callable[[str], ModelEntry | None],
    file_entry: Callable[[str], ModelEntry | None],
) -> tuple[ModelEntry | None, str]:
    key = model.lower()
    if key.startswith(_HUB_PREFIXES):
        return _pulled(model, listed, alias_of)
    for entry in listed:
        if entry.name == key:
            return _usable(entry)
    found = file_entry(model)
    if found is not None:
        return _usable(found)
    return None, f"no model or file '{model}' (see `shimmy list`)"


def _usable(entry: ModelEntry) -> tuple[ModelEntry | None, str]:
    if entry.usable:
        return entry, ""
    return None, f"its model {entry.name} is unusable: {entry.error}"


def _pulled(
    model: str, listed: Sequence[ModelEntry], alias_of: Callable[[str], ModelEntry | None]
) -> tuple[ModelEntry | None, str]:
    """A Hugging Face model already on this machine: a name Ollama's /api/pull
    gave it, or a file of that repository (and quantization) in the Hugging
    Face cache, where `shimmy pull` puts it."""
    spec = model.split("/", 1)[1]
    repo, _, quant = spec.partition(":")
    pull = f"shimmy pull {repo}" + (f":{quant}" if quant else "")
    aliased = alias_of(model)
    if aliased is not None:
        return _usable(aliased)
    matches = [
        e
        for e in listed
        if e.origin
        and e.origin.lower() == repo.lower()
        and (not quant or (e.quantization or "").lower() == quant.lower())
    ]
    if len(matches) > 1:
        preferred = [e for e in matches if (e.quantization or "").upper() == _PREFERRED_QUANT]
        matches = preferred or sorted(matches, key=lambda e: e.size)[:1]
    if matches:
        return _usable(matches[0])
    return None, f"{model} is not pulled yet: run `{pull}` (pulls on first use are not made)"


def preset_settings(settings: Settings, preset: ModelPreset) -> Settings:
    """The server's settings with the preset's over them, for its model only."""
    return settings.with_overrides(**dict(preset.engine))


def check_presets(settings: Settings) -> None:
    """Every preset's engine settings, checked as the flags are (offload.py's
    GPU and cache types): ``invalid_request`` naming the preset."""
    from shimmy.models.offload import Offload

    for preset in settings.presets:
        try:
            Offload.from_settings(preset_settings(settings, preset))
        except ShimmyError as exc:
            raise ShimmyError(
                "invalid_request",
                f"[models.{preset.name}] in the config file: {exc.message}",
                exc.details,
            ) from None


def apply_sampling(preset: ModelPreset | None, sampling: SamplingParams) -> SamplingParams:
    """``sampling`` with the preset's defaults in the fields the request left unset."""
    if preset is None or not preset.sampling:
        return sampling
    values: dict[str, Any] = {k: v for k, v in preset.sampling if k in sampling.unset}
    if not values:
        return sampling
    return dataclasses.replace(sampling, **values, unset=sampling.unset - values.keys())


def with_system(preset: ModelPreset | None, messages: Sequence[Message]) -> Sequence[Message]:
    """``messages`` opened by the preset's system prompt, unless they have one."""
    if preset is None or not preset.system:
        return messages
    if any(m.get("role") in ("system", "developer") for m in messages):
        return messages
    return [{"role": "system", "content": preset.system}, *messages]
