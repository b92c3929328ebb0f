"""Ollama's own Python client (and LangChain's ChatOllama) against `shimmy serve
--ollama` (a subprocess) with the real SmolLM2, and Ollama's NDJSON on the wire."""

from __future__ import annotations

import json
import math
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import ollama
import pytest

from tests.e2e.harness import Server, isolated_env, start_server
from tests.hub.fakehub import FakeHub
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
TAGGED = f"{MODEL}:latest"
CTX = 1024
EMBEDDING_SIZE = 576  # SmolLM2-135M's hidden size
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "num_predict": 24}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def ollama_url(server: Server) -> str:
    """Where the server says it serves Ollama's API."""
    found = eventually(
        lambda: re.search(r"Ollama's API on (http://\S+)", server.log()), 10, what="the line"
    )
    assert found is not None
    return found.group(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("ollama")
    args = ["--ctx-size", str(CTX), "--ollama", "127.0.0.1:0"]
    srv = start_server(args, isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def url(server) -> str:
    return ollama_url(server)


@pytest.fixture(scope="module")
def client(url) -> Iterator[ollama.Client]:
    with ollama.Client(host=url, timeout=240) as c:
        yield c


def chat(client: ollama.Client, **kwargs: Any) -> Any:
    kwargs.setdefault("model", MODEL)
    kwargs.setdefault("messages", QUESTION)
    kwargs.setdefault("options", GREEDY)
    return client.chat(**kwargs)


def assert_clean(text: str) -> None:
    assert "<|im_end|>" not in text and "<|im_start|>" not in text and "<|endoftext|>" not in text


def assert_timed(final: Any) -> None:
    """The last object of a reply: done, a reason and real nanosecond timings."""
    assert final.done is True and final.done_reason in {"stop", "length"}
    for field in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[field], int) and final[field] > 0, field
    assert final.prompt_eval_count > 0 and final.eval_count > 0
    assert final.total_duration >= final.prompt_eval_duration + final.eval_duration
    assert final.load_duration is not None and final.load_duration >= 0


# -- what clients probe first ------------------------------------------------------


def test_root_and_version_answer_as_ollama_does(url):
    root = httpx.get(url + "/")
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert httpx.head(url + "/").status_code == 200
    version = httpx.get(url + "/api/version").json()["version"]
    # VS Code's Copilot wants 0.6.4 or later.
    assert tuple(int(p) for p in version.split(".")) >= (0, 6, 4)


def test_list_show_and_ps(client):
    listed = {m.model: m for m in client.list().models}
    assert TAGGED in listed
    model = listed[TAGGED]
    assert model.size and model.size > 50_000_000 and len(model.digest or "") == 64
    assert model.modified_at is not None and model.modified_at.year > 2000
    assert model.details is not None
    assert (model.details.format, model.details.family) == ("gguf", "llama")
    assert (model.details.parameter_size, model.details.quantization_level) == ("135M", "Q4_1")

    for name in (MODEL, TAGGED):  # a bare name means NAME:latest
        shown = client.show(name)
        assert shown.capabilities == ["completion"]  # SmolLM2's template knows no tools
        assert shown.modelinfo is not None
        assert shown.modelinfo["general.architecture"] == "llama"
        assert shown.modelinfo["llama.context_length"] == 8192
        assert shown.modelinfo["general.basename"] == "smollm2"
        assert "<|im_start|>" in (shown.template or "")
        assert f"num_ctx {CTX}" in " ".join((shown.parameters or "").split())

    chat(client, options={**GREEDY, "num_predict": 2})
    (running,) = [m for m in client.ps().models if m.model == TAGGED]
    assert running.context_length == CTX and running.size and running.size > 50_000_000
    assert running.size_vram == 0  # on the CPU
    # The server's keep-alive (300 s) counted from the last use.
    assert running.expires_at is not None
    left = running.expires_at.timestamp() - time.time()
    assert 200 < left <= 301


# -- chat and generate ------------------------------------------------------------------


def test_chat_streamed_and_whole_give_the_same_greedy_text(client):
    whole = chat(client)
    assert whole.message.role == "assistant" and whole.message.content
    assert_clean(whole.message.content)
    assert whole.model == MODEL  # the name as the client sent it
    assert_timed(whole)
    parts = list(chat(client, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert parts[-1].message.content == ""
    assert parts[-1].eval_count == whole.eval_count
    assert parts[-1].prompt_eval_count == whole.prompt_eval_count
    assert_timed(parts[-1])


def test_generate_streamed_and_whole_give_the_same_greedy_text(client):
    prompt = "Name three colours."
    whole = client.generate(model=TAGGED, prompt=prompt, options=GREEDY)
    assert whole.response and whole.done
    assert_clean(whole.response)
    assert_timed(whole)
    parts = list(client.generate(model=TAGGED, prompt=prompt, options=GREEDY, stream=True))
    assert "".join(p.response or "" for p in parts) == whole.response
    assert_timed(parts[-1])
    # A system prompt changes the answer; raw sends the prompt as it is.
    assert client.generate(model=MODEL, prompt=prompt, system="Answer in French.", options=GREEDY)
    raw = client.generate(model=MODEL, prompt="The sky is", raw=True, options=GREEDY)
    assert raw.response


def test_options_num_predict_stop_and_seed(client):
    short = chat(client, options={"temperature": 0, "num_predict": 3})
    assert short.eval_count == 3 and short.done_reason == "length"
    free = chat(client).message.content
    words = free.split()
    assert len(words) >= 3, free
    stopped = chat(client, options={**GREEDY, "stop": [words[2]]})
    assert stopped.message.content == free[: free.index(words[2])]
    assert stopped.done_reason == "stop"
    # num_ctx cannot grow a slot: a larger one is served within it.
    bigger = chat(client, options={**GREEDY, "num_ctx": CTX * 64})
    assert bigger.message.content == free
    story = [{"role": "user", "content": "Tell me a story about a dragon."}]
    seeded = {"temperature": 1.0, "seed": 42, "num_predict": 16}
    first = chat(client, messages=story, options=seeded).message.content
    assert chat(client, messages=story, options=seeded).message.content == first


def test_format_with_a_schema_and_json(client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    messages = [{"role": "user", "content": "Describe Ann, aged 31, as JSON."}]
    reply = chat(client, messages=messages, format=schema, options={"temperature": 0})
    jsonschema.validate(json.loads(reply.message.content), schema)
    generated = client.generate(
        model=MODEL,
        prompt='Return JSON: {"city": ..., "country": ...} for Paris.',
        format="json",
        options={"temperature": 0, "repeat_penalty": 1.1, "num_predict": 150},
    )
    assert generated.done_reason == "stop"
    assert isinstance(json.loads(generated.response), dict)


def test_tools_come_back_as_calls_with_object_arguments(client):
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    whole = chat(client, messages=messages, tools=[WEATHER_TOOL], options={"temperature": 0})
    (call,) = whole.message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict) and "city" in call.function.arguments
    streamed = list(
        chat(
            client, messages=messages, tools=[WEATHER_TOOL], options={"temperature": 0}, stream=True
        )
    )
    calls = [c for p in streamed for c in p.message.tool_calls or ()]
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        (call.function.name, call.function.arguments)
    ]
    # The call and its result in the history: the model answers in text.
    history = [
        *messages,
        {"role": "assistant", "content": "", "tool_calls": [call.model_dump()]},
        {"role": "tool", "content": "11 degrees and sunny", "tool_name": "get_weather"},
    ]
    answer = chat(client, messages=history, options=GREEDY)
    assert answer.message.content


# -- embeddings --------------------------------------------------------------------------


def test_embed_one_and_many_and_the_older_endpoint(client):
    one = client.embed(model=MODEL, input="I like cats.")
    (vector,) = one.embeddings
    assert len(vector) == EMBEDDING_SIZE
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)
    assert one.prompt_eval_count and one.prompt_eval_count > 0
    many = client.embed(model=MODEL, input=["I like cats.", "Stock markets fell."])
    assert len(many.embeddings) == 2 and many.embeddings[0] != many.embeddings[1]
    assert all(
        math.isclose(a, b, abs_tol=1e-5) for a, b in zip(many.embeddings[0], vector, strict=True)
    )
    short = client.embed(model=MODEL, input="I like cats.", dimensions=64)
    assert len(short.embeddings[0]) == 64
    # truncate (the default) cuts what does not fit; false refuses it with 400.
    long = "word " * 3000
    assert len(client.embed(model=MODEL, input=long).embeddings[0]) == EMBEDDING_SIZE
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model=MODEL, input=long, truncate=False)
    assert err.value.status_code == 400 and "tokens" in err.value.error
    older = client.embeddings(model=MODEL, prompt="I like cats.")
    assert len(older.embedding) == EMBEDDING_SIZE


