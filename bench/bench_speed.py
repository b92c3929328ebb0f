"""Where shimmy aims to beat llama.cpp's own server: speculative decoding, long
prompts under load, bursts, many clients and memory over a long run.

One command, from the repo root after scripts/setup:

    .venv/bin/python bench/bench_speed.py [--modes echo chat long burst scale come-go creep]

It uses bench_server.py's llama-server (built from the llama.cpp source vendored
in llama-cpp-python, cached in ~/.cache/shimmy-bench) and runs each mode with the
servers it compares started side by side; in every round the servers take turns
(the order rotating), so that a slow spell of this shared machine falls on all
of them; it reports medians and ratios to bench/RESULTS.md ("Speed against
llama-server") with a chart. Every sampling setting is sent explicitly, so both
servers do the same work. Loopback only; every loop is bounded in count and time.

Modes:
- echo: 1 client asks for a 300-token function back with one name changed
  (greedy; another function each round), then sends the same request again:
  shimmy with and without --spec against llama-server by default and with each
  of its n-gram speculative modes.
- chat: ordinary chat (the server benchmark's prompts and sampling) at 1 and 8
  clients, shimmy with and without --spec against llama-server; peak RSS.
- long: four streams decoding when a ~6,000-token prompt arrives: the streams'
  worst gap between tokens while it is read, and its time to first token.
- burst: 8 clients send at the same instant, each sending a second request as
  soon as its first ends (greedy, 128 tokens): median time to first token.
- scale: 16 and 32 clients, total tokens/s.
- come-go: 4 and 6 clients (of 8 slots) asking, reading, pausing and asking
  again, replies of 16 to 96 tokens, so requests start and end at different
  moments: total tokens/s.
- creep: 1,000 one-shot requests, 8 at a time, 24-token replies: RSS growth.
- deep-echo: 1 client asks for a ~1,600-token module (the echo's eight
  functions) back with one name changed, then sends it again; every server
  freshly started each round, so the first request is the first after loading:
  shimmy with and without --spec against llama-server by default and ngram-mod.
- neighbours: 1-client chat on a shimmy that also serves a second model and
  embeddings (each round, before the chat) against a shimmy that serves the chat
  alone: tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from bench_server import (
    CACHE,
    LLAMA_VERSION,
    PROMPTS,
    REPO,
    REQUEST_TIMEOUT,
    SAMPLING,
    SHIMMY_ENV,
    SLOTS,
    THREADS,
    PeakRss,
    ServerUnderTest,
    build_llama_server,
    free_port,
    llama_server_command,
    shimmy_command,
    smollm2_path,
)
from results import replace_subsections

CTX_PER_SLOT = 8192  # room for the long prompt in any slot
GREEDY = {
    "temperature": 0.0,
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "repeat_penalty": 1.0,
    "seed": 1,
}
LLAMA_SPEC_MODES = ["ngram-simple", "ngram-mod", "ngram-cache", "ngram-map-k"]
ECHO_CODE = '''def summarise_orders(orders, tax_rate, discounts):
    """Total the orders of each customer, with tax and their discount."""
    totals = {}
    counts = {}
    for order in orders:
        customer = order["customer"]
        amount = order["quantity"] * order["unit_price"]
        if customer in discounts:
            amount = amount * (1 - discounts[customer])
        amount = amount * (1 + tax_rate)
        totals[customer] = totals.get(customer, 0) + amount
        counts[customer] = counts.get(customer, 0) + 1
    report = []
    for customer, amount in sorted(totals.items()):
        average = amount / counts[customer]
        report.append({"customer": customer, "total": round(amount, 2),
                       "orders": counts[customer], "average": round(average, 2)})
    return report
'''
# One task per round, so that every server meets each prompt once ("fresh"), then
# the same request again at once ("again": a retry, a regenerate): llama-server's
# ngram-mod keeps its n-gram table across requests, and so does shimmy.
ECHO_TASKS = [
    (ECHO_CODE, "amount", "order_total"),
    (
        '''def parse_log_lines(lines, level_filter):
    """Group the log lines at or above a level by the module that wrote them."""
    levels = {"debug": 10, "info": 20, "warning": 30, "error": 40}
    threshold = levels[level_filter]
    grouped = {}
    skipped = 0
    for line in lines:
        parts = line.strip().split(" ", 3)
        if len(parts) < 4:
            skipped = skipped + 1
            continue
        stamp, level, module, message = parts
        if levels.get(level.lower(), 0) < threshold:
            continue
        entries = grouped.setdefault(module, [])
        entries.append({"time": stamp, "level": level, "text": message})
    for module, entries in grouped.items():
        entries.sort(key=lambda entry: entry["time"])
    return grouped, skipped
''',
        "entries",
        "module_lines",
    ),
    (
        '''def schedule_meetings(requests, rooms, day_start, day_end):
    """Give each meeting request the first room free for its whole length."""
    booked = {room: [] for room in rooms}
    placed = []
    refused = []
    for request in sorted(requests, key=lambda r: r["start"]):
        start = max(request["start"], day_start)
        finish = start + request["minutes"]
        if finish > day_end:
            refused.append(request["title"])
            continue
        for room in rooms:
            clashes = [b for b in booked[room] if b[0] < finish and start < b[1]]
            if not clashes:
                booked[room].append((start, finish))
                placed.append({"title": request["title"], "room": room,
                               "start": start, "finish": finish})
                break
        else:
            refused.append(request["title"])
    return placed, refused
''',
        "finish",
        "end_minute",
    ),
    (
        '''def merge_inventories(warehouses, minimum_stock):
    """Sum each product over the warehouses and list those running low."""
    stock = {}
    sources = {}
    for warehouse in warehouses:
        for item in warehouse["items"]:
            product = item["sku"]
            quantity = item["count"]
            stock[product] = stock.get(product, 0) + quantity
            sources.setdefault(product, []).append(warehouse["name"])
    low = []
    for product, quantity in sorted(stock.items()):
        if quantity < minimum_stock.get(product, 0):
            low.append({"sku": product, "have": quantity,
                        "need": minimum_stock[product] - quantity,
                        "from": sorted(sources[product])})
    return stock, low
''',
        "quantity",
        "units",
    ),
    (
        '''def grade_students(scores, weights, pass_mark):
    """Weight each student's scores, rank them and say who passed."""
    results = []
    for student, marks in scores.items():
        weighted = 0.0
        for subject, mark in marks.items():
            weighted = weighted + mark * weights.get(subject, 1.0)
        total_weight = sum(weights.get(subject, 1.0) for subject in marks)
        average = weighted / total_weight if total_weight else 0.0
        results.append({"student": student, "average": round(average, 1),
                        "passed": average >= pass_mark})
    results.sort(key=lambda result: result["average"], reverse=True)
    for rank, result in enumerate(results, start=1):
        result["rank"] = rank
    passed = [result["student"] for result in results if result["passed"]]
    return results, passed
