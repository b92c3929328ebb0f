"""The glue over llama.cpp's low-level API, against the build installed here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llama_cpp
import pytest

from shimmy.models.llamacpp import use_extra_buffer_types


@pytest.mark.parametrize(
    ("system_info", "expected"),
    [
        (b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | REPACK = 1 | ", False),
        (b"CPU : AVX2 = 1 | AVX512 = 1 | REPACK = 1 | ", True),
    ],
)
def test_weights_are_not_repacked_where_the_build_has_amx_kernels(
    monkeypatch: pytest.MonkeyPatch, system_info: bytes, expected: bool
) -> None:
    monkeypatch.setattr(llama_cpp, "llama_print_system_info", lambda: system_info)
    assert use_extra_buffer_types() is expected


DECODE_A_LONG_PROMPT = """
import sys
from pathlib import Path
from shimmy.models.llamacpp import Context, Model

model = Model(Path(sys.argv[1]))
context = Context(model, n_ctx=512, n_seq=2, n_batch=256, threads=2)
tokens = model.tokenize("Tell me about the sea, the sky and the hills. " * 8, add_bos=True)
for position, token in enumerate(tokens):
    context.batch.add(token, position, 0, position == len(tokens) - 1)
context.decode()
print(len(tokens))
"""


@pytest.mark.model
def test_a_prompt_of_many_tokens_decodes_with_this_build(smollm2_path: Path) -> None:
    """A batched prompt through shimmy's own model loading, in a child process so
    that a crash inside llama.cpp (this build's AMX kernels ended the process with
    SIGSEGV on the first prompt of more than one token) fails this test alone."""
    child = subprocess.run(
        [sys.executable, "-c", DECODE_A_LONG_PROMPT, str(smollm2_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-2000:])
    assert int(child.stdout) > 64


# Sequences of ~150 and ~1,000 tokens (3.5 and 23 MB of KV state) saved again
# and again through Context.save_sequence, the older copies dropped in any order
# while newer ones are kept (as the prompt cache does), in a fresh process.
CHURN = """
import random, sys
from pathlib import Path
import psutil
from shimmy.models.llamacpp import Context, Model

def rss(): return psutil.Process().memory_info().rss
model = Model(Path(sys.argv[1]))
context = Context(model, n_ctx=2048, n_seq=2, n_batch=512, threads=2)
words = "Tell me about the sea, the sky and the hills. "
for seq, repeats in ((0, 12), (1, 75)):
    tokens = model.tokenize(words * repeats, add_bos=True)[:1000]
    for start in range(0, len(tokens), 512):
        context.batch.clear()
        for position in range(start, min(start + 512, len(tokens))):
            context.batch.add(tokens[position], position, seq, False)
        context.decode()
random.seed(1)
base = rss()
held = []
for _ in range(60):
    held.append(context.save_sequence(random.choice([0, 0, 0, 1, 1])))
    while sum(len(b) for b in held) > 120_000_000:
        held.pop(random.randrange(len(held) // 2 + 1))
print(sum(len(b) for b in held), rss() - base)
"""


@pytest.mark.model
def test_saved_states_give_their_memory_back_when_dropped_in_any_order(
    smollm2_path: Path,
) -> None:
    # With the states from malloc, this churn left the process 45 MB over what it held.
    result = subprocess.run(
        [sys.executable, "-c", CHURN, str(smollm2_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    held, grown = (int(n) for n in result.stdout.split())
    assert 90_000_000 < held <= 120_000_000
    assert grown < held + 12_000_000
