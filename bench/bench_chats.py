"""Is the Chat tab fast with a long history? 10,000 conversations, 1,000,000 messages.

One command, from the repo root after scripts/setup:

    .venv/bin/python bench/bench_chats.py [--conversations 10000] [--messages 100]

Generates the history first (a fixed seed: words drawn from a 5,000-word
vocabulary with a Zipf-like skew, 5 to 80 words a message, so common words are
in most conversations and rare ones in few), in a chats database built by
shimmy's own schema (its full-text index kept by its own triggers), then times:

- the store: opening the database and reading the sidebar's first page, and
  searches (a rare word, a common word, two words, a word being typed);
- the dashboard (Textual's Pilot, headless, 120x36, the real model manager): from
  the app's start to the first page of conversations in the sidebar, against the
  same with a database of one conversation (what Textual's own start costs), from
  the sidebar's mount to its first page, and from the last key of a search for
  the commonest word to its matches on screen (which includes the search's
  0.15 s wait for typing to pause).

Medians over the rounds. Writes the "Chats with a long history" section of
bench/RESULTS.md. The database goes in a temporary folder unless --db names one
(kept, and reused when it already holds the history asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from results import replace_section

SEED = 14
VOCABULARY = 5_000
FIRST_PAGE_TARGET = 0.300
SEARCH_TARGET = 0.500


def words() -> list[str]:
    """Pronounceable made-up words, the same every run."""
    rng = random.Random(SEED)
    syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
    found: set[str] = set()
    while len(found) < VOCABULARY:
        found.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(found)


def generate(path: Path, conversations: int, per_conversation: int) -> float:
    """Fill ``path`` (a new database) with the history; seconds it took."""
    from shimmy.chats import ChatStore

    ChatStore(path).close()  # the schema, by shimmy's own migrations
    vocabulary = words()
    rng = random.Random(SEED)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    cumulative: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cumulative.append(total)

    def text(low: int, high: int) -> str:
        return " ".join(rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(low, high)))

    started = time.monotonic()
    start_time = 1.7e9
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = OFF")  # generating only: shimmy keeps NORMAL
        conn.execute("BEGIN")
        message_id = 0
        for c in range(1, conversations + 1):
            created = start_time + c * 600.0
            updated = created + per_conversation * 30.0
            conn.execute(
                "INSERT INTO conversations (id, title, model, system_prompt, settings, "
                "created_at, updated_at) VALUES (?, ?, ?, '', '{}', ?, ?)",
                (c, text(2, 7).capitalize(), "smollm2-135m-instruct-q4_1", created, updated),
            )
            rows = []
            for m in range(per_conversation):
                message_id += 1
                user = m % 2 == 0
                rows.append(
                    (
                        message_id,
                        c,
                        "user" if user else "assistant",
                        text(5, 30) if user else text(20, 80),
                        created + m * 30.0,
                        None if user else "smollm2-135m-instruct-q4_1",
                        None if user else 60,
                        None if user else "stop",
                    )
                )
            conn.executemany(
                "INSERT INTO messages (id, conversation_id, role, content, created_at, model, "
                "tokens, finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if c % 1000 == 0:
                conn.execute("COMMIT")
                conn.execute("BEGIN")
                print(f"  {c} conversations, {message_id} messages", file=sys.stderr, flush=True)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("ANALYZE")
    conn.close()
    return time.monotonic() - started


def counts(path: Path) -> tuple[int, int]:
    with sqlite3.connect(path) as conn:
        found = (
            int(conn.execute("SELECT count(*) FROM conversations").fetchone()[0]),
            int(conn.execute("SELECT count(*) FROM messages").fetchone()[0]),
        )
    conn.close()
    return found


def median_time(action: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def queries() -> dict[str, str]:
    vocabulary = words()
    # rank 0 is the commonest word; a rare word is far down the Zipf tail.
    return {
        "a common word": vocabulary[0],
        "a rare word": vocabulary[4_000],
        "two words": f"{vocabulary[3]} {vocabulary[40]}",
        "a word being typed (prefix)": vocabulary[7][:3],
        "a common word being typed (4-letter prefix)": vocabulary[0][:4],
    }


def time_store(path: Path, rounds: int) -> dict[str, float]:
    from shimmy.chats import ChatStore

    figures: dict[str, float] = {}

    def open_and_page() -> None:
        store = ChatStore(path)
        try:
            assert len(store.conversations()) == 50
        finally:
            store.close()

    figures["open the database and read the first page"] = median_time(open_and_page, rounds)
    store = ChatStore(path)
    try:
        figures["the first page (database open)"] = median_time(store.conversations, rounds)
        for what, text in queries().items():
            hits = store.search(text)
            print(f"  search {text!r}: {len(hits)} hits", file=sys.stderr)
            figures[f"search: {what}"] = median_time(lambda t=text: store.search(t), rounds)
    finally:
        store.close()
    return figures


async def time_dashboard(path: Path, rounds: int) -> dict[str, list[float]]:
    """From the app's start to the first page on screen, and search to matches."""
    from shimmy.api.server_control import ServerControl
    from shimmy.chats import ChatStore
    from shimmy.config import Settings
    from shimmy.models.manager import ModelManager
    from shimmy.tui.app import ShimmyApp
    from shimmy.tui.chat_pane import ChatPane
    from shimmy.tui.chat_sidebar import ChatSidebar
    from shimmy.tui.logsink import DashboardLogHandler, route_logging_to

    route_logging_to(DashboardLogHandler(), verbose=False)
    figures: dict[str, list[float]] = {"empty": [], "history": [], "mounted": [], "search": []}
    # When the sidebar is mounted: from then on, the time to its first page is the list's.
    mounted: list[float] = []
    on_mount = ChatSidebar.on_mount

    def timed_mount(sidebar: ChatSidebar) -> None:
        mounted.append(time.perf_counter())
        on_mount(sidebar)

    ChatSidebar.on_mount = timed_mount  # type: ignore[method-assign]
    empty = path.parent / "empty.db"
    search_text = queries()["a common word"]  # the most matches: the slowest
    manager = ModelManager(Settings(keep_alive=-1, preload=False))
    try:
        for round_no in range(rounds):
            for kind in ("empty", "history") if round_no % 2 == 0 else ("history", "empty"):
                store = ChatStore(path if kind == "history" else empty)
                if kind == "empty":
                    store.create_conversation("only one")
                app = ShimmyApp(
                    manager,
                    ServerControl(manager, "127.0.0.1", 0),
                    serve=False,
                    initial_tab="chat",
                    chats=store,
                )
                try:
                    started = time.perf_counter()
                    async with app.run_test(size=(120, 36)) as pilot:
                        sidebar = app.query_one(ChatPane).sidebar
                        await until(
                            lambda s=sidebar: s.option_list.option_count > 0, "the first page"
                        )
                        shown = time.perf_counter()
                        figures[kind].append(shown - started)
                        if kind == "history":
                            figures["mounted"].append(shown - mounted[-1])
                        if kind == "history":
                            pane = app.query_one(ChatPane)
                            await until(lambda p=pane: p.composer.has_focus, "the message box")
                            await pilot.press("ctrl+f", *search_text[:-1])
                            started = time.perf_counter()
                            await pilot.press(search_text[-1])
                            await until(
                                lambda s=sidebar: s.hits and s.hits_for == search_text,
                                "the matches",
                            )
                            figures["search"].append(time.perf_counter() - started)
                        await app.workers.wait_for_complete()
                finally:
                    store.close()
            print(
                f"round {round_no + 1}: "
                + ", ".join(f"{k} {v[-1] * 1000:.0f} ms" for k, v in figures.items() if v),
                file=sys.stderr,
                flush=True,
            )
    finally:
        manager.close()
    return figures


