"""Each sampling parameter really reaches llama.cpp's sampler chain, shown with the
real SmolLM2: a parameter that was dropped on the way would leave the output as
it is without it. (Seeded repeats and differing seeds: test_engine.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from shimmy.config import Settings
from shimmy.models.generation import GenerationRequest, SamplingParams
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelRegistry

pytestmark = pytest.mark.model

MAX_TOKENS = 24
POEM = "Write a poem about cats."
# Greedy without penalties repeats itself here ("Monday, Monday\nTuesday, Tuesday...").
REPETITIVE = "List the days of the week, then list them again."
# Plain temperature-1 sampling over the whole vocabulary: only the parameter under
# test can narrow it down to the greedy token.
UNTRUNCATED = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0}
NO_PENALTY = {"repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


@pytest.fixture(scope="module")
def engine(smollm2_path):
    settings = Settings(model=str(smollm2_path), ctx_size=512, keep_alive=-1)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    yield manager.engine(None)
    manager.close()


@pytest.fixture(scope="module")
def run(engine):
    def run(prompt: str, **sampling: Any) -> str:  # SamplingParams' fields
        tokens = engine.chat_tokens([{"role": "user", "content": prompt}])
        request = GenerationRequest(
            tokens, max_tokens=MAX_TOKENS, sampling=SamplingParams(**sampling)
        )
        text = engine.submit(request).text(120)
        assert text.strip()
        return text

    return run


@pytest.fixture(scope="module")
def greedy_poem(run) -> str:
    return run(POEM, temperature=0.0)


@pytest.fixture(scope="module")
def unrestricted_poem(run, greedy_poem) -> str:
    """The control: the same seed at temperature 1 with nothing truncating the
    distribution is not the greedy text (else the next tests would prove nothing)."""
    text = run(POEM, **UNTRUNCATED, seed=11)
    assert text != greedy_poem
    return text


def test_top_k_1_at_temperature_1_is_greedy(run, greedy_poem, unrestricted_poem):
    assert run(POEM, **{**UNTRUNCATED, "top_k": 1}, seed=11) == greedy_poem


def test_min_p_1_at_temperature_1_is_greedy(run, greedy_poem, unrestricted_poem):
    assert run(POEM, **{**UNTRUNCATED, "min_p": 1.0}, seed=11) == greedy_poem


def repeated_words(text: str) -> int:
    words = [w.strip(",.:;!?").lower() for w in text.split()]
    return len(words) - len(set(words))


@pytest.fixture(scope="module")
def unpenalised(run) -> str:
    text = run(REPETITIVE, temperature=0.0, **NO_PENALTY)
    assert repeated_words(text) >= 4, text  # the prompt does invite repetition
    return text


@pytest.mark.parametrize(
    "penalty",
    [{"repeat_penalty": 1.8}, {"presence_penalty": 1.5}, {"frequency_penalty": 1.5}],
    ids=["repeat", "presence", "frequency"],
)
def test_penalties_change_the_greedy_text_and_cut_repetition(run, unpenalised, penalty):
    penalised = run(REPETITIVE, temperature=0.0, **{**NO_PENALTY, **penalty})
    assert penalised != unpenalised
    assert repeated_words(penalised) < repeated_words(unpenalised), (penalised, unpenalised)
