"""A SmolLM2-shaped GGUF with random weights, for the GPU benchmark on a machine
that cannot download models (bench/bench_gpu.sh).

The GPU machine reached from this workplace has no network and takes at most
64 MiB of files, less than the 98 MB test model. What makes a model's speed is
its shapes and quantization, not its weights, so this writes the test model's
metadata (tokenizer, chat template) once here as JSON (``skeleton``), and there
builds a model of SmolLM2's shapes with random weights (``build``), which
llama-quantize then turns into the benchmark's quantization. Both servers load
the same file, so the comparison is fair; the text it writes is noise.

    python bench/gpu_model.py skeleton SmolLM2.gguf skeleton.json
    python bench/gpu_model.py build skeleton.json model-f16.gguf --size 1.7b
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

# SmolLM2's published shapes (its config.json); all share the 49,152-token
# vocabulary and tie the output layer to the embeddings.
SIZES = {
    "135m": {"layers": 30, "embd": 576, "ff": 1536, "heads": 9, "kv_heads": 3},
    "360m": {"layers": 32, "embd": 960, "ff": 2560, "heads": 15, "kv_heads": 5},
    "1.7b": {"layers": 24, "embd": 2048, "ff": 8192, "heads": 32, "kv_heads": 32},
}
SHAPE_KEYS = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count")


def skeleton(source: Path, out: Path) -> None:
    """The model's metadata as JSON: key, value type(s) and value."""
    import gguf

    reader = gguf.GGUFReader(source)
    fields = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        types = [t.value for t in field.types]
        fields.append({"key": key, "types": types, "value": field.contents()})
    out.write_text(json.dumps(fields))


def build(skeleton_file: Path, out: Path, size: str, seed: int = 0) -> None:
    """A float16 GGUF of SmolLM2's ``size`` shapes with random weights."""
    import gguf

    shape = SIZES[size]
    fields = json.loads(skeleton_file.read_text())
    values = {f["key"]: f for f in fields}
    arch = values["general.architecture"]["value"]
    vocab = len(values["tokenizer.ggml.tokens"]["value"])
    overrides = {
        f"{arch}.block_count": shape["layers"],
        f"{arch}.embedding_length": shape["embd"],
        f"{arch}.feed_forward_length": shape["ff"],
        f"{arch}.attention.head_count": shape["heads"],
        f"{arch}.attention.head_count_kv": shape["kv_heads"],
        f"{arch}.rope.dimension_count": shape["embd"] // shape["heads"],
        "general.file_type": 1,  # F16
        "general.name": f"random SmolLM2 {size}",
        "general.size_label": size.upper(),
    }
    writer = gguf.GGUFWriter(out, arch=arch)
    for field in fields:
        key = field["key"]
        if key in ("general.architecture", "general.quantization_version"):
            continue
        value = overrides.get(key, field["value"])
        types = [gguf.GGUFValueType(t) for t in field["types"]]
        writer.add_key_value(key, value, types[0], types[1] if len(types) > 1 else None)

    rng = np.random.default_rng(seed)
    embd, ff = shape["embd"], shape["ff"]
    kv = embd // shape["heads"] * shape["kv_heads"]

    def weight(rows: int, cols: int) -> np.ndarray:
        # numpy's shape is ggml's reversed: (rows=output, cols=input).
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return np.ones(embd, dtype=np.float32)

    writer.add_tensor("token_embd.weight", weight(vocab, embd))
    writer.add_tensor("output_norm.weight", norm())
    for i in range(shape["layers"]):
        blk = f"blk.{i}."
        writer.add_tensor(blk + "attn_norm.weight", norm())
        writer.add_tensor(blk + "attn_q.weight", weight(embd, embd))
        writer.add_tensor(blk + "attn_k.weight", weight(kv, embd))
        writer.add_tensor(blk + "attn_v.weight", weight(kv, embd))
        writer.add_tensor(blk + "attn_output.weight", weight(embd, embd))
        writer.add_tensor(blk + "ffn_norm.weight", norm())
        writer.add_tensor(blk + "ffn_gate.weight", weight(ff, embd))
        writer.add_tensor(blk + "ffn_up.weight", weight(ff, embd))
        writer.add_tensor(blk + "ffn_down.weight", weight(embd, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    sk = verbs.add_parser("skeleton")
    sk.add_argument("source", type=Path)
    sk.add_argument("out", type=Path)
    bd = verbs.add_parser("build")
    bd.add_argument("skeleton", type=Path)
    bd.add_argument("out", type=Path)
    bd.add_argument("--size", choices=list(SIZES), default="135m")
    args = parser.parse_args()
    if args.verb == "skeleton":
        skeleton(args.source, args.out)
    else:
        build(args.skeleton, args.out, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
