"""On an NVIDIA GPU: does shimmy's memory split (placement.py) match what the
load really takes? Run by `bench/bench_gpu.sh memory` on the GPU machine.

For each model and each ``--gpu-layers`` setting, starts `shimmy serve`
without preloading, loads the model with one short request, and compares
``GET /api/ps``'s estimate (``memory_bytes``: host, ``gpu_memory_bytes``: the
offloaded layers' weights and KV cache) with what was measured: the server's
GPU memory from nvidia-smi (less the CUDA context it holds before loading) and
its resident memory's growth. Writes a JSON report to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from bench_gpu import free_port


def gpu_mib(pid: int) -> int:
    """The GPU memory process ``pid`` holds, in MiB (0 when none)."""
    out = subprocess.run(
        ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    for line in out.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 2 and fields[0] == str(pid):
            return int(fields[1])
    return 0


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def check(model: Path, layers: str, ctx: int, parallel: int, log_dir: Path) -> dict[str, object]:
    port = free_port()
    command = [
        sys.executable, "-m", "shimmy", "serve", "--model", str(model), "--no-preload",
        "--gpu-layers", layers, "--ctx-size", str(ctx), "--parallel", str(parallel),
        "--bind", f"127.0.0.1:{port}", "--keep-alive", "-1",
    ]  # fmt: skip
    log = (log_dir / f"memory-{model.stem}-{layers}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        before_rss, before_gpu = rss(process.pid), gpu_mib(process.pid)
        body = {"model": "default", "prompt": "Hello", "max_tokens": 4, "temperature": 0}
        answer = httpx.post(f"{url}/api/generate", json=body, timeout=300)
        answer.raise_for_status()
        ps = httpx.get(f"{url}/api/ps", timeout=10).json()["models"][0]
        after_rss, after_gpu = rss(process.pid), gpu_mib(process.pid)
        return {
            "model": model.name,
            "gpu_layers": layers,
            "ctx_size": ctx,
            "parallel": parallel,
            "estimate_host_bytes": ps["memory_bytes"],
            "estimate_gpu_bytes": ps["gpu_memory_bytes"],
            "measured_rss_growth_bytes": after_rss - before_rss,
            "measured_gpu_growth_bytes": (after_gpu - before_gpu) * 1024 * 1024,
            "gpu_before_mib": before_gpu,
        }
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, action="append", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results = []
    for model in args.model:
        for layers, ctx, parallel in (("all", 2048, 8), ("all", 8192, 4), ("0", 2048, 8)):
            figures = check(model, layers, ctx, parallel, args.out.parent)
            print(json.dumps(figures), flush=True)
            results.append(figures)
    args.out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
