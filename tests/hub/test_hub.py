"""shimmy.models.hub against the fake hub: the real huggingface_hub code runs end to end."""

from __future__ import annotations

import hashlib
import os
import resource
import socket
import threading
import time
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models import hub
from shimmy.models.hub import pull as hub_pull
from shimmy.models.registry import ModelRegistry
from tests.hub.fakehub import FakeHub

REPO = "shimmy-test/SmolLM2-135M-Instruct-GGUF"
SPLIT = "shimmy-test/SmolLM2-split-GGUF"


def test_quantization_and_specs() -> None:
    assert hub.quantization_of("SmolLM2-135M-Instruct-Q4_K_M.gguf") == "Q4_K_M"
    assert hub.quantization_of("model.iq4_xs.gguf") == "IQ4_XS"
    assert hub.quantization_of("Qwen2.5-7B-Instruct-Q8_0-00001-of-00003.gguf") == "Q8_0"
    assert hub.quantization_of("Q4_K_M/model-00001-of-00002.gguf") == "Q4_K_M"
    assert hub.quantization_of("ggml-model-f16.gguf") == "F16"
    assert hub.quantization_of("Qwen2-0.5B.gguf") is None
    assert hub.parse_pull_spec("hf.co/a/b:q4_k_m") == hub.PullSpec("a/b", "Q4_K_M")
    assert hub.parse_pull_spec("a/b/sub/c.gguf") == hub.PullSpec("a/b", None, "sub/c.gguf")
    assert hub.parse_pull_spec("https://huggingface.co/a/b/blob/dev/c.gguf") == hub.PullSpec(
        "a/b", None, "c.gguf", "dev"
    )
    for bad in ("justaname", "a/b/readme.md"):
        with pytest.raises(ShimmyError) as info:
            hub.parse_pull_spec(bad)
        assert info.value.code == "invalid_request"


def test_default_choice_prefers_q4_k_m_then_smallest_4bit() -> None:
    def f(name: str, size: int) -> hub.HubFile:
        return hub.HubFile("a/b", name, (hub.HubPart(name, size, None),), hub.quantization_of(name))

    spec = hub.PullSpec("a/b")
    files = [f("m-Q2_K.gguf", 1), f("m-Q4_0.gguf", 5), f("m-IQ4_XS.gguf", 4), f("m-Q8_0.gguf", 9)]
    assert hub.choose_file(files, spec).name == "m-IQ4_XS.gguf"
    assert hub.choose_file([*files, f("m-Q4_K_M.gguf", 6)], spec).name == "m-Q4_K_M.gguf"
    with pytest.raises(ShimmyError) as info:
        hub.choose_file([f("m-Q8_0.gguf", 9), f("m-F16.gguf", 20)], spec)
    assert info.value.code == "invalid_request" and "Q8_0" in (info.value.details or "")
    with pytest.raises(ShimmyError) as info:
        hub.choose_file(files, hub.PullSpec("a/b", "Q5_K_M"))
    assert info.value.code == "model_not_found"


def test_search(fake_hub: FakeHub) -> None:
    found = hub.search_models("smollm2", sort="downloads")
    assert [m.repo_id for m in found][0] == REPO
    assert found[0].downloads == 5000 and found[0].likes == 40
    assert found[0].parameters == 134_515_008
    assert found[0].last_modified is not None and found[0].last_modified.year == 2025
    by_likes = hub.search_models("smollm2", sort="likes", limit=1)
    assert [m.repo_id for m in by_likes] == [SPLIT]
    # "updated": newest first, as the hub sorts lastModified.
    by_date = hub.search_models("smollm2", sort="updated")
    assert [m.repo_id for m in by_date] == ["shimmy-test/SmolLM2-corrupt-GGUF", REPO, SPLIT]
    dates = [m.last_modified for m in by_date if m.last_modified is not None]
    assert len(dates) == len(by_date) and dates == sorted(dates, reverse=True)
    assert hub.search_models("no-such-words") == []


def test_list_files_groups_splits_and_skips_projectors(
    fake_hub: FakeHub, smollm2_path: Path
) -> None:
    files = hub.list_gguf_files(REPO)
    assert {f.quantization for f in files} == {"Q4_K_M", "Q8_0", "IQ4_XS"}
    sha = hashlib.sha256(smollm2_path.read_bytes()).hexdigest()
    assert all(f.size == smollm2_path.stat().st_size and f.parts[0].sha256 == sha for f in files)
    assert files[0].fit().verdict in {"fits", "tight", "too_large"}
    (split,) = hub.list_gguf_files(SPLIT)
    assert split.name == "Q4_K_M/SmolLM2-Q4_K_M.gguf" and len(split.parts) == 2
    served = fake_hub.repos[SPLIT].files  # the tree's sizes and LFS sha256 are the bytes'
    assert [p.path for p in split.parts] == [f.path for f in served]
    for part, f in zip(split.parts, served, strict=True):
        assert f.source is not None
        assert part.size == f.source.stat().st_size
        assert part.sha256 == hashlib.sha256(f.source.read_bytes()).hexdigest()


