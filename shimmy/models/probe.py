"""Probing a model: check its file, load it, and time a short generation.

Shared by ``shimmy probe`` and the dashboard's probe panel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from shimmy.models.generation import SamplingParams
from shimmy.models.gguf import GGUFInfo, read_gguf_info
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelEntry

PROBE_PROMPT = "Write one sentence about the sea."


@dataclass(frozen=True)
class ProbeReport:
    entry: ModelEntry
    info: GGUFInfo
    header_seconds: float
    load_seconds: float
    was_loaded: bool  # true when the model was already loaded before the probe
    memory_bytes: int
    rss_delta_bytes: int
    n_ctx: int
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float | None
    tokens_per_second: float | None
    sample: str


def probe_model(manager: ModelManager, name: str | None, *, max_tokens: int = 32) -> ProbeReport:
    """Validate, load and test-generate ``name`` (the default model when None).

    Raises ``ShimmyError`` (``model_not_found``, ``model_invalid``,
    ``model_load_failed``, ``generation_failed``; ``download_failed`` for a
    preset's model pulled on first use) with a one-line reason.
    """
    entry = manager.resolve(name)
    was_loaded = manager.is_loaded(entry.name)
    if entry.pull is not None:
        # A preset's Hugging Face model not pulled yet: loading it pulls it first.
        manager.engine(entry.name)
        entry = manager.resolve(entry.name)
    started = time.perf_counter()
    # Read the header afresh: the file may have changed since discovery, and
    # llama.cpp must never see a file that fails the check.
    info = read_gguf_info(entry.path)
    header_seconds = time.perf_counter() - started
    engine = manager.engine(entry.name)
    generation = manager.submit_prompt(
        entry.name,
        PROBE_PROMPT,
        max_tokens=max_tokens,
        sampling=SamplingParams(temperature=0.0, seed=0),
        label="probe",
    )
    sample = generation.text()
    return ProbeReport(
        entry=entry,
        info=info,
        header_seconds=header_seconds,
        load_seconds=engine.load_seconds,
        was_loaded=was_loaded,
        memory_bytes=engine.memory_bytes(),
        rss_delta_bytes=engine.rss_delta,
        n_ctx=engine.n_ctx,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        time_to_first_token=generation.time_to_first_token,
        tokens_per_second=generation.tokens_per_second,
        sample=sample,
    )
