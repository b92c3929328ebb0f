"""The chat prompt /v1/chat/completions sends to SmolLM2 is the one llama.cpp renders.

Two independent references: llama.cpp's own C++ template engine
(``llama_chat_apply_template``, which recognises SmolLM2's template as ChatML)
and llama-cpp-python's Jinja2 formatter run on the GGUF's own template.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from shimmy.models.chat import ChatTemplate
from shimmy.models.gguf import read_gguf_info

if TYPE_CHECKING:  # llama_cpp loads its library on import: the tests import it when they run
    from llama_cpp.llama_types import ChatCompletionRequestMessage

pytestmark = pytest.mark.model

CONVERSATION: list[ChatCompletionRequestMessage] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello! How can I help?"},
    {"role": "user", "content": "Name a colour.\nJust one, please."},
]


@pytest.fixture(scope="module")
def smollm2_template(smollm2_path) -> ChatTemplate:
    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    assert not template.is_fallback
    return template


def llama_cpp_render(template: str, messages: Sequence[Mapping[str, Any]]) -> str:
    import llama_cpp

    chat = (llama_cpp.llama_chat_message * len(messages))(
        *(llama_cpp.llama_chat_message(m["role"].encode(), m["content"].encode()) for m in messages)
    )
    size = 4096
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(template.encode(), chat, len(messages), True, buf, size)
    assert 0 < n <= size, n
    return buf.raw[:n].decode()


@pytest.mark.parametrize("turns", [2, 4])
def test_smollm2_prompt_equals_llama_cpp_template_engine(smollm2_template, turns):
    messages = CONVERSATION[:turns]
    expected = llama_cpp_render(smollm2_template.source, messages)
    assert smollm2_template.render(messages, add_generation_prompt=True) == expected
    assert expected.endswith("<|im_start|>assistant\n")


@pytest.mark.parametrize("with_system", [True, False])
def test_smollm2_prompt_equals_llama_cpp_python_jinja_formatter(smollm2_template, with_system):
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    messages = CONVERSATION if with_system else CONVERSATION[1:]
    formatter = Jinja2ChatFormatter(
        smollm2_template.source, smollm2_template.eos_token, smollm2_template.bos_token
    )
    expected = formatter(messages=messages).prompt
    assert smollm2_template.render(messages, add_generation_prompt=True) == expected
    if not with_system:
        # SmolLM2's template adds its own default system prompt.
        assert expected.startswith("<|im_start|>system\nYou are a helpful AI assistant")
