"""The official openai SDK against `shimmy serve` (a subprocess) with the real SmolLM2."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from shimmy.models.chat import ChatTemplate
from shimmy.models.gguf import read_gguf_info
from tests.e2e.harness import Server, isolated_env, start_server
from tests.gguf_writer import write_model
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
CTX = 1024
EMBEDDING_SIZE = 576  # SmolLM2-135M's hidden size
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("openai")
    srv = start_server(["--ctx-size", str(CTX)], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key="not-needed", max_retries=0, timeout=240
    ) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    """llama.cpp's tokenizer for the same file, to check the usage figures."""
    # From its module: where shimmy imported llama_cpp first in this process, the
    # package holds only the bindings (shimmy/models/llama_bindings.py).
    from llama_cpp.llama import Llama

    llama = Llama(model_path=str(smollm2_path), vocab_only=True, verbose=False)
    yield lambda text: llama.tokenize(text.encode(), add_bos=True, special=True)
    llama.close()


@pytest.fixture(scope="module")
def template(smollm2_path) -> ChatTemplate:
    info = read_gguf_info(smollm2_path)
    return ChatTemplate.for_model(info.chat_template, info.bos_token, info.eos_token)


def chat(client: openai.OpenAI, **kwargs):
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("max_tokens", 24)
    return client.chat.completions.create(**kwargs)


def assert_clean(text: str) -> None:
    """The template's turn markers stop generation and never reach the client."""
    assert "<|im_end|>" not in text and "<|im_start|>" not in text and "<|endoftext|>" not in text


# -- models --------------------------------------------------------------------


def test_models_list_and_retrieve(client):
    models = client.models.list().data
    assert MODEL in [m.id for m in models]
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.object == "model" and model.created > 0
    assert model.owned_by


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        chat(client, model="no-such-model")
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"
    assert "no-such-model" in str(err.value.body)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# -- chat -------------------------------------------------------------------------


def test_chat_counts_real_tokens(client, tokenizer, template):
    result = chat(client, temperature=0, max_tokens=12)
    assert result.object == "chat.completion" and result.id.startswith("chatcmpl-")
    assert result.model == MODEL
    choice = result.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert_clean(choice.message.content)
    prompt = template.render(QUESTION, add_generation_prompt=True)
    assert result.usage.prompt_tokens == len(tokenizer(prompt))
    if choice.finish_reason == "length":
        assert result.usage.completion_tokens == 12
    else:
        assert choice.finish_reason == "stop" and 0 < result.usage.completion_tokens <= 12
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens


def test_chat_stream_gives_the_same_text_as_non_stream_at_temperature_0(client):
    whole = chat(client, temperature=0, max_tokens=30)
    stream = chat(
        client, temperature=0, max_tokens=30, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    with_choices = [c for c in chunks if c.choices]
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    assert with_choices[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert len({c.id for c in chunks}) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_wire_format_ends_with_done(server):
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 5, "stream": True}
    with httpx.stream("POST", server.url + "/v1/chat/completions", json=body, timeout=240) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    last = json.loads(lines[-2][len("data: ") :])
    assert last["object"] == "chat.completion.chunk"
    assert last["choices"][0]["finish_reason"] in {"stop", "length"}


def test_stop_sequence_ends_the_text_before_it(client):
    free = chat(client, temperature=0, max_tokens=30).choices[0].message.content
    words = free.split()
    assert len(words) >= 4, free
    stop = words[3]
    expected = free[: free.index(stop)]
    result = chat(client, temperature=0, max_tokens=30, stop=[stop, "\u2603"])
    assert result.choices[0].message.content == expected
    assert result.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats_exactly(client):
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]
    first = chat(client, messages=story, temperature=1.0, seed=1234, max_tokens=20)
    second = chat(client, messages=story, temperature=1.0, seed=1234, max_tokens=20)
    assert first.choices[0].message.content == second.choices[0].message.content


def test_content_part_arrays_and_default_alias(client):
    messages = [
        {"role": "system", "content": "You answer in one word."},
        {"role": "user", "content": [{"type": "text", "text": "What colour is the sky?"}]},
    ]
    result = chat(client, model="default", messages=messages, temperature=0, max_tokens=8)
    assert result.model == MODEL and result.choices[0].message.content


# -- structured output ------------------------------------------------------------------


def test_json_mode_output_parses(client):
    messages = [
        {"role": "user", "content": 'Return JSON: {"city": ..., "country": ...} for Paris.'}
    ]
    result = chat(
        client,
        messages=messages,
        temperature=0,
        max_tokens=150,
        response_format={"type": "json_object"},
    )
    assert result.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(result.choices[0].message.content), dict)


