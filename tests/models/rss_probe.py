"""Measure what loading the real model adds to a fresh process's resident memory,
beside shimmy's estimate of it (memory.py). Run as a child process, one setting
per process, so that nothing freed earlier is counted:

    python -m tests.models.rss_probe CTX PARALLEL BATCH CACHE_TYPE

It prints one JSON line: the estimate and its parts, and the growth of the
resident set (RSS) after the load, after one short generation, and after every
slot has read a prompt that fills a decode batch (the most a step touches).
llama.cpp's library is loaded and its backend started before the first
figure: that costs every process the same, whatever it loads."""

from __future__ import annotations

import json
import random
import sys

import psutil

from shimmy.config import Settings
from shimmy.models import llamacpp
from shimmy.models.engine import Engine, EngineOptions
from shimmy.models.generation import GenerationRequest, SamplingParams
from shimmy.models.registry import ModelRegistry
from tests.real_model import find_smollm2


def main() -> None:
    ctx, parallel, batch = (int(a) for a in sys.argv[1:4])
    cache_type = sys.argv[4]
    path = find_smollm2()
    assert path is not None
    llamacpp.init_backend()
    entry = ModelRegistry([path]).resolve_operator(str(path))
    settings = Settings(
        ctx_size=ctx,
        parallel=parallel,
        batch_size=batch,
        cache_type_k=cache_type,
        cache_type_v=cache_type,
        cache_ram=0,
        gpu_layers="0",
    )
    options = EngineOptions.from_settings(settings)
    process = psutil.Process()
    greedy = SamplingParams(temperature=0.0)
    before = process.memory_info().rss
    engine = Engine(entry, options)
    loaded = process.memory_info().rss - before
    short = GenerationRequest(engine.tokenize("Hello there."), max_tokens=8, sampling=greedy)
    list(engine.submit(short))
    after_short = process.memory_info().rss - before
    rng = random.Random(1)
    length = min(batch + 100, engine.n_ctx - 16)
    generations = [
        engine.submit(
            GenerationRequest(
                [rng.randrange(100, 40_000) for _ in range(length)], max_tokens=8, sampling=greedy
            )
        )
        for _ in range(parallel)
    ]
    for generation in generations:
        list(generation)
    after_batch = process.memory_info().rss - before
    estimate = engine.estimate
    assert estimate is not None
    print(
        json.dumps(
            {
                "estimate": estimate.total,
                "parts": {
                    "weights": estimate.weights,
                    "kv_cache": estimate.kv_cache,
                    "compute": estimate.compute,
                    "runtime": estimate.runtime,
                },
                "loaded": loaded,
                "after_short_generation": after_short,
                "after_full_batches": after_batch,
            }
        )
    )
    engine.close()


if __name__ == "__main__":
    main()
