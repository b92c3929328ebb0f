"""The renderer's worker processes: reused, replaced, never left behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import threading
import time
from functools import partial

import psutil
import pytest

from shimmy.errors import ShimmyError
from shimmy.models import template_render
from shimmy.models.template_render import RenderCancelled, RenderLimits, TemplateRenderer
from tests.waiting import eventually

ENDLESS = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
BOMB = "{{ 'a' | center(2**30) }}"
CONTEXT = {"messages": [{"role": "user", "content": "x"}]}


@pytest.fixture
def renderer():
    renderer = TemplateRenderer(RenderLimits(timeout=1.0), max_workers=2, max_idle=1)
    yield renderer
    renderer.close()


def exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (or is a zombie)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def zombie_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if p.status() == psutil.STATUS_ZOMBIE]


def test_a_worker_is_reused_between_renders(renderer):
    assert renderer.render("{{ messages[0].content }}!", CONTEXT) == "x!"
    pids = renderer.worker_pids()
    assert renderer.render("{{ 1 + 1 }}", {}) == "2"
    assert renderer.worker_pids() == pids and len(pids) == 1


@pytest.mark.parametrize("source", [ENDLESS, BOMB], ids=["timeout", "memory"])
def test_a_stopped_worker_is_reaped_and_replaced(renderer, source):
    renderer.render("{{ 1 }}", {})
    (first,) = renderer.worker_pids()
    with pytest.raises(ShimmyError) as err:
        renderer.render(source, CONTEXT)
    assert err.value.code == "model_invalid"
    assert not psutil.pid_exists(first) or psutil.Process(first).ppid() != psutil.Process().pid
    assert renderer.worker_pids() == []
    assert renderer.render("{{ 2 }}", {}) == "2"
    assert renderer.worker_pids() != [first]
    assert zombie_children() == []


@pytest.mark.parametrize(
    ("sig", "words"), [(signal.SIGXCPU, "too long"), (signal.SIGSEGV, "too large")]
)
def test_a_worker_that_dies_mid_render_is_reported_and_replaced(renderer, sig, words):
    # SIGXCPU is what its CPU-time limit sends; SIGSEGV what a C stack overflow would.
    renderer.render("{{ 1 }}", {})
    (worker,) = renderer.worker_pids()
    process = psutil.Process(worker)

    def kill_once_busy() -> None:
        eventually(
            lambda: process.cpu_times().user >= 0.1, 10, interval=0.01, what="the render running"
        )
        process.send_signal(sig)

    killer = threading.Thread(target=kill_once_busy)
    killer.start()
    try:
        with pytest.raises(ShimmyError) as err:
            renderer.render(ENDLESS, CONTEXT)
    finally:
        killer.join()
    assert err.value.code == "model_invalid" and words in err.value.message
    assert renderer.render("{{ 3 }}", {}) == "3"
    assert zombie_children() == []


def test_cancel_kills_the_worker_without_leaving_a_zombie(renderer):
    renderer.render("{{ 1 }}", {})
    (worker,) = renderer.worker_pids()
    cancel = threading.Event()
    timer = threading.Timer(0.2, cancel.set)
    timer.start()
    try:
        with pytest.raises(RenderCancelled):
            renderer.render(ENDLESS, CONTEXT, cancel)
    finally:
        timer.cancel()
    assert not psutil.pid_exists(worker) or psutil.Process(worker).ppid() != psutil.Process().pid
    assert zombie_children() == []


def test_a_good_render_is_not_held_up_by_a_looping_one(renderer):
    errors: list[BaseException] = []

    def hostile() -> None:
        try:
            renderer.render(ENDLESS, CONTEXT)
        except ShimmyError as exc:
            errors.append(exc)

    thread = threading.Thread(target=hostile)
    thread.start()
    try:
        started = time.monotonic()
        assert renderer.render("{{ 'ok' }}", {}) == "ok"
        assert time.monotonic() - started < renderer.limits.timeout
    finally:
        thread.join(10)
    assert len(errors) == 1 and "too long" in str(errors[0])


def test_a_burst_of_quick_renders_waits_for_the_idle_worker_instead_of_starting_more(
    monkeypatch,
):
    """A render takes a millisecond or two and a new worker process far longer, so
    renders arriving together wait for the one worker there (the time they would
    wait before starting their own is made long here, so that only the policy is
    tested): eight renders at once, one process."""
    monkeypatch.setattr(template_render, "SPAWN_AFTER_S", 60.0)
    renderer = TemplateRenderer(RenderLimits(timeout=5.0), max_workers=4, max_idle=2)
    try:
        assert renderer.render("{{ 1 }}", {}) == "1"
        (worker,) = renderer.worker_pids()
        results: list[str] = []
        gate = threading.Barrier(8)

        def render(n: int) -> None:
            gate.wait(10)
            results.append(renderer.render("{{ n * 2 }}", {"n": n}))

        threads = [threading.Thread(target=render, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(results, key=int) == [str(2 * n) for n in range(8)]
        assert renderer.worker_pids() == [worker]
    finally:
        renderer.close()


def test_renders_past_max_workers_wait_and_can_be_cancelled(renderer):
    errors: list[ShimmyError] = []

    def hostile() -> None:
        try:
            renderer.render(ENDLESS, CONTEXT)
        except ShimmyError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hostile) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: len(renderer.worker_pids()) >= 2, 10, interval=0.01, what="two workers")
        assert len(renderer.worker_pids()) == 2  # both slots busy
        cancel = threading.Event()
        cancel.set()
        with pytest.raises(RenderCancelled):
            renderer.render("{{ 1 }}", {}, cancel)
        assert len(renderer.worker_pids()) == 2  # no third worker was started
    finally:
        for thread in threads:
            thread.join(10)
    assert len(errors) == 2


def test_close_stops_every_worker(renderer):
    renderer.render("{{ 1 }}", {})
    pids = renderer.worker_pids()
    renderer.close()
    assert renderer.worker_pids() == []
    for pid in pids:
        eventually(partial(exited, pid), 5, interval=0.05, what=f"worker {pid} to exit")
    assert zombie_children() == []
    with pytest.raises(ShimmyError):
        renderer.render("{{ 1 }}", {})


PARENT = textwrap.dedent(
    """
    import sys
    from shimmy.models.template_render import RenderLimits, TemplateRenderer

    renderer = TemplateRenderer(RenderLimits(timeout=float(sys.argv[3])))
    renderer.render("{{ 1 }}", {})
    print(renderer.worker_pids()[0], flush=True)
    if sys.argv[1] == "busy":
        renderer.render(sys.argv[2], {})
    sys.stdin.read()
    """
)


# Long enough that the parent is killed before it would stop the render itself.
PARENT_TIMEOUT_S = 5.0


@pytest.mark.parametrize("state", ["idle", "busy"])
def test_a_worker_exits_when_its_parent_is_killed(state):
    # Idle, the worker reads EOF on its stdin; busy in an endless loop, it has
    # no parent left to kill it, and its CPU-time limit (the render's time
    # limit plus a second) ends it.
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, state, ENDLESS, str(PARENT_TIMEOUT_S)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as parent:
        try:
            assert parent.stdout is not None
            worker = psutil.Process(int(parent.stdout.readline()))
            if state == "busy":  # wait until the endless render is running
                eventually(
                    lambda: worker.cpu_times().user >= 0.2,
                    10,
                    interval=0.02,
                    what="the endless render running",
                )
            parent.kill()
            parent.wait()
            if state == "busy":
                # Not synchronisation: the busy worker outlives its parent for a while.
                time.sleep(0.1)
                assert not exited(worker.pid)
            # Busy: CPU time a little past PARENT_TIMEOUT_S, slower on a loaded machine.
            eventually(
                partial(exited, worker.pid),
                10 if state == "idle" else 60,
                interval=0.05,
                what="the orphaned worker to exit",
            )
        finally:
            if parent.poll() is None:
                parent.kill()
