"""The real `shimmy` command in a pseudo-terminal: it draws the dashboard, serves
HTTP meanwhile, keeps llama.cpp's stderr off the screen, survives request paths
full of markup, and ctrl+q exits 0 and frees the port."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import socket
import struct
import subprocess
import termios
import time
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import SHIMMY, isolated_env
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _read(fd: int, seconds: float) -> bytes:
    out = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def _exited(process: subprocess.Popen[bytes], primary: int, screen: bytearray) -> bool:
    """Whether ``process`` has exited, reading what it draws meanwhile (0.2 s): a
    pty nobody reads fills up and blocks the program drawing on it."""
    screen.extend(_read(primary, 0.2))
    return process.poll() is not None


def _start_dashboard(
    tmp_path: Path, port: int, env: dict[str, str], rows: int, columns: int
) -> tuple[subprocess.Popen[bytes], int, bytearray]:
    """The real `shimmy` on a pty of rows x columns, once its /api/health answers:
    the process, the pty's primary side and what it drew so far."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(
        [SHIMMY, "--bind", f"127.0.0.1:{port}"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    os.close(secondary)
    screen = bytearray()

    def healthy() -> bool:
        screen.extend(_read(primary, 0.2))
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).is_success
        except httpx.TransportError:
            return False

    try:
        eventually(healthy, 60, interval=0, what="/api/health to answer")
    except AssertionError:
        process.kill()
        process.wait()
        os.close(primary)
        raise AssertionError(screen[-2000:].decode(errors="replace")) from None
    return process, primary, screen


def test_dashboard_in_a_terminal(tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = isolated_env(tmp_path, TERM="xterm-256color", COLUMNS="100", LINES="30")
    process, primary, screen = _start_dashboard(tmp_path, port, env, 30, 100)
    try:
        body = {"model": "default", "prompt": "Say hi.", "max_tokens": 8}
        response = httpx.post(url + "/api/generate", json=body, timeout=120)
        assert response.status_code == 200
        # Not synchronisation: 1.5 s of what it draws after serving, checked below.
        screen += _read(primary, 1.5)
        os.write(primary, b"\x11")  # ctrl+q
        eventually(partial(_exited, process, primary, screen), 35, interval=0, what="the exit")
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert "shimmy" in text and "Models" in text
    assert "llama_" not in text and "Traceback" not in text
    with pytest.raises(httpx.TransportError):
        httpx.get(url + "/api/health", timeout=2)
    stderr_log = tmp_path / "shimmy" / "log" / "dashboard-stderr.log"
    assert stderr_log.exists()


def test_markup_in_request_paths_is_drawn_literally(tmp_path: Path) -> None:
    """Paths a client chose go into the Server tab's request log: as markup,
    ``[/bold]`` ended the dashboard (MarkupError) and ``[@click=...]`` made an action."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    rows, columns = 45, 160
    env = isolated_env(tmp_path, TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    process, primary, screen = _start_dashboard(tmp_path, port, env, rows, columns)
    try:
        os.write(primary, b"\x1bOS")  # F4: the Server tab, where the request log is drawn
        for path in ("/x%5B/bold%5D", "/%5B@click=app.quit%5DQUITNOW%5B/%5D"):
            assert httpx.get(url + path, timeout=10).status_code == 404
        # The log is redrawn once a second: wait until both paths are on screen.
        wanted = (b"GET /x[/bold]", b"GET /[@click=app.quit]QUITNOW[/]")

        def both_drawn() -> bool:
            assert process.poll() is None, screen[-3000:].decode(errors="replace")
            screen.extend(_read(primary, 0.2))
            return all(w in screen for w in wanted)

        eventually(both_drawn, 30, interval=0, what=lambda: screen[-3000:].decode(errors="replace"))
        assert all(w in screen for w in wanted), screen[-3000:].decode(errors="replace")
        assert process.poll() is None
        assert httpx.get(url + "/api/health", timeout=10).status_code == 200
        os.write(primary, b"\x11")  # ctrl+q
        eventually(partial(_exited, process, primary, screen), 35, interval=0, what="the exit")
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert "MarkupError" not in text and "Traceback" not in text
