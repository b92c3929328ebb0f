"""Read and validate a GGUF file's header before llama.cpp sees the file.

The reader streams the header region in chunks with :mod:`struct` and skips the
big arrays (token lists, merges) without building Python objects for them, so
a model with a 150k-token vocabulary is checked in milliseconds. It reads only
what shimmy shows or needs (architecture, context length, quantization, chat
template, BOS/EOS), checks that the tensor data the header describes fits in
the file, and turns every kind of damage into ``ShimmyError("model_invalid")``.

Format reference: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
(the ``gguf`` package's ``constants.py`` holds the same tables; it is only a
development dependency, so the few tables needed here are copied below).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, BinaryIO

from shimmy.errors import ShimmyError

Scalar = str | int | float | bool

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
GGML_MAX_DIMS = 4  # llama.cpp rejects tensors with more dimensions

# Limits that stop a corrupt count or length from making us allocate or loop
# for ever. Real files stay far below them (the largest models have a few
# thousand tensors and a few dozen metadata keys).
MAX_TENSORS = 1 << 20
MAX_KVS = 1 << 20
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 16 << 20  # longer metadata strings are skipped, not kept
MAX_ARRAY_DEPTH = 4
METADATA_STRING_LIMIT = 1024  # longer strings stay out of GGUFInfo.metadata

_CHUNK = 1 << 20

# GGUF metadata value types.
_T_STRING = 8
_T_ARRAY = 9
_SCALAR_FORMATS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"),  # uint8
    1: struct.Struct("<b"),  # int8
    2: struct.Struct("<H"),  # uint16
    3: struct.Struct("<h"),  # int16
    4: struct.Struct("<I"),  # uint32
    5: struct.Struct("<i"),  # int32
    6: struct.Struct("<f"),  # float32
    7: struct.Struct("<?"),  # bool
    10: struct.Struct("<Q"),  # uint64
    11: struct.Struct("<q"),  # int64
    12: struct.Struct("<d"),  # float64
}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# ggml tensor types: name, elements per block, bytes per block
# (gguf.constants.GGMLQuantizationType and GGML_QUANT_SIZES).
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 40),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66),
    17: ("IQ2_XS", 256, 74),
    18: ("IQ3_XXS", 256, 98),
    19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18),
    21: ("IQ3_S", 256, 110),
    22: ("IQ2_S", 256, 82),
    23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", 256, 54),
    35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17),
    40: ("NVFP4", 64, 36),
    41: ("Q1_0", 128, 18),
}

# general.file_type values (llama.h's llama_ftype; gguf.constants.LlamaFileType).
FILE_TYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    4: "Q4_1_SOME_F16",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    33: "Q4_0_4_4",
    34: "Q4_0_4_8",
    35: "Q4_0_8_8",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
}
_FILE_TYPE_GUESSED = 1024  # llama.cpp ors this in when it guessed the file type

_KEEP_STRINGS = ("general.architecture", "general.name", "general.type", "tokenizer.chat_template")


@dataclass(frozen=True)
class GGUFInfo:
    """What shimmy knows about a GGUF file from its header alone."""

    path: Path
    version: int
    tensor_count: int
    kv_count: int
    architecture: str | None  # general.architecture
    name: str | None  # general.name
    general_type: str | None  # general.type ("model", "adapter", "mmproj", ...)
    context_length: int | None  # <arch>.context_length
    embedding_length: int | None  # <arch>.embedding_length
    parameter_count: int | None  # sum of the tensors' element counts
    file_type: int | None  # general.file_type
    quantization: str | None  # "Q4_1", "Q4_K_M", "F16", ...
    chat_template: str | None  # tokenizer.chat_template
    bos_token_id: int | None
    eos_token_id: int | None
    bos_token: str | None
    eos_token: str | None
    add_bos_token: bool | None
    split_no: int | None  # split.no (0-based)
    split_count: int | None  # split.count
    kind: str  # "model", "lora", "mmproj", "vocab" or "other"
    # The small scalar key/values (no arrays, no long strings), for display.
    metadata: Mapping[str, Scalar] = field(default_factory=dict, hash=False, repr=False)
    # Bytes of tensor data this file holds (the weights llama.cpp maps) and the
    # vocabulary's size (tokenizer.ggml.tokens): what a load will need (memory.py).
    tensor_bytes: int | None = None
    vocab_size: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the header cache stores this)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["path"] = str(self.path)
        data["metadata"] = dict(self.metadata)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GGUFInfo:
        """The inverse of :meth:`to_json`; raises KeyError/TypeError on a bad dict."""
        values = {f.name: data[f.name] for f in fields(cls)}
        values["path"] = Path(values["path"])
        if not isinstance(values["metadata"], dict):
            raise TypeError("metadata must be a dict")
        return cls(**values)


class ModelFileUnreadable(ShimmyError):
    """``model_invalid`` for a file that could not be opened or read at all
    (missing, not permitted, an I/O error). It says nothing about the file's
    bytes and may pass (the file is copied in, a disk comes back), so it must
    not be remembered as the file's verdict, as a damaged header is."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__("model_invalid", message, details)


