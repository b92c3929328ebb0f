"""Running the real `shimmy` command the way a user would, in an isolated home."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.waiting import eventually

SHIMMY = shutil.which("shimmy", path=str(Path(sys.executable).parent)) or "shimmy"


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """The environment of a user whose home, caches and shimmy folders are empty."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SHIMMY_", "HF_", "OLLAMA"))}
    home = root / "home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        HOME=str(home),
        SHIMMY_HOME=str(root / "shimmy"),
        HF_HOME=str(root / "hf"),
        OLLAMA_MODELS=str(root / "ollama"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_shimmy(
    args: list[str],
    env: dict[str, str],
    *,
    cwd: Path,
    timeout: float = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHIMMY, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
    )


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    started_at: float
    healthy_after: float
    log_path: Path

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(
    args: list[str],
    env: dict[str, str],
    *,
    cwd: Path,
    timeout: float = 30,
    bind: str | None = "127.0.0.1:0",
) -> Server:
    """`shimmy serve --bind 127.0.0.1:0 ...` (``bind=None``: no --bind at all);
    returns once /api/health answers at the address the server says it serves on."""
    log_path = cwd / f"serve-{time.monotonic_ns()}.log"
    started = time.monotonic()
    with log_path.open("w") as log_file:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            [SHIMMY, "serve", *(["--bind", bind] if bind else []), *args],
            env=env,
            cwd=cwd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            text=True,
        )
    said: list[str] = []  # the URL, once the server has printed it

    def healthy_url() -> str | None:
        if process.poll() is not None:
            raise RuntimeError(f"shimmy serve exited {process.returncode}:\n{log_path.read_text()}")
        if not said:
            found = re.search(r"serving on (http://\S+)", log_path.read_text())
            if found is None:
                return None
            said.append(found.group(1))
        try:
            answered = httpx.get(said[0] + "/api/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return None
        return said[0] if answered else None

    try:
        url = eventually(healthy_url, timeout, what="/api/health to answer")
    except AssertionError:
        process.kill()
        raise RuntimeError(
            f"shimmy serve did not become healthy:\n{log_path.read_text()}"
        ) from None
    assert url is not None  # eventually returns only a truthy value
    return Server(process, url, started, time.monotonic() - started, log_path)


def sse_data(lines: Iterable[str]) -> list[str]:
    """The payloads of the ``data:`` lines of a server-sent event stream."""
    return [line[len("data: ") :] for line in lines if line.startswith("data: ")]
