"""The GGUF header reader: the real SmolLM2 file, crafted files, and damage."""

from __future__ import annotations

import random
import struct
import time
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models.gguf import GGUFInfo, ModelFileUnreadable, read_gguf_info
from tests.gguf_writer import (
    ARRAY,
    F16,
    F32,
    FLOAT32,
    INT32,
    Q4_1,
    Q8_0,
    STRING,
    UINT64,
    Typed,
    gguf_bytes,
    gguf_string,
    model_metadata,
    write_model,
)

SMOLLM2_PARAMETERS = 134_515_008  # sum of the element counts of its 272 tensors


def invalid(path: Path) -> ShimmyError:
    with pytest.raises(ShimmyError) as caught:
        read_gguf_info(path)
    assert caught.value.code == "model_invalid"
    return caught.value


# ---------------------------------------------------------------- the real file


@pytest.mark.model
def test_smollm2_header(smollm2_path: Path) -> None:
    info = read_gguf_info(smollm2_path)
    assert info.path == smollm2_path
    assert info.version == 3
    assert info.tensor_count == 272
    assert info.kv_count == 33
    assert info.architecture == "llama"
    assert info.general_type == "model"
    assert info.kind == "model"
    assert info.context_length == 8192
    assert info.embedding_length == 576
    assert info.file_type == 3
    assert info.quantization == "Q4_1"
    assert info.parameter_count == SMOLLM2_PARAMETERS
    assert info.bos_token_id == 1 and info.bos_token == "<|im_start|>"
    assert info.eos_token_id == 2 and info.eos_token == "<|im_end|>"
    assert info.add_bos_token is False
    assert info.chat_template is not None
    assert info.chat_template.startswith("{% for message")
    assert info.split_no is None and info.split_count is None
    # Scalars only: no token arrays, and floats read as the float32 they are.
    assert info.metadata["llama.block_count"] == 30
    assert info.metadata["llama.attention.layer_norm_rms_epsilon"] == 1e-05
    assert info.metadata["tokenizer.ggml.model"] == "gpt2"
    assert "tokenizer.ggml.tokens" not in info.metadata
    assert "tokenizer.chat_template" not in info.metadata


@pytest.mark.model
def test_smollm2_header_is_fast(smollm2_path: Path) -> None:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        read_gguf_info(smollm2_path)
        best = min(best, time.perf_counter() - started)
    assert best < 0.3, f"reading the SmolLM2 header took {best:.3f}s"


