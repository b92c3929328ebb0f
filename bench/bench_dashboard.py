"""Does the dashboard cost the API anything? And how fast does it paint?

    .venv/bin/python bench/bench_dashboard.py [--rounds 3]

Runs the real `shimmy` dashboard in a pseudo-terminal (on its Server tab, which
refreshes live figures every second) and, in turns, a headless `shimmy serve`;
each answers the same streaming requests, one at a time, and the median
tokens/s of each are compared. Also times the dashboard's first paint (from
start to the first frame that shows its tabs). Loopback only, bounded in time.
Writes the "## Dashboard" section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import select
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path

import httpx
from results import replace_section

SHIMMY = shutil.which("shimmy", path=str(Path(sys.executable).parent)) or "shimmy"
PROMPT = "Write a long story about a lighthouse keeper."
F4 = b"\x1b[S"  # xterm's F4: the Server tab


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dashboard:
    """`shimmy --bind ...` in a pty; a thread keeps reading the screen so the
    app never blocks on a full terminal buffer."""

    def __init__(self, port: int, env: dict[str, str]) -> None:
        primary, secondary = pty.openpty()
        fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [SHIMMY, "--bind", f"127.0.0.1:{port}"],
            stdin=secondary, stdout=secondary, stderr=secondary, env=env, start_new_session=True,
        )  # fmt: skip
        os.close(secondary)
        self.fd = primary
        self.first_paint: float | None = None
        self._screen = b""
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if self.first_paint is None:
                self._screen += data
                if b"Models" in self._screen and b"Chat" in self._screen:
                    self.first_paint = time.monotonic() - self.started

    def press(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def stop(self) -> None:
        self.press(b"\x11")  # ctrl+q
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._stop.set()
        self._reader.join(2)
        os.close(self.fd)


def wait_healthy(url: str, within: float = 120) -> None:
    """Up and answering (the first request, a warm-up, loads the model if needed)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def stream_tps(url: str, max_tokens: int, seed: int) -> float:
    body = {"model": "default", "prompt": PROMPT, "max_tokens": max_tokens, "stream": True,
            "seed": seed, "temperature": 0.7}  # fmt: skip
    times: list[float] = []
    with httpx.stream("POST", url + "/api/generate", json=body, timeout=300) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"text":""' not in line:
                if "error" in json.loads(line[6:]):
                    raise SystemExit(line)
                times.append(time.perf_counter())
    return (len(times) - 1) / (times[-1] - times[0])


def measure(url: str, requests: int, max_tokens: int) -> list[float]:
    stream_tps(url, 8, 0)  # warm the cache and the code paths
    return [stream_tps(url, max_tokens, seed) for seed in range(1, requests + 1)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4, help="requests per turn")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="shimmy-bench-dashboard-"))
    env = {**os.environ, "SHIMMY_HOME": str(home), "TERM": "xterm-256color"}
    dashboard_tps: list[float] = []
    serve_tps: list[float] = []
    paints: list[float] = []
    for round_no in range(args.rounds):
        for target in ("dashboard", "serve") if round_no % 2 == 0 else ("serve", "dashboard"):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            if target == "dashboard":
                dash = Dashboard(port, env)
                try:
                    wait_healthy(url)
                    dash.press(F4)  # the live figures, refreshed every second
                    time.sleep(1)
                    figures = measure(url, args.requests, args.max_tokens)
                finally:
                    dash.stop()
                if dash.first_paint is not None:
                    paints.append(dash.first_paint)
                dashboard_tps += figures
            else:
                serve = subprocess.Popen(
                    [SHIMMY, "serve", "--bind", f"127.0.0.1:{port}"], env=env,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                try:
                    wait_healthy(url)
                    figures = measure(url, args.requests, args.max_tokens)
                finally:
                    serve.terminate()
                    serve.wait(30)
                serve_tps += figures
            print(
                f"round {round_no + 1} {target}: {statistics.median(figures):.1f} tok/s", flush=True
            )
    ratio = statistics.median(dashboard_tps) / statistics.median(serve_tps)
    report = "\n".join(
        [
            "## Dashboard",
            "",
            f"Run on {time.strftime('%Y-%m-%d %H:%M')} with "
            f"`.venv/bin/python bench/bench_dashboard.py --rounds {args.rounds}`: "
            f"{args.requests} streaming requests of {args.max_tokens} "
            "tokens per turn, one at a time, the dashboard (on its Server tab, refreshing every "
            "second) and headless `shimmy serve` taking turns; medians.",
            "",
            "| measure | figure | target |",
            "|---|---|---|",
            f"| API tok/s with the dashboard open | {statistics.median(dashboard_tps):.1f} | |",
            f"| API tok/s from headless serve | {statistics.median(serve_tps):.1f} | |",
            f"| ratio | {ratio:.2f} | >= 0.95 |",
            f"| first paint (median of {len(paints)}) | "
            f"{statistics.median(paints) if paints else float('nan'):.2f} s | < 1 s |",
            "",
        ]
    )
    print(report)
    replace_section("## Dashboard", report)
    shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