def test_the_fake_split_is_a_llama_cpp_split(fake_hub: FakeHub, smollm2_path: Path) -> None:
    """What `gguf-split --split-max-tensors` writes: every part a GGUF; the first
    with all of the model's metadata, each with split.no / split.count (u16) and
    split.tensors.count (i32); the tensors, their types and bytes unchanged."""
    import gguf

    source = gguf.GGUFReader(smollm2_path)
    paths = [f.source for f in fake_hub.repos[SPLIT].files]
    assert [p.name for p in paths if p] == [
        "SmolLM2-Q4_K_M-00001-of-00002.gguf",
        "SmolLM2-Q4_K_M-00002-of-00002.gguf",
    ]
    parts = [gguf.GGUFReader(p) for p in paths if p]
    u16, i32 = gguf.GGUFValueType.UINT16, gguf.GGUFValueType.INT32
    for number, part in enumerate(parts):
        split = {
            k: (f.types, f.contents()) for k, f in part.fields.items() if k.startswith("split.")
        }
        assert split == {
            "split.no": ([u16], number),
            "split.count": ([u16], 2),
            "split.tensors.count": ([i32], len(source.tensors)),
        }
        assert 0 < len(part.tensors) < len(source.tensors)
    first, second = parts
    model_keys = [k for k in source.fields if not k.startswith("GGUF.")]
    assert [k for k in first.fields if not k.startswith(("GGUF.", "split."))] == model_keys
    for key in model_keys:
        assert first.fields[key].types == source.fields[key].types, key
        assert first.fields[key].contents() == source.fields[key].contents(), key
    assert [k for k in second.fields if not k.startswith(("GGUF.", "split."))] == []
    tensors = [*first.tensors, *second.tensors]
    assert [t.name for t in tensors] == [t.name for t in source.tensors]
    for ours, theirs in zip(tensors, source.tensors, strict=True):
        assert ours.tensor_type == theirs.tensor_type, ours.name
        assert list(ours.shape) == list(theirs.shape), ours.name
        assert ours.data.tobytes() == theirs.data.tobytes(), ours.name


def test_download_cancel_then_resume_with_range(fake_hub: FakeHub, smollm2_path: Path) -> None:
    plan = hub.plan_pull(REPO)
    assert plan.file.quantization == "Q4_K_M" and plan.already == 0
    fake_hub.throttle_bytes_per_second = 20_000_000
    cancel = threading.Event()
    seen: list[hub.DownloadProgress] = []

    def progress(p: hub.DownloadProgress) -> None:
        seen.append(p)
        if p.done > 10_000_000:
            cancel.set()

    with pytest.raises(hub.DownloadCancelled):
        hub.download(plan.file, progress=progress, cancel=cancel)
    assert seen and seen[-1].phase == "downloading" and seen[-1].bytes_per_second > 0
    kept = hub.partial_bytes(plan.file)
    assert 10_000_000 < kept < plan.file.size
    assert hub.plan_pull(REPO).already == kept

    fake_hub.throttle_bytes_per_second = None
    fake_hub.requests.clear()
    phases: list[str] = []
    path = hub.download(plan.file, progress=lambda p: phases.append(p.phase))
    assert fake_hub.ranges() == [f"bytes={kept}-"]
    assert phases[0] == "checking" and phases[-1] == "done" and "verifying" in phases
    assert path.read_bytes() == smollm2_path.read_bytes()
    assert not list(path.parent.parent.parent.glob(f"blobs/*{hub.PARTIAL_SUFFIX}"))
    # Discovery source 4 lists it at once.
    entry = ModelRegistry().resolve("smollm2-135m-instruct-q4_k_m")
    assert entry.source == "huggingface" and entry.origin == REPO and entry.usable


def test_disk_full_mid_download_keeps_the_bytes_to_resume(
    fake_hub: FakeHub, smollm2_path: Path
) -> None:
    """A write that fails for want of room (here the kernel's file size limit, which
    fails write() with EFBIG as a full disk fails it with ENOSPC) is a clear
    download_failed; the bytes written so far stay, and the next pull resumes."""
    plan = hub.plan_pull(REPO)
    limit = 20_000_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        with pytest.raises(ShimmyError) as info:
            hub.download(plan.file)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    error = info.value
    assert error.code == "download_failed"
    assert error.message == f"No room left to write {plan.file.name}: file too large"
    assert f"{limit:,} of {plan.file.size:,} bytes kept" in (error.details or "")
    assert "pull again to resume" in (error.details or "")
    assert hub.partial_bytes(plan.file) == limit  # every byte that fitted, none twice

    fake_hub.requests.clear()
    path = hub.download(plan.file)
    assert fake_hub.ranges() == [f"bytes={limit}-"]
    assert path.read_bytes() == smollm2_path.read_bytes()


