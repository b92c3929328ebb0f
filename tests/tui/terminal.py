"""The real `shimmy` dashboard in a pseudo-terminal, as the end-to-end tests drive
it: started on a pty of a given size, read while it draws (a pty nobody reads
fills up and blocks the program drawing on it), typed into, quit."""

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

from tests.e2e.harness import SHIMMY
from tests.waiting import eventually

CTRL_Q = b"\x11"
F3 = b"\x1bOR"
F4 = b"\x1bOS"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def read_screen(fd: int, seconds: float) -> bytes:
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


def exited(process: subprocess.Popen[bytes], primary: int, screen: bytearray) -> bool:
    """Whether ``process`` has exited, reading what it draws meanwhile (0.2 s): a
    pty nobody reads fills up and blocks the program drawing on it."""
    screen.extend(read_screen(primary, 0.2))
    return process.poll() is not None


def start_dashboard(
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
        screen.extend(read_screen(primary, 0.2))
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


def quit_dashboard(process: subprocess.Popen[bytes], primary: int, screen: bytearray) -> int:
    """ctrl+q, then its exit code once it has exited (read meanwhile)."""
    os.write(primary, CTRL_Q)
    eventually(partial(exited, process, primary, screen), 35, interval=0, what="the exit")
    return process.wait(5)


def stop(process: subprocess.Popen[bytes], primary: int) -> None:
    """Kill it if it still runs, and close the pty (a test's ``finally``)."""
    if process.poll() is None:
        process.kill()
        process.wait()
    os.close(primary)
