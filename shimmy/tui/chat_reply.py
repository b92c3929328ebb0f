"""One chat reply, from the conversation to the database and the screen.

What is sent is decided first (``shimmy.chats.window``: failed turns never, the
oldest turns left out past the context, or nothing, by the "stop" policy), then
the reply goes through ``submit_chat`` (the same path as the API: the model's own
template, the engine's queue) and streams into its widget as Markdown. It is
written to the database on a clock, at least once a second while it streams, and
when it ends, fails or is stopped: a killed process loses at most a second of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

from rich.text import Text

from shimmy.chats import ChatStore, Conversation, StoredMessage
from shimmy.chats.export import reply_figures
from shimmy.chats.window import Window, context_turns, fit
from shimmy.errors import ShimmyError
from shimmy.models.generation import SamplingParams
from shimmy.tui.backend import ChatReply, DashboardBackend
from shimmy.tui.chat_log import ChatMessage
from shimmy.tui.chat_settings import ChatSettings

# Seconds between redraws of a streaming reply. Each redraw lays out and paints the
# screen on the cores llama.cpp's threads use: with SmolLM2 on 2 cores a reply came
# at 0.41x the speed of an undrawn one redrawn every 0.1 s, 0.76x every 0.25 s and
# 0.80x every 0.5 s (bench/bench_chat.py).
STREAM_INTERVAL = 0.25
# Seconds between saves of a streaming reply: a killed process loses at most this.
SAVE_INTERVAL = 1.0


# The sampling fields the chat's settings do not set.
CHAT_UNSET = frozenset(f.name for f in dataclasses.fields(SamplingParams)) - {
    "temperature",
    "unset",
}


@dataclass(frozen=True)
class ReplyJob:
    """A reply to write: to ``ask`` (on screen as ``ask_widget``), after the
    conversation's ``earlier`` messages, into the empty ``reply`` widget."""

    conversation: Conversation
    ask: StoredMessage
    ask_widget: ChatMessage
    reply: ChatMessage
    earlier: list[StoredMessage]
    model: str | None
    system: str
    settings: ChatSettings


