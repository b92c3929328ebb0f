"""The sampler chain's top-k cut before the penalties (see Sampler) picks exactly
the tokens llama.cpp's plain chain picks, shown with the real SmolLM2: both chains
sample from the same logits at every step of a long generation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shimmy.models.llamacpp import Context, Model, Sampler, SamplerSettings

pytestmark = pytest.mark.model

STEPS = 96
# A prompt that invites repetition, so that the penalties have work to do.
PROMPT = "List the days of the week, then list them again, then once more."


@pytest.fixture(scope="module")
def model(smollm2_path: Path) -> Iterator[Model]:
    model = Model(smollm2_path)
    yield model
    model.close()


BASE = SamplerSettings(
    temperature=0.8,
    top_k=40,
    top_p=0.95,
    min_p=0.05,
    repeat_penalty=1.3,
    frequency_penalty=0.0,
    presence_penalty=0.0,
    seed=7,
)


def settings(**changes: Any) -> SamplerSettings:
    """BASE with some of its fields changed (replace refuses a name it has not)."""
    return dataclasses.replace(BASE, **changes)


def both_chains(model: Model, chosen: SamplerSettings) -> tuple[list[int], list[int]]:
    """Generate with the cut chain, asking the plain chain at each step what it
    would pick from the same logits; the tokens each chain picked. (An end of
    text does not stop it: what comes after is as good a test.)"""
    context = Context(model, n_ctx=512, n_seq=1, n_batch=128, threads=2)
    prompt = model.tokenize(PROMPT, add_bos=True)
    cut = Sampler(model, chosen, prompt)
    plain = Sampler(model, chosen, prompt, prefilter=False)
    picked_cut: list[int] = []
    picked_plain: list[int] = []
    try:
        tokens = prompt
        for _ in range(STEPS):
            context.batch.clear()
            start = len(prompt) + len(picked_cut) - len(tokens)
            for i, token in enumerate(tokens):
                context.batch.add(token, start + i, 0, i == len(tokens) - 1)
            context.decode()
            last = len(tokens) - 1
            picked_cut.append(cut.sample(context, last))
            picked_plain.append(plain.sample(context, last))
            if picked_cut[-1] != picked_plain[-1]:
                break
            tokens = [picked_cut[-1]]
    finally:
        cut.close()
        plain.close()
        context.close()
    return picked_cut, picked_plain


@pytest.mark.parametrize(
    "chosen",
    [
        settings(temperature=0.0),
        settings(),
        settings(seed=8, top_k=5, frequency_penalty=0.4, presence_penalty=0.4),
        settings(seed=9, temperature=1.5, top_k=100, top_p=1.0, min_p=0.0),
        # Penalties that raise logits get no cut (any token could rise to the top).
        settings(repeat_penalty=0.5, presence_penalty=-2.0),
    ],
    ids=["greedy", "top-k 40", "top-k 5 with all penalties", "hot top-k 100", "raising"],
)
def test_the_cut_chain_picks_what_the_plain_chain_picks(model: Model, chosen: SamplerSettings):
    cut, plain = both_chains(model, chosen)
    assert cut == plain
    assert len(cut) == STEPS
    # The penalties had something to work on: the run repeats tokens.
    assert len(set(cut)) < len(cut)