def test_split_model_fetches_every_part(fake_hub: FakeHub) -> None:
    (split,) = hub.list_gguf_files(SPLIT)
    first = hub.download(split)
    assert first.name == "SmolLM2-Q4_K_M-00001-of-00002.gguf"
    assert sorted(p.name for p in first.parent.iterdir()) == [
        "SmolLM2-Q4_K_M-00001-of-00002.gguf",
        "SmolLM2-Q4_K_M-00002-of-00002.gguf",
    ]
    served = [f.source for f in fake_hub.repos[SPLIT].files]
    pulled = sorted(first.parent.iterdir())
    assert [p.read_bytes() for p in pulled] == [s.read_bytes() for s in served if s]
    (entry,) = [e for e in ModelRegistry().entries() if e.source == "huggingface"]
    assert entry.name == "smollm2-q4_k_m" and entry.origin == SPLIT
    assert entry.parts == tuple(pulled) and entry.path == first
    assert entry.usable, entry.error
    assert entry.info is not None and entry.info.split_count == 2
    assert entry.architecture == "llama" and entry.size == split.size


def test_sha256_mismatch_deletes_the_download(fake_hub: FakeHub) -> None:
    (file,) = hub.list_gguf_files("shimmy-test/SmolLM2-corrupt-GGUF")
    with pytest.raises(ShimmyError) as info:
        hub.download(file)
    assert info.value.code == "download_failed" and "Checksum mismatch" in info.value.message
    storage = hub.repo_storage(file.repo_id)
    assert not [p for p in (storage / "blobs").iterdir()]
    assert not (storage / "snapshots").exists()


def test_unknown_repo_and_file(fake_hub: FakeHub) -> None:
    with pytest.raises(ShimmyError) as info:
        hub.list_gguf_files("shimmy-test/nope")
    assert info.value.code == "model_not_found" and "shimmy-test/nope" in info.value.message
    with pytest.raises(ShimmyError) as info:
        hub.plan_pull(REPO + "/missing.gguf")
    assert info.value.code == "model_not_found"


def test_disk_too_small_is_refused(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_pull, "free_disk", lambda folder: 50_000_000)
    with pytest.raises(ShimmyError) as info:
        hub.plan_pull(REPO)
    assert info.value.code == "download_failed" and "disk space" in info.value.message


def test_offline_fails_fast(isolated_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ShimmyError) as info:
        hub.search_models("x")
    assert info.value.code == "download_failed" and "HF_HUB_OFFLINE" in info.value.message
    # No network: nothing listens on the port.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    for call in (lambda: hub.search_models("x"), lambda: hub.plan_pull(REPO)):
        with pytest.raises(ShimmyError) as info:
            call()
        assert info.value.code == "download_failed" and "Cannot reach" in info.value.message
    assert time.monotonic() - started < 15  # not huggingface_hub's ~20 s of retries each


def test_rm_removes_only_what_shimmy_pulled(fake_hub: FakeHub) -> None:
    file = hub.plan_pull(REPO + ":Q8_0").file
    path = hub.download(file)
    other = hub.download(hub.plan_pull(REPO).file)  # same bytes, another name
    record = hub.find_pulled(path)
    assert record is not None and record["repo_id"] == REPO
    assert hub.remove_pulled(record) == 0  # the blob is still used by the Q4_K_M link
    assert not os.path.lexists(path) and other.exists()
    assert hub.find_pulled(path) is None
    record = hub.find_pulled(other)
    assert record is not None
    assert hub.remove_pulled(record) == file.size
    assert not hub.repo_storage(REPO).exists()


def test_a_pulled_file_gets_the_name_discovery_lists_it_under(
    fake_hub: FakeHub, tmp_path: Path
) -> None:
    q4 = hub.download(hub.plan_pull(REPO).file)
    q8 = hub.download(hub.plan_pull(REPO + ":Q8_0").file)  # the same bytes: one blob
    entries = ModelRegistry().refresh()
    assert hub.registered_name(entries, q4) == "smollm2-135m-instruct-q4_k_m"
    # Discovery lists the shared blob once, under the first link: the second
    # link is matched through the blob it leads to.
    assert not [e for e in entries if e.path == q8]
    assert hub.registered_name(entries, q8) == "smollm2-135m-instruct-q4_k_m"
    assert hub.registered_name(entries, tmp_path / "elsewhere.gguf") is None