# -- loading, unloading, keep_alive ----------------------------------------------------


def loaded(client: ollama.Client) -> set[str]:
    return {m.model or "" for m in client.ps().models}


def test_keep_alive_zero_unloads_and_an_empty_request_loads(client):
    reply = client.generate(model=MODEL, prompt="Hi", options=GREEDY, keep_alive=0)
    assert reply.done
    eventually(lambda: TAGGED not in loaded(client), 15, what="the unload after the answer")
    load = client.generate(model=MODEL)
    assert (load.done, load.done_reason, load.response) == (True, "load", "")
    assert TAGGED in loaded(client)
    forever = client.chat(model=MODEL, messages=[], keep_alive=-1)
    assert forever.done_reason == "load"
    (running,) = [m for m in client.ps().models if m.model == TAGGED]
    assert running.expires_at is not None and running.expires_at.year - time.gmtime().tm_year > 100
    timed = client.chat(model=MODEL, messages=[], keep_alive="90s")
    assert timed.done_reason == "load"
    (running,) = [m for m in client.ps().models if m.model == TAGGED]
    assert (
        running.expires_at is not None and 60 < running.expires_at.timestamp() - time.time() <= 91
    )
    unload = client.chat(model=MODEL, messages=[], keep_alive=0)
    assert (unload.done_reason, unload.message.content) == ("unload", "")
    assert TAGGED not in loaded(client)