class ReplyWriter:
    """Writes the Chat tab's replies, one at a time; ``stop`` ends the one running
    (it keeps what it wrote)."""

    def __init__(self, manager: DashboardBackend, store: ChatStore) -> None:
        self.manager = manager
        self.store = store
        self.generation: ChatReply | None = None
        self.stop_requested = False

    def live_tokens(self) -> int:
        """Tokens of the reply being written (read by the stats thread)."""
        generation = self.generation
        if generation is None or generation.done:
            return 0
        return int(generation.completion_tokens)

    def stop(self) -> None:
        self.stop_requested = True
        generation = self.generation
        if generation is not None:
            generation.cancel()

    async def write(self, job: ReplyJob) -> tuple[str, str | None]:
        """Write the reply of ``job``: its text and finish reason ("refused": nothing
        was sent; "error": the model failed)."""
        conversation, ask, ask_widget, reply = job.conversation, job.ask, job.ask_widget, job.reply
        model, system, settings = job.model, job.system, job.settings
        earlier = job.earlier
        store = self.store
        reply.show_figures(Text("loading the model and reading the conversation…", style="dim"))
        measured: list[str] = []

        def measure(messages: list[dict[str, str]]) -> tuple[int, int]:
            size = self.manager.measure_chat(model, messages)
            measured.append(size.model)
            return size.prompt_tokens, size.context_tokens

        reply_id: int | None = None
        generation: ChatReply | None = None
        try:
            window: Window = await asyncio.to_thread(
                fit,
                system,
                context_turns(earlier),
                ask.content,
                measure,
                max_tokens=settings.max_tokens,
                policy=settings.context_policy,
            )
            if window.refused is not None:
                # Not sent: the turn stays, marked, and is never sent again.
                await asyncio.to_thread(store.update_message, ask.id, error=window.refused)
                ask_widget.show_problem(window.refused)
                await reply.remove()
                return "", "refused"
            written_by = measured[-1] if measured else model
            stored = await asyncio.to_thread(
                store.add_message, conversation.id, "assistant", "", model=written_by
            )
            reply_id = reply.message_id = stored.id
            if window.note:
                await asyncio.to_thread(store.update_message, reply_id, note=window.note)
                reply.show_note(window.note)
            # Loading, tokenizing and queueing block: keep them off the event loop.
            generation = await asyncio.to_thread(
                self.manager.submit_chat,
                model,
                window.messages,
                max_tokens=settings.max_tokens,
                sampling=SamplingParams(
                    temperature=settings.temperature,
                    unset=CHAT_UNSET,  # a model preset's defaults fill the rest
                ),
                label="chat",
            )
            self.generation = generation
            if self.stop_requested:
                generation.cancel()
            reply.show_figures(Text(f"{generation.model} · writing…", style="dim italic"))
            await self._stream(generation, reply, reply_id)
        except ShimmyError as exc:
            problem = exc.one_line()
            if reply_id is None:
                failed = await asyncio.to_thread(
                    store.add_message, conversation.id, "assistant", "", model=model
                )
                reply_id = reply.message_id = failed.id
            await asyncio.to_thread(
                store.update_message, reply_id, error=problem, finish_reason="error"
            )
            reply.show_figures(Text(""))
            reply.show_problem(problem)
            # The failed turn is left out of later prompts; ctrl+r tries it again.
            return "", "error"
        except asyncio.CancelledError:
            # The app is closing: keep what was written (a direct write: no awaiting now).
            if generation is not None and reply_id is not None:
                generation.cancel()
                store.update_message(reply_id, content=generation.output, finish_reason="cancelled")
            raise
        finally:
            self.generation = None
            if generation is not None and not generation.done:
                generation.cancel()
        output = generation.output
        reply.text = output
        await asyncio.to_thread(
            store.update_message,
            reply_id,
            content=output,
            tokens=generation.completion_tokens,
            tokens_per_second=generation.tokens_per_second,
            time_to_first_token=generation.time_to_first_token,
            finish_reason=generation.finish_reason,
        )
        reply.show_figures(
            Text(
                reply_figures(
                    model=generation.model,
                    tokens=generation.completion_tokens,
                    tokens_per_second=generation.tokens_per_second,
                    time_to_first_token=generation.time_to_first_token,
                    finish_reason=generation.finish_reason,
                ),
                style="dim",
            )
        )
        return output, generation.finish_reason

    async def _stream(self, generation: ChatReply, reply: ChatMessage, reply_id: int) -> None:
        """Show the reply as it comes, and save it at least once a second meanwhile."""
        done = asyncio.Event()
        saver = asyncio.create_task(self._keep_saving(generation, reply_id, done))
        written: list[str] = []
        shown = 0
        flushed = time.monotonic()
        try:
            async for piece in generation.stream():
                written.append(piece.text)
                # Redrawing costs CPU that llama.cpp's threads need (2 cores
                # here): a few times a second, not per token (ChatMessage.stream_text).
                now = time.monotonic()
                if now - flushed >= STREAM_INTERVAL:
                    reply.stream_text("".join(written))
                    shown = len(written)
                    flushed = now
            if len(written) > shown:
                reply.stream_text("".join(written))
        finally:
            # Let a save under way end first: cancelled, its thread could still write
            # an older text over the final one.
            done.set()
            await saver
            await reply.finish_text("".join(written))

    async def _keep_saving(self, generation: ChatReply, reply_id: int, done: asyncio.Event) -> None:
        """Write what the reply holds every SAVE_INTERVAL until ``done``: on a clock
        rather than per token, so a pause in the tokens leaves none unsaved."""
        saved = ""
        while True:
            try:
                await asyncio.wait_for(done.wait(), SAVE_INTERVAL)
            except TimeoutError:
                pass
            else:
                return
            text = generation.output
            if text != saved:
                await asyncio.to_thread(self.store.update_message, reply_id, content=text)
                saved = text