class _Invalid(Exception):
    """Raised inside the parser; read_gguf_info turns it into a ShimmyError."""

    def __init__(self, message: str, details: str) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class _Reader:
    """Sequential little-endian reads over a file, buffered in big chunks.

    Reads past the end of the file raise ``_Invalid("Truncated GGUF file")``
    naming the offset, so the parser never sees a short read.
    """

    def __init__(self, file: BinaryIO, size: int, name: str) -> None:
        self.file = file
        self.size = size
        self.name = name
        self.buf = b""
        self.pos = 0  # position in buf
        self.base = 0  # file offset of buf[0]

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def truncated(self, need: int, what: str) -> _Invalid:
        return _Invalid(
            "Truncated GGUF file",
            f"{self.name}: {what} needs {need} bytes at offset {self.offset}, "
            f"but the file has {self.size} bytes",
        )

    def _fill(self, n: int, what: str) -> None:
        """Make at least n bytes available at self.pos."""
        have = len(self.buf) - self.pos
        if have >= n:
            return
        if self.offset + n > self.size:
            raise self.truncated(n, what)
        self.buf = self.buf[self.pos :] + self.file.read(max(_CHUNK, n - have))
        self.base += self.pos
        self.pos = 0
        if len(self.buf) < n:  # the file shrank while we read it
            raise self.truncated(n, what)

    def read(self, n: int, what: str) -> bytes:
        self._fill(n, what)
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def unpack(self, fmt: struct.Struct, what: str) -> Any:
        self._fill(fmt.size, what)
        value = fmt.unpack_from(self.buf, self.pos)[0]
        self.pos += fmt.size
        return value

    def u32(self, what: str) -> int:
        return int(self.unpack(_U32, what))

    def u64(self, what: str) -> int:
        return int(self.unpack(_U64, what))

    def skip(self, n: int, what: str) -> None:
        if self.pos + n <= len(self.buf):
            self.pos += n
            return
        target = self.offset + n
        if target > self.size:
            raise self.truncated(n, what)
        # Seek past data we don't need instead of reading it.
        self.file.seek(target)
        self.buf, self.pos, self.base = b"", 0, target

    def seek(self, offset: int) -> None:
        if self.base <= offset <= self.base + len(self.buf):
            self.pos = offset - self.base
        else:
            self.file.seek(offset)
            self.buf, self.pos, self.base = b"", 0, offset

    def string_length(self, what: str) -> int:
        n = self.u64(what)
        if n > self.size - self.offset:
            raise self.truncated(n, what)
        return n

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str | None:
        """A GGUF string; None (after skipping it) when longer than limit."""
        n = self.string_length(what)
        if n > limit:
            self.skip(n, what)
            return None
        return self.read(n, what).decode("utf-8", errors="replace")

    def skip_strings(self, count: int, what: str) -> None:
        """Skip count strings; the hot loop of the reader (49k tokens, 49k merges)."""
        done = 0
        unpack = _U64.unpack_from
        while done < count:
            buf, pos, end = self.buf, self.pos, len(self.buf)
            # Fast path: walk the strings that lie wholly inside the buffer.
            while done < count and pos + 8 <= end:
                n = unpack(buf, pos)[0]
                if pos + 8 + n > end:
                    break
                pos += 8 + n
                done += 1
            self.pos = pos
            if done < count:  # one string crosses the buffer's end
                self.skip(self.string_length(what), what)
                done += 1