''',
        "weighted",
        "score_sum",
    ),
    (
        '''def plan_route(stops, distances, start, fuel_per_km, tank):
    """Visit every stop, always driving to the nearest one not yet seen."""
    route = [start]
    fuel = tank
    refills = 0
    here = start
    left = set(stops) - {start}
    while left:
        nearest = min(left, key=lambda stop: distances[here][stop])
        needed = distances[here][nearest] * fuel_per_km
        if needed > fuel:
            refills = refills + 1
            fuel = tank
        fuel = fuel - needed
        route.append(nearest)
        left.remove(nearest)
        here = nearest
    total = sum(distances[a][b] for a, b in zip(route, route[1:]))
    return route, total, refills
''',
        "nearest",
        "next_stop",
    ),
    (
        '''def count_words(documents, stop_words, top):
    """Count the words of the documents, leaving out the stop words."""
    counts = {}
    lengths = []
    for document in documents:
        words = document.lower().replace(",", " ").replace(".", " ").split()
        lengths.append(len(words))
        for word in words:
            if word in stop_words or len(word) < 3:
                continue
            counts[word] = counts.get(word, 0) + 1
    ranked = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    mean_length = sum(lengths) / len(lengths) if lengths else 0
    return {"top": ranked[:top], "distinct": len(counts),
            "mean_length": round(mean_length, 1)}
''',
        "counts",
        "word_counts",
    ),
    (
        '''def check_bookings(bookings, capacity, blocked_days):
    """Accept the bookings that fit, day by day, and explain the others."""
    taken = {}
    accepted = []
    rejected = []
    for booking in bookings:
        day = booking["day"]
        guests = booking["guests"]
        if day in blocked_days:
            rejected.append((booking["name"], "closed that day"))
            continue
        if taken.get(day, 0) + guests > capacity:
            rejected.append((booking["name"], "full"))
            continue
        taken[day] = taken.get(day, 0) + guests
        accepted.append(booking["name"])
    busiest = max(taken, key=taken.get) if taken else None
    return accepted, rejected, busiest