async def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: the dashboard did not show {what}")
        await asyncio.sleep(0.002)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def report(
    args: argparse.Namespace,
    path: Path,
    generated: float | None,
    store: dict[str, float],
    dashboard: dict[str, list[float]],
) -> str:
    conversations, messages = counts(path)
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    first = statistics.median(dashboard["history"])
    empty = statistics.median(dashboard["empty"])
    search = statistics.median(dashboard["search"])
    worst_search = max(v for k, v in store.items() if k.startswith("search"))
    lines = [
        "## Chats with a long history",
        "",
        f"Run on {time.strftime('%Y-%m-%d %H:%M')} with `.venv/bin/python bench/bench_chats.py "
        f"--conversations {args.conversations} --messages {args.messages} --rounds {args.rounds}`"
        f": {conversations:,} conversations, {messages:,} messages, a {size / 2**20:,.0f} MiB "
        "database"
        + (f" (generated in {generated:.0f} s)" if generated is not None else "")
        + f"; {os.cpu_count()} cores; medians of {args.rounds} rounds.",
        "",
        "| measure | time | target |",
        "|---|---|---|",
        f"| dashboard: start to the sidebar's first page, this history | {ms(first)} | |",
        f"| dashboard: the same with one conversation | {ms(empty)} | |",
        f"| dashboard: the sidebar's mount to its first page on screen, this history "
        f"| {ms(statistics.median(dashboard['mounted']))} | < {ms(FIRST_PAGE_TARGET)} |",
        f"| dashboard: what the history adds to the start | {ms(first - empty)} | |",
        f"| dashboard: a search's last key (the commonest word) to its matches on screen "
        f"(0.15 s of it is the wait for typing to pause) | {ms(search)} | "
        f"< {ms(SEARCH_TARGET)} |",
    ]
    for what, seconds in store.items():
        target = ""
        if what.startswith("open"):
            target = f"< {ms(FIRST_PAGE_TARGET)}"
        elif what.startswith("search"):
            target = f"< {ms(SEARCH_TARGET)}"
        lines.append(f"| store: {what} | {ms(seconds)} | {target} |")
    lines += [
        "",
        f"Slowest search in the store: {ms(worst_search)}. Most of the first figure is "
        "the dashboard's own start (Textual laying out every tab, the model scan), as "
        "the one-conversation row shows; the list reads one page of 50 (keyset paging "
        "on an index) and a search asks FTS5 for the newest matches only. The database "
        "was in the OS's file cache, as it is after its first use; the first read after "
        "a reboot is slower.",
    ]
    return "\n".join(lines) + "\n"


@contextmanager
def database(kept: Path | None) -> Iterator[Path]:
    """Where the history is: ``kept``, or a temporary folder removed afterwards."""
    if kept is not None:
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix="shimmy-bench-chats-") as folder:
        yield Path(folder) / "chats.db"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--messages", type=int, default=100, help="per conversation")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--db", type=Path, help="keep the generated history here")
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    with database(args.db) as path:
        generated = None
        wanted = (args.conversations, args.conversations * args.messages)
        if not path.exists() or counts(path) != wanted:
            if path.exists():
                raise SystemExit(f"{path} holds another history: remove it first")
            print(f"generating {wanted[0]:,} conversations, {wanted[1]:,} messages…",
                  file=sys.stderr)  # fmt: skip
            generated = generate(path, args.conversations, args.messages)
        store = time_store(path, args.rounds)
        dashboard = asyncio.run(time_dashboard(path, args.rounds))
        text = report(args, path, generated, store, dashboard)
    print(text)
    if not args.no_write:
        replace_section("## Chats with a long history", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
