"""A tiny GGUF writer for tests: synthetic model files, valid or broken.

The writer is hand-rolled with struct (not the gguf package's GGUFWriter) so
tests can also write files that break the format on purpose.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# GGUF value types
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL = range(8)
STRING, ARRAY, UINT64, INT64, FLOAT64 = range(8, 13)
_FORMATS = {
    UINT8: "<B",
    INT8: "<b",
    UINT16: "<H",
    INT16: "<h",
    UINT32: "<I",
    INT32: "<i",
    FLOAT32: "<f",
    BOOL: "<?",
    UINT64: "<Q",
    INT64: "<q",
    FLOAT64: "<d",
}
# ggml tensor types used in tests: type -> (elements per block, bytes per block)
F32, F16, Q4_1, Q8_0 = 0, 1, 3, 8
_BLOCKS = {F32: (1, 4), F16: (1, 2), Q4_1: (32, 20), Q8_0: (32, 34)}


class Typed:
    """A metadata value with an explicit GGUF type (ints default to UINT32)."""

    def __init__(self, vtype: int, value: Any, element_type: int | None = None) -> None:
        self.vtype = vtype
        self.value = value
        self.element_type = element_type


def gguf_string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def _value(value: Any) -> tuple[int, bytes]:
    if isinstance(value, Typed):
        if value.vtype == ARRAY:
            etype = value.element_type if value.element_type is not None else STRING
            body = struct.pack("<IQ", etype, len(value.value))
            for item in value.value:
                body += _value(Typed(etype, item))[1]
            return ARRAY, body
        if value.vtype == STRING:
            return STRING, gguf_string(value.value)
        return value.vtype, struct.pack(_FORMATS[value.vtype], value.value)
    if isinstance(value, bool):
        return BOOL, struct.pack("<?", value)
    if isinstance(value, int):
        return UINT32, struct.pack("<I", value)
    if isinstance(value, float):
        return FLOAT32, struct.pack("<f", value)
    if isinstance(value, str):
        return STRING, gguf_string(value)
    if isinstance(value, list):
        etype = STRING if all(isinstance(v, str) for v in value) else INT32
        return _value(Typed(ARRAY, value, etype))
    raise TypeError(f"cannot encode {value!r}")


def gguf_bytes(
    metadata: Mapping[str, Any] | None = None,
    tensors: Iterable[tuple[str, tuple[int, ...], int]] = (("w", (8, 4), F32),),
    *,
    version: int = 3,
    alignment: int = 32,
    tensor_data: bool = True,
) -> bytes:
    """A complete little GGUF file: header, metadata, tensor infos, zeroed data."""
    metadata = dict(metadata or {})
    tensors = list(tensors)
    out = bytearray(b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(metadata)))
    for key, value in metadata.items():
        vtype, body = _value(value)
        out += gguf_string(key) + struct.pack("<I", vtype) + body
    offset = 0
    sizes = []
    for name, shape, ttype in tensors:
        out += gguf_string(name) + struct.pack("<I", len(shape))
        out += b"".join(struct.pack("<Q", d) for d in shape)
        out += struct.pack("<IQ", ttype, offset)
        elements = 1
        for d in shape:
            elements *= d
        block, block_bytes = _BLOCKS[ttype]
        size = elements // block * block_bytes
        sizes.append(size)
        offset += -(-size // alignment) * alignment
    out += b"\0" * (-len(out) % alignment)
    if tensor_data:
        out += b"\0" * offset
    return bytes(out)


def model_metadata(name: str = "tiny", arch: str = "llama", **extra: Any) -> dict[str, Any]:
    """Metadata of a plausible tiny chat model; ``extra`` adds or replaces keys.
    Dotted GGUF keys go in a dict: ``{**model_metadata(), "split.count": 2}``."""
    data: dict[str, Any] = {
        "general.architecture": arch,
        "general.type": "model",
        "general.name": name,
        f"{arch}.context_length": 256,
        f"{arch}.embedding_length": 8,
        "general.file_type": 0,
        "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>", "hello"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.chat_template": "{{ messages }}",
    }
    data.update(extra)
    return data


def write_model(path: Path, name: str = "tiny", **extra: Any) -> Path:
    """Write a tiny valid chat-model GGUF at path (folders created) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gguf_bytes(model_metadata(name, **extra)))
    return path