# -- errors --------------------------------------------------------------------------------


def test_unknown_model_raises_response_error_404(client):
    with pytest.raises(ollama.ResponseError) as err:
        chat(client, model="no-such-model")
    assert err.value.status_code == 404
    assert err.value.error == "model 'no-such-model' not found"
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model:latest")
    assert err.value.status_code == 404


def test_what_shimmy_cannot_do_is_a_clear_400_or_501(client, url):
    with pytest.raises(ollama.ResponseError) as err:
        chat(client, messages=[{"role": "user", "content": "Hi", "images": ["aGVsbG8="]}])
    assert err.value.status_code == 400 and "images are not supported" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        chat(client, think=True)
    assert err.value.status_code == 400 and "thinking is not supported" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model=MODEL, prompt="def f(", suffix="return x")
    assert err.value.status_code == 400 and "suffix" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        chat(client, keep_alive="soon")
    assert err.value.status_code == 400 and "invalid duration" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.pull("llama3.2")
    assert err.value.status_code == 400 and "Hugging Face" in err.value.error
    with pytest.raises(ollama.ResponseError) as err:
        client.create(model="mario", from_=MODEL, system="You are Mario.")
    assert err.value.status_code == 501
    assert httpx.post(url + "/api/push", json={"model": "x"}).status_code == 501
    assert httpx.head(url + "/api/blobs/sha256:" + "0" * 64).status_code == 501
    r = httpx.post(url + "/api/chat", content=b"{oops")
    assert r.status_code == 400 and isinstance(r.json()["error"], str)
    long = [{"role": "user", "content": "word " * 2000}]
    with pytest.raises(ollama.ResponseError) as err:
        chat(client, messages=long)
    assert err.value.status_code == 400 and str(CTX) in err.value.error


def test_the_v1_apis_are_served_on_the_ollama_port_too(url):
    """VS Code's Copilot lists models with /api/tags and /api/show, then chats
    through /v1/chat/completions on the same address."""
    body = {"model": TAGGED.removesuffix(":latest"), "messages": QUESTION, "max_tokens": 4}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=240)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    missing = httpx.post(url + "/v1/chat/completions", json={**body, "model": "nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    assert (
        httpx.post(url + "/api/generate", json={"model": MODEL, "prompt": ""}).json()["done_reason"]
        == "load"
    )  # Ollama's /api/generate here, not the native one


# -- NDJSON on the wire ------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/chat", {"model": MODEL, "messages": QUESTION, "options": GREEDY}),
        ("/api/generate", {"model": MODEL, "prompt": "Count to five.", "options": GREEDY}),
    ],
)
def test_every_streamed_line_is_one_json_object_and_the_last_is_timed(url, path, body):
    with httpx.stream("POST", url + path, json=body, timeout=240) as r:  # stream: the default
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        raw = "".join(r.iter_text())
    assert raw.endswith("\n")
    lines = raw.splitlines()
    assert len(lines) > 2 and all(lines)
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objects)
    assert all(o["done"] is False for o in objects[:-1])
    assert all(o["model"] == MODEL and o["created_at"].endswith("Z") for o in objects)
    last = objects[-1]
    assert last["done"] is True and last["done_reason"] in {"stop", "length"}
    for field in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(last[field], int), field
    for field in ("total_duration", "prompt_eval_duration", "eval_duration", "eval_count"):
        assert last[field] > 0, field
    # eval_count / eval_duration * 1e9 is Ollama's tokens per second: a real rate.
    assert 1 < last["eval_count"] / last["eval_duration"] * 1e9 < 100_000


