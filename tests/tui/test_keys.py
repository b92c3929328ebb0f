"""Keys you can find: the help screen (F1) and the command palette hold every
registered binding, the help opens at the tab in use, and a copy says so."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from rich.console import Console
from textual.app import App
from textual.binding import Binding
from textual.command import CommandList, CommandPalette
from textual.containers import VerticalScroll
from textual.dom import DOMNode
from textual.widget import Widget
from textual.widgets import Static, TabbedContent

from shimmy.tui.app import ShimmyApp
from shimmy.tui.chat_pane import ChatPane
from shimmy.tui.help_screen import HelpScreen
from shimmy.tui.keymap import key_label
from shimmy.tui.log_pane import LogPane
from tests.tui.fakes import FakeManager, FakeServer
from tests.waiting import settle

pytestmark = pytest.mark.anyio


def dashboard(tab: str = "models") -> ShimmyApp:
    manager = FakeManager()
    return ShimmyApp(manager, FakeServer(manager), stats_interval=0, initial_tab=tab)


def declared(node: DOMNode) -> list[Binding]:
    """The bindings ``node``'s classes declare (a subclass's replaces its base's for
    the same key): shimmy's own for a widget; Textual's too for the app and its
    screen (Tab, ctrl+c), system ones left out."""
    everything = isinstance(node, App) or node is node.app.screen_stack[0]
    by_key: dict[str, Binding] = {}
    for cls in reversed(type(node).__mro__):
        if not everything and not cls.__module__.startswith("shimmy."):
            continue
        for entry in cls.__dict__.get("BINDINGS", ()):
            binding = entry if isinstance(entry, Binding) else Binding(*entry)
            for key in binding.key.split(","):
                by_key[key] = binding
    unique = {id(b): b for b in by_key.values() if not b.system and b in by_key.values()}
    return [b for b in unique.values() if all(by_key[k] is b for k in b.key.split(","))]


def registered(app: ShimmyApp) -> list[tuple[DOMNode, Binding]]:
    """Every binding the dashboard's main screen holds, found without the keymap:
    the app's, the screen's, and those of every widget on it."""
    found: list[tuple[DOMNode, Binding]] = [(app, b) for b in declared(app)]
    screen = app.screen_stack[0]
    found.extend((screen, b) for b in declared(screen))
    for widget in screen.walk_children(Widget):
        found.extend((widget, b) for b in declared(widget))
    return found


def squeezed(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def rendered(widget: Static) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


def help_text(screen: HelpScreen) -> str:
    """What the help screen shows, whitespace squeezed (a long line wraps)."""
    return squeezed(" ".join(rendered(static) for static in screen.query(Static)))


async def open_help(app: ShimmyApp, pilot: Any) -> HelpScreen:
    await pilot.press("f1")
    screen = await settle(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen)
    assert isinstance(screen, HelpScreen)
    return screen


async def test_help_and_palette_hold_every_registered_binding() -> None:
    app = dashboard()
    async with app.run_test(size=(160, 48)) as pilot:
        await app.workers.wait_for_complete()
        bindings = registered(app)
        # The palette's own key is added by Textual at start, not declared.
        assert any(b.action == "command_palette" for _, b in app._bindings)
        commands = list(app.get_system_commands(app.screen))
        shown = await open_help(app, pilot)
        text = help_text(shown)
        for node, binding in bindings:
            what = binding.tooltip or binding.description
            line = squeezed(f"{key_label(binding.key)} {what}")
            assert line in text, f"{binding} of {node} is not in the help"
            action = binding.action.partition("(")[0].rpartition(".")[2]
            target = app if binding.action.startswith("app.") else node
            if not target.check_action(action, ()):
                continue  # hidden where it cannot run (no Ollama listener here)
            keyed = [c for c in commands if c.help.startswith(key_label(binding.key))]
            assert any(what in c.title for c in keyed), f"{binding} of {node} is not in the palette"
        assert "ctrl+p" in text


async def test_a_new_binding_is_in_the_help_and_the_palette(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    added = Binding("z", "clear", "Zap", tooltip="Zap every line")
    monkeypatch.setattr(LogPane, "BINDINGS", [*LogPane.BINDINGS, added])
    app = dashboard("log")
    async with app.run_test(size=(160, 48)) as pilot:
        commands = {c.title: c.help for c in app.get_system_commands(app.screen)}
        assert commands["Zap every line"].startswith("z · Log")
        assert "z Zap every line" in help_text(await open_help(app, pilot))


async def test_help_names_the_keys_a_daily_user_needs() -> None:
    app = dashboard()
    async with app.run_test(size=(160, 48)) as pilot:
        text = help_text(await open_help(app, pilot))
        for needed in (
            "Tab Move to the next part of the tab",
            "shift+Tab Move to the previous part of the tab",
            "PgUp Scroll the chat up",  # from the message box
            "PgUp Scroll the chat up a page",  # in the messages
            "c Copy the message or code block under the cursor",
            "ctrl+c / super+c Copy the text selected with the mouse",
            "sort box",
            "clipboard",
        ):
            assert needed in text, needed


@pytest.mark.parametrize("tab", ["chat", "log", "hub"])
async def test_help_opens_at_the_tab_in_use(tab: str) -> None:
    app = dashboard(tab)
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot, lambda: app.query_one(TabbedContent).active == tab)
        shown = await open_help(app, pilot)
        body = shown.query_one("#help-body", VerticalScroll)
        heading = shown.query_one(f"#help-{tab}", Static)

        # The tab's heading is at the top of the help, under its margin (or the help
        # is scrolled to its end, the hub's being the last section).
        def at_top() -> bool:
            below_top = heading.region.y - body.content_region.y
            return body.scroll_y > 0 and (
                below_top in (0, 1) or (body.scroll_y == body.max_scroll_y and below_top > 0)
            )

        await settle(
            pilot,
            at_top,
            timeout=10,
            what=lambda: f"scroll {body.scroll_y}, heading at {heading.region.y}",
        )


async def test_palette_offers_keyed_actions_and_runs_them_where_they_belong() -> None:
    app = dashboard()
    async with app.run_test(size=(160, 48)) as pilot:
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        for title, key in (
            ("Edit the server's address (HOST:PORT)", "b · Server"),
            ("Clear the log", "c · Log"),
            ("Show / hide the chat settings: model, system prompt, sampling", "ctrl+b · Chat"),
        ):
            assert commands[title].help.startswith(key)
        settings = app.query_one(ChatPane).settings
        shown_before = settings.display
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"hide the chat settings")
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        options = await settle(pilot, lambda: palette.query_one(CommandList).option_count > 0)
        assert options
        prompt = str(palette.query_one(CommandList).get_option_at_index(0).prompt)
        assert "ctrl+b" in prompt  # the key is shown with the command
        await pilot.press("enter")
        await settle(pilot, lambda: app.query_one(TabbedContent).active == "chat")
        await settle(pilot, lambda: settings.display != shown_before)


async def test_copying_selected_text_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    app = dashboard()
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        monkeypatch.setattr(screen, "get_selected_text", lambda: "hello world")
        await pilot.press("ctrl+c")
        await settle(pilot, lambda: app.clipboard == "hello world")
        await settle(
            pilot,
            lambda: any("Copied 11 characters" in n.message for n in app._notifications),
        )
