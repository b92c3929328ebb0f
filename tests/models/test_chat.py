import threading
import time

import psutil
import pytest

from shimmy.errors import ShimmyError
from shimmy.models.chat import CHATML_TEMPLATE, ChatTemplate, RenderCancelled
from shimmy.models.template_render import RENDER_TIMEOUT_S
from tests.process_tree import tree_rss

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


# What SmolLM2's own template rendered before templates moved to a worker
# process (captured from the in-process renderer of commit a8d6746).
SMOLLM2_DEFAULT_SYSTEM = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n"
)
SMOLLM2_CONVERSATIONS = [
    (
        [{"role": "user", "content": "Hi"}],
        True,
        SMOLLM2_DEFAULT_SYSTEM + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    ),
    (
        [
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "Say hello."},
            {"role": "assistant", "content": "Bonjour !"},
            {"role": "user", "content": 'Again, with émojis 🎉 and "quotes"\n\ttabs'},
        ],
        True,
        "<|im_start|>system\nAnswer in French.<|im_end|>\n<|im_start|>user\nSay hello."
        "<|im_end|>\n<|im_start|>assistant\nBonjour !<|im_end|>\n<|im_start|>user\n"
        'Again, with émojis 🎉 and "quotes"\n\ttabs<|im_end|>\n<|im_start|>assistant\n',
    ),
    (
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello! How can I help?"},
        ],
        False,
        SMOLLM2_DEFAULT_SYSTEM
        + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?"
        "<|im_end|>\n",
    ),
    (
        [{"role": "user", "content": "lone \ud800 surrogate and {{ braces }} {% raw %}"}],
        True,
        SMOLLM2_DEFAULT_SYSTEM + "<|im_start|>user\nlone \ud800 surrogate and {{ braces }} "
        "{% raw %}<|im_end|>\n<|im_start|>assistant\n",
    ),
]


@pytest.mark.parametrize(("messages", "add_generation_prompt", "expected"), SMOLLM2_CONVERSATIONS)
def test_smollm2_template_renders_exactly_as_before(
    smollm2_path, messages, add_generation_prompt, expected
):
    from shimmy.models.gguf import read_gguf_info

    info = read_gguf_info(smollm2_path)
    template = ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)
    assert template.render(messages, add_generation_prompt=add_generation_prompt) == expected


USER = [{"role": "user", "content": "x"}]
RSS_GROWTH_LIMIT = 100 << 20
# Each bomb is bounded at about 1 GiB, so a renderer without limits still
# finishes (slowly, and far over RSS_GROWTH_LIMIT) instead of exhausting memory.
MEMORY_BOMBS = {
    "string doubling with ~": (
        "{% set ns = namespace(x='a') %}{% for i in range(30) %}{% set ns.x = ns.x ~ ns.x %}"
        "{% endfor %}{{ ns.x | length }}"
    ),
    "string times a number": "{{ ('a' * 2**30) | length }}",
    "list times a number": "{{ ([0] * 2**27) | length }}",
    "center filter": "{{ 'a' | center(2**30) | length }}",
    "indent filter": "{{ ('a\n' * 1000) | indent(2**20) | length }}",
    "replace filter": "{{ ('a' * 1000) | replace('a', 'b' * 2**20) | length }}",
    "join doubling": (
        "{% set ns = namespace(x=['a']) %}{% for i in range(30) %}"
        "{% set ns.x = [ns.x | join, ns.x | join] %}{% endfor %}{{ ns.x | join | length }}"
    ),
    "format width": "{{ '%1073741824s' | format('a') | length }}",
    "str method": "{{ 'a'.ljust(2**30) | length }}",
}


def _render_measuring_rss(template: ChatTemplate) -> tuple[ShimmyError, int]:
    """The error ``template`` renders to, and how far this process and its
    children (the renderer's workers) grew in RSS meanwhile, at the peak."""
    me = psutil.Process()
    start = tree_rss(me)
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], tree_rss(me))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with pytest.raises(ShimmyError) as err:
            template.render(USER)
    finally:
        done.set()
        sampler.join()
    return err.value, max(peak[0], tree_rss(me)) - start


@pytest.fixture(scope="module", autouse=True)
def _warm_renderer():
    # Start the shared renderer's worker once, so that timings below are renders.
    ChatTemplate.for_model(None, None, None).render(USER)


def test_an_endless_loop_is_stopped_within_the_time_limit():
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(ShimmyError) as err:
        ChatTemplate.for_model(endless, "", "").render(USER)
    elapsed = time.monotonic() - started
    assert err.value.code == "model_invalid"
    assert err.value.message == (
        f"The model's chat template ran too long: it was stopped after {RENDER_TIMEOUT_S:g} s"
    )
    assert RENDER_TIMEOUT_S <= elapsed < RENDER_TIMEOUT_S + 2


@pytest.mark.parametrize("source", MEMORY_BOMBS.values(), ids=MEMORY_BOMBS.keys())
def test_memory_bombs_are_stopped_before_memory_grows(source):
    error, growth = _render_measuring_rss(ChatTemplate.for_model(source, "", ""))
    assert error.code == "model_invalid"
    assert error.message.startswith("The model's chat template ran too large: it needed more than")
    assert "MiB of memory" in error.message
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth >> 20} MB"


def test_huge_output_is_stopped():
    flood = "{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}"  # 1e9 characters
    error, growth = _render_measuring_rss(ChatTemplate.for_model(flood, "", ""))
    assert error.code == "model_invalid"
    assert error.message.startswith("The model's chat template ran too large: its output passed")
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew by {growth >> 20} MB"


def test_runaway_recursion_is_stopped():
    source = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"
    with pytest.raises(ShimmyError) as err:
        ChatTemplate.for_model(source, "", "").render(USER)
    assert err.value.code == "model_invalid"
    assert "recursion went too deep" in err.value.message


def test_a_cancel_from_another_thread_stops_a_slow_render_at_once():
    endless = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    cancel = threading.Event()
    # Whether the cancel lands before or during the render, it must end it long
    # before the time limit would.
    timer = threading.Timer(0.3, cancel.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(RenderCancelled) as err:
            ChatTemplate.for_model(endless, "", "").render(USER, cancel=cancel)
    finally:
        timer.cancel()
    assert time.monotonic() - started < 0.3 + 0.5 < RENDER_TIMEOUT_S
    assert isinstance(err.value, ShimmyError) and err.value.code == "generation_failed"
    # A cancel set before the render starts stops it before any work.
    with pytest.raises(RenderCancelled):
        ChatTemplate.for_model(None, None, None).render(USER, cancel=cancel)
    # The next render gets a fresh worker and works.
    assert ChatTemplate.for_model(None, None, None).render(USER).endswith("assistant\n")


def test_a_template_that_does_not_compile_is_model_invalid():
    with pytest.raises(ShimmyError) as err:
        ChatTemplate.for_model("{% for m in messages %}", "", "").render(USER)
    assert err.value.code == "model_invalid"
    assert err.value.message == "The model's chat template does not compile"
