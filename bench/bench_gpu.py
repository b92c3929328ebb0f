"""shimmy against llama-server with every layer on an NVIDIA GPU (tokens/s).

Run by bench/bench_gpu.sh on a machine with a GPU, after it has built the CUDA
llama.cpp that both servers use (llama-server from the same source as
llama-cpp-python's library). Both servers load the same file with every layer
offloaded (shimmy ``--gpu-layers all``, llama-server ``-ngl 99``), the same
slots, context and threads, and get the same requests with every sampling
setting spelled out; they take turns, their order swapped each round, and the
medians are compared. Prints and writes JSON; ``--record FILE`` (run here, with
no GPU) writes that JSON's table into bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SLOTS = 8
CTX_PER_SLOT = 2048
THREADS = 8
# bench_server.py's settings, repeated: this script runs on a GPU machine where
# llama-cpp-python is copied, not installed, and bench_server reads its version
# from the installed package when imported.
SAMPLING = {
    "temperature": 0.7,
    "top_k": 40,
    "top_p": 0.95,
    "min_p": 0.05,
    "repeat_penalty": 1.1,
    "seed": 1,
}
PROMPT = "Write a long story about a lighthouse keeper who finds a message in a bottle."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, name: str, command: list[str], port: int, log: Path) -> None:
        self.name, self.command, self.port, self.log = name, command, port, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300.0) -> None:
        out = self.log.open("wb")
        self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.log}")
            try:
                # a first generation proves the model is loaded (and warms it)
                chat(self.url, 8)
                return
            except httpx.HTTPError:
                time.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer in {timeout} s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def chat(url: str, max_tokens: int) -> tuple[int, float]:
    """One request: (completion tokens, seconds)."""
    body = {
        "model": "default",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": max_tokens,
        "stream": False,
        **SAMPLING,
    }
    started = time.perf_counter()
    reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=300.0)
    reply.raise_for_status()
    elapsed = time.perf_counter() - started
    return int(reply.json()["usage"]["completion_tokens"]), elapsed


def throughput(url: str, clients: int, max_tokens: int) -> float:
    """Tokens per second over ``clients`` requests sent at once."""
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(lambda _: chat(url, max_tokens), range(clients)))
    return sum(tokens for tokens, _ in results) / (time.perf_counter() - started)


def gpu_memory_by_pid() -> dict[int, int]:
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found = {}
    for line in text.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().isdigit():
            found[int(pid)] = int(mib) * 1024 * 1024
    return found


def servers_for(model: Path, llama_server: Path, logs: Path) -> list[Server]:
    p1, p2 = free_port(), free_port()
    shimmy = [
        sys.executable, "-m", "shimmy", "-v", "serve", "--model", str(model),
        "--gpu-layers", "all", "--parallel", str(SLOTS), "--ctx-size", str(CTX_PER_SLOT),
        "--threads", str(THREADS), "--bind", f"127.0.0.1:{p1}", "--keep-alive", "-1",
    ]  # fmt: skip
    llama = [
        str(llama_server), "-m", str(model), "-ngl", "99", "-np", str(SLOTS),
        "-c", str(SLOTS * CTX_PER_SLOT), "-t", str(THREADS), "-tb", str(THREADS),
        "--host", "127.0.0.1", "--port", str(p2), "--no-webui",
    ]  # fmt: skip
    return [
        Server("shimmy", shimmy, p1, logs / f"shimmy-{model.stem}.log"),
        Server("llama-server", llama, p2, logs / f"llama-server-{model.stem}.log"),
    ]


def measure(model: Path, llama_server: Path, logs: Path, rounds: int, tokens: int) -> dict:
    servers = servers_for(model, llama_server, logs)
    figures: dict[str, dict[str, list[float]]] = {s.name: {"1": [], "8": []} for s in servers}
    try:
        for server in servers:
            server.start()
        memory = gpu_memory_by_pid()
        gpu_bytes = {s.name: memory.get(s.process.pid, 0) for s in servers if s.process}
        for r in range(rounds):
            for server in servers if r % 2 == 0 else servers[::-1]:
                single = [chat(server.url, tokens) for _ in range(3)]
                figures[server.name]["1"].append(statistics.median(t / s for t, s in single))
                figures[server.name]["8"].append(throughput(server.url, SLOTS, tokens))
                print(
                    server.name,
                    r,
                    {k: round(v[-1], 1) for k, v in figures[server.name].items()},
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
    medians = {n: {k: statistics.median(v) for k, v in f.items()} for n, f in figures.items()}
    offloaded = [
        line.strip()
        for line in (logs / f"shimmy-{model.stem}.log").read_text(errors="replace").splitlines()
        if "offloaded" in line or "CUDA" in line and "buffer size" in line
    ]
    return {
        "model": model.name,
        "size_bytes": model.stat().st_size,
        "tokens": tokens,
        "rounds": rounds,
        "medians": medians,
        "ratio_1": medians["shimmy"]["1"] / medians["llama-server"]["1"],
        "ratio_8": medians["shimmy"]["8"] / medians["llama-server"]["8"],
        "gpu_bytes": gpu_bytes,
        "shimmy_offload_log": offloaded[:6],
    }


def record(results_file: Path) -> None:
    """Write the JSON's figures into bench/RESULTS.md (run on any machine)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from results import replace_section

    data = json.loads(results_file.read_text())
    lines = [
        "Every layer on one NVIDIA H200 (shimmy `--gpu-layers all`, llama-server `-ngl 99`), "
        f"both built from the llama.cpp vendored in llama-cpp-python {data['llama_cpp_python']} "
        f"with CUDA (sm_90), {SLOTS} slots of {CTX_PER_SLOT} tokens, {THREADS} threads, the "
        "same sampling settings sent to both, servers taking turns, medians of "
        f"{data['runs'][0]['rounds']} rounds (bench/bench_gpu.sh; the machine has no network, "
        "so the models are SmolLM2's shapes with random weights: bench/gpu_model.py).",
        "",
        "| model | file | 1 client shimmy | 1 client llama-server | ratio "
        "| 8 clients shimmy | 8 clients llama-server | ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for run in data["runs"]:
        m = run["medians"]
        cells = [run["model"], f"{run['size_bytes'] / 1e6:.0f} MB"]
        for clients in ("1", "8"):
            cells += [
                f"{m['shimmy'][clients]:.0f} tok/s",
                f"{m['llama-server'][clients]:.0f} tok/s",
                f"{run['ratio_' + clients]:.2f}x",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", data.get("note", "")]
    heading = "## Speed on an NVIDIA GPU"
    replace_section(heading, heading + "\n\n" + "\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=[])
    parser.add_argument("--llama-server", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("gpu.json"))
    parser.add_argument("--record", type=Path, help="write this JSON's figures into RESULTS.md")
    args = parser.parse_args()
    if args.record:
        record(args.record)
        return 0
    logs = args.out.parent
    logs.mkdir(parents=True, exist_ok=True)
    import llama_cpp

    runs = []
    for model in args.model:
        runs.append(measure(model, args.llama_server, logs, args.rounds, args.tokens))
        print(json.dumps(runs[-1], indent=1), flush=True)
        data = {"llama_cpp_python": getattr(llama_cpp, "__version__", "?"), "runs": runs}
        args.out.write_text(json.dumps(data, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