''',
        "guests",
        "party_size",
    ),
]


def echo_prompt(task: int) -> str:
    code, old, new = ECHO_TASKS[task % len(ECHO_TASKS)]
    return (
        f"Here is a Python function:\n\n```python\n{code}```\n\n"
        f"Return the whole function with the variable `{old}` renamed to `{new}`. "
        "Reply with the code only."
    )


# Names renamed in the deep echo's module, one pair a round (each occurs in
# several of its functions).
DEEP_RENAMES = [("total", "grand_total"), ("report", "summary"), ("results", "outcomes")]


def deep_echo_prompt(task: int) -> str:
    """The echo's eight functions as one module (~1,600 tokens), in an order and
    with a name to change that depend on ``task``."""
    shift = task % len(ECHO_TASKS)
    code = "\n\n".join(c for c, _, _ in ECHO_TASKS[shift:] + ECHO_TASKS[:shift])
    old, new = DEEP_RENAMES[task % len(DEEP_RENAMES)]
    return (
        f"Here is a Python module:\n\n```python\n{code}```\n\n"
        f"Return the whole module with the variable `{old}` renamed to `{new}`. "
        "Reply with the code only."
    )


# -- servers -------------------------------------------------------------------------


def llama_server(binary: Path, model: Path, name: str, *extra: str) -> ServerUnderTest:
    port = free_port()
    command = [*llama_server_command(binary, model, port, CTX_PER_SLOT), *extra]
    return ServerUnderTest(name, command, port=port)


def shimmy_server(model: Path, name: str, *extra: str) -> ServerUnderTest:
    port = free_port()
    command = [*shimmy_command(model, port, CTX_PER_SLOT), *extra]
    return ServerUnderTest(name, command, env=SHIMMY_ENV, port=port)


def shimmy_without_flash_attention(model: Path) -> list[ServerUnderTest]:
    """shimmy with --flash-attn off, drafting on and off: on a CPU it decodes faster
    at depth (RESULTS.md, "Flash attention on a CPU")."""
    off = ("--flash-attn", "off")
    return [
        shimmy_server(model, "shimmy --spec on -fa off", "--spec", "on", *off),
        shimmy_server(model, "shimmy --spec off -fa off", "--spec", "off", *off),
    ]


# -- one streamed request -----------------------------------------------------------


@dataclass
class Stream:
    sent: float
    arrivals: list[float] = field(default_factory=list)  # each chunk with content
    completion_tokens: int = 0

    @property
    def ttft(self) -> float:
        return self.arrivals[0] - self.sent if self.arrivals else float("nan")

    @property
    def decode_tps(self) -> float:
        """Tokens after the first per second after the first (a chunk may carry
        several tokens: a server with speculation sends what it accepted)."""
        if len(self.arrivals) < 2 or self.completion_tokens < 2:
            return 0.0
        return (self.completion_tokens - 1) / (self.arrivals[-1] - self.arrivals[0])


async def stream(
    client: httpx.AsyncClient,
    server: ServerUnderTest,
    messages: list[dict],
    max_tokens: int,
    sampling: dict[str, float | int],
    record: Stream | None = None,
) -> Stream:
    body = {
        "model": server.model_field,
        "messages": messages,
        "max_tokens": max_tokens,
        **sampling,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    result = record or Stream(time.perf_counter())
    result.sent = time.perf_counter()
    async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            choices = data.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                result.arrivals.append(time.perf_counter())
            usage = data.get("usage") or {}
            if usage.get("completion_tokens"):
                result.completion_tokens = usage["completion_tokens"]
    if not result.completion_tokens:
        result.completion_tokens = len(result.arrivals)
    return result


def client(connections: int = 4) -> httpx.AsyncClient:
    # A fresh connection per request: llama-server's HTTP library drops reused
    # keep-alive connections now and then.
    limits = httpx.Limits(max_connections=connections + 2, max_keepalive_connections=0)
    return httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# -- the modes: each returns one round's figures for one server ------------------------


async def echo_round(
    server: ServerUnderTest,
    task: int,
    prompt: Callable[[int], str] = echo_prompt,
    tokens: int = 400,
) -> dict[str, float]:
    """The round's task, new to the server, then the same request again."""
    async with client() as c:
        fresh = await stream(c, server, user(prompt(task)), tokens, GREEDY)
        again = await stream(c, server, user(prompt(task)), tokens, GREEDY)
    return {
        "decode_tps": fresh.decode_tps,
        "tokens": fresh.completion_tokens,
        "again_tps": again.decode_tps,
        "again_tokens": again.completion_tokens,
    }


async def chat_round(server: ServerUnderTest, clients: int, seed: int = 1) -> dict[str, float]:
    """``clients`` chats at once, client i sampling with ``seed`` + i: a request
    sent again with the same seed gets the same text, which a server drafting
    from its earlier replies (shimmy, llama-server's ngram-mod) would replay, so
    no two requests of a run are the same."""
    async with client(clients) as c:
        started = time.perf_counter()
        streams = await asyncio.gather(
            *[
                stream(
                    c,
                    server,
                    user(PROMPTS[i % len(PROMPTS)]),
                    128,
                    {**SAMPLING, "seed": seed + i},
                )
                for i in range(clients)
            ]
        )
        wall = time.perf_counter() - started
    return {
        "total_tps": sum(s.completion_tokens for s in streams) / wall,
        "per_stream_tps": statistics.median(s.decode_tps for s in streams),
        "median_ttft": statistics.median(s.ttft for s in streams),
    }


NEIGHBOUR = "smollm2-twin"  # a copy of the model file under another name: a second model


def neighbour_folder(model: Path) -> Path:
    """A folder holding the second model: a copy of ``model`` named NEIGHBOUR."""
    folder = CACHE / "neighbours"
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / f"{NEIGHBOUR}.gguf"
    if not copy.exists() or copy.stat().st_size != model.stat().st_size:
        shutil.copyfile(model, copy)
    return folder


async def neighbours_round(server: ServerUnderTest, seed: int, busy: bool) -> dict[str, float]:
    """With ``busy``, first the second model answers and the first makes an
    embedding (not timed): other threads of the server then have run llama.cpp,
    as they do where an app embeds its documents and chats with two models. Then
    three 1-client chats, one after another: their median tokens/s."""
    if busy:
        async with client(1) as c:
            for path, body in (
                (
                    "/v1/chat/completions",
                    {
                        "model": NEIGHBOUR,
                        "messages": user("Say hello."),
                        "max_tokens": 8,
                        **SAMPLING,
                    },
                ),
                ("/v1/embeddings", {"model": server.model_field, "input": "I like cats."}),
            ):
                (await c.post(server.url + path, json=body)).raise_for_status()
    rates = [(await chat_round(server, 1, seed=seed + i))["per_stream_tps"] for i in range(3)]
    return {"tps": statistics.median(rates)}


COME_GO_SECONDS = 40  # how long each client keeps coming back, a round
COME_GO_CLIENTS = (4, 6)


async def come_go_round(server: ServerUnderTest, clients: int, seed: int) -> dict[str, float]:
    """``clients`` users each asking, reading the reply, pausing and asking again
    for COME_GO_SECONDS: replies of 16 to 96 tokens and pauses of up to half a
    second, drawn from ``seed`` (the same for every server)."""
    deadline = time.perf_counter() + COME_GO_SECONDS

    async def one_user(c: httpx.AsyncClient, i: int) -> int:
        draw = random.Random(seed * 100 + i)
        tokens = 0
        for n in range(1000):  # bounded; the deadline ends it long before
            if time.perf_counter() >= deadline:
                break
            prompt = user(PROMPTS[(i + n) % len(PROMPTS)])
            sampling = {**SAMPLING, "seed": seed + 1000 * i + n}
            tokens += (
                await stream(c, server, prompt, draw.randint(16, 96), sampling)
            ).completion_tokens
            await asyncio.sleep(draw.uniform(0.0, 0.5))
        return tokens

    async with client(clients) as c:
        started = time.perf_counter()
        totals = await asyncio.gather(*[one_user(c, i) for i in range(clients)])
        wall = time.perf_counter() - started
    return {"total_tps": sum(totals) / wall}


def long_prompt(nonce: str) -> str:
    facts = " ".join(
        f"Record {i}: the ship {nonce}-{i} left port {i % 17} carrying {i * 7 % 101} crates "
        f"of {['tea', 'salt', 'wool', 'iron'][i % 4]}."
        for i in range(240)
    )
    return f"Read this shipping log. {facts} Which ship carried the most crates?"


async def long_round(server: ServerUnderTest) -> dict[str, float]:
    """Four streams run; once each has a few tokens, the long prompt arrives."""
    async with client(6) as c:
        streams = [Stream(time.perf_counter()) for _ in range(4)]
        tasks = [
            asyncio.create_task(stream(c, server, user(PROMPTS[i]), 600, SAMPLING, streams[i]))
            for i in range(4)
        ]
        deadline = time.perf_counter() + 120
        while min(len(s.arrivals) for s in streams) < 8 and time.perf_counter() < deadline:
            await asyncio.sleep(0.02)
        long = await stream(c, server, user(long_prompt(uuid.uuid4().hex[:6])), 8, SAMPLING)
        window = (long.sent, long.arrivals[0] if long.arrivals else long.sent)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    gaps = []
    for s in streams:
        times = [t for t in s.arrivals if t <= window[1]]
        inside = [b - a for a, b in zip(times, times[1:], strict=False) if b >= window[0]]
        # The stream's wait from the last token before the window to the first after.
        after = [t for t in s.arrivals if t > window[1]]
        if times and after:
            inside.append(after[0] - times[-1])
        gaps.extend(inside)
    return {
        "worst_gap": max(gaps) if gaps else float("nan"),
        "long_ttft": long.ttft,
        "long_prompt_tokens": 0.0,
    }


async def burst_round(server: ServerUnderTest) -> dict[str, float]:
    async with client(10) as c:
        gate = asyncio.Event()

        async def one_client(i: int) -> list[Stream]:
            await gate.wait()
            first = await stream(c, server, user(PROMPTS[i]), 128, GREEDY)
            second = await stream(c, server, user(PROMPTS[(i + 3) % len(PROMPTS)]), 128, GREEDY)
            return [first, second]

        tasks = [asyncio.create_task(one_client(i)) for i in range(8)]
        await asyncio.sleep(0.2)
        gate.set()
        done = await asyncio.gather(*tasks)
    firsts = [pair[0].ttft for pair in done]
    seconds = [pair[1].ttft for pair in done]
    return {
        "median_ttft": statistics.median(firsts + seconds),
        "first_wave_ttft": statistics.median(firsts),
        "second_wave_ttft": statistics.median(seconds),
    }


async def creep_run(server: ServerUnderTest, requests: int) -> dict[str, float]:
    before = server.rss()
    async with client(8) as c:
        queue = list(range(requests))

        async def worker() -> None:
            while queue:
                n = queue.pop()
                question = f"Question {n} ({uuid.uuid4().hex[:6]}): name three uses of salt."
                await stream(c, server, user(question), 24, SAMPLING)

        await asyncio.gather(*[worker() for _ in range(8)])
    after = server.rss()
    return {"rss_before": before, "rss_after": after, "growth": after - before}


# -- running ------------------------------------------------------------------------


def rounds(
    servers: Sequence[ServerUnderTest],
    count: int,
    one: Callable[[ServerUnderTest, int], dict[str, float]],
    label: str,
) -> dict[str, list[dict[str, float]]]:
    """``count`` rounds in which every server takes one turn (``one(server, round)``),
    the order rotating."""
    results: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    for n in range(count):
        order = list(servers[n % len(servers) :]) + list(servers[: n % len(servers)])
        for server in order:
            figures = one(server, n)
            results[server.name].append(figures)
            shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
            print(f"{label} round {n + 1} {server.name}: {shown}", file=sys.stderr, flush=True)
    return results


def started(servers: Sequence[ServerUnderTest]) -> None:
    log_dir = CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for server in servers:
        server.start(log_dir)
        asyncio.run(chat_round(server, 1))  # unmeasured: a fresh process warms up


def stopped(servers: Sequence[ServerUnderTest]) -> None:
    for server in servers:
        server.stop()


def med(results: dict[str, list[dict[str, float]]], name: str, key: str) -> float:
    return statistics.median(r[key] for r in results[name])


def paired(results: dict[str, list[dict[str, float]]], a: str, b: str, key: str) -> float:
    """The median of the rounds' own ratios (both ran in the same round)."""
    return statistics.median(
        x[key] / y[key] for x, y in zip(results[a], results[b], strict=True) if y[key]
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    modes = [
        "echo",
        "deep-echo",
        "chat",
        "long",
        "burst",
        "scale",
        "come-go",
        "creep",
        "neighbours",
    ]
    parser.add_argument("--modes", nargs="+", choices=modes, default=modes)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--every-llama-mode",
        action="store_true",
        help="echo: also llama-server's other n-gram modes (" + ", ".join(LLAMA_SPEC_MODES) + ")",
    )
    parser.add_argument("--creep-requests", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / "bench")
    args = parser.parse_args()
    model = smollm2_path()
    binary = build_llama_server()
    intro = (
        "Each block below comes from the run it names (`bench/bench_speed.py --modes ...`; "
        "a run replaces only the blocks of its modes). Every run: SmolLM2-135M-Instruct Q4_1, "
        f"{THREADS} threads, {SLOTS} slots of {CTX_PER_SLOT} tokens; llama-server built from "
        "the llama.cpp vendored in llama-cpp-python; servers taking turns in every round; "
        "medians, and the median of the rounds' own ratios."
    )
    run = (
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/bench_speed.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`: {platform.machine()}, "
        f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 1024**3:.0f} GiB, "
        f"llama-cpp-python {LLAMA_VERSION}, {args.rounds} rounds."
    )
    lines: list[str] = []
    chart: dict[str, dict[str, float]] = {}

    if "echo" in args.modes:
        # llama-server's other n-gram modes trailed ngram-mod in every earlier
        # run (--every-llama-mode adds them).
        mod = ("--spec-type", "ngram-mod")
        servers = [
            shimmy_server(model, "shimmy --spec on", "--spec", "on"),
            *shimmy_without_flash_attention(model),
            llama_server(binary, model, "llama-server"),
            llama_server(binary, model, "llama-server ngram-mod", *mod),
            llama_server(binary, model, "llama-server ngram-mod -fa off", *mod, "-fa", "off"),
            *[
                llama_server(binary, model, f"llama-server {m}", "--spec-type", m)
                for m in LLAMA_SPEC_MODES
                if args.every_llama_mode and m != "ngram-mod"
            ],
        ]
        try:
            started(servers)
            echo = rounds(servers, args.rounds, lambda s, n: asyncio.run(echo_round(s, n)), "echo")
        finally:
            stopped(servers)
        lines += [
            "### Echo-heavy, 1 client (a 300-token function returned with a name changed)",
            "",
            run,
            "",
            "Each round asks for another function, new to every server, then sends the "
            "same request again (a retry, a regenerate).",
            "",
            "| server | new: decode tok/s | tokens | shimmy --spec on vs this "
            "| again: decode tok/s | tokens | shimmy --spec on vs this |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in servers:
            lines.append(
                f"| {s.name} | {med(echo, s.name, 'decode_tps'):.1f} | "
                f"{med(echo, s.name, 'tokens'):.0f} | "
                f"{paired(echo, 'shimmy --spec on', s.name, 'decode_tps'):.2f}x | "
                f"{med(echo, s.name, 'again_tps'):.1f} | "
                f"{med(echo, s.name, 'again_tokens'):.0f} | "
                f"{paired(echo, 'shimmy --spec on', s.name, 'again_tps'):.2f}x |"
            )
        lines.append("")
        chart["echo, 1 client"] = {s.name: med(echo, s.name, "decode_tps") for s in servers}

    if "deep-echo" in args.modes:
        mod = ("--spec-type", "ngram-mod")
        deep_names = [
            "shimmy --spec on",
            "shimmy --spec off",
            "llama-server",
            "llama-server ngram-mod",
        ]
        deep: dict[str, list[dict[str, float]]] = {name: [] for name in deep_names}
        for n in range(args.rounds):
            servers = [
                shimmy_server(model, deep_names[0], "--spec", "on"),
                shimmy_server(model, deep_names[1], "--spec", "off"),
                llama_server(binary, model, deep_names[2]),
                llama_server(binary, model, deep_names[3], *mod),
            ]
            try:
                started(servers)  # fresh each round: the first request is the first deep one
                for server in servers[n % len(servers) :] + servers[: n % len(servers)]:
                    figures = asyncio.run(echo_round(server, n, deep_echo_prompt, 300))
                    deep[server.name].append(figures)
                    shown = ", ".join(f"{k} {v:.3f}" for k, v in figures.items())
                    print(f"deep-echo round {n + 1} {server.name}: {shown}", file=sys.stderr)
            finally:
                stopped(servers)
        lines += [
            "### Deep echo, 1 client (a ~1,600-token module returned with a name changed)",
            "",
            run,
            "",
            "Every server starts afresh each round, so the first request is the first "
            "after loading; then the same request again.",
            "",
            "| server | new: decode tok/s | tokens | shimmy --spec on vs this "
            "| again: decode tok/s | tokens | shimmy --spec on vs this |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {name} | {med(deep, name, 'decode_tps'):.1f} | "
                f"{med(deep, name, 'tokens'):.0f} | "
                f"{paired(deep, deep_names[0], name, 'decode_tps'):.2f}x | "
                f"{med(deep, name, 'again_tps'):.1f} | "
                f"{med(deep, name, 'again_tokens'):.0f} | "
                f"{paired(deep, deep_names[0], name, 'again_tps'):.2f}x |"
                for name in deep_names
            ),
            "",
        ]

    if "chat" in args.modes:
        servers = [
            shimmy_server(model, "shimmy --spec on", "--spec", "on"),
            shimmy_server(model, "shimmy --spec off", "--spec", "off"),
            *shimmy_without_flash_attention(model),
            llama_server(binary, model, "llama-server"),
        ]
        peaks: dict[str, int] = {}

        def chat_both(server: ServerUnderTest, n: int) -> dict[str, float]:
            one = asyncio.run(chat_round(server, 1, seed=1000 + 100 * n))
            with PeakRss(server) as peak:
                eight = asyncio.run(chat_round(server, 8, seed=2000 + 100 * n))
            peaks[server.name] = max(peaks.get(server.name, 0), peak.peak)
            return {
                "tps_1": one["per_stream_tps"],
                "total_tps_8": eight["total_tps"],
                "ttft_8": eight["median_ttft"],
            }

        try:
            started(servers)
            chat = rounds(servers, args.rounds, chat_both, "chat")
        finally:
            stopped(servers)
        lines += [
            "### Ordinary chat, 1 and 8 clients (128 tokens, the server benchmark's sampling)",
            "",
            run,
            "",
            "| server | 1 client tok/s | 8 clients total tok/s | 8 clients TTFT (s) "
            "| peak RSS (MB) |",
            "|---|---|---|---|---|",
        ]
        for s in servers:
            lines.append(
                f"| {s.name} | {med(chat, s.name, 'tps_1'):.1f} | "
                f"{med(chat, s.name, 'total_tps_8'):.1f} | {med(chat, s.name, 'ttft_8'):.2f} | "
                f"{peaks[s.name] / 1e6:.0f} |"
            )
        on, off, on_no_fa, off_no_fa, llama = (s.name for s in servers)
        lines += [
            "",
            f"- spec on vs off: 1 client {paired(chat, on, off, 'tps_1'):.2f}x, "
            f"8 clients {paired(chat, on, off, 'total_tps_8'):.2f}x (target >= 0.97)",
            *(
                f"- {name} vs llama-server: 1 client {paired(chat, name, llama, 'tps_1'):.2f}x "
                f"(target >= 0.95), 8 clients {paired(chat, name, llama, 'total_tps_8'):.2f}x "
                "(target >= 1.0)"
                for name in (off, on, off_no_fa, on_no_fa)
            ),
            f"- peak RSS at 8 clients, shimmy (--spec off, the default) minus llama-server: "
            f"{(peaks[off] - peaks[llama]) / 1e6:+.0f} MB (target <= +50 MB); with --spec on "
            f"{(peaks[on] - peaks[llama]) / 1e6:+.0f} MB (drafted tokens' logits)",
            "",
        ]
        chart["chat, 1 client"] = {s.name: med(chat, s.name, "tps_1") for s in servers}

    pair = [shimmy_server(model, "shimmy"), llama_server(binary, model, "llama-server")]
    for mode in ("long", "burst", "scale", "come-go"):
        if mode not in args.modes:
            continue
        servers = [shimmy_server(model, "shimmy"), llama_server(binary, model, "llama-server")]
        try:
            started(servers)
            if mode == "long":
                long = rounds(servers, args.rounds, lambda s, n: asyncio.run(long_round(s)), mode)
            elif mode == "burst":
                burst = rounds(servers, args.rounds, lambda s, n: asyncio.run(burst_round(s)), mode)
            elif mode == "come-go":

                def come_go_one(server: ServerUnderTest, round_: int) -> dict[str, float]:
                    return {
                        f"total_tps_{n}": asyncio.run(
                            come_go_round(server, n, seed=4000 + 100 * round_)
                        )["total_tps"]
                        for n in COME_GO_CLIENTS
                    }

                come_go = rounds(servers, args.rounds, come_go_one, mode)
            else:

                def scale_one(server: ServerUnderTest, round_: int) -> dict[str, float]:
                    return {
                        f"total_tps_{n}": asyncio.run(
                            chat_round(server, n, seed=3000 + 100 * round_)
                        )["total_tps"]
                        for n in (16, 32)
                    }

                scale = rounds(servers, args.rounds, scale_one, mode)
        finally:
            stopped(servers)
    names = [s.name for s in pair]
    ours, theirs = names
    if "long" in args.modes:
        lines += [
            "### A ~6,000-token prompt arriving while four streams decode",
            "",
            run,
            "",
            "| server | streams' worst gap (s) | long prompt's TTFT (s) |",
            "|---|---|---|",
            *(
                f"| {n} | {med(long, n, 'worst_gap'):.2f} | {med(long, n, 'long_ttft'):.2f} |"
                for n in names
            ),
            "",
            f"- shimmy vs llama-server: worst gap {paired(long, ours, theirs, 'worst_gap'):.2f}x "
            f"(target <= 1.0), long TTFT {paired(long, ours, theirs, 'long_ttft'):.2f}x "
            "(target <= 1.1)",
            "",
        ]
    if "burst" in args.modes:
        lines += [
            "### A burst of 8 clients, each sending again when answered (greedy, 128 tokens)",
            "",
            run,
            "",
            "| server | median TTFT (s) | first wave | second wave |",
            "|---|---|---|---|",
            *(
                f"| {n} | {med(burst, n, 'median_ttft'):.3f} | "
                f"{med(burst, n, 'first_wave_ttft'):.3f} | "
                f"{med(burst, n, 'second_wave_ttft'):.3f} |"
                for n in names
            ),
            "",
            f"- shimmy vs llama-server: {paired(burst, ours, theirs, 'median_ttft'):.2f}x "
            "(target <= 1.0)",
            "",
        ]
    if "scale" in args.modes:
        lines += [
            "### 16 and 32 clients (128 tokens)",
            "",
            run,
            "",
            "| server | 16 clients total tok/s | 32 clients total tok/s |",
            "|---|---|---|",
            *(
                f"| {n} | {med(scale, n, 'total_tps_16'):.1f} | "
                f"{med(scale, n, 'total_tps_32'):.1f} |"
                for n in names
            ),
            "",
            "- shimmy vs llama-server: "
            f"16 clients {paired(scale, ours, theirs, 'total_tps_16'):.2f}x, "
            f"32 clients {paired(scale, ours, theirs, 'total_tps_32'):.2f}x (target >= 1.0)",
            "",
        ]
    if "come-go" in args.modes:
        a, b = COME_GO_CLIENTS
        lines += [
            f"### {a} and {b} clients coming and going ({COME_GO_SECONDS} s a round)",
            "",
            run,
            "",
            "Each client asks, reads the reply (16 to 96 tokens), pauses up to half a "
            "second and asks again, so requests start and end at different moments "
            "(the server benchmark's prompts and sampling, the same draws for both).",
            "",
            f"| server | {a} clients total tok/s | {b} clients total tok/s |",
            "|---|---|---|",
            *(
                f"| {n} | {med(come_go, n, f'total_tps_{a}'):.1f} | "
                f"{med(come_go, n, f'total_tps_{b}'):.1f} |"
                for n in names
            ),
            "",
            "- shimmy vs llama-server: "
            f"{a} clients {paired(come_go, ours, theirs, f'total_tps_{a}'):.2f}x, "
            f"{b} clients {paired(come_go, ours, theirs, f'total_tps_{b}'):.2f}x",
            "",
        ]
    if "creep" in args.modes:
        creep: dict[str, dict[str, float]] = {}
        for server in [shimmy_server(model, "shimmy"), llama_server(binary, model, "llama-server")]:
            try:
                started([server])
                creep[server.name] = asyncio.run(creep_run(server, args.creep_requests))
            finally:
                stopped([server])
            print(f"creep {server.name}: {creep[server.name]}", file=sys.stderr, flush=True)
        lines += [
            f"### Memory after {args.creep_requests} one-shot requests (8 at a time, 24 tokens)",
            "",
            run,
            "",
            "| server | RSS before (MB) | after (MB) | growth (MB) |",
            "|---|---|---|---|",
            *(
                f"| {n} | {c['rss_before'] / 1e6:.0f} | {c['rss_after'] / 1e6:.0f} | "
                f"{c['growth'] / 1e6:+.0f} |"
                for n, c in creep.items()
            ),
            "",
            "- target: shimmy's growth under 100 MB",
            "",
        ]
    if "neighbours" in args.modes:
        alone = shimmy_server(model, "shimmy, the chat alone")
        beside = shimmy_server(
            model,
            "shimmy, beside a second model and embeddings",
            "--model-dirs",
            str(neighbour_folder(model)),
        )
        try:
            started([alone, beside])
            near = rounds(
                [alone, beside],
                args.rounds,
                lambda server, n: asyncio.run(
                    neighbours_round(server, 3000 + 100 * n, busy=server is beside)
                ),
                "neighbours",
            )
        finally:
            stopped([alone, beside])
        lines += [
            "### A second model and embeddings beside a chat (1 client, 128 tokens)",
            "",
            run,
            "",
            "| server | 1 client tok/s |",
            "|---|---|",
            *(f"| {n} | {med(near, n, 'tps'):.1f} |" for n in near),
            "",
            f"- beside / alone: {paired(near, beside.name, alone.name, 'tps'):.2f}x "
            "(target >= 0.95)",
            "",
        ]
    blocks = ["### " + block.strip("\n") for block in "\n".join(lines).split("### ")[1:]]
    if len(chart) == 2:  # the chart shows both the echo and the chat; a run of one keeps it
        write_chart(chart, args.out / "speed.png")
        blocks.append(
            "### Decode speed chart\n\n" + run + "\n\n"
            "![decode tokens/s, shimmy and llama-server](speed.png)"
        )
    replace_subsections("## Speed against llama-server", intro, blocks, args.out / "RESULTS.md")
    report = "\n\n".join(blocks)
    print(report)
    return 0


def write_chart(chart: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(chart), figsize=(6 * len(chart), 4), dpi=120, squeeze=False)
    for ax, (title, values) in zip(axes[0], chart.items(), strict=True):
        ax.barh(list(values), list(values.values()), color="tab:blue")
        ax.set_xlabel("tokens/s (median)")
        ax.set_title(title)
        ax.invert_yaxis()
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    raise SystemExit(main())