def test_stream_false_is_one_json_object(url):
    body = {"model": MODEL, "messages": QUESTION, "options": GREEDY, "stream": False}
    r = httpx.post(url + "/api/chat", json=body, timeout=240)
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["done"] is True and r.json()["message"]["content"]


def test_a_client_that_leaves_cancels_its_generation(server, url):
    endless = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Write a very long essay about the sea."}],
        "options": {"num_predict": 900, "temperature": 1.0},
    }
    with httpx.stream("POST", url + "/api/chat", json=endless, timeout=240) as r:
        for line in r.iter_lines():
            if json.loads(line)["message"]["content"]:
                break  # generating now; leave

    def idle() -> bool:
        health = httpx.get(server.url + "/api/health", timeout=10).json()
        return health["active_requests"] == 0

    eventually(idle, 15, interval=0.05, what="the generation cancelled")


def test_both_listeners_share_metrics_and_the_request_log(server, url):
    httpx.get(url + "/api/tags")
    text = httpx.get(server.url + "/metrics").text
    assert re.search(
        r'shimmy_requests_total\{[^}]*endpoint="/api/tags"[^}]*listener="ollama"', text
    )
    assert httpx.get(url + "/metrics").text.count("shimmy_requests_total{") >= 2


# -- LangChain ---------------------------------------------------------------------------


def test_langchain_chat_ollama_answers(url):
    from langchain_ollama import ChatOllama

    llm = ChatOllama(model=MODEL, base_url=url, temperature=0, num_predict=16)
    try:
        answer = llm.invoke("What is the capital of France?")
    finally:
        llm._client.close()  # ChatOllama leaves its ollama.Client's connections open
    assert isinstance(answer.content, str) and answer.content
    assert_clean(answer.content)


# -- pulling from the hub, and deleting ----------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_pull_from_the_hub_then_use_copy_and_delete(fake_hub: FakeHub, tmp_path):
    env = isolated_env(tmp_path / "user", HF_ENDPOINT=fake_hub.url)
    srv = start_server(["--ctx-size", "512", "--ollama", "127.0.0.1:0"], env, cwd=tmp_path)
    try:
        with ollama.Client(host=ollama_url(srv), timeout=240) as client:
            name = "hf.co/shimmy-test/SmolLM2-135M-Instruct-GGUF:Q8_0"
            progress = list(client.pull(name, stream=True))
            statuses = [p.status for p in progress]
            assert statuses[0] == "pulling manifest"
            assert statuses[-3:] == ["verifying sha256 digest", "writing manifest", "success"]
            pulling = [p for p in progress if p.digest]
            assert pulling and all(p.status == f"pulling {p.digest[7:19]}" for p in pulling)
            assert pulling[-1].completed == pulling[-1].total and pulling[-1].total > 50_000_000
            assert all(p.digest.startswith("sha256:") for p in pulling)
            # The model answers to the name it was pulled by, in every endpoint.
            assert name in {m.model for m in client.list().models}
            reply = client.generate(model=name, prompt="Hi", options=GREEDY)
            assert reply.response and reply.model == name
            openai_chat = httpx.post(
                srv.url + "/v1/chat/completions",
                json={"model": name, "messages": QUESTION, "max_tokens": 2},
                timeout=240,
            )
            assert openai_chat.status_code == 200
            # A copy is a second name; deleting it leaves the model.
            client.copy(name, "my-smollm")
            assert "my-smollm:latest" in {m.model for m in client.list().models}
            assert client.delete("my-smollm:latest").status == "success"
            assert client.show(name).details is not None
            # shimmy deletes only what it pulled.
            with pytest.raises(ollama.ResponseError) as err:
                client.delete(MODEL)
            assert err.value.status_code == 400 and "not downloaded by shimmy" in err.value.error
            # Pulling again (not streamed) finds the file in place: one answer.
            assert client.pull(name).status == "success"
            assert client.delete(name).status == "success"
            listed = {m.model for m in client.list().models}
            assert name not in listed and TAGGED in listed
            with pytest.raises(ollama.ResponseError) as err:
                client.show(name)
            assert err.value.status_code == 404
            assert not list((tmp_path / "user" / "hf").rglob("*.gguf"))
    finally:
        srv.stop()
    # The alias survives a restart (kept in shimmy's data folder): pull, restart, use.