def test_json_schema_output_validates(client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Describe Ann, aged 31, who owns a cat, as JSON."}]
    result = chat(
        client,
        messages=messages,
        temperature=0.8,
        seed=3,
        max_tokens=80,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    assert result.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(result.choices[0].message.content), schema)


# -- bad requests ---------------------------------------------------------------------------


def test_empty_messages_raise_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, messages=[])
    assert "messages" in err.value.message


def test_over_long_prompt_is_rejected_with_the_numbers(client):
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(openai.BadRequestError) as err:
        chat(client, messages=long)
    message = err.value.message
    assert "tokens" in message and str(CTX) in message, message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt="word " * 2000)
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=MODEL, input=["short", "word " * 2000])
    assert "input[1]" in err.value.message


def test_body_over_the_size_limit_is_413(client):
    with pytest.raises(openai.APIStatusError) as err:
        chat(client, messages=[{"role": "user", "content": "x" * 1_100_000}])
    assert err.value.status_code == 413
    assert err.value.type == "invalid_request_error"


# -- keys and server faults -------------------------------------------------------------------

KEY = "sk-shimmy-test"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory) -> Iterator[Server]:
    """A server that requires KEY and also offers a model llama.cpp cannot load
    (a well-formed GGUF of an architecture it does not know)."""
    root = tmp_path_factory.mktemp("openai-keyed")
    folder = root / "models"
    folder.mkdir()
    write_model(folder / "alien.gguf", arch="notarealarch")
    args = ["--api-key", KEY, "--model-dirs", str(folder), "--no-preload", "--ctx-size", "512"]
    srv = start_server(args, isolated_env(root), cwd=root)
    yield srv
    srv.stop()


def keyed_client(server: Server, api_key: str, sent: list[Any]) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/v1",
        api_key=api_key,
        max_retries=0,
        timeout=240,
        http_client=openai.DefaultHttpxClient(event_hooks={"request": [sent.append]}),
    )


def test_missing_or_wrong_key_raises_authentication_error(keyed_server):
    sent: list[Any] = []  # the SDK's own (httpx2) requests, as sent
    with keyed_client(keyed_server, KEY, sent) as client:
        assert MODEL in [m.id for m in client.models.list().data]
        # No key at all: the SDK insists on one unless the header is omitted outright.
        with pytest.raises(openai.AuthenticationError) as err:
            chat(client, extra_headers={"Authorization": openai.omit})
        assert "authorization" not in sent[-1].headers
        assert err.value.status_code == 401 and err.value.code == "unauthorized"
    with keyed_client(keyed_server, "sk-wrong", sent) as client:
        with pytest.raises(openai.AuthenticationError) as err:
            chat(client)
        assert sent[-1].headers["authorization"] == "Bearer sk-wrong"
        assert err.value.status_code == 401 and err.value.code == "unauthorized"
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def test_model_that_fails_to_load_raises_internal_server_error(keyed_server):
    with keyed_client(keyed_server, KEY, []) as client:
        with pytest.raises(openai.InternalServerError) as err:
            chat(client, model="alien")
        assert err.value.status_code == 500
        assert err.value.code == "model_load_failed"
        assert "alien" in err.value.message
        assert "notarealarch" in str(err.value.body)
        # The fault is the model's, not the server's: the next request is served.
        assert chat(client, max_tokens=2).choices[0].finish_reason in {"stop", "length"}


# -- completions and embeddings ---------------------------------------------------------------


