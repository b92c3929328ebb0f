"""Engine and ModelManager with the real SmolLM2 model."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from shimmy.config import Settings
from shimmy.errors import ShimmyError
from shimmy.models import engine as engine_module
from shimmy.models.generation import GenerationRequest, SamplingParams
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelRegistry
from shimmy.models.tools import Tool, ToolRequest
from tests.waiting import eventually

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(scope="module")
def manager(tmp_path_factory, smollm2_path):
    settings = Settings(model=str(smollm2_path), ctx_size=512, keep_alive=-1, max_queue=3)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    yield manager
    manager.close()


@pytest.fixture(scope="module")
def engine(manager):
    return manager.engine(None)


def test_default_model_loads_with_all_cores_and_clamped_context(engine, manager):
    assert engine.n_ctx == 512
    assert engine.n_parallel == manager.settings.parallel
    import llama_cpp

    assert llama_cpp.llama_n_threads(engine._context.ptr) == manager.settings.threads
    assert manager.settings.threads >= 1
    assert engine.memory_bytes() > 50_000_000


def test_generation_iterates_pieces_and_counts_tokens(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Name three colours."}])
    generation = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY))
    pieces = list(generation)
    assert generation.finish_reason == "length"
    assert generation.completion_tokens == 8
    assert sum(1 for p in pieces if p.token_id is not None) == 8
    assert "".join(p.text for p in pieces) == generation.output
    assert generation.tokens_per_second and generation.tokens_per_second > 0


def test_async_view_gives_the_same_pieces(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Name three colours."}])

    async def collect() -> str:
        generation = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY))
        return "".join([p.text async for p in generation.stream()])

    sync_text = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY)).text()
    assert asyncio.run(collect()) == sync_text


def test_seeded_sampling_repeats_and_other_seeds_differ(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Write a poem about cats."}])

    def run(seed: int) -> str:
        params = SamplingParams(temperature=1.2, seed=seed)
        return engine.submit(GenerationRequest(tokens, max_tokens=24, sampling=params)).text()

    assert run(7) == run(7)
    assert len({run(7), run(8), run(9)}) > 1


def test_end_of_turn_token_stops_and_never_appears(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Say only: yes"}])
    generation = engine.submit(GenerationRequest(tokens, max_tokens=50, sampling=GREEDY))
    text = generation.text()
    assert generation.finish_reason == "stop"
    assert "<|im_end|>" not in text and generation.completion_tokens < 50


def test_cancel_frees_a_slot_for_the_next_queued_request(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Write a long essay."}])
    long = [
        engine.submit(GenerationRequest(tokens, max_tokens=400, sampling=GREEDY))
        for _ in range(engine.n_parallel)
    ]
    queued = engine.submit(GenerationRequest(tokens, max_tokens=2, sampling=GREEDY))
    eventually(
        lambda: min(g.completion_tokens for g in long) >= 2,
        120,
        interval=0.01,
        what="every slot generating",
    )
    assert queued.started_at is None  # every slot is taken
    long[0].cancel()
    assert queued.wait(10)
    assert long[0].finish_reason == "cancelled" and long[0].completion_tokens < 400
    assert queued.finish_reason == "length"
    # The queued request started as soon as the cancelled one let go of its slot.
    assert all(not g.done for g in long[1:])
    for g in long[1:]:
        g.cancel()
    for g in long:
        assert g.wait(10)


def test_requests_arriving_together_at_an_idle_engine_start_in_one_step(engine, monkeypatch):
    """Clients of a burst reach the engine over tens of milliseconds (each request
    is parsed, rendered and tokenized first). An idle engine that has one request
    waits while others are being prepared for it (``Engine.arriving``, around the
    manager's preparation of each), past its usual arrival window, so that all
    start in one step. The bound on that wait is made long here, so that only the
    rule is tested: four requests, the last well after the arrival window."""
    monkeypatch.setattr(engine_module, "ARRIVAL_PREPARING", 60.0)
    assert engine.slots_busy == 0

    def request(topic: str) -> GenerationRequest:
        text = f"Tell me three facts about {topic}, each in one short sentence."
        tokens = engine.chat_tokens([{"role": "user", "content": text}])
        return GenerationRequest(tokens, max_tokens=2, sampling=GREEDY)

    with engine.arriving():
        generations = [engine.submit(request(t)) for t in ["rivers", "mountains", "deserts"]]
        time.sleep(5 * engine_module.ARRIVAL_WINDOW)  # the case: a late arrival
        assert all(g.started_at is None for g in generations)
        generations.append(engine.submit(request("forests")))
    for g in generations:
        assert g.wait(30)
    started = [g.started_at for g in generations if g.started_at is not None]
    assert len(started) == 4
    assert max(started) - min(started) < 0.01


def test_the_wait_for_requests_being_prepared_is_bounded(engine):
    """A preparation that never ends (a slow template) holds the first request
    back for ``ARRIVAL_PREPARING`` at most."""
    tokens = engine.chat_tokens([{"role": "user", "content": "Name a bird."}])
    with engine.arriving():
        generation = engine.submit(GenerationRequest(tokens, max_tokens=2, sampling=GREEDY))
        assert generation.wait(30)
    assert generation.finish_reason == "length"


def test_concurrent_requests_complete_independently(engine):
    prompts = ["Name a fruit.", "Name a colour.", "Name a planet.", "Name a country."]
    alone = {}
    for prompt in prompts:
        tokens = engine.chat_tokens([{"role": "user", "content": prompt}])
        alone[prompt] = engine.submit(GenerationRequest(tokens, max_tokens=12, sampling=GREEDY))
        alone[prompt].wait(30)
    together = {
        prompt: engine.submit(
            GenerationRequest(
                engine.chat_tokens([{"role": "user", "content": prompt}]),
                max_tokens=12,
                sampling=GREEDY,
            )
        )
        for prompt in prompts
    }
    for g in together.values():
        assert g.wait(60)
    for prompt in prompts:
        assert together[prompt].finish_reason == alone[prompt].finish_reason
        assert together[prompt].output == alone[prompt].output, prompt
    # They really ran side by side: each started before any of the others finished.
    first_finish = min(g.finished_at for g in together.values())
    assert all(g.started_at < first_finish for g in together.values())


def test_full_queue_is_server_busy_with_retry_after(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Write a long essay."}])
    running = [
        engine.submit(GenerationRequest(tokens, max_tokens=300, sampling=GREEDY))
        for _ in range(engine.n_parallel + 3)
    ]
    with pytest.raises(ShimmyError) as err:
        engine.submit(GenerationRequest(tokens, max_tokens=1))
    assert err.value.code == "server_busy" and err.value.status == 503
    assert err.value.headers["Retry-After"]
    for g in running:
        g.cancel()
    for g in running:
        assert g.wait(10)


def test_prompt_that_fills_the_context_is_rejected_not_truncated(engine):
    with pytest.raises(ShimmyError) as err:
        engine.submit(GenerationRequest(list(range(100, 612)), max_tokens=5))
    assert err.value.code == "invalid_request"
    assert "512 tokens" in err.value.message and "512" in err.value.message


def test_max_tokens_is_clamped_to_the_room_left(engine):
    tokens = engine.tokenize("word " * 600, add_bos=False)[:505]
    assert len(tokens) == 505
    generation = engine.submit(GenerationRequest(tokens, max_tokens=100, sampling=GREEDY))
    generation.wait(30)
    assert generation.completion_tokens <= 512 - 505
    assert generation.finish_reason in {"length", "stop"}


def test_second_turn_decodes_only_the_new_tokens(engine):
    first = [{"role": "user", "content": "My name is Ada. Remember it."}]
    tokens = engine.chat_tokens(first)
    turn = engine.submit(GenerationRequest(tokens, max_tokens=12, sampling=GREEDY))
    reply_ids = [p.token_id for p in turn if p.token_id is not None]
    second = first + [
        {"role": "assistant", "content": turn.output},
        {"role": "user", "content": "My name?"},
    ]
    tokens2 = engine.chat_tokens(second)
    generation = engine.submit(GenerationRequest(tokens2, max_tokens=4, sampling=GREEDY))
    generation.wait(30)
    # The slot holds turn one's prompt and every reply token but the last (it
    # was sampled, never fed back); turn two shares that prefix.
    in_cache = tokens + reply_ids[:-1]
    shared = 0
    while shared < min(len(in_cache), len(tokens2)) and in_cache[shared] == tokens2[shared]:
        shared += 1
    assert shared > len(tokens)
    assert generation.cached_tokens == shared
    decoded = generation.prompt_tokens - generation.cached_tokens
    assert decoded == len(tokens2) - shared
    assert decoded < 20  # the new user turn and the template's markers, nothing more


def test_manager_stats_count_requests_and_tokens(manager):
    before = manager.stats().totals
    generation = manager.submit_prompt(None, "Hi", max_tokens=3, sampling=GREEDY)
    generation.wait(30)
    after = manager.stats()
    assert after.totals.requests == before.requests + 1
    assert after.totals.completion_tokens == before.completion_tokens + 3
    assert after.totals.prompt_tokens == before.prompt_tokens + generation.prompt_tokens
    assert after.loaded[0].memory_bytes > 0 and after.rss_bytes > after.loaded[0].memory_bytes / 4
    assert after.totals.average_tokens_per_second


def test_unload_cancels_and_frees(smollm2_path):
    manager = ModelManager(
        Settings(model=str(smollm2_path), ctx_size=256, keep_alive=-1),
        ModelRegistry([smollm2_path]),
    )
    try:
        running = manager.submit_prompt(
            None, "Write a long essay.", max_tokens=200, sampling=GREEDY
        )
        eventually(lambda: running.completion_tokens >= 1, 120, interval=0.01, what="a token")
        assert manager.unload(None) is True
        assert running.finish_reason == "cancelled"
        assert manager.loaded_names() == []
        assert manager.unload(None) is False
    finally:
        manager.close()


def test_idle_model_is_unloaded_after_keep_alive(smollm2_path):
    manager = ModelManager(
        Settings(model=str(smollm2_path), ctx_size=256, keep_alive=0.5),
        ModelRegistry([smollm2_path]),
    )
    try:
        manager.submit_prompt(None, "Hi", max_tokens=1, sampling=GREEDY).wait(30)
        assert manager.loaded_names()
        eventually(lambda: not manager.loaded_names(), 10, interval=0.1, what="the idle unload")
        assert manager.loaded_names() == []
        # ...and loads again on next use.
        assert manager.submit_prompt(None, "Hi", max_tokens=1, sampling=GREEDY).text(30) is not None
    finally:
        manager.close()


def test_concurrent_first_use_loads_the_model_once(smollm2_path):
    manager = ModelManager(
        Settings(model=str(smollm2_path), ctx_size=256, keep_alive=-1),
        ModelRegistry([smollm2_path]),
    )
    engines = []
    try:
        threads = [
            threading.Thread(target=lambda: engines.append(manager.engine(None))) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len({id(e) for e in engines}) == 1
    finally:
        manager.close()


def test_unknown_model_and_no_models(tmp_path):
    manager = ModelManager(Settings(model="nothing-like-this"), ModelRegistry([tmp_path]))
    try:
        with pytest.raises(ShimmyError) as err:
            manager.engine(None)
        assert err.value.code == "model_not_found"
    finally:
        manager.close()


def test_multibyte_characters_split_across_tokens_arrive_whole(engine):
    prompt = "Translate to Japanese and add emoji: good morning, thank you, see you tomorrow."
    tokens = engine.chat_tokens([{"role": "user", "content": prompt}])
    generation = engine.submit(GenerationRequest(tokens, max_tokens=48, sampling=GREEDY))
    pieces = [p for p in generation]
    text = "".join(p.text for p in pieces)
    assert "\ufffd" not in text
    non_ascii = [c for c in text if ord(c) > 0x7F]
    assert non_ascii, text
    # Some character really was split: a token whose bytes alone are not valid UTF-8.
    split = 0
    for p in pieces:
        if p.token_id is None:
            continue
        try:
            engine._model.piece(p.token_id).decode("utf-8")
        except UnicodeDecodeError:
            split += 1
    assert split > 0


@pytest.mark.parametrize("cache_ram", [1024, 0])
def test_a_prompt_whose_slot_was_taken_comes_back_from_host_memory(smollm2_path, cache_ram):
    """One slot, two conversations taking turns: each evicts the other, whose KV
    state is saved first and restored when it comes back (not decoded again),
    and the restored state gives the same greedy output. --cache-ram 0: decoded again."""
    settings = Settings(
        model=str(smollm2_path), ctx_size=1024, parallel=1, keep_alive=-1, cache_ram=cache_ram
    )
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    try:
        engine = manager.engine(None)

        def run(topic: str) -> tuple[str, int, int]:
            long_turn = f"Here are my notes on {topic}. " + "They are long and detailed. " * 30
            tokens = engine.chat_tokens([{"role": "user", "content": long_turn + "Summarise."}])
            generation = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY))
            generation.wait(60)
            return generation.output, generation.cached_tokens, len(tokens)

        first_a, cached, _ = run("lighthouses")
        assert cached == 0
        first_b, _, _ = run("steam engines")  # takes the slot; A is saved
        again_a, cached, prompt = run("lighthouses")  # A comes back
        again_b, cached_b, prompt_b = run("steam engines")
        assert again_a == first_a and again_b == first_b
        if cache_ram:
            assert cached == prompt - 1  # all but the token decoded for fresh logits
            assert cached_b == prompt_b - 1
            assert engine.prompt_cache.hits == 2
        else:
            assert cached < 40 and cached_b < 40  # only the template's system prompt
            assert engine.prompt_cache.hits == 0
    finally:
        manager.close()


@pytest.mark.parametrize("spec", [False, True])
def test_a_request_moves_into_the_gap_another_left_and_writes_the_same_text(
    smollm2_path, spec, monkeypatch
):
    """Three requests side by side; the middle one ends first. After a few steps
    one of the others moves into its slot (llama.cpp computes each run of
    consecutive sequences in a pass of its own), and both write exactly what they
    write alone, with drafts or without."""
    settings = Settings(model=str(smollm2_path), ctx_size=512, parallel=4, keep_alive=-1, spec=spec)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    try:
        engine = manager.engine(None)
        topics = ["the sea", "a mountain", "the moon"]
        prompts = [
            engine.chat_tokens([{"role": "user", "content": f"Describe {t}."}]) for t in topics
        ]
        lengths = [40, 2, 40]

        def request(i: int, scope: str = "") -> GenerationRequest:
            return GenerationRequest(
                prompts[i], max_tokens=lengths[i], sampling=GREEDY, cache_scope=scope
            )

        # Alone, in another cache scope: the run below reuses none of it.
        alone = [engine.submit(request(i, "alone")).text(timeout=60) for i in range(3)]
        together = [engine.submit(request(i)) for i in range(3)]
        texts = [g.text(timeout=60) for g in together]
        assert together[1].completion_tokens == 2
        assert engine.moves == 1
        assert texts == alone
        # The two long ones ended in neighbouring slots.
        ends = [
            s.seq
            for s in engine._slots
            if s.scope == "" and any(s.cached[: len(prompts[i])] == prompts[i] for i in (0, 2))
        ]
        assert len(ends) == 2 and abs(ends[0] - ends[1]) == 1
        # A move that llama.cpp refuses leaves the request where it was.
        monkeypatch.setattr(engine._context, "copy_sequence", lambda source, target: False)
        again = [engine.submit(request(i, "refused")) for i in range(3)]
        assert [g.text(timeout=60) for g in again] == alone
        assert engine.moves == 1
        monkeypatch.undo()
        # A request whose KV state is over the bound does not move.
        monkeypatch.setattr(engine_module, "MOVE_MAX_BYTES", 0)
        again = [engine.submit(request(i, "too big")) for i in range(3)]
        assert [g.text(timeout=60) for g in again] == alone
        assert engine.moves == 1
    finally:
        manager.close()


def test_one_shot_requests_do_not_fill_host_memory_but_a_conversation_stays(smollm2_path):
    """A server of one-shot requests keeps only the newest few of them on trial
    (their memory does not creep towards --cache-ram), while a conversation that
    continued once is kept and its next turn is restored, not decoded again."""
    settings = Settings(model=str(smollm2_path), ctx_size=1024, parallel=1, keep_alive=-1)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    try:
        engine = manager.engine(None)
        trial = engine.prompt_cache.trial_entries

        def run(messages: list[dict[str, str]]) -> tuple[str, int, int]:
            tokens = engine.chat_tokens(messages)
            generation = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY))
            assert generation.wait(60)
            return generation.output, generation.cached_tokens, len(tokens)

        notes = "Here are my notes on lighthouses. " + "They are long and detailed. " * 30
        chat = [{"role": "user", "content": notes}]
        reply, _, _ = run(chat)
        chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "More."}]
        reply, cached, _ = run(chat)
        assert cached > 100  # the second turn continued the first in its slot
        for n in range(trial + 3):
            run([{"role": "user", "content": f"One-shot question {n}. " * 40}])
            eventually(lambda: not any(s.unsaved for s in engine._slots), 10, interval=0.01)
            assert len(engine.prompt_cache) <= trial + 1  # the trials, and the conversation
        chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "Go on."}]
        _, cached, prompt = run(chat)
        assert cached > prompt - 20  # restored from host memory
    finally:
        manager.close()


def test_an_idle_engine_saves_its_slots_so_a_new_request_need_not(smollm2_path, caplog):
    """Saving a long conversation when a request takes its slot would delay that
    request's first token: an idle engine saves it beforehand, so the eviction has
    nothing left to copy, and the conversation still comes back from host memory."""
    settings = Settings(model=str(smollm2_path), ctx_size=1024, parallel=1, keep_alive=-1)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    try:
        engine = manager.engine(None)

        def submit(topic: str):
            turn = f"Here are my notes on {topic}. " + "They are long and detailed. " * 30
            tokens = engine.chat_tokens([{"role": "user", "content": turn + "Summarise."}])
            generation = engine.submit(GenerationRequest(tokens, max_tokens=8, sampling=GREEDY))
            assert generation.wait(60)
            return generation, len(tokens)

        def saves(before: str = "") -> list[str]:
            """The saves logged so far, or before the first message containing ``before``."""
            messages = [r.getMessage() for r in caplog.records]
            if before:
                messages = messages[: next(i for i, m in enumerate(messages) if before in m)]
            return [m for m in messages if "saved the" in m]

        with caplog.at_level("DEBUG", logger="shimmy.models.engine"):
            submit("lighthouses")
            eventually(saves, 10, interval=0.01, what="the idle engine's save")
            assert len(saves()) == 1  # while idle, with nothing waiting
            newcomer, _ = submit("steam engines")  # takes the slot: nothing left to save
            assert len(saves(before=f"generation {newcomer.id} takes slot")) == 1
            again, prompt = submit("lighthouses")
        assert again.cached_tokens == prompt - 1  # restored, not decoded again
        assert engine.prompt_cache.hits == 1
    finally:
        manager.close()


def test_debug_log_tells_each_requests_wait_cache_and_first_token(engine, caplog):
    tokens = engine.chat_tokens([{"role": "user", "content": "Say hello to the log."}])
    with caplog.at_level("DEBUG", logger="shimmy.models.engine"):
        generation = engine.submit(GenerationRequest(tokens, max_tokens=3, sampling=GREEDY))
        assert generation.wait(30)
    mine = [r.getMessage() for r in caplog.records]
    took = [m for m in mine if f"generation {generation.id} takes slot" in m]
    assert took and f"{generation.cached_tokens} of {len(tokens)} prompt tokens cached" in took[0]
    assert any(f"generation {generation.id} has its first token" in m for m in mine)
    assert any(f"({len(tokens) - generation.cached_tokens} of prompts)" in m for m in mine), mine


def test_a_prompt_cached_for_one_scope_is_not_reused_by_another(manager):
    """One API key's prompt never shows up in another key's ``cached_tokens``;
    its own scope still reuses it as before (through ModelManager.submit_prompt)."""
    prompt = "Scope test: " + "list the moons of Jupiter and what each is made of. " * 4

    def run(scope: str):
        generation = manager.submit_prompt(
            None, prompt, max_tokens=2, sampling=GREEDY, cache_scope=scope
        )
        assert generation.wait(30)
        return generation

    first = run("a")
    assert first.cached_tokens < first.prompt_tokens - 1  # new to scope "a"
    assert run("b").cached_tokens == 0
    again = run("a")
    assert again.cached_tokens == again.prompt_tokens - 1


def test_a_saved_prompt_is_restored_only_for_its_own_scope(smollm2_path):
    """One slot: scope "a"'s conversation is pushed out to the prompt cache by
    another of its conversations; scope "b" sending the same prompt decodes it all
    (nothing from the slot nor the cache), and "a" still gets it back restored."""
    settings = Settings(model=str(smollm2_path), ctx_size=1024, parallel=1, keep_alive=-1)
    manager = ModelManager(settings, ModelRegistry([smollm2_path]))
    try:
        engine = manager.engine(None)

        def run(topic: str, scope: str) -> tuple[int, int]:
            long_turn = f"Here are my notes on {topic}. " + "They are long and detailed. " * 30
            tokens = engine.chat_tokens([{"role": "user", "content": long_turn + "Summarise."}])
            request = GenerationRequest(tokens, max_tokens=4, sampling=GREEDY, cache_scope=scope)
            generation = engine.submit(request)
            assert generation.wait(60)
            return generation.cached_tokens, len(tokens)

        run("lighthouses", "a")
        run("steam engines", "a")  # takes the slot: "a"'s lighthouses are saved
        assert len(engine.prompt_cache) >= 1  # the idle engine may save the second too
        cached, _ = run("lighthouses", "b")
        assert cached == 0 and engine.prompt_cache.hits == 0
        cached, prompt = run("lighthouses", "a")
        assert cached == prompt - 1 and engine.prompt_cache.hits == 1
    finally:
        manager.close()


# -- per-request keep-alive -------------------------------------------------------


def test_keep_alive_zero_unloads_after_the_answer_and_minus_one_never(smollm2_path):
    manager = ModelManager(
        Settings(model=str(smollm2_path), ctx_size=256, keep_alive=300),
        ModelRegistry([smollm2_path]),
    )
    try:
        kept = manager.submit_prompt(None, "Hi", max_tokens=2, sampling=GREEDY, keep_alive=-1)
        kept.wait(30)
        (name,) = manager.loaded_names()
        assert manager.keep_alive_of(name) == -1 and manager.unloads_in(name) is None
        assert manager.submit_prompt(None, "Hi", max_tokens=2, sampling=GREEDY).text(30)
        # Without a keep-alive the request gets the settings' again (as in Ollama).
        remaining = manager.unloads_in(name)
        assert remaining is not None and 290 < remaining <= 300
        answer = manager.submit_prompt(None, "Hi", max_tokens=2, sampling=GREEDY, keep_alive=0)
        assert answer.text(30) is not None
        eventually(lambda: not manager.loaded_names(), 10, interval=0.02, what="the unload")
        assert manager.unloads_in(name) is None
    finally:
        manager.close()


def test_a_request_being_prepared_keeps_a_zero_keep_alive_model(smollm2_path, monkeypatch):
    """The reaper never unloads a model between a request's load and its submit."""
    manager = ModelManager(
        Settings(model=str(smollm2_path), ctx_size=256, keep_alive=0),
        ModelRegistry([smollm2_path]),
    )
    try:
        engine = manager.engine(None, keep_alive=0)
        eventually(lambda: not manager.loaded_names(), 10, interval=0.02, what="the unload")
        engine = manager.engine(None, keep_alive=0)
        rendering = threading.Event()
        release = threading.Event()
        render = type(engine).render_chat

        def slow_render(self, *args, **kwargs):
            rendering.set()
            release.wait(30)
            return render(self, *args, **kwargs)

        monkeypatch.setattr(type(engine), "render_chat", slow_render)
        done: list[str] = []
        worker = threading.Thread(
            target=lambda: done.append(
                manager.submit_chat(
                    None,
                    [{"role": "user", "content": "Hi"}],
                    max_tokens=2,
                    sampling=GREEDY,
                    keep_alive=0,
                ).text(30)
            )
        )
        worker.start()
        assert rendering.wait(30)
        # Idle, its keep-alive of 0 run out, and kept: a request is being prepared for it.
        assert engine.idle and manager.keep_alive_of(engine.name) == 0
        assert manager._take_if_expired(engine.name) is None
        assert manager.loaded_names() == [engine.name]
        release.set()
        worker.join(30)
        assert done and done[0] is not None
        eventually(lambda: not manager.loaded_names(), 10, interval=0.02, what="the unload")
    finally:
        manager.close()


def test_repeat_last_n_zero_turns_the_penalties_off(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Say yes yes yes yes yes."}])

    def text(**sampling) -> str:
        request = GenerationRequest(tokens, max_tokens=16, sampling=SamplingParams(**sampling))
        return engine.submit(request).text(60)

    plain = text(temperature=0.0, repeat_penalty=1.0)
    assert text(temperature=0.0, repeat_penalty=1.8, repeat_last_n=0) == plain
    assert text(temperature=0.0, repeat_penalty=1.8, repeat_last_n=64) != plain


# -- several choices of one request (n > 1) --------------------------------------------------


def seeded_alone(engine, tokens: list[int], max_tokens: int, seed: int, count: int) -> list[str]:
    """The texts of ``count`` requests sent one at a time with seeds seed, seed + 1, ..."""
    return [
        engine.submit(
            GenerationRequest(
                tokens, max_tokens=max_tokens, sampling=SamplingParams(1.0, seed=seed + i)
            )
        ).text(timeout=120)
        for i in range(count)
    ]


def test_choices_share_the_prompt_and_each_is_what_it_would_be_alone(engine):
    """Three seeded choices: the prompt is read once (the others copy its KV
    cache), choice i samples with seed + i, and each gives exactly the text a
    request with that seed gives alone."""
    tokens = engine.chat_tokens([{"role": "user", "content": "Write a poem about the sea."}])
    params = SamplingParams(temperature=1.0, seed=40)
    request = GenerationRequest(tokens, max_tokens=20, sampling=params)
    read_before = engine.prompt_tokens_read
    choices = engine.submit_choices(request, 3)
    assert all(c.choices == tuple(choices) for c in choices)
    texts = [c.text(timeout=120) for c in choices]
    assert engine.prompt_tokens_read - read_before <= len(tokens)  # read once, not three times
    assert texts == seeded_alone(engine, tokens, 20, seed=40, count=3)
    assert len(set(texts)) > 1
    assert all(c.completion_tokens == 20 and c.prompt_tokens == len(tokens) for c in choices)


def test_a_choice_whose_copy_fails_reads_the_prompt_itself(engine, monkeypatch):
    tokens = engine.chat_tokens([{"role": "user", "content": "Name a river."}])
    request = GenerationRequest(tokens, max_tokens=8, sampling=SamplingParams(1.0, seed=7))
    monkeypatch.setattr(engine._context, "copy_sequence", lambda source, target: False)
    read_before = engine.prompt_tokens_read
    texts = [c.text(timeout=120) for c in engine.submit_choices(request, 2)]
    assert engine.prompt_tokens_read - read_before >= len(tokens)  # read again, not copied
    monkeypatch.undo()
    assert texts == seeded_alone(engine, tokens, 8, seed=7, count=2)


def test_greedy_choices_are_alike_and_a_cancelled_one_does_not_stop_the_others(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Name a colour."}])
    choices = engine.submit_choices(GenerationRequest(tokens, max_tokens=10, sampling=GREEDY), 3)
    choices[1].cancel()
    assert choices[0].text(timeout=120) == choices[2].text(timeout=120)
    choices[1].wait(120)
    assert choices[1].finish_reason == "cancelled"
    eventually(lambda: engine.idle, 30, what="the slots freed")


def test_more_choices_than_slots_is_refused(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Hi"}])
    with pytest.raises(ShimmyError, match=f"n must be between 1 and {engine.n_parallel}"):
        engine.submit_choices(GenerationRequest(tokens, max_tokens=2), engine.n_parallel + 1)


def test_the_stop_string_that_ended_a_generation_is_recorded(engine):
    tokens = engine.chat_tokens([{"role": "user", "content": "Name three colours."}])
    free = engine.submit(GenerationRequest(tokens, max_tokens=16, sampling=GREEDY))
    text = free.text()
    assert free.stop_string is None
    word = next(w for w in text.split()[1:] if w.isalpha() and len(w) > 2)
    stopped = engine.submit(
        GenerationRequest(tokens, max_tokens=16, sampling=GREEDY, stop=("zzz", word))
    )
    assert stopped.text() == text[: text.index(word)]
    assert stopped.finish_reason == "stop" and stopped.stop_string == word


def test_counted_chat_tokens_are_the_prompt_a_submission_reads(manager):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name three colours."},
    ]
    tools = ToolRequest((Tool("paint", "Paint", {"type": "object", "properties": {}}),))
    for offered in (None, tools):
        counted = manager.count_chat_tokens(None, messages, tools=offered)
        generation = manager.submit_chat(
            None, messages, max_tokens=1, sampling=GREEDY, tools=offered
        )
        generation.wait(30)
        assert counted == generation.prompt_tokens
    assert manager.count_chat_tokens(None, messages, tools=tools) > manager.count_chat_tokens(
        None, messages
    )
