"""Soak test: many mixed requests against a real `shimmy serve`, then checks.

    .venv/bin/python bench/soak.py [--requests 500] [--concurrency 16]

Loopback only, bounded in count and time. The mix: plain and streaming
/api/generate, /v1/chat/completions streams, WebSocket generations; 20% of the
streams are dropped mid-way and 10% of the requests carry invalid bodies.
Afterwards every valid request must have completed, no slot may be held,
/api/health must be healthy, and the server's RSS must have grown by less than
5% between the first and the last 100 requests. Figures are appended to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import websockets
from results import replace_section

MODEL = "smollm2-135m-instruct-q4_1"
DEADLINE_SECONDS = 1800  # the whole soak stops by then, whatever happens


@dataclass
class Outcome:
    kind: str
    ok: bool
    detail: str = ""


def start_server(port: int, home: Path) -> subprocess.Popen[bytes]:
    shimmy = shutil.which("shimmy", path=str(Path(sys.executable).parent)) or "shimmy"
    env = {**os.environ, "SHIMMY_HOME": str(home)}
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [shimmy, "serve", "--bind", f"127.0.0.1:{port}", "--keep-alive", "-1",
         "--ctx-size", "1024"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            health = httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).json()
            if health["models_loaded"] >= 1:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit("shimmy serve did not come up")


PROMPTS = ["Name a colour.", "What is 2+2?", "Say hi.", "Name a fruit.", "Write a haiku."]


async def generate_plain(client: httpx.AsyncClient, rng: random.Random) -> Outcome:
    body = {"model": MODEL, "prompt": rng.choice(PROMPTS), "max_tokens": rng.randint(4, 24)}
    r = await client.post("/api/generate", json=body)
    ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"] in {"stop", "length"}
    return Outcome("plain", ok, r.text[:200])


async def generate_stream(client: httpx.AsyncClient, rng: random.Random, drop: bool) -> Outcome:
    body = {"model": MODEL, "prompt": rng.choice(PROMPTS), "max_tokens": 48, "stream": True}
    seen = 0
    async with client.stream("POST", "/api/generate", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if drop and seen >= 3:
                    return Outcome("stream-dropped", True)
                if line == "data: [DONE]":
                    return Outcome("stream", r.status_code == 200)
    return Outcome("stream-dropped" if drop else "stream", drop, f"ended after {seen} events")


async def chat_stream(client: httpx.AsyncClient, rng: random.Random, drop: bool) -> Outcome:
    body = {
        "model": MODEL, "stream": True, "max_tokens": 48,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
    }  # fmt: skip
    seen = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen += 1
                if drop and seen >= 3:
                    return Outcome("chat-dropped", True)
                if line == "data: [DONE]":
                    return Outcome("chat", r.status_code == 200)
    return Outcome("chat-dropped" if drop else "chat", drop, f"ended after {seen} events")


async def websocket_generate(url: str, rng: random.Random, drop: bool) -> Outcome:
    ws_url = url.replace("http://", "ws://", 1) + "/ws/generate"
    async with websockets.connect(ws_url, open_timeout=30) as ws:
        await ws.send(json.dumps({"prompt": rng.choice(PROMPTS), "max_tokens": 48}))
        tokens = 0
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), 120))
            if "token" in message:
                tokens += 1
                if drop and tokens >= 3:
                    return Outcome("ws-dropped", True)
            elif "done" in message:
                return Outcome("ws", True)
            else:
                return Outcome("ws", False, json.dumps(message)[:200])


INVALID_BODIES = [b"{not json", b"[]", b'{"model": 5, "prompt": "x"}', b'{"prompt": ""}', b""]


async def invalid(client: httpx.AsyncClient, rng: random.Random) -> Outcome:
    r = await client.post("/api/generate", content=rng.choice(INVALID_BODIES))
    ok = r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    return Outcome("invalid", ok, r.text[:200])


async def one_request(i: int, url: str, client: httpx.AsyncClient) -> Outcome:
    rng = random.Random(i)
    roll = rng.random()
    drop = rng.random() < 0.2
    try:
        if roll < 0.10:
            return await invalid(client, rng)
        if roll < 0.30:
            return await generate_plain(client, rng)
        if roll < 0.55:
            return await generate_stream(client, rng, drop)
        if roll < 0.80:
            return await chat_stream(client, rng, drop)
        return await websocket_generate(url, rng, drop)
    except Exception as exc:  # a transport failure is a failed request, not a crash
        return Outcome("error", False, repr(exc)[:200])


async def soak(url: str, total: int, concurrency: int, pid: int) -> dict[str, object]:
    process = psutil.Process(pid)
    rss: dict[int, int] = {}
    outcomes: list[Outcome] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    started = time.monotonic()
    limits = httpx.Limits(max_connections=concurrency * 2)

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            while time.monotonic() - started < DEADLINE_SECONDS:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                outcomes.append(await one_request(i, url, client))
                rss[len(outcomes)] = process.memory_info().rss

        await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.monotonic() - started
    first = statistics.median(rss[n] for n in range(1, min(101, len(rss) + 1)))
    last = statistics.median(rss[n] for n in range(max(1, len(rss) - 99), len(rss) + 1))
    return {
        "outcomes": outcomes,
        "elapsed": elapsed,
        "rss_first_100": first,
        "rss_last_100": last,
    }


def settle(url: str) -> dict[str, object]:
    """Health once every cancelled generation has let go of its slot (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        health: dict[str, object] = httpx.get(url + "/api/health", timeout=10).json()
        if health["active_requests"] == 0 and health["queued_requests"] == 0:
            return health
        if time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--port", type=int, default=18741)
    parser.add_argument("--no-report", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()

    home = Path(os.environ.get("TMPDIR", "/tmp")) / f"shimmy-soak-{os.getpid()}"
    home.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    process = start_server(args.port, home)
    try:
        result = asyncio.run(soak(url, args.requests, args.concurrency, process.pid))
        health = settle(url)
        alive = process.poll() is None
    finally:
        process.terminate()
        process.wait(15)

    outcomes: list[Outcome] = result["outcomes"]  # type: ignore[assignment]
    kinds = Counter(o.kind for o in outcomes)
    failed = [o for o in outcomes if not o.ok]
    growth = result["rss_last_100"] / result["rss_first_100"] - 1  # type: ignore[operator]
    checks = {
        f"all {args.requests} requests ran": len(outcomes) == args.requests,
        "every valid request completed": not failed,
        "no slot held afterwards": health.get("active_requests") == 0
        and health.get("queued_requests") == 0,
        "/api/health healthy": health.get("status") == "healthy" and alive,
        "RSS grew < 5% (first vs last 100 requests)": growth < 0.05,
    }
    lines = [
        "",
        "## Soak",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/soak.py "
        f"--requests {args.requests} --concurrency {args.concurrency}`: "
        f"{len(outcomes)} requests in {result['elapsed']:.0f} s.",
        "",
        "Mix: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) + ".",
        f"RSS (median of first / last 100 requests): {result['rss_first_100'] / 1e6:.0f} MB / "
        f"{result['rss_last_100'] / 1e6:.0f} MB ({growth:+.1%}).",
        "",
        "| check | result |",
        "|---|---|",
        *[f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()],
        "",
    ]
    if failed:
        lines += ["Failures:", *[f"- {o.kind}: {o.detail}" for o in failed[:10]], ""]
    report = "\n".join(lines)
    print(report)
    if not args.no_report:
        replace_section("## Soak", report)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