def _float32(value: float) -> float:
    """The shortest decimal that round-trips a float32 (1e-05, not 9.99e-06)."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        short = float(f"{value:.{digits}g}")
        if struct.pack("<f", short) == packed:
            return short
    return value


@dataclass
class _Header:
    """What the parser collects before building a GGUFInfo."""

    values: dict[str, Scalar] = field(default_factory=dict)
    adapter_keys: bool = False
    tokens_at: int | None = None  # file offset of the tokenizer.ggml.tokens strings
    tokens_count: int = 0


def _read_value(r: _Reader, key: str, vtype: int, head: _Header) -> None:
    what = f"value of {key}"
    if vtype == _T_STRING:
        limit = MAX_STRING_BYTES if key in _KEEP_STRINGS else METADATA_STRING_LIMIT
        text = r.string(what, limit)
        if text is not None:
            head.values[key] = text
    elif vtype == _T_ARRAY:
        _skip_array(r, key, 0, head)
    elif vtype in _SCALAR_FORMATS:
        value = r.unpack(_SCALAR_FORMATS[vtype], what)
        if vtype == 6:
            value = _float32(value)
        head.values[key] = value
    else:
        raise _Invalid(
            "Invalid GGUF metadata", f"{r.name}: key {key!r} has unknown value type {vtype}"
        )


def _skip_array(r: _Reader, key: str, depth: int, head: _Header | None) -> None:
    what = f"array {key}"
    if depth >= MAX_ARRAY_DEPTH:
        raise _Invalid("Invalid GGUF metadata", f"{r.name}: array {key!r} is nested too deep")
    etype = r.u32(what)
    count = r.u64(what)
    remaining = r.size - r.offset
    if etype == _T_STRING:
        if count > remaining // 8:
            raise _Invalid(
                "Truncated GGUF file",
                f"{r.name}: array {key!r} claims {count} strings, more than the "
                f"{remaining} bytes left in the file can hold",
            )
        if head is not None and key == "tokenizer.ggml.tokens":
            head.tokens_at, head.tokens_count = r.offset, count
        r.skip_strings(count, what)
    elif etype == _T_ARRAY:
        if count > remaining // 12:  # each inner array has at least a type and a count
            raise _Invalid(
                "Truncated GGUF file",
                f"{r.name}: array {key!r} claims {count} nested arrays, more than the "
                f"{remaining} bytes left in the file can hold",
            )
        for _ in range(count):
            _skip_array(r, key, depth + 1, None)
    elif etype in _SCALAR_FORMATS:
        r.skip(count * _SCALAR_FORMATS[etype].size, what)
    else:
        raise _Invalid(
            "Invalid GGUF metadata", f"{r.name}: array {key!r} has unknown element type {etype}"
        )


def _token_strings(r: _Reader, head: _Header, ids: list[int]) -> dict[int, str]:
    """Look up a few token strings by id, walking the tokens array a second time."""
    if head.tokens_at is None:
        return {}
    wanted = sorted({i for i in ids if 0 <= i < head.tokens_count})
    found: dict[int, str] = {}
    r.seek(head.tokens_at)
    index = 0
    for token_id in wanted:
        r.skip_strings(token_id - index, "tokenizer.ggml.tokens")
        text = r.string("tokenizer.ggml.tokens", METADATA_STRING_LIMIT)
        if text is not None:
            found[token_id] = text
        index = token_id + 1
    return found


def _int_or_none(value: Scalar | None) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _str_or_none(value: Scalar | None) -> str | None:
    return value if isinstance(value, str) else None


def _kind(head: _Header, tensor_count: int, split_count: int | None) -> str:
    general_type = _str_or_none(head.values.get("general.type"))
    arch = _str_or_none(head.values.get("general.architecture"))
    if general_type == "adapter" or head.adapter_keys:
        return "lora"
    if arch == "clip" or general_type in ("mmproj", "clip-vision", "clip-audio"):
        return "mmproj"
    if general_type == "vocab":
        return "vocab"
    # The first part of a split model may hold only metadata (gguf-split
    # --no-tensor-first-split); that is still a model.
    if tensor_count == 0 and not (split_count and split_count > 1):
        return "vocab"
    if general_type not in (None, "model"):
        return "other"  # imatrix, control vectors and whatever comes next
    return "model"


def _parse(r: _Reader) -> GGUFInfo:
    path = Path(r.name)
    if r.size == 0:
        raise _Invalid("Empty GGUF file", f"{r.name}: the file has 0 bytes")
    magic = r.read(min(4, r.size), "the magic number")
    if magic != GGUF_MAGIC:
        if len(magic) < 4 and GGUF_MAGIC.startswith(magic):
            raise r.truncated(4, "the magic number")
        raise _Invalid("Not a GGUF file", f"{r.name}: starts with {magic!r}, not {GGUF_MAGIC!r}")
    version = r.u32("the version")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        hint = " (a big-endian file)" if swapped in SUPPORTED_VERSIONS else ""
        raise _Invalid(
            "Unsupported GGUF version",
            f"{r.name}: version {version}{hint}; shimmy reads versions 2 and 3",
        )
    tensor_count = r.u64("the tensor count")
    kv_count = r.u64("the metadata count")
    # Counts beyond any real file are corruption and must not drive loops.
    if tensor_count > MAX_TENSORS or kv_count > MAX_KVS:
        raise _Invalid(
            "Invalid GGUF header",
            f"{r.name}: claims {tensor_count} tensors and {kv_count} metadata entries",
        )
    # Each metadata pair takes at least 13 bytes and each tensor info 24: a
    # plausible count the file is too short for is most likely a cut download.
    least = r.offset + kv_count * 13 + tensor_count * 24
    if least > r.size:
        raise _Invalid(
            "Truncated GGUF file",
            f"{r.name}: {tensor_count} tensors and {kv_count} metadata entries need at "
            f"least {least} bytes, but the file has {r.size} bytes",
        )

    head = _Header()
    for index in range(kv_count):
        key_len = r.string_length(f"key {index}")
        if key_len > MAX_KEY_BYTES:
            raise _Invalid(
                "Invalid GGUF metadata", f"{r.name}: key {index} is {key_len} bytes long"
            )
        key = r.read(key_len, f"key {index}").decode("utf-8", errors="replace")
        if key.startswith("adapter."):
            head.adapter_keys = True
        _read_value(r, key, r.u32(f"type of {key}"), head)

    alignment = head.values.get("general.alignment", DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment, int)
        or isinstance(alignment, bool)
        or alignment <= 0
        or alignment & (alignment - 1)
    ):
        raise _Invalid("Invalid GGUF metadata", f"{r.name}: general.alignment is {alignment!r}")

    parameter_count = 0
    data_end = 0  # end of the furthest tensor, relative to the data section
    elements_by_type: dict[int, int] = {}
    for index in range(tensor_count):
        tname = r.string(f"name of tensor {index}", MAX_KEY_BYTES)
        label = tname if tname is not None else f"#{index}"
        n_dims = r.u32(f"dimensions of tensor {label}")
        if n_dims > GGML_MAX_DIMS:
            raise _Invalid(
                "Invalid GGUF tensor info", f"{r.name}: tensor {label} has {n_dims} dimensions"
            )
        elements = 1
        for _ in range(n_dims):
            elements *= r.u64(f"shape of tensor {label}")
        ttype = r.u32(f"type of tensor {label}")
        offset = r.u64(f"offset of tensor {label}")
        if elements >= 1 << 63:
            raise _Invalid(
                "Invalid GGUF tensor info", f"{r.name}: tensor {label} has {elements} elements"
            )
        parameter_count += elements
        elements_by_type[ttype] = elements_by_type.get(ttype, 0) + elements
        if ttype in GGML_TYPES:  # unknown (newer) types are left for llama.cpp to judge
            _, block, block_bytes = GGML_TYPES[ttype]
            data_end = max(data_end, offset + -(-elements // block) * block_bytes)

    data_start = -(-r.offset // alignment) * alignment
    split_no = _int_or_none(head.values.get("split.no"))
    split_count = _int_or_none(head.values.get("split.count"))
    if tensor_count and data_start + data_end > r.size:
        raise _Invalid(
            "Truncated GGUF file",
            f"{r.name}: the tensor data ends at byte {data_start + data_end}, "
            f"but the file has {r.size} bytes",
        )

    bos_id = _int_or_none(head.values.get("tokenizer.ggml.bos_token_id"))
    eos_id = _int_or_none(head.values.get("tokenizer.ggml.eos_token_id"))
    tokens = _token_strings(r, head, [i for i in (bos_id, eos_id) if i is not None])

    file_type = _int_or_none(head.values.get("general.file_type"))
    quantization = None
    if file_type is not None:
        quantization = FILE_TYPES.get(file_type & ~_FILE_TYPE_GUESSED)
    if quantization is None and elements_by_type:
        # No (known) file type: name the type that holds most of the weights.
        main_type = max(elements_by_type, key=lambda t: elements_by_type[t])
        quantization = GGML_TYPES.get(main_type, (f"TYPE{main_type}", 0, 0))[0]

    arch = _str_or_none(head.values.get("general.architecture"))
    add_bos = head.values.get("tokenizer.ggml.add_bos_token")
    metadata = {
        k: v
        for k, v in head.values.items()
        if k != "tokenizer.chat_template"
        and not (isinstance(v, str) and len(v) > METADATA_STRING_LIMIT)
    }
    return GGUFInfo(
        path=path,
        version=version,
        tensor_count=tensor_count,
        kv_count=kv_count,
        architecture=arch,
        name=_str_or_none(head.values.get("general.name")),
        general_type=_str_or_none(head.values.get("general.type")),
        context_length=_int_or_none(head.values.get(f"{arch}.context_length")) if arch else None,
        embedding_length=(
            _int_or_none(head.values.get(f"{arch}.embedding_length")) if arch else None
        ),
        parameter_count=parameter_count if tensor_count else None,
        file_type=file_type,
        quantization=quantization,
        chat_template=_str_or_none(head.values.get("tokenizer.chat_template")),
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        bos_token=tokens.get(bos_id) if bos_id is not None else None,
        eos_token=tokens.get(eos_id) if eos_id is not None else None,
        add_bos_token=add_bos if isinstance(add_bos, bool) else None,
        split_no=split_no,
        split_count=split_count,
        kind=_kind(head, tensor_count, split_count),
        metadata=metadata,
        tensor_bytes=data_end if tensor_count else None,
        vocab_size=head.tokens_count or None,
    )


def read_gguf_info(path: str | Path) -> GGUFInfo:
    """Read and check the header of the GGUF file at ``path``.

    Raises ``ShimmyError("model_invalid")`` for anything that is not a
    readable, complete GGUF file of version 2 or 3; the details name the file
    and the numbers that are wrong. It raises nothing else, whatever the bytes.
    A file that cannot be opened or read raises the :class:`ModelFileUnreadable`
    kind of it.
    """
    name = os.fspath(path)
    try:
        with open(name, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            return _parse(_Reader(file, size, name))
    except _Invalid as exc:
        raise ShimmyError("model_invalid", exc.message, exc.details) from None
    except FileNotFoundError:
        raise ModelFileUnreadable("Model file not found", f"{name}: no such file") from None
    except IsADirectoryError:
        raise ShimmyError("model_invalid", "Not a GGUF file", f"{name} is a directory") from None
    except OSError as exc:
        raise ModelFileUnreadable("Cannot read model file", f"{name}: {exc}") from None
    except Exception as exc:  # a parser bug must not escape as a crash; tests fuzz for this
        raise ShimmyError(
            "model_invalid", "Unreadable GGUF file", f"{name}: {type(exc).__name__}: {exc}"
        ) from None
