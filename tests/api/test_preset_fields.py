"""Each dialect marks the sampling fields a request did not send (``unset``), so
a model preset's defaults fill those and never the request's own."""

from __future__ import annotations

from shimmy.api.dialects.anthropic.schemas import MessagesBody
from shimmy.api.dialects.native.schemas import GenerateBody
from shimmy.api.dialects.ollama.schemas import Options
from shimmy.api.dialects.openai.schemas import ChatCompletionBody


def test_native_marks_what_the_body_left_out():
    sampling = GenerateBody.model_validate(
        {"model": "m", "prompt": "p", "temperature": 0.1}
    ).sampling()
    assert sampling.temperature == 0.1
    assert "temperature" not in sampling.unset and {"top_k", "top_p", "seed"} <= sampling.unset


def test_openai_marks_what_the_body_left_out():
    body = ChatCompletionBody.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "x"}], "top_p": 0.5}
    )
    assert "top_p" not in body.sampling().unset and "temperature" in body.sampling().unset


def test_ollama_marks_the_options_not_sent():
    sampling = Options.model_validate({"top_k": 3}).sampling()
    assert sampling.top_k == 3 and sampling.temperature == 0.8  # Ollama's own default
    assert "top_k" not in sampling.unset and "temperature" in sampling.unset


def test_anthropic_marks_what_the_body_left_out():
    body = MessagesBody.model_validate(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    )
    assert {"temperature", "top_k", "min_p"} <= body.sampling().unset
    given = MessagesBody.model_validate(
        {
            "model": "m",
            "max_tokens": 5,
            "temperature": 0.2,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    assert "temperature" not in given.sampling().unset
