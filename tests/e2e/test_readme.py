"""README.md's "OpenAI-compatible API" and "Find and pull models" sections, run as written.

The commands and the script are parsed out of README.md's fenced blocks, never
copied here, so a README edit that stops working fails this test. Only what must
differ is substituted: the port (the README's fixed ports may be taken), the
folder of the installed commands (`.venv/bin/`, as `scripts/setup` makes it) and
an empty home and Hugging Face cache. The outputs must have the shapes the README
shows: the same lines, columns, JSON keys and value types, the same model name;
numbers, sizes and speeds may differ, and a `...` line stands for any lines.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import Server, isolated_env, run_shimmy, sse_data, start_server
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the `.venv/bin/` of the README
SERVER_PORT = "11435"  # shimmy serve's default, which the README's examples use
TIMEOUT = 240  # seconds for any one command or script


# -- reading the README ------------------------------------------------------------------


def section(title: str) -> str:
    """The text of the README's ``## title`` section."""
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found, f"README.md has no '## {title}' section"
    return found.group(1)


def blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text``: (language, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)


@dataclass
class Step:
    command: str
    shown: str  # the output the README shows under it


def console_steps(body: str) -> list[Step]:
    """The ``$ command`` lines of a console block, each with the output shown under it."""
    steps: list[Step] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:], ""))
        else:
            assert steps, f"output before any command in:\n{body}"
            steps[-1].shown += line + "\n"
    for step in steps:
        step.shown = step.shown.strip("\n")
    return steps


# -- comparing outputs -----------------------------------------------------------------

# A measured number: "98.4 MB", "0 B", "51.2%", "1.9s", "47"; not the digits inside
# a name or a date ("SmolLM2", "Q4_K_M", "135M", "2025-03-01", "5.0k").
MEASURE = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?P<unit> [KMGT]?B\b)?(?=s?(?![\w-]))")


def shape(line: str) -> str:
    """A regex for lines like ``line``: numbers and sizes may differ, and so may the
    padding of columns; everything else is literal."""

    def literal(text: str) -> str:
        return " +".join(re.escape(word) for word in re.split(r" +", text))

    parts, at = [], 0
    for number in MEASURE.finditer(line):
        parts.append(literal(line[at : number.start()]))
        parts.append(r"\d+(?:\.\d+)?" + (r" [KMGT]?B" if number.group("unit") else ""))
        at = number.end()
    parts.append(literal(line[at:]))
    return "".join(parts)


def assert_shaped(actual: str, shown: str, what: str) -> None:
    """``actual`` has the lines of ``shown``, in order, where a ``...`` line is any lines."""
    pattern = "".join(
        r"(?:.*\n)*?" if line == "..." else shape(line) + r"\n" for line in shown.splitlines()
    )
    text = actual.strip("\n") + "\n"
    assert re.fullmatch(pattern, text), f"{what}: README shows\n{shown}\n\nbut it printed\n{text}"


def assert_same_shape(actual: Any, shown: Any, where: str = "") -> None:
    """The same keys, list lengths and value types (a JSON number is int or float)."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        assert set(actual) == set(shown), f"{where}: keys {sorted(actual)} != {sorted(shown)}"
        for key in shown:
            assert_same_shape(actual[key], shown[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) == len(shown), f"{where}: {actual!r}"
        for i, (a, s) in enumerate(zip(actual, shown, strict=True)):
            assert_same_shape(a, s, f"{where}[{i}]")
    else:
        number = (int, float)
        same = type(actual) is type(shown) or (
            type(actual) in number and type(shown) in number and isinstance(shown, float)
        )
        assert same, f"{where}: {actual!r} is not like the README's {shown!r}"


def run_shell(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``script`` in bash, stdout and stderr together as a terminal shows them."""
    return subprocess.run(
        ["bash", "-c", script],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT,
    )


