"""How fast a chat reply comes in the dashboard's Chat tab, against the same request
generated in the same process without the tab drawing it.

One command, from the repo root after scripts/setup:

    .venv/bin/python bench/bench_chat.py

The dashboard runs in-process under Textual's Pilot (headless, 120x36) with the
real SmolLM2. Each round sends the same chat message from the Chat tab once for
each redraw interval (the shipped one and the --intervals given), then submits it
straight to the model manager with nothing drawn; each figure is the engine's own
tokens/s of that reply, medians over the rounds. Redrawing a streaming reply lays
out and paints the screen on the cores that llama.cpp's threads need, so the
interval trades smoothness for speed. Writes the "Dashboard chat" section of
bench/RESULTS.md. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time

from results import replace_section

MESSAGE = "Give me three tips for writing clear code."
REPLY_TIMEOUT = 120.0


def label(interval: float) -> str:
    return f"{interval:g} s"


async def run(rounds: int, intervals: list[float], max_tokens: int) -> dict[str, list[float]]:
    from textual.widgets import Input

    import shimmy.tui.chat_reply as chat_reply
    from shimmy.api.server_control import ServerControl
    from shimmy.config import Settings
    from shimmy.models.generation import SamplingParams
    from shimmy.models.manager import ModelManager
    from shimmy.tui.app import ShimmyApp
    from shimmy.tui.chat_pane import ChatPane
    from shimmy.tui.logsink import DashboardLogHandler, route_logging_to

    log_handler = DashboardLogHandler()
    route_logging_to(log_handler, verbose=False)
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    app = ShimmyApp(manager, ServerControl(manager, "127.0.0.1", 0), log_handler=log_handler)
    figures: dict[str, list[float]] = {label(i): [] for i in intervals}
    figures["not drawn"] = []
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause(1.0)  # the first scan of the models
            await pilot.press("f3")
            app.query_one("#max-tokens", Input).value = str(max_tokens)
            chat = app.query_one(ChatPane)
            for round_no in range(rounds):
                for interval in intervals if round_no % 2 == 0 else intervals[::-1]:
                    chat_reply.STREAM_INTERVAL = interval
                    before = manager.stats().totals.requests
                    await pilot.press("ctrl+n")
                    await pilot.press(*MESSAGE, "enter")
                    deadline = time.monotonic() + REPLY_TIMEOUT
                    while time.monotonic() < deadline and (
                        chat.replying or manager.stats().totals.requests == before
                    ):
                        await asyncio.sleep(0.05)
                    totals = manager.stats().totals
                    if totals.requests != before + 1:
                        raise SystemExit("the Chat tab did not send the message")
                    figures[label(interval)].append(totals.last_tokens_per_second or 0.0)
                generation = await asyncio.to_thread(
                    manager.submit_chat,
                    None,
                    [{"role": "user", "content": MESSAGE}],
                    max_tokens=max_tokens,
                    sampling=SamplingParams(temperature=0.7),
                )
                await asyncio.to_thread(generation.wait, REPLY_TIMEOUT)
                figures["not drawn"].append(generation.tokens_per_second or 0.0)
                print(
                    f"round {round_no + 1}: "
                    + ", ".join(f"{k} {v[-1]:.1f}" for k, v in figures.items()),
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        manager.close()
    return figures


def main() -> int:
    from shimmy.tui.chat_reply import STREAM_INTERVAL

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    os.environ["SHIMMY_HOME"] = tempfile.mkdtemp(prefix="shimmy-bench-chat-")
    intervals = sorted({STREAM_INTERVAL, *args.intervals})
    figures = asyncio.run(run(args.rounds, intervals, args.max_tokens))
    undrawn = statistics.median(figures["not drawn"])
    lines = [
        "## Dashboard chat",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/bench_chat.py"
        f"{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`: the same chat message "
        f"({args.max_tokens} tokens at most) from the Chat tab at each redraw interval and "
        f"straight to the model with nothing drawn, {args.rounds} rounds, medians of the "
        "engine's tokens/s.",
        "",
        "| redraw interval | tok/s | vs not drawn |",
        "|---|---|---|",
    ]
    for name, values in figures.items():
        shipped = " (shipped)" if name == label(STREAM_INTERVAL) else ""
        tps = statistics.median(values)
        lines.append(f"| {name}{shipped} | {tps:.1f} | {tps / undrawn:.2f} |")
    report = "\n".join([*lines, ""])
    print(report)
    replace_section("## Dashboard chat", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