def test_a_pulled_name_survives_a_restart_and_an_unknown_repo_is_404(fake_hub: FakeHub, tmp_path):
    env = isolated_env(tmp_path / "user", HF_ENDPOINT=fake_hub.url)
    name = "huggingface.co/shimmy-test/SmolLM2-135M-Instruct-GGUF"  # the default file
    args = ["--ctx-size", "512", "--ollama", "127.0.0.1:0", "--no-preload"]
    first = start_server(args, env, cwd=tmp_path)
    try:
        with ollama.Client(host=ollama_url(first), timeout=240) as client:
            assert client.pull(name).status == "success"
            with pytest.raises(ollama.ResponseError) as err:
                client.pull("hf.co/shimmy-test/no-such-repo")
            assert err.value.status_code == 404
    finally:
        first.stop()
    second = start_server(args, env, cwd=tmp_path)
    try:
        with ollama.Client(host=ollama_url(second), timeout=240) as client:
            assert f"{name}:latest" in {m.model for m in client.list().models}
            assert client.generate(model=f"{name}:latest", prompt="Hi", options=GREEDY).done
    finally:
        second.stop()


def test_a_client_that_leaves_a_pull_stops_it_and_the_next_pull_resumes(
    fake_hub: FakeHub, tmp_path
):
    env = isolated_env(tmp_path / "user", HF_ENDPOINT=fake_hub.url)
    args = ["--ctx-size", "512", "--ollama", "127.0.0.1:0", "--no-preload"]
    srv = start_server(args, env, cwd=tmp_path)
    name = "hf.co/shimmy-test/SmolLM2-135M-Instruct-GGUF:Q8_0"
    try:
        url = ollama_url(srv)
        fake_hub.throttle_bytes_per_second = 5_000_000  # 20 s for the whole file
        with httpx.stream("POST", url + "/api/pull", json={"model": name}, timeout=60) as r:
            for line in r.iter_lines():
                if json.loads(line).get("completed", 0) > 1_000_000:
                    break  # downloading; leave
        fake_hub.throttle_bytes_per_second = None
        fake_hub.requests.clear()
        with ollama.Client(host=url, timeout=240) as client:
            assert client.pull(name).status == "success"
            assert name in {m.model for m in client.list().models}
        (resumed,) = fake_hub.ranges()
        assert resumed.startswith("bytes=") and resumed != "bytes=0-", resumed
        assert int(resumed[len("bytes=") : -1]) > 1_000_000
    finally:
        fake_hub.throttle_bytes_per_second = None
        srv.stop()


# -- keys and ports ------------------------------------------------------------------------

KEY = "sk-shimmy-ollama"


def test_api_keys_guard_the_ollama_listener_but_not_its_probes(tmp_path):
    env = isolated_env(tmp_path)
    args = ["--api-key", KEY, "--ollama", "127.0.0.1:0", "--no-preload", "--ctx-size", "512"]
    srv = start_server(args, env, cwd=tmp_path)
    try:
        url = ollama_url(srv)
        assert httpx.get(url + "/").status_code == 200
        assert httpx.get(url + "/api/version").status_code == 200
        with ollama.Client(host=url) as anonymous:
            with pytest.raises(ollama.ResponseError) as err:
                anonymous.list()
            assert err.value.status_code == 401 and "API key" in err.value.error
        with ollama.Client(host=url, headers={"Authorization": f"Bearer {KEY}"}) as keyed:
            assert TAGGED in {m.model for m in keyed.list().models}
        # A foreign web page is refused here as on the main listener, in Ollama's shape.
        r = httpx.get(url + "/api/tags", headers={"Origin": "https://evil.example"})
        assert r.status_code == 403 and isinstance(r.json()["error"], str)
    finally:
        srv.stop()


def test_a_taken_ollama_port_is_reported_and_the_main_api_serves(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = start_server(
            ["--ollama", f"127.0.0.1:{port}", "--no-preload"], isolated_env(tmp_path), cwd=tmp_path
        )
        try:
            log = srv.log()
            assert f"Ollama's API is not served: Port {port} on 127.0.0.1 is already in use" in log
            assert "--ollama HOST:PORT" in log
            assert httpx.get(srv.url + "/api/health").status_code == 200
        finally:
            srv.stop()


def test_a_non_local_ollama_address_without_a_key_is_refused(tmp_path):
    from tests.e2e.harness import run_shimmy

    result = run_shimmy(
        ["serve", "--bind", f"127.0.0.1:{free_port()}", "--ollama", "0.0.0.0:0"],
        isolated_env(tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Refusing to listen on 0.0.0.0 without an API key" in result.stderr
