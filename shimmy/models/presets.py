"""Presets: the config file's ``[models.NAME]`` tables (:class:`~shimmy.config.ModelPreset`)
as models of their own.

A preset is listed like any model, under its own name, and points at a model
discovery found (by name), a file (by path: the operator's config may name
files, clients never do) or a Hugging Face model (``hf.co/ORG/REPO[:QUANT]``):
one already on this machine, or else one pulled when the preset is first loaded
(the entry says so until then: :attr:`ModelEntry.pull`, first_use_pull.py).
Only the operator's config names what is pulled this way: a request that names
a hub model no preset names finds nothing (registry.py).

A preset loads as a model of its own, with its own context, slots, threads and
cache types, so two presets of one file are two loaded models. Its sampling
defaults fill the fields a request did not set
(:attr:`~shimmy.models.generation.SamplingParams.unset`), and its system prompt
opens a conversation that has none: a request's own fields always win.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shimmy.config import ModelPreset, Settings
from shimmy.errors import ShimmyError
from shimmy.models.chat import Message
from shimmy.models.discovery import ModelEntry
from shimmy.models.generation import SamplingParams
from shimmy.models.grouping import SPLIT_RE

if TYPE_CHECKING:
    from shimmy.models.hub.pull import PullSpec

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
    the target is not there; for a Hugging Face model not on this machine yet,
    an entry that pulls it on first use. ``alias_of``: the entry a pulled name
    stands for; ``file_entry``: the entry for a file path (None when no such file)."""
    entries = []
    for preset in presets:
        if names_hub_model(preset.model):
            target, reason = _hub_target(preset.model, listed, alias_of)
            if target is None and not reason:
                entries.append(_stand_in(preset, pull=preset.model))
                continue
        else:
            target, reason = _target(preset.model, listed, file_entry)
        if target is None:
            entries.append(_stand_in(preset, error=reason))
            continue
        entries.append(
            dataclasses.replace(target, name=preset.name, source=PRESET_SOURCE, origin=target.name)
        )
    return entries


def names_hub_model(model: str) -> bool:
    """Whether a preset's ``model`` names a Hugging Face model (``hf.co/...``)."""
    return model.lower().startswith(_HUB_PREFIXES)


def _stand_in(
    preset: ModelPreset, *, error: str | None = None, pull: str | None = None
) -> ModelEntry:
    """The entry of a preset whose model is not here: unusable with ``error``, or,
    for a Hugging Face model not on this machine yet, offered to clients and
    pulled when first loaded (``pull``: :attr:`ModelEntry.pull`)."""
    on_hub = names_hub_model(preset.model)
    return ModelEntry(
        name=preset.name,
        path=Path("-") if on_hub else Path(preset.model),
        parts=(),
        source=PRESET_SOURCE,
        size=0,
        info=None,
        error=error,
        origin=preset.model,
        pull=pull,
    )


def _target(
    model: str,
    listed: Sequence[ModelEntry],
    file_entry: Callable[[str], ModelEntry | None],
) -> tuple[ModelEntry | None, str]:
    key = model.lower()
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


def _hub_target(
    model: str, listed: Sequence[ModelEntry], alias_of: Callable[[str], ModelEntry | None]
) -> tuple[ModelEntry | None, str]:
    """The Hugging Face model ``model`` names, if it is on this machine: a name
    Ollama's /api/pull gave it, or a file of that repository (and quantization,
    or file) in the Hugging Face cache, where `shimmy pull` puts it. (None, "")
    when it is not there yet: it is pulled on first use."""
    from shimmy.models.hub.pull import parse_pull_spec

    try:
        spec = parse_pull_spec(model)
    except ShimmyError as exc:
        return None, f"{exc.message} ({exc.details})" if exc.details else exc.message
    aliased = alias_of(model)
    if aliased is not None:
        return _usable(aliased)
    repo = spec.repo_id.lower()
    matches = [e for e in listed if e.origin and e.origin.lower() == repo]
    if spec.filename:
        wanted = spec.filename.rsplit("/", 1)[-1].lower()
        matches = [e for e in matches if wanted in _file_names(e)]
    elif spec.quantization:
        matches = [e for e in matches if spec.quantization in _quantizations(e)]
    if len(matches) > 1:
        preferred = [e for e in matches if _PREFERRED_QUANT in _quantizations(e)]
        matches = preferred or sorted(matches, key=lambda e: e.size)[:1]
    if not matches:
        matches = _recorded_pull(spec, listed)
    if matches:
        return _usable(matches[0])
    return None, ""


def _recorded_pull(spec: PullSpec, listed: Sequence[ModelEntry]) -> list[ModelEntry]:
    """The listed model that a pull shimmy recorded for ``spec`` fetched (hub/pulled.py).
    Found by its file, not its name: discovery lists bytes once, so a file pulled
    under a second name whose bytes were already here is listed under the first."""
    from shimmy.models.aliases import same_file
    from shimmy.models.hub.files import quantization_of
    from shimmy.models.hub.pulled import pulled_records

    if not (spec.quantization or spec.filename):
        return []
    for record in pulled_records():
        name, paths = str(record.get("name", "")), record.get("paths")
        if str(record.get("repo_id", "")).lower() != spec.repo_id.lower():
            continue
        if spec.filename and name.lower() != spec.filename.lower():
            continue
        if spec.quantization and (quantization_of(name) or "") != spec.quantization:
            continue
        if not isinstance(paths, list) or not paths or not isinstance(paths[0], str):
            continue
        pulled = [e for e in listed if same_file(e.path, Path(paths[0]))]
        if pulled:
            return pulled[:1]
    return []


def _quantizations(entry: ModelEntry) -> set[str]:
    """What the header says the quantization is, and what the file name (or its
    folder, for split parts) says: a repository names its files by quantization,
    and a pull by ``REPO:QUANT`` means the file so named."""
    from shimmy.models.hub.files import quantization_of

    named = quantization_of(f"{entry.path.parent.name}/{entry.path.name}")
    return {q.upper() for q in (entry.quantization, named) if q}


def _file_names(entry: ModelEntry) -> set[str]:
    """The names a ``REPO/FILE.gguf`` spec may give ``entry``: each part's, and a
    split model's name without its ``-00001-of-0000N``."""
    names = {p.name.lower() for p in (entry.parts or (entry.path,))}
    split = SPLIT_RE.match(entry.path.name)
    if split:
        names.add((split["base"] + split["ext"]).lower())
    return names


def preset_settings(settings: Settings, preset: ModelPreset) -> Settings:
    """The server's settings with the preset's over them, for its model only."""
    return settings.with_overrides(**dict(preset.engine))


def check_presets(settings: Settings) -> None:
    """Every preset's engine settings, checked as the flags are (offload.py's
    GPU and cache types), and a Hugging Face model's name as `shimmy pull`
    reads it: ``invalid_request`` naming the preset."""
    from shimmy.models.hub.pull import parse_pull_spec
    from shimmy.models.offload import Offload

    for preset in settings.presets:
        try:
            Offload.from_settings(preset_settings(settings, preset))
            if names_hub_model(preset.model):
                parse_pull_spec(preset.model)
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
