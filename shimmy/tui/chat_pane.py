"""The Chat tab: a conversation with a model, its replies streamed in as Markdown.

Replies go through ``ModelManager.submit_chat``, the same path as the API, so
the model's own chat template renders the conversation and the engine's queue
lets an API request and a chat reply run side by side.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Markdown, Select, Static

from shimmy.errors import ShimmyError
from shimmy.models.generation import SamplingParams
from shimmy.tui.backend import ChatReply, DashboardBackend
from shimmy.tui.plain import plain

DEFAULT_CHOICE = "default"
DEFAULT_TEMPERATURE = SamplingParams.temperature  # the engine's, stated once there
DEFAULT_MAX_TOKENS = 512
# Seconds between redraws of a streaming reply. Each redraw lays out and paints the
# screen on the cores llama.cpp's threads use: with SmolLM2 on 2 cores a reply came
# at 0.41x the speed of an undrawn one redrawn every 0.1 s, 0.76x every 0.25 s and
# 0.80x every 0.5 s (bench/bench_chat.py).
STREAM_INTERVAL = 0.25


def reply_footer(generation: ChatReply) -> Text:
    """ "48 tokens · 91.2 tok/s · 120 ms to first token · stop" """
    bits = [f"{generation.completion_tokens} tokens"]
    if generation.tokens_per_second:
        bits.append(f"{generation.tokens_per_second:.1f} tok/s")
    if generation.time_to_first_token is not None:
        bits.append(f"{generation.time_to_first_token * 1000:.0f} ms to first token")
    reason = generation.finish_reason or ""
    bits.append({"cancelled": "stopped", "length": "max tokens reached"}.get(reason, reason))
    return Text(" · ".join(b for b in bits if b), style="dim")


class ChatMessage(Vertical):
    """One turn: the user's text, or the model's Markdown reply and its figures.

    The user's text is literal. A reply is Markdown (Textual's Markdown widget, which
    never reads Rich or Textual markup: ``[@click=...]`` in a reply is just text)."""

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, role: str, text: str = "", **kwargs: Any) -> None:
        super().__init__(classes=f"message {role}", **kwargs)
        self.role = role
        self.text = text

    def compose(self) -> ComposeResult:
        if self.role == "user":
            yield Static(plain(self.text), classes="body")
        else:
            yield Markdown(self.text, classes="body")
            yield Static(Text("thinking…", style="dim italic"), classes="figures")

    @property
    def markdown(self) -> Markdown:
        return self.query_one(Markdown)

    def show_figures(self, text: Text) -> None:
        self.query_one(".figures", Static).update(text)


class ChatPane(Vertical):
    """Settings on the left, the conversation on the right, the prompt below."""

    BINDINGS = [
        Binding("escape", "stop", "Stop"),
        Binding("ctrl+n", "new_chat", "New chat"),
        Binding("ctrl+r", "regenerate", "Regenerate"),
        Binding("ctrl+b", "toggle_settings", "Settings"),
    ]

    @dataclass
    class ReplyFinished(Message):
        """A reply ended (finished, stopped or failed); for tests and the log."""

        text: str
        finish_reason: str | None

    # kwargs: Textual's widget options (id, classes...), handed on as they are.
    def __init__(self, manager: DashboardBackend, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manager = manager
        self.history: list[dict[str, str]] = []
        self._generation: ChatReply | None = None
        self._stop_requested = False
        self._replying = False

    def compose(self) -> ComposeResult:
        with Vertical(id="chat-settings") as settings:
            settings.border_title = "Settings"
            yield Label("Model")
            yield Select(
                [("default model", DEFAULT_CHOICE)],
                value=DEFAULT_CHOICE,
                allow_blank=False,
                id="chat-model",
                compact=True,
            )
            yield Label("System prompt")
            yield Input(
                placeholder="You are a helpful assistant.", id="system-prompt", compact=True
            )
            yield Label("Temperature")
            yield Input(str(DEFAULT_TEMPERATURE), id="temperature", type="number", compact=True)
            yield Label("Max tokens")
            yield Input(str(DEFAULT_MAX_TOKENS), id="max-tokens", type="integer", compact=True)
        with Vertical(id="chat-main"):
            log = VerticalScroll(id="chat-log")
            log.border_title = "Chat"
            with log:
                yield Static(
                    Text(
                        "Ask the model anything. Enter sends, Esc stops a reply, "
                        "ctrl+n starts over, ctrl+r asks again.",
                        style="dim",
                    ),
                    id="chat-hint",
                )
            yield Input(placeholder="Message (Enter to send)", id="chat-input")

    def on_mount(self) -> None:
        self.query_one("#chat-log", VerticalScroll).anchor()

    def focus_default(self) -> None:
        self.query_one("#chat-input", Input).focus()

    def set_models(self, names: list[str]) -> None:
        """Offer these models besides "default model" (called after each discovery)."""
        select = self.query_one("#chat-model", Select)
        current = select.value
        # Model names come from file names and hub repositories: literal prompts.
        select.set_options([("default model", DEFAULT_CHOICE), *((plain(n), n) for n in names)])
        select.value = current if current in names else DEFAULT_CHOICE

    def live_tokens(self) -> int:
        """Tokens of the reply being written (read by the stats thread)."""
        generation = self._generation
        if generation is None or generation.done:
            return 0
        return int(generation.completion_tokens)

    @property
    def replying(self) -> bool:
        return self._replying

    # -- sending -----------------------------------------------------------------

    @on(Input.Submitted, "#chat-input")
    def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self._replying:
            self.notify("A reply is being written: Esc stops it", severity="warning")
            return
        event.input.value = ""
        self.send(text)

    def send(self, text: str) -> None:
        """Add a user turn and ask the model for a reply."""
        self.history.append({"role": "user", "content": text})
        log = self.query_one("#chat-log", VerticalScroll)
        log.mount(ChatMessage("user", text))
        self._ask()

    def _ask(self) -> None:
        settings = self._settings()
        if settings is None:
            self.history.pop()
            return
        reply = ChatMessage("assistant")
        self.query_one("#chat-log", VerticalScroll).mount(reply)
        self._replying = True
        self._stop_requested = False
        self._reply(self._messages(), reply, *settings)

    def _settings(self) -> tuple[str | None, float, int] | None:
        try:
            temperature = float(self.query_one("#temperature", Input).value or DEFAULT_TEMPERATURE)
            max_tokens = int(self.query_one("#max-tokens", Input).value or DEFAULT_MAX_TOKENS)
        except ValueError:
            self.notify("Temperature and max tokens must be numbers", severity="error")
            return None
        if not 0 <= temperature <= 2 or max_tokens < 1:
            self.notify("Temperature must be 0-2 and max tokens at least 1", severity="error")
            return None
        choice = self.query_one("#chat-model", Select).value
        model = None if choice in (DEFAULT_CHOICE, Select.BLANK) else str(choice)
        return model, temperature, max_tokens

    def _messages(self) -> list[dict[str, str]]:
        system = self.query_one("#system-prompt", Input).value.strip()
        prefix = [{"role": "system", "content": system}] if system else []
        return prefix + list(self.history)

    @work(exclusive=True, group="chat", exit_on_error=False, description="chat reply")
    async def _reply(
        self,
        messages: list[dict[str, str]],
        reply: ChatMessage,
        model: str | None,
        temperature: float,
        max_tokens: int,
    ) -> None:
        generation: ChatReply | None = None
        try:
            reply.show_figures(
                Text("loading the model and reading the prompt…", style="dim italic")
            )
            # Loading, tokenizing and queueing block: keep them off the event loop.
            generation = await asyncio.to_thread(
                self.manager.submit_chat,
                model,
                messages,
                max_tokens=max_tokens,
                sampling=SamplingParams(temperature=temperature),
                label="chat",
            )
            self._generation = generation
            if self._stop_requested:
                generation.cancel()
            reply.show_figures(Text("writing…", style="dim italic"))
            stream = Markdown.get_stream(reply.markdown)
            pending: list[str] = []
            flushed = 0.0
            try:
                async for piece in generation.stream():
                    pending.append(piece.text)
                    # Re-rendering Markdown costs CPU that llama.cpp's threads need
                    # (2 cores here): redraw a few times a second, not per token.
                    now = time.monotonic()
                    if now - flushed >= STREAM_INTERVAL:
                        await stream.write("".join(pending))
                        pending.clear()
                        flushed = now
                if pending:
                    await stream.write("".join(pending))
            finally:
                await stream.stop()
        except ShimmyError as exc:
            reply.show_figures(plain(exc.one_line(), style="red"))
            # The user's turn stays, so ctrl+r can retry it.
            self.post_message(self.ReplyFinished("", "error"))
            return
        finally:
            if generation is not None and not generation.done:
                generation.cancel()
            self._generation = None
            self._replying = False
        self.history.append({"role": "assistant", "content": generation.output})
        reply.show_figures(reply_footer(generation))
        self.post_message(self.ReplyFinished(generation.output, generation.finish_reason))

    # -- actions -----------------------------------------------------------------

    def action_stop(self) -> None:
        """Stop the reply being written (it keeps what it wrote so far)."""
        self._stop_requested = True
        generation = self._generation
        if generation is not None:
            generation.cancel()

    def action_new_chat(self) -> None:
        self.action_stop()
        self.history.clear()
        log = self.query_one("#chat-log", VerticalScroll)
        log.query(ChatMessage).remove()
        self.focus_default()

    def action_regenerate(self) -> None:
        """Ask again for the last reply (or for one that failed)."""
        if self._replying:
            self.notify("A reply is being written: Esc stops it", severity="warning")
            return
        if self.history and self.history[-1]["role"] == "assistant":
            self.history.pop()
        turns = self.query_one("#chat-log").query(ChatMessage)
        if turns and turns.last().role == "assistant":
            turns.last().remove()
        if not self.history:
            self.notify("Nothing to regenerate yet")
            return
        self._ask()

    def action_toggle_settings(self) -> None:
        settings = self.query_one("#chat-settings")
        settings.display = not settings.display
