"""Every llama.cpp decode of the process runs on one thread (shimmy/models/compute.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from shimmy.config import Settings
from shimmy.models import compute
from shimmy.models.generation import GenerationRequest, SamplingParams
from shimmy.models.llama_bindings import llama_cpp
from shimmy.models.manager import ModelManager
from shimmy.models.registry import ModelRegistry


def test_a_call_from_any_thread_runs_on_the_compute_thread() -> None:
    seen: list[bool] = []

    def where(tag: str) -> str:
        seen.append(compute.is_compute_thread())
        return tag

    results: list[str] = []
    callers = [
        threading.Thread(target=lambda i=i: results.append(compute.run(where, f"call {i}")))
        for i in range(4)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=10)
    assert sorted(results) == [f"call {i}" for i in range(4)]
    assert compute.run(where, "main") == "main"
    assert seen == [True] * 5
    assert not compute.is_compute_thread()


def test_the_callers_exception_comes_back_and_the_thread_goes_on() -> None:
    def fails() -> None:
        raise ValueError("from llama.cpp's side")

    with pytest.raises(ValueError, match="llama.cpp's side"):
        compute.run(fails)
    assert compute.run(len, "still serving") == len("still serving")


def test_a_call_from_the_compute_thread_itself_runs_at_once() -> None:
    # Waiting for its own queue would hang the process.
    assert compute.run(compute.run, sum, [1, 2, 3]) == 6


FORKED = """
import os, signal, sys
from shimmy.models import compute
assert compute.run(abs, -1) == 1  # the parent's compute thread is started
child = os.fork()
if child == 0:
    signal.alarm(10)  # a child that waited for its parent's thread would hang
    os._exit(0 if compute.run(abs, -2) == 2 and compute.run(compute.is_compute_thread) else 1)
_, status = os.waitpid(child, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="no fork")
def test_a_forked_child_computes_on_a_thread_of_its_own() -> None:
    result = subprocess.run([sys.executable, "-c", FORKED], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@pytest.mark.model
def test_two_engines_and_an_embedding_thread_all_decode_on_the_compute_thread(
    smollm2_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each thread that runs an OpenMP region gets a team of its own, and beyond
    one team per core libgomp makes every decode sleep at its barriers: about
    three times slower once a second model, or an HTTP worker thread that made
    an embedding, had computed (bench/RESULTS.md, "Two models and embeddings")."""
    on_compute_thread: list[bool] = []
    decode = llama_cpp.llama_decode

    def recording(context: object, batch: object) -> int:
        on_compute_thread.append(compute.is_compute_thread())
        result: int = decode(context, batch)
        return result

    monkeypatch.setattr(llama_cpp, "llama_decode", recording)
    managers = [
        ModelManager(
            Settings(model=str(smollm2_path), ctx_size=1024, keep_alive=-1, parallel=2),
            ModelRegistry([smollm2_path]),
        )
        for _ in range(2)
    ]
    try:
        for manager in managers:
            engine = manager.engine(None)
            tokens = engine.chat_tokens([{"role": "user", "content": "Say hello."}])
            request = GenerationRequest(
                tokens, max_tokens=4, sampling=SamplingParams(temperature=0)
            )
            assert engine.submit(request).text(timeout=120)
        embedded = threading.Event()
        leave = threading.Event()

        def http_worker() -> None:  # lives on after its request, as a pool's threads do
            managers[0].embed(managers[0].engine(None).name, ["I like cats."])
            embedded.set()
            leave.wait(timeout=60)

        worker = threading.Thread(target=http_worker)
        worker.start()
        try:
            assert embedded.wait(timeout=120)
        finally:
            leave.set()
            worker.join(timeout=60)
    finally:
        for manager in managers:
            manager.close()
    assert len(on_compute_thread) >= 6  # two prompts, six tokens, one embedding
    assert all(on_compute_thread)