@pytest.mark.model
def test_agrees_with_the_gguf_package_on_a_small_file(tmp_path: Path) -> None:
    """Cross-check against the reference writer: a file written by gguf.GGUFWriter."""
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "ref.gguf"
    writer = GGUFWriter(path, "qwen2")
    writer.add_context_length(4096)
    writer.add_embedding_length(16)
    writer.add_file_type(1)
    writer.add_token_list(["a", "b", "<|endoftext|>"])
    writer.add_eos_token_id(2)
    writer.add_chat_template("{{ x }}")
    writer.add_tensor("w", np.zeros((16, 32), dtype=np.float16))
    writer.add_tensor("n", np.zeros(16, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = read_gguf_info(path)
    assert info.architecture == "qwen2"
    assert info.context_length == 4096
    assert info.embedding_length == 16
    assert info.quantization == "F16"
    assert info.parameter_count == 16 * 32 + 16
    assert info.eos_token == "<|endoftext|>"
    assert info.bos_token is None
    assert info.chat_template == "{{ x }}"
    assert info.kind == "model"


# ---------------------------------------------------------------- crafted files


def test_tiny_model(tmp_path: Path) -> None:
    info = read_gguf_info(write_model(tmp_path / "m.gguf", name="Tiny"))
    assert info.kind == "model"
    assert info.name == "Tiny"
    assert info.context_length == 256
    assert info.parameter_count == 32
    assert info.quantization == "F32"
    assert (info.bos_token, info.eos_token) == ("<s>", "</s>")
    assert info.chat_template == "{{ messages }}"


def test_version_2_is_read(tmp_path: Path) -> None:
    path = tmp_path / "v2.gguf"
    path.write_bytes(gguf_bytes(model_metadata(), version=2))
    assert read_gguf_info(path).version == 2


def test_vocab_only_file(tmp_path: Path) -> None:
    path = tmp_path / "ggml-vocab-llama.gguf"
    path.write_bytes(gguf_bytes(model_metadata(), tensors=()))
    info = read_gguf_info(path)
    assert info.kind == "vocab"
    assert info.parameter_count is None
    assert info.bos_token == "<s>"


def test_general_type_vocab(tmp_path: Path) -> None:
    path = tmp_path / "v.gguf"
    path.write_bytes(gguf_bytes({**model_metadata(), "general.type": "vocab"}))
    assert read_gguf_info(path).kind == "vocab"


@pytest.mark.parametrize(
    "metadata",
    [
        {"general.architecture": "llama", "general.type": "adapter", "adapter.type": "lora"},
        {"general.architecture": "llama", "adapter.type": "lora"},  # older converters
    ],
)
def test_lora_adapter(tmp_path: Path, metadata: dict) -> None:
    path = tmp_path / "lora.gguf"
    path.write_bytes(gguf_bytes(metadata, tensors=[("blk.0.attn_q.weight.lora_a", (8, 4), F32)]))
    assert read_gguf_info(path).kind == "lora"


@pytest.mark.parametrize(
    "metadata",
    [
        {"general.architecture": "clip", "clip.has_vision_encoder": True},
        {"general.architecture": "whatever", "general.type": "mmproj"},
    ],
)
def test_mmproj(tmp_path: Path, metadata: dict) -> None:
    path = tmp_path / "mmproj.gguf"
    path.write_bytes(gguf_bytes(metadata))
    assert read_gguf_info(path).kind == "mmproj"


def test_other_general_type(tmp_path: Path) -> None:
    path = tmp_path / "imatrix.gguf"
    path.write_bytes(gguf_bytes({"general.type": "imatrix"}))
    assert read_gguf_info(path).kind == "other"


def test_split_parts(tmp_path: Path) -> None:
    first = tmp_path / "m-00001-of-00002.gguf"
    first.write_bytes(gguf_bytes({**model_metadata(), "split.no": Typed(4, 0), "split.count": 2}))
    info = read_gguf_info(first)
    assert (info.split_no, info.split_count, info.kind) == (0, 2, "model")


def test_metadata_only_first_split_is_a_model(tmp_path: Path) -> None:
    """gguf-split --no-tensor-first-split writes a first part without tensors."""
    first = tmp_path / "m-00001-of-00002.gguf"
    first.write_bytes(gguf_bytes({**model_metadata(), "split.count": 2}, tensors=()))
    assert read_gguf_info(first).kind == "model"


def test_quantization_falls_back_to_the_main_tensor_type(tmp_path: Path) -> None:
    metadata = model_metadata()
    del metadata["general.file_type"]
    tensors = [
        ("tok_embd", (64, 32), Q8_0),
        ("blk.0.w", (64, 64), Q4_1),
        ("blk.1.w", (64, 64), Q4_1),
        *[(f"norm.{i}", (64,), F32) for i in range(10)],  # many tensors, few elements
    ]
    path = tmp_path / "nofiletype.gguf"
    path.write_bytes(gguf_bytes(metadata, tensors))
    info = read_gguf_info(path)
    assert info.file_type is None
    assert info.quantization == "Q4_1"
    assert info.parameter_count == 64 * 32 + 2 * 64 * 64 + 640


def test_file_type_names(tmp_path: Path) -> None:
    for file_type, name in [(15, "Q4_K_M"), (1, "F16"), (32, "BF16"), (1024 | 7, "Q8_0")]:
        path = tmp_path / f"ft{file_type}.gguf"
        path.write_bytes(gguf_bytes({**model_metadata(), "general.file_type": file_type}))
        assert read_gguf_info(path).quantization == name


def test_nested_and_typed_arrays_are_skipped(tmp_path: Path) -> None:
    metadata = {
        **model_metadata(),
        "x.scores": Typed(ARRAY, [0.5, 1.5], FLOAT32),
        "x.ids": Typed(ARRAY, [1, 2, 3], INT32),
        "x.big": Typed(UINT64, 2**40),
        "x.eps": 1e-5,
        "x.long": "z" * 5000,
    }
    path = tmp_path / "arrays.gguf"
    path.write_bytes(gguf_bytes(metadata))
    info = read_gguf_info(path)
    assert info.metadata["x.big"] == 2**40
    assert info.metadata["x.eps"] == 1e-05
    assert "x.scores" not in info.metadata and "x.long" not in info.metadata
    assert info.eos_token == "</s>"


def test_nested_array(tmp_path: Path) -> None:
    inner = struct.pack("<IQ", INT32, 2) + struct.pack("<ii", 1, 2)
    body = struct.pack("<IQ", ARRAY, 2) + inner + inner
    kv = gguf_string("x.nested") + struct.pack("<I", ARRAY) + body
    data = bytearray(gguf_bytes({"general.architecture": "llama"}))
    # Splice one more KV pair in front of the first one and bump kv_count.
    struct.pack_into("<Q", data, 16, 2)
    path = tmp_path / "nested.gguf"
    path.write_bytes(bytes(data[:24]) + kv + bytes(data[24:]))
    assert read_gguf_info(path).architecture == "llama"


def test_long_chat_template_kept(tmp_path: Path) -> None:
    template = "{# " + "x" * 100_000 + " #}"
    path = tmp_path / "long.gguf"
    path.write_bytes(gguf_bytes({**model_metadata(), "tokenizer.chat_template": template}))
    assert read_gguf_info(path).chat_template == template


def test_token_ids_out_of_range(tmp_path: Path) -> None:
    metadata = {**model_metadata(), "tokenizer.ggml.eos_token_id": 99}
    path = tmp_path / "oor.gguf"
    path.write_bytes(gguf_bytes(metadata))
    info = read_gguf_info(path)
    assert info.eos_token_id == 99 and info.eos_token is None
    assert info.bos_token == "<s>"


def test_json_round_trip(tmp_path: Path) -> None:
    info = read_gguf_info(write_model(tmp_path / "m.gguf"))
    import json

    again = GGUFInfo.from_json(json.loads(json.dumps(info.to_json())))
    assert again == info
    assert hash(again) == hash(info)


# ---------------------------------------------------------------- damage


def test_missing_file(tmp_path: Path) -> None:
    error = invalid(tmp_path / "nope.gguf")
    assert "nope.gguf" in (error.details or "")
    assert isinstance(error, ModelFileUnreadable)  # not a verdict on its bytes


def test_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "folder").write_bytes(b"")
    error = invalid(tmp_path / "folder" / "m.gguf")  # ENOTDIR: fails to open, even as root
    assert error.message == "Cannot read model file"
    assert isinstance(error, ModelFileUnreadable)


def test_directory(tmp_path: Path) -> None:
    assert not isinstance(invalid(tmp_path), ModelFileUnreadable)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    error = invalid(path)
    assert error.message == "Empty GGUF file"


def test_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not found</html>")
    error = invalid(path)
    assert error.message == "Not a GGUF file"
    assert not isinstance(error, ModelFileUnreadable)
    assert "model.gguf" in (error.details or "") and "<htm" in (error.details or "")


@pytest.mark.parametrize("version", [0, 1, 4, 0x03000000])
def test_unsupported_version(tmp_path: Path, version: int) -> None:
    path = tmp_path / "v.gguf"
    data = bytearray(gguf_bytes(model_metadata()))
    struct.pack_into("<I", data, 4, version)
    path.write_bytes(bytes(data))
    error = invalid(path)
    assert error.message == "Unsupported GGUF version"
    assert str(version) in (error.details or "")
    if version == 0x03000000:
        assert "big-endian" in (error.details or "")


@pytest.mark.model
@pytest.mark.parametrize("cut", [1, 3, 4, 7, 8, 16, 23, 24, 100, 5_000, 800_000, 1_785_000])
def test_truncated_real_header(tmp_path: Path, smollm2_path: Path, cut: int) -> None:
    path = tmp_path / "cut.gguf"
    with open(smollm2_path, "rb") as src:
        path.write_bytes(src.read(cut))
    error = invalid(path)
    assert error.message == "Truncated GGUF file"
    assert str(cut) in (error.details or "")


@pytest.mark.model
@pytest.mark.parametrize("missing", [1, 4096, 50_000_000])
def test_truncated_real_tensor_data(tmp_path: Path, smollm2_path: Path, missing: int) -> None:
    """A download cut short in the tensor data: the header is whole, the data is not."""
    size = smollm2_path.stat().st_size
    path = tmp_path / "cut.gguf"
    with open(smollm2_path, "rb") as src, open(path, "wb") as out:
        out.write(src.read(2_000_000))
        out.truncate(size - missing)  # sparse: no need to copy 98 MB
    error = invalid(path)
    assert error.message == "Truncated GGUF file"
    assert str(size) in (error.details or "") and str(size - missing) in (error.details or "")


def test_truncated_crafted_file_at_every_offset(tmp_path: Path) -> None:
    data = gguf_bytes(model_metadata())
    path = tmp_path / "cut.gguf"
    for cut in range(1, len(data)):
        path.write_bytes(data[:cut])
        error = invalid(path)
        assert error.message == "Truncated GGUF file", (cut, error)


def _header(tensor_count: int, kv_count: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count)


@pytest.mark.parametrize(
    "data",
    [
        _header(2**63, 0),
        _header(0, 2**64 - 1),
        _header(10_000, 0) + b"\0" * 1000,
        # a key claiming to be 2**60 bytes long
        _header(0, 1) + struct.pack("<Q", 2**60) + b"\0" * 64,
        # a string array claiming 2**62 elements
        _header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, STRING, 2**62) + b"\0" * 64,
        # an int array claiming 2**62 elements
        _header(0, 1) + gguf_string("a") + struct.pack("<IIQ", ARRAY, INT32, 2**62) + b"\0" * 64,
        # arrays nested deeper than any real file
        _header(0, 1)
        + gguf_string("a")
        + struct.pack("<I", ARRAY)
        + struct.pack("<IQ", ARRAY, 1) * 8,
        # a string value claiming 2**63 bytes
        _header(0, 1) + gguf_string("a") + struct.pack("<IQ", STRING, 2**63) + b"\0" * 64,
        # unknown value type
        _header(0, 1) + gguf_string("a") + struct.pack("<I", 77) + b"\0" * 64,
        # a tensor with 1000 dimensions
        _header(1, 0) + gguf_string("t") + struct.pack("<I", 1000) + b"\0" * 64,
        # a tensor whose data lies far past the end of the file
        _header(1, 0) + gguf_string("t") + struct.pack("<IQIQ", 1, 2**40, F16, 0) + b"\0" * 64,
        _header(1, 0) + gguf_string("t") + struct.pack("<IQIQ", 1, 4, F32, 2**63) + b"\0" * 64,
    ],
    ids=[
        "tensors",
        "kvs",
        "tensors-vs-size",
        "key",
        "string-array",
        "int-array",
        "nesting",
        "string",
        "value-type",
        "dims",
        "elements",
        "offset",
    ],
)
def test_absurd_counts(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "absurd.gguf"
    path.write_bytes(data)
    started = time.perf_counter()
    error = invalid(path)
    assert time.perf_counter() - started < 0.5
    assert error.message != "Unreadable GGUF file", error


def test_bad_alignment(tmp_path: Path) -> None:
    path = tmp_path / "align.gguf"
    path.write_bytes(gguf_bytes({**model_metadata(), "general.alignment": 3}))
    assert "alignment" in (invalid(path).details or "")


# The reader's own checks all have one of these messages; "Unreadable GGUF
# file" would mean an unexpected exception slipped through (a bug).
EXPECTED_MESSAGES = {
    "Empty GGUF file",
    "Not a GGUF file",
    "Unsupported GGUF version",
    "Truncated GGUF file",
    "Invalid GGUF header",
    "Invalid GGUF metadata",
    "Invalid GGUF tensor info",
}


def test_random_bytes(tmp_path: Path) -> None:
    rng = random.Random(1234)
    path = tmp_path / "random.gguf"
    for _ in range(300):
        path.write_bytes(rng.randbytes(rng.randrange(0, 300)))
        assert invalid(path).message in EXPECTED_MESSAGES


def test_random_bytes_after_a_valid_prefix(tmp_path: Path) -> None:
    rng = random.Random(99)
    path = tmp_path / "random.gguf"
    for _ in range(300):
        prefix = b"GGUF" + struct.pack("<I", rng.choice([2, 3]))
        path.write_bytes(prefix + rng.randbytes(rng.randrange(0, 400)))
        assert invalid(path).message in EXPECTED_MESSAGES


def test_mutated_valid_files(tmp_path: Path) -> None:
    """Flip bytes of a valid file: every result is a GGUFInfo or a model_invalid."""
    rng = random.Random(7)
    original = gguf_bytes({**model_metadata(), "x.ids": Typed(ARRAY, [1, 2, 3], INT32)})
    path = tmp_path / "mutated.gguf"
    for _ in range(2000):
        data = bytearray(original)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            read_gguf_info(path)
        except ShimmyError as exc:
            assert exc.code == "model_invalid"
            assert exc.message in EXPECTED_MESSAGES, exc