def test_completions_plain_stream_and_several_prompts(client, tokenizer):
    prompt = "The three primary colours are"
    whole = client.completions.create(model=MODEL, prompt=prompt, max_tokens=10, temperature=0)
    assert whole.object == "text_completion" and whole.id.startswith("cmpl-")
    assert whole.choices[0].text and whole.choices[0].finish_reason in {"stop", "length"}
    assert whole.usage.prompt_tokens == len(tokenizer(prompt))
    streamed = client.completions.create(
        model=MODEL, prompt=prompt, max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text

    several = client.completions.create(
        model=MODEL, prompt=[prompt, "Once upon a time"], max_tokens=4, temperature=0
    )
    assert [c.index for c in several.choices] == [0, 1]
    assert several.choices[0].text == whole.choices[0].text[: len(several.choices[0].text)]


def test_embeddings_two_inputs_two_different_normalized_vectors(client):
    result = client.embeddings.create(model=MODEL, input=["I like cats.", "Stock markets fell."])
    assert [d.index for d in result.data] == [0, 1]
    first, second = (d.embedding for d in result.data)
    assert len(first) == len(second) == EMBEDDING_SIZE
    assert first != second
    for vector in (first, second):
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    assert result.usage.prompt_tokens > 0
    # Explicit floats agree with the SDK's default base64 transport.
    floats = client.embeddings.create(
        model=MODEL, input="I like cats.", encoding_format="float"
    ).data[0]
    assert all(
        math.isclose(a, b, abs_tol=1e-6) for a, b in zip(floats.embedding, first, strict=True)
    )


# -- busy server and clients that leave ------------------------------------------------------------


@pytest.fixture(scope="module")
def small_server(tmp_path_factory) -> Iterator[Server]:
    """One request slot and no waiting line: a second request is refused."""
    root = tmp_path_factory.mktemp("openai-busy")
    env = isolated_env(root, SHIMMY_MAX_QUEUE="0")
    srv = start_server(["--ctx-size", "2048", "--parallel", "1"], env, cwd=root)
    yield srv
    srv.stop()


# A grammar that cannot end before the context is full (2000+ tokens: a minute or
# more here), so a server that finishes within seconds must have cancelled it.
ENDLESS = {
    "type": "json_schema",
    "json_schema": {
        "name": "endless",
        "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1000},
    },
}
FREED_WITHIN = 15.0


def seconds_until_idle(url: str, timeout: float = 240) -> float:
    started = time.monotonic()
    health: dict[str, Any] = {}  # the last answer, for the timeout's message

    def idle() -> bool:
        health.update(httpx.get(url + "/api/health", timeout=10).json())
        return health["active_requests"] == 0 and health["queued_requests"] == 0

    eventually(idle, timeout, interval=0.05, what=lambda: f"the server to be idle: {health}")
    return time.monotonic() - started


def test_busy_server_answers_503_and_a_closed_stream_cancels(small_server):
    with openai.OpenAI(
        base_url=small_server.url + "/v1", api_key="x", max_retries=0, timeout=240
    ) as client:
        stream = chat(client, max_tokens=4000, response_format=ENDLESS, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break  # generating now: the one slot is taken
        with pytest.raises(openai.InternalServerError) as err:
            chat(client, max_tokens=2)
        assert err.value.status_code == 503
        assert err.value.code == "server_busy"
        assert err.value.response.headers["retry-after"]
        stream.close()  # the client goes away mid-stream
        assert seconds_until_idle(small_server.url) < FREED_WITHIN
        # The slot is free again.
        assert chat(client, max_tokens=2).choices[0].finish_reason in {"stop", "length"}


def test_non_streaming_client_that_leaves_cancels(small_server):
    seconds_until_idle(small_server.url)
    body = {"model": MODEL, "messages": QUESTION, "max_tokens": 4000, "response_format": ENDLESS}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            small_server.url + "/v1/chat/completions",
            json=body,
            timeout=httpx.Timeout(240, read=2),
        )
    assert seconds_until_idle(small_server.url) < FREED_WITHIN


# -- logprobs --------------------------------------------------------------------------------


def test_chat_logprobs_greedy_picks_the_top_token_and_tokens_make_the_content(client):
    """The logprobs are the model's own distribution, before sampling settings: with
    no penalty to move the pick, greedy takes the top token at every step."""
    result = chat(
        client,
        temperature=0,
        max_tokens=16,
        logprobs=True,
        top_logprobs=5,
        extra_body={"repeat_penalty": 1.0},
    )
    content = result.choices[0].message.content
    entries = result.choices[0].logprobs.content
    assert len(entries) == result.usage.completion_tokens
    assert "".join(e.token for e in entries) == content
    for entry in entries:
        assert entry.logprob <= 0 and bytes(entry.bytes).decode("utf-8", "replace") == entry.token
        tops = [t.logprob for t in entry.top_logprobs]
        assert len(tops) == 5 and tops == sorted(tops, reverse=True)
        # Greedy: the chosen token is the most likely one, its logprob the top one.
        assert entry.top_logprobs[0].token == entry.token
        assert math.isclose(entry.logprob, tops[0], rel_tol=1e-6)
        assert sum(math.exp(t) for t in tops) <= 1.0 + 1e-6


def test_streamed_chat_logprobs_equal_the_whole_ones(client):
    whole = chat(client, temperature=0, max_tokens=16, logprobs=True, top_logprobs=2)
    entries, text = [], ""
    for chunk in chat(
        client, temperature=0, max_tokens=16, logprobs=True, top_logprobs=2, stream=True
    ):
        choice = chunk.choices[0]
        text += choice.delta.content or ""
        if choice.logprobs and choice.logprobs.content:
            entries += choice.logprobs.content
    assert text == whole.choices[0].message.content
    assert [(e.token, round(e.logprob, 5)) for e in entries] == [
        (e.token, round(e.logprob, 5)) for e in whole.choices[0].logprobs.content
    ]


def test_completion_logprobs_in_the_legacy_shape(client):
    result = client.completions.create(
        model=MODEL, prompt="1, 2, 3,", temperature=0, max_tokens=6, logprobs=3, echo=True
    )
    choice = result.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text[len("1, 2, 3,") :]
    assert logprobs.text_offset[0] == len("1, 2, 3,")
    for token, offset in zip(logprobs.tokens, logprobs.text_offset, strict=True):
        assert choice.text[offset : offset + len(token)] == token
    for token, lp, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert len(top) == 3 and max(top, key=top.get) == token and math.isclose(top[token], lp)


def test_logprobs_are_off_unless_asked_and_bounded(client):
    assert chat(client, max_tokens=2).choices[0].logprobs is None
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        chat(client, max_tokens=2, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs"):
        chat(client, max_tokens=2, top_logprobs=2)


# -- n choices -------------------------------------------------------------------------------


def test_n_choices_stream_and_not_each_its_own(client):
    result = chat(client, n=3, temperature=1.0, seed=11, max_tokens=12)
    assert [c.index for c in result.choices] == [0, 1, 2]
    texts = [c.message.content for c in result.choices]
    assert len(set(texts)) > 1  # consecutive seeds: they differ
    # The prompt is counted once, as OpenAI counts it.
    single = chat(client, temperature=1.0, seed=11, max_tokens=12)
    assert single.choices[0].message.content == texts[0]
    assert result.usage.prompt_tokens == single.usage.prompt_tokens
    assert result.usage.completion_tokens == sum(
        chat(client, temperature=1.0, seed=11 + i, max_tokens=12).usage.completion_tokens
        for i in range(3)
    )
    streamed = ["", "", ""]
    finishes: dict[int, str] = {}
    for chunk in chat(client, n=3, temperature=1.0, seed=11, max_tokens=12, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert streamed == texts and set(finishes) == {0, 1, 2}


def test_text_completion_n_per_prompt(client):
    result = client.completions.create(
        model=MODEL, prompt=["1, 2, 3,", "a, b, c,"], n=2, temperature=0, max_tokens=4
    )
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    texts = [c.text for c in result.choices]
    assert texts[0] == texts[1] and texts[2] == texts[3]  # greedy choices are alike
    assert texts[0] != texts[2]


def test_more_choices_than_slots_is_a_400(client, server):
    with pytest.raises(openai.BadRequestError, match="n must be between 1 and"):
        chat(client, n=64, max_tokens=2)


# -- logit_bias, token arrays, embeddings that do not depend on their neighbours ------------------


def test_logit_bias_bans_and_forces_tokens(client, tokenizer):
    greedy = {"temperature": 0, "max_tokens": 8, "extra_body": {"repeat_penalty": 1.0}}
    plain = chat(client, logprobs=True, **greedy)
    first = plain.choices[0].logprobs.content[0].token
    (first_id,) = tokenizer(first)  # the token it is (SmolLM2 adds no BOS)
    banned = chat(client, logprobs=True, logit_bias={str(first_id): -100}, **greedy)
    assert banned.choices[0].logprobs.content[0].token != first
    (forced_id,) = tokenizer(" zebra")
    forced = chat(client, temperature=0, max_tokens=3, logit_bias={str(forced_id): 100})
    assert forced.choices[0].message.content.startswith(" zebra")
    with pytest.raises(openai.BadRequestError, match="does not have"):
        chat(client, max_tokens=2, logit_bias={"999999": 5})


def test_a_token_array_prompt_is_the_text_prompt(client, tokenizer):
    text = "1, 2, 3, 4,"
    tokens = tokenizer(text)
    by_text = client.completions.create(model=MODEL, prompt=text, temperature=0, max_tokens=6)
    by_tokens = client.completions.create(model=MODEL, prompt=tokens, temperature=0, max_tokens=6)
    assert by_tokens.choices[0].text == by_text.choices[0].text
    assert by_tokens.usage.prompt_tokens == len(tokens)
    echoed = client.completions.create(
        model=MODEL, prompt=tokens, temperature=0, max_tokens=2, echo=True
    )
    assert echoed.choices[0].text.startswith(text)


def test_embeddings_do_not_depend_on_what_else_is_embedded(client, tokenizer):
    def vectors(inputs: list[Any]) -> list[list[float]]:
        result = client.embeddings.create(model=MODEL, input=inputs, encoding_format="float")
        return [d.embedding for d in result.data]

    alone = vectors(["The cat sat on the mat."])[0]
    again = vectors(["The cat sat on the mat."])[0]
    beside = vectors(
        ["A long sentence about markets and rain. " * 5, "The cat sat on the mat.", "x"]
    )[1]
    for other in (again, beside):
        assert max(abs(a - b) for a, b in zip(alone, other, strict=True)) < 1e-4
    # The same text as token ids (mixed with text in one request) gives its vector.
    as_tokens = vectors(["x", tokenizer("The cat sat on the mat.")])[1]
    assert max(abs(a - b) for a, b in zip(alone, as_tokens, strict=True)) < 1e-4
