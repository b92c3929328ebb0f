"""The real `shimmy` command in a pseudo-terminal: it draws the dashboard, serves
HTTP meanwhile, keeps llama.cpp's stderr off the screen, survives request paths
full of markup, and ctrl+q exits 0 and frees the port."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import isolated_env
from tests.tui.terminal import exited, free_port, read_screen, start_dashboard
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.model]


def test_dashboard_in_a_terminal(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = isolated_env(tmp_path, TERM="xterm-256color", COLUMNS="100", LINES="30")
    process, primary, screen = start_dashboard(tmp_path, port, env, 30, 100)
    try:
        body = {"model": "default", "prompt": "Say hi.", "max_tokens": 8}
        response = httpx.post(url + "/api/generate", json=body, timeout=120)
        assert response.status_code == 200
        # Not synchronisation: 1.5 s of what it draws after serving, checked below.
        screen += read_screen(primary, 1.5)
        os.write(primary, b"\x11")  # ctrl+q
        eventually(partial(exited, process, primary, screen), 35, interval=0, what="the exit")
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
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rows, columns = 45, 160
    env = isolated_env(tmp_path, TERM="xterm-256color", COLUMNS=str(columns), LINES=str(rows))
    process, primary, screen = start_dashboard(tmp_path, port, env, rows, columns)
    try:
        os.write(primary, b"\x1bOS")  # F4: the Server tab, where the request log is drawn
        for path in ("/x%5B/bold%5D", "/%5B@click=app.quit%5DQUITNOW%5B/%5D"):
            assert httpx.get(url + path, timeout=10).status_code == 404
        # The log is redrawn once a second: wait until both paths are on screen.
        wanted = (b"GET /x[/bold]", b"GET /[@click=app.quit]QUITNOW[/]")

        def both_drawn() -> bool:
            assert process.poll() is None, screen[-3000:].decode(errors="replace")
            screen.extend(read_screen(primary, 0.2))
            return all(w in screen for w in wanted)

        eventually(both_drawn, 30, interval=0, what=lambda: screen[-3000:].decode(errors="replace"))
        assert all(w in screen for w in wanted), screen[-3000:].decode(errors="replace")
        assert process.poll() is None
        assert httpx.get(url + "/api/health", timeout=10).status_code == 200
        os.write(primary, b"\x11")  # ctrl+q
        eventually(partial(exited, process, primary, screen), 35, interval=0, what="the exit")
        assert process.wait(5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    text = screen.decode(errors="replace")
    assert "MarkupError" not in text and "Traceback" not in text
