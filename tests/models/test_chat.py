import pytest

from shimmy.errors import ShimmyError
from shimmy.models.chat import CHATML_TEMPLATE, ChatTemplate

LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}"
    "{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


def test_smollm2_template_from_the_real_gguf(smollm2_path):
    from shimmy.models.gguf import read_gguf_info

    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    assert not template.is_fallback
    text = template.render([{"role": "user", "content": "Hi"}])
    # SmolLM2 adds its default system prompt when none is given.
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_end|>" in template.stop_strings()


def test_llama3_template_puts_bos_first_and_ends_with_assistant_header():
    template = ChatTemplate.for_model(LLAMA3, "<|begin_of_text|>", "<|eot_id|>")
    text = template.render(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi "}]
    )
    assert text == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert "<|eot_id|>" in template.stop_strings()


def test_gemma_template_maps_assistant_to_model():
    template = ChatTemplate.for_model(GEMMA, "<bos>", "<eos>")
    text = template.render(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Bye"},
        ]
    )
    assert text == (
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    )
    assert "<end_of_turn>" in template.stop_strings()


def test_template_raise_exception_becomes_invalid_request():
    template = ChatTemplate.for_model(GEMMA, "<bos>", "<eos>")
    with pytest.raises(ShimmyError) as err:
        template.render([{"role": "system", "content": "x"}, {"role": "user", "content": "y"}])
    assert err.value.code == "invalid_request"
    assert "System role not supported" in (err.value.details or "")


def test_model_without_template_falls_back_to_chatml():
    template = ChatTemplate.for_model(None, None, None)
    assert template.is_fallback and template.source == CHATML_TEMPLATE
    assert template.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_empty_messages_are_rejected():
    with pytest.raises(ShimmyError) as err:
        ChatTemplate.for_model(None, None, None).render([])
    assert err.value.code == "invalid_request"


def test_sandbox_blocks_attribute_escapes():
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ShimmyError):
        ChatTemplate.for_model(evil, "", "").render([{"role": "user", "content": "x"}])


def test_templates_may_use_loop_controls():
    # Some templates (Qwen's tool-calling ones, for example) find the last user
    # turn with {% break %}; transformers enables loop controls, so must we.
    source = (
        "{% for m in messages %}{% if m.role == 'system' %}{% continue %}{% endif %}"
        "[{{ m.content }}]{% if loop.index >= 2 %}{% break %}{% endif %}{% endfor %}"
    )
    template = ChatTemplate.for_model(source, "", "")
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    assert template.render(messages) == "[a]"
