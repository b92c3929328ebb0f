"""How fast shimmy reads GGUF headers and discovers models.

Run from the repository root:  .venv/bin/python bench/bench_discovery.py [--files N]

Prints the best-of-5 header read time of the real SmolLM2 file, and the time of
a discovery over N tiny GGUF files plus 20 N other files: cold (no header cache),
again in the same process, and in a "new process" (a fresh cache loaded from
its JSON file).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shimmy.config import Paths  # noqa: E402
from shimmy.models.discovery import discover_models  # noqa: E402
from shimmy.models.gguf import read_gguf_info  # noqa: E402
from shimmy.models.header_cache import HeaderCache  # noqa: E402


def best_of(runs: int, func) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - started)
    return best


def tiny_gguf(path: Path) -> bytes:
    import numpy as np
    from gguf import GGUFWriter

    writer = GGUFWriter(path, "llama")
    writer.add_context_length(256)
    writer.add_token_list([f"t{i}" for i in range(1000)])
    writer.add_tensor("w", np.zeros((8, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from real_model import find_smollm2

    smollm2 = find_smollm2()
    if smollm2:
        seconds = best_of(5, lambda: read_gguf_info(smollm2))
        size_mb = smollm2.stat().st_size / 1e6
        print(f"read_gguf_info(SmolLM2, {size_mb:.0f} MB): {seconds * 1000:.1f} ms")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.update(
            SHIMMY_HOME=str(root / "shimmy"),
            HOME=str(root / "home"),
            HF_HOME=str(root / "hf"),
            OLLAMA_MODELS=str(root / "ollama"),
        )
        models = root / "models"
        data = tiny_gguf(root / "tiny.gguf")
        for i in range(args.files):
            folder = models / f"d{i // 50}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"m{i}.gguf").write_bytes(data)
            for j in range(20):
                (folder / f"other{i}-{j}.txt").write_bytes(b"x")
        paths = Paths.from_env()
        cache = HeaderCache(paths.cache_dir)

        started = time.perf_counter()
        found = discover_models([models], paths=paths, cache=cache)
        cold = time.perf_counter() - started
        warm = best_of(3, lambda: discover_models([models], paths=paths, cache=cache))
        fresh = best_of(
            3, lambda: discover_models([models], paths=paths, cache=HeaderCache(paths.cache_dir))
        )
        print(
            f"discovery of {len(found.entries)} models among {args.files * 21} files: "
            f"cold {cold:.2f} s, warm {warm:.2f} s, new process {fresh:.2f} s"
        )


if __name__ == "__main__":
    main()
