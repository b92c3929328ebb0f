"""Grammar bombs against the real `shimmy serve`: schemas that used to end the
process with SIGSEGV (llama.cpp's recursive grammar parser) or stall the engine
for seconds a token are a 400 naming the limit, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import pytest

from tests.e2e.harness import Server, isolated_env, start_server

pytestmark = [pytest.mark.e2e, pytest.mark.model]

MODEL = "smollm2-135m-instruct-q4_1"
QUESTION = [{"role": "user", "content": "Describe Ann, aged 31, who owns a cat, as JSON."}]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("grammar-bombs")
    srv = start_server(["--ctx-size", "1024"], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def nested_objects(levels: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def chat(client: httpx.Client, **body) -> httpx.Response:
    return client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": QUESTION, "max_tokens": 3, **body},
    )


def assert_still_serving(server: Server, client: httpx.Client) -> None:
    assert server.process.poll() is None, f"shimmy serve died:\n{server.log()[-3000:]}"
    assert client.get("/api/health").json()["status"] == "healthy"
    answer = chat(client, temperature=0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"]


BOMBS = {
    # The three of issue 12, each of which ended the process with SIGSEGV.
    "maxLength": (schema_format({"type": "string", "maxLength": 20000}), "maxLength 20000"),
    "pattern": (
        schema_format({"type": "string", "pattern": "^a{0,20000}$"}),
        "a pattern repeat count of 20000",
    ),
    "maxItems": (
        schema_format({"type": "array", "items": {"type": "integer"}, "maxItems": 20000}),
        "maxItems 20000",
    ),
    # Deep nesting, as deep as the request body's JSON parser lets through.
    "nesting": (schema_format(nested_objects(60)), "nesting 65 levels deep"),
    # Parses, but llama.cpp took 7.6 s for one token of it.
    "empty repeat": (
        schema_format({"type": "string", "pattern": "^(a?){0,100}$"}),
        "a pattern repeats a part that can match nothing",
    ),
    # The same bomb beside json_object, as llama.cpp's server reads it.
    "json_object schema": (
        {"type": "json_object", "schema": {"type": "string", "maxLength": 20000}},
        "maxLength 20000",
    ),
}


@pytest.mark.parametrize("name", BOMBS)
def test_a_grammar_bomb_is_a_400_naming_the_limit_and_the_server_lives(server, client, name):
    response_format, words = BOMBS[name]
    r = chat(client, response_format=response_format)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request"
    assert "(the limit is" in error["message"] and words in error["message"]
    assert_still_serving(server, client)


def test_nesting_past_the_body_parser_is_a_400_and_the_server_lives(server, client):
    levels = 5000  # written by hand: json.dumps itself refuses to nest this deep
    schema = '{"type":"object","properties":{"a":' * levels + '{"type":"integer"}' + "}}" * levels
    body = json.dumps(
        {
            "model": MODEL,
            "messages": QUESTION,
            "max_tokens": 3,
            "response_format": schema_format({"$schema": "HERE"}),
        }
    ).replace('{"$schema": "HERE"}', schema)
    assert json.loads(body.replace(schema, "{}"))  # the rest is well formed
    r = client.post(
        "/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"
    assert_still_serving(server, client)


def test_bombs_sent_together_are_each_a_400(server, client):
    formats = [fmt for fmt, _ in BOMBS.values()] * 2
    with ThreadPoolExecutor(max_workers=4) as pool:
        codes = list(pool.map(lambda f: chat(client, response_format=f).status_code, formats))
    assert codes == [400] * len(formats)
    assert_still_serving(server, client)


def test_no_other_endpoint_takes_a_grammar(server, client):
    """Only /v1/chat/completions builds grammars: a bomb in the fields other
    servers read (Ollama's ``format``, llama.cpp's ``grammar`` and ``json_schema``)
    is ignored by the native API and the legacy completions."""
    bomb = {"type": "string", "maxLength": 20000}
    deep_gbnf = "root ::= " + "(" * 30000 + '"a"' + ")" * 30000
    extras = {"format": bomb, "grammar": deep_gbnf, "json_schema": bomb}
    r = client.post(
        "/api/generate", json={"model": MODEL, "prompt": "Hi", "max_tokens": 3, **extras}
    )
    assert r.status_code == 200, r.text
    r = client.post(
        "/v1/completions",
        json={
            "model": MODEL,
            "prompt": "Hi",
            "max_tokens": 3,
            "response_format": schema_format(bomb),
            **extras,
        },
    )
    assert r.status_code == 200, r.text
    assert_still_serving(server, client)


def test_a_normal_json_schema_request_still_gives_valid_json(server, client):
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer"},
            "pets": {"type": "array", "items": {"enum": ["cat", "dog"]}, "maxItems": 2},
        },
        "required": ["name", "age", "pets"],
        "additionalProperties": False,
    }
    r = chat(
        client,
        max_tokens=80,
        temperature=0.8,
        seed=3,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "person", "schema": schema, "strict": True},
        },
    )
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["message"]["content"]), schema)