def user_env(root: Path, **extra: str) -> dict[str, str]:
    """An empty home and caches, the installed commands on PATH, loopback never proxied."""
    env = isolated_env(root, **extra)
    env = {k: v for k, v in env.items() if not k.startswith("OPENAI_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


def installed(command: str) -> str:
    """A README command with `.venv/bin/` meaning the folder this test runs from."""
    return re.sub(r"(?<!\S)\.venv/bin/", f"{BIN}/", command)


# -- OpenAI-compatible API ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, smollm2_path: Path) -> Iterator[Server]:
    """`shimmy serve` with its defaults, on a free port instead of 11435."""
    root = tmp_path_factory.mktemp("readme-serve")
    srv = start_server([], isolated_env(root), cwd=root)
    yield srv
    srv.stop()


def with_port(text: str, port: str) -> str:
    assert f":{SERVER_PORT}" in text, f"no :{SERVER_PORT} to point at the server in:\n{text}"
    return text.replace(f":{SERVER_PORT}", f":{port}")


# What the SDK script prints: the reply and its total tokens, the streamed reply,
# the JSON object, then the number of embeddings and their size.
SCRIPT_OUTPUT = re.compile(
    r"(?P<reply>.+?) (?P<tokens>\d+)\n(?P<stream>.*)\n(?P<json>\{.*\})\n"
    r"(?P<count>\d+) (?P<size>\d+)\n",
    re.S,
)


def test_openai_sdk_script(server: Server, tmp_path: Path) -> None:
    found = blocks(section("OpenAI-compatible API"))
    languages = [language for language, _ in found]
    assert languages[:2] == ["python", "console"], languages
    script, shown = found[0][1], found[1][1]
    port = server.url.rsplit(":", 1)[1]
    path = tmp_path / "readme_openai.py"
    path.write_text(with_port(script, port), encoding="utf-8")

    done = subprocess.run(
        [sys.executable, str(path)],
        env=user_env(tmp_path / "user"),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr + "\n" + server.log()[-3000:]

    expected = SCRIPT_OUTPUT.fullmatch(shown.strip("\n") + "\n")
    assert expected, f"the README's output is not the script's shape:\n{shown}"
    actual = SCRIPT_OUTPUT.fullmatch(done.stdout)
    assert actual, f"the script printed\n{done.stdout}\nnot the README's shape:\n{shown}"
    assert actual["reply"].strip()
    assert 0 < int(actual["tokens"]) <= int(expected["tokens"])  # at most max_tokens more
    assert actual["stream"].strip()
    assert_same_shape(json.loads(actual["json"]), json.loads(expected["json"]), "json")
    assert (actual["count"], actual["size"]) == (expected["count"], expected["size"])


def test_openai_curl_commands(server: Server, tmp_path: Path) -> None:
    found = blocks(section("OpenAI-compatible API"))
    steps = [step for language, body in found[2:] for step in console_steps(body)]
    assert steps and all(step.command.startswith("curl ") for step in steps), steps
    port = server.url.rsplit(":", 1)[1]
    env = user_env(tmp_path / "user")
    for step in steps:
        done = run_shell(with_port(step.command, port), env, tmp_path)
        assert done.returncode == 0, f"{step.command}\n{done.stdout}"
        if not step.shown.startswith("data: "):
            reply, shown = json.loads(done.stdout), json.loads(step.shown)
            assert_same_shape(reply, shown, "reply")
            assert reply["model"] == shown["model"]
            assert reply["choices"][0]["message"]["content"].strip()
            assert reply["choices"][0]["finish_reason"] in ("stop", "length")
            usage = reply["usage"]
            assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
            continue
        events, shown_events = sse_data(done.stdout.splitlines()), sse_data(step.shown.splitlines())
        assert events[-1] == shown_events[-1] == "[DONE]", done.stdout
        assert len(events) == len(shown_events), f"{done.stdout}\nvs the README's\n{step.shown}"
        chunks = [json.loads(event) for event in events[:-1]]
        for i, (chunk, shown_chunk) in enumerate(
            zip(chunks, map(json.loads, shown_events[:-1]), strict=True)
        ):
            assert_same_shape(chunk, shown_chunk, f"event {i}")
            assert chunk["model"] == shown_chunk["model"]
        assert len({chunk["id"] for chunk in chunks}) == 1
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks).strip()
        assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


# -- Ollama-compatible API ---------------------------------------------------------------

OLLAMA_PORT = "11434"  # --ollama's default, which the README's script uses


def test_ollama_client_script(tmp_path: Path) -> None:
    """The README's script with Ollama's own client, against `shimmy serve --ollama`
    on a free port: the same list, capabilities and counts, a reply and a stream."""
    found = blocks(section("Ollama-compatible API"))
    languages = [language for language, _ in found]
    assert languages[:3] == ["console", "python", "console"], languages
    assert "shimmy serve --ollama\n" in found[0][1]
    script, shown = found[1][1], found[2][1]
    srv = start_server(["--ollama", "127.0.0.1:0"], isolated_env(tmp_path / "srv"), cwd=tmp_path)
    try:
        url = eventually(
            lambda: re.search(r"Ollama's API on http://127\.0\.0\.1:(\d+)", srv.log()),
            30,
            what=lambda: srv.log(),
        )
        assert url is not None and f"127.0.0.1:{OLLAMA_PORT}" in script
        path = tmp_path / "readme_ollama.py"
        path.write_text(script.replace(f":{OLLAMA_PORT}", f":{url[1]}"), encoding="utf-8")
        done = subprocess.run(
            [sys.executable, str(path)],
            env=user_env(tmp_path / "user"),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert done.returncode == 0, done.stderr + "\n" + srv.log()[-3000:]
    finally:
        srv.stop()
    printed, expected = done.stdout.splitlines(), shown.strip("\n").splitlines()
    assert printed[:2] == expected[:2] and printed[-2:] == expected[-2:], done.stdout
    reply = re.fullmatch(r"(.+) (\d+) (stop|length)", printed[2])
    assert reply and reply[1].strip() and 0 < int(reply[2]) <= 12, printed[2]
    assert "".join(printed[3:-2]).strip(), done.stdout  # the streamed text


# -- Find and pull models ----------------------------------------------------------------


@pytest.fixture
def hub_steps() -> tuple[Step, Step, list[Step]]:
    """The README's fake hub command, its `export HF_ENDPOINT=...` line, and the
    shimmy commands in the order shown."""
    steps = [
        step
        for language, body in blocks(section("Find and pull models"))
        if language == "console"
        for step in console_steps(body)
    ]
    start = [s for s in steps if "-m tests.hub.fakehub" in s.command]
    export = [s for s in steps if s.command.startswith("export HF_ENDPOINT=")]
    shimmy = [s for s in steps if s.command.startswith("shimmy ")]
    assert len(start) == 1 and len(export) == 1, steps
    assert len(shimmy) + 2 == len(steps), [s.command for s in steps]
    return start[0], export[0], shimmy


def start_fake_hub(step: Step, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """Run the README's fake hub command on a free port (0) instead of its fixed one;
    return the process and the URL it prints."""
    port = re.search(r"tests\.hub\.fakehub (\d+)$", step.command)
    assert port, step.command
    command = installed(step.command[: port.start(1)] + "0")
    with log.open("w") as out:
        process = subprocess.Popen(
            ["bash", "-c", "exec " + command], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    try:
        eventually(
            lambda: "\n" in log.read_text() or process.poll() is not None,
            60,
            interval=0.05,
            what=lambda: f"the fake hub's first line:\n{log.read_text()}",
        )
        printed = log.read_text()
        assert "\n" in printed, f"the fake hub did not start:\n{printed}"
    except AssertionError:
        process.kill()
        process.wait(10)
        raise
    line = printed.splitlines()[0]
    url = re.fullmatch(r"fake hub on (http://127\.0\.0\.1:\d+)", line)
    assert url, f"the fake hub printed {line!r}, the README shows {step.shown!r}"
    assert step.shown == line.replace(url[1].rsplit(":", 1)[1], port[1])
    return process, url[1]


def listed(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """`shimmy list --json`: name -> source."""
    done = run_shimmy(["list", "--json"], env, cwd=cwd, timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr
    return {model["name"]: model["source"] for model in json.loads(done.stdout)}


def test_find_and_pull_models(hub_steps: tuple[Step, Step, list[Step]], tmp_path: Path) -> None:
    start, export, shimmy = hub_steps
    env = user_env(tmp_path / "user", HF_HUB_DISABLE_TELEMETRY="1")
    hub, url = start_fake_hub(start, env, tmp_path / "fakehub.log")
    try:
        readme_url = re.search(r"HF_ENDPOINT=(\S+)", export.command)
        assert readme_url and readme_url[1] in start.shown, "export names another address"
        endpoint = export.command.replace(readme_url[1], url)
        pulled = ""
        for step in shimmy:
            done = run_shell(f"{endpoint}\n{step.command}", env, tmp_path)
            assert done.returncode == 0, f"{step.command} exited {done.returncode}:\n{done.stdout}"
            assert_shaped(done.stdout, step.shown, step.command)
            words = step.command.split()
            if words[1] == "pull" and "--files" not in words:
                pulled = done.stdout.strip().splitlines()[-1]
                # into the Hugging Face cache of HF_HOME, where `shimmy list` finds it at once
                repo = "models--" + words[2].replace("/", "--")
                assert list((tmp_path / "user" / "hf" / "hub" / repo).rglob("*.gguf"))
                assert pulled in listed(env, tmp_path)
            if words[1] == "rm":
                assert pulled and words[2] == pulled, "rm names another model than pull printed"
                assert pulled not in listed(env, tmp_path)
        assert pulled, "the README pulls nothing"
    finally:
        hub.terminate()
        try:
            hub.wait(10)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub.wait(10)
