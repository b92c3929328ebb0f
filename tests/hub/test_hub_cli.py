"""`shimmy search`, `shimmy pull` and `shimmy rm`: the real command against the fake hub."""

from __future__ import annotations

import json
import os
import re
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shimmy.errors import ExitCode
from tests.e2e.harness import SHIMMY, isolated_env, run_shimmy
from tests.hub.fakehub import FakeHub
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

REPO = "shimmy-test/SmolLM2-135M-Instruct-GGUF"
SPLIT = "shimmy-test/SmolLM2-split-GGUF"
CORRUPT = "shimmy-test/SmolLM2-corrupt-GGUF"


@pytest.fixture
def env(fake_hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "user", HF_ENDPOINT=fake_hub.url)


def _hf_models(env: dict[str, str], cwd: Path) -> list[dict]:
    done = run_shimmy(["list", "--json"], env, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return [m for m in json.loads(done.stdout) if m["source"] == "huggingface"]


def test_search_table_and_json(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["search", "smollm2", "--limit", "2"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["REPO", "PARAMS", "DOWNLOADS", "LIKES", "UPDATED"]
    assert lines[1].split() == [REPO, "135M", "5.0k", "40", "2025-03-01"]
    assert len(lines) == 3
    done = run_shimmy(["search", "smollm2", "--sort", "likes", "--json"], env, cwd=tmp_path)
    assert json.loads(done.stdout)[0]["repo_id"] == SPLIT


def test_search_sort_updated_is_newest_first(env: dict[str, str], tmp_path: Path) -> None:
    """The three repos' orders by downloads, likes and last update all differ, so
    only a sort on lastModified, descending as the hub sorts it, gives this one."""
    done = run_shimmy(["search", "smollm2", "--sort", "updated", "--json"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert [m["repo_id"] for m in found] == [CORRUPT, REPO, SPLIT]
    dates = [m["last_modified"] for m in found]
    assert dates[0].startswith("2025-04-01") and dates == sorted(dates, reverse=True)
    done = run_shimmy(["search", "smollm2", "--sort", "updated"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [(r[0], r[-1]) for r in rows] == [
        (CORRUPT, "2025-04-01"),
        (REPO, "2025-03-01"),
        (SPLIT, "2025-02-01"),
    ]


def test_pull_default_then_named_file_then_rm(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["pull", REPO], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "smollm2-135m-instruct-q4_k_m"
    assert "fits in memory" in done.stderr or "memory:" in done.stderr
    assert "sha256 verified" in done.stderr and "100.0%" in done.stderr
    (model,) = _hf_models(env, tmp_path)
    assert model["name"] == "smollm2-135m-instruct-q4_k_m" and model["usable"]

    done = run_shimmy(["rm", "smollm2-135m-instruct-q4_k_m"], env, cwd=tmp_path)
    assert done.returncode == ExitCode.USAGE and "--yes" in done.stderr
    done = run_shimmy(["rm", "smollm2-135m-instruct-q4_k_m", "--yes"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("deleted smollm2-135m-instruct-q4_k_m (98.4 MB freed)")
    assert _hf_models(env, tmp_path) == []

    done = run_shimmy(["pull", REPO + "/SmolLM2-135M-Instruct-Q8_0.gguf"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (model,) = _hf_models(env, tmp_path)
    assert model["name"] == "smollm2-135m-instruct-q8_0" and model["origin"] == REPO


def test_rm_refuses_models_shimmy_did_not_download(
    env: dict[str, str], tmp_path: Path, smollm2_path: Path
) -> None:
    done = run_shimmy(["rm", str(smollm2_path), "--yes"], env, cwd=tmp_path)
    assert done.returncode == ExitCode.USAGE
    assert "was not downloaded by shimmy" in done.stderr
    assert smollm2_path.exists()


def test_pull_files_lists_without_downloading(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    done = run_shimmy(["pull", REPO, "--files"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows[0] == ["#", "QUANT", "SIZE", "PARTS", "FIT", "FILE"]
    assert [(r[0], r[1], r[2] + " " + r[3], r[4], r[6]) for r in rows[1:]] == [
        ("1", "IQ4_XS", "98.4 MB", "1", "SmolLM2-135M-Instruct-IQ4_XS.gguf"),
        ("2", "Q4_K_M", "98.4 MB", "1", "SmolLM2-135M-Instruct-Q4_K_M.gguf"),
        ("3", "Q8_0", "98.4 MB", "1", "SmolLM2-135M-Instruct-Q8_0.gguf"),
    ]  # the projector and the README are not model files
    assert all(r[5] in {"fits", "tight", "too_large"} for r in rows[1:])
    done = run_shimmy(["pull", SPLIT, "--files"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    _, row = [line.split() for line in done.stdout.splitlines()]
    assert row[:2] == ["1", "Q4_K_M"] and row[4] == "2"
    assert row[6] == "Q4_K_M/SmolLM2-Q4_K_M.gguf"
    # Nothing was fetched: no resolve call, no CDN byte, nothing in the cache.
    assert not [path for _, path, _ in fake_hub.requests if "/resolve/" in path]
    assert not list((Path(env["HF_HOME"]) / "hub").glob("models--*/blobs/*"))
    assert _hf_models(env, tmp_path) == []
    done = run_shimmy(["pull", "shimmy-test/nope", "--files"], env, cwd=tmp_path)
    assert done.returncode == ExitCode.MODEL_NOT_FOUND
    assert "'shimmy-test/nope' was not found" in done.stderr


def test_pull_split_model_then_generate(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["pull", SPLIT + ":Q4_K_M"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "in 2 parts" in done.stderr
    assert done.stdout.strip() == "smollm2-q4_k_m"
    (model,) = _hf_models(env, tmp_path)  # one model, not one per part
    assert model["name"] == "smollm2-q4_k_m" and model["origin"] == SPLIT
    assert model["usable"], model["error"]
    assert [Path(p).name for p in model["parts"]] == [
        "SmolLM2-Q4_K_M-00001-of-00002.gguf",
        "SmolLM2-Q4_K_M-00002-of-00002.gguf",
    ]
    assert model["path"] == model["parts"][0] and model["architecture"] == "llama"
    # llama.cpp is given the first part and finds the second from its name.
    done = run_shimmy(
        ["generate", "--model", "smollm2-q4_k_m", "--prompt", "Hi"]
        + ["--max-tokens", "8", "--temperature", "0"],
        env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), done.stderr


BLOBS = "hub/models--shimmy-test--SmolLM2-135M-Instruct-GGUF/blobs"


def kill_half_way(command: list[str], env: dict[str, str], cwd: Path, partial: str) -> int:
    """Run ``command`` (a download through the throttled fake hub) and SIGKILL it,
    no chance to clean up, once its partial file (``partial``, a glob in the
    cache's blobs) holds 15 MB; returns the bytes it holds then."""
    blobs = Path(env["HF_HOME"]) / BLOBS
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def held() -> int:
        partials = list(blobs.glob(partial))
        return partials[0].stat().st_size if partials else 0

    def fifteen_mb() -> int | None:
        size = held()
        return size if size >= 15_000_000 else None

    try:
        kept = eventually(
            fifteen_mb, 60, interval=0.05, what=lambda: f"15 MB kept (it holds {held()} bytes)"
        )
    finally:
        process.kill()
        process.wait()
    assert kept is not None  # eventually returns only a truthy value
    return kept


def test_killed_pull_resumes_from_kept_bytes(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path, smollm2_path: Path
) -> None:
    fake_hub.throttle_bytes_per_second = 10_000_000
    kept = kill_half_way([SHIMMY, "pull", REPO], env, tmp_path, "*.shimmy.incomplete")
    assert 15_000_000 <= kept < smollm2_path.stat().st_size
    fake_hub.throttle_bytes_per_second = None
    fake_hub.requests.clear()
    done = run_shimmy(["pull", REPO], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming:" in done.stderr
    (resumed_from,) = fake_hub.ranges()
    assert int(resumed_from.removeprefix("bytes=").rstrip("-")) >= kept
    (model,) = _hf_models(env, tmp_path)
    assert Path(model["path"]).read_bytes() == smollm2_path.read_bytes()


def test_huggingface_hub_alone_starts_a_killed_download_over(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    """Why shimmy fetches the bytes itself (DESIGN.md, hub.py): huggingface_hub's
    own ``hf_hub_download``, killed half-way, leaves an ``.incomplete`` blob that
    the next process does not resume from. Should a later huggingface_hub resume,
    this test fails, and shimmy could leave the transfer to it."""
    fake_hub.throttle_bytes_per_second = 10_000_000
    download = [
        sys.executable,
        "-c",
        "import huggingface_hub as h; "
        f"h.hf_hub_download({REPO!r}, 'SmolLM2-135M-Instruct-Q4_K_M.gguf')",
    ]
    kept = kill_half_way(download, env, tmp_path, "*.incomplete")
    assert kept >= 15_000_000
    fake_hub.throttle_bytes_per_second = None
    fake_hub.requests.clear()
    again = subprocess.run(download, env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    starts = [int(r.removeprefix("bytes=").split("-")[0]) for r in fake_hub.ranges()]
    assert all(start == 0 for start in starts), starts  # the whole file again


def test_ctrl_c_stops_cleanly(fake_hub: FakeHub, env: dict[str, str], tmp_path: Path) -> None:
    fake_hub.throttle_bytes_per_second = 10_000_000
    process = subprocess.Popen(
        [SHIMMY, "pull", REPO],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:  # progress lines arrive each tenth of the way
            if line.startswith("downloading"):
                break
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == ExitCode.INTERRUPTED
    assert "run the same command to resume" in err and "Traceback" not in err


def test_disk_full_is_a_clear_error_and_the_next_pull_resumes(
    env: dict[str, str], tmp_path: Path, smollm2_path: Path
) -> None:
    limit = 30_000_000  # the kernel fails writes past it (EFBIG), as a full disk does (ENOSPC)

    def no_room_past_limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [SHIMMY, "pull", REPO],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=no_room_past_limit,
    )
    assert done.returncode == ExitCode.DOWNLOAD_FAILED
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "error: No room left to write SmolLM2-135M-Instruct-Q4_K_M.gguf: file too large ("
    )
    assert f"{limit:,} of" in last and "pull again to resume" in last
    assert "Traceback" not in done.stderr
    done = run_shimmy(["pull", REPO], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming: 30.0 MB already downloaded" in done.stderr
    (model,) = _hf_models(env, tmp_path)
    assert Path(model["path"]).read_bytes() == smollm2_path.read_bytes()


def test_errors(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["pull", "shimmy-test/nope"], env, cwd=tmp_path)
    assert done.returncode == ExitCode.MODEL_NOT_FOUND
    assert done.stderr.strip() == (
        "error: Repository 'shimmy-test/nope' was not found on the Hugging Face Hub "
        "(check the name with `shimmy search`; private repos need `hf auth login`)"
    )
    done = run_shimmy(["pull", "shimmy-test/SmolLM2-corrupt-GGUF"], env, cwd=tmp_path)
    assert done.returncode == ExitCode.DOWNLOAD_FAILED
    assert "Checksum mismatch" in done.stderr and _hf_models(env, tmp_path) == []
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    for args in (["search", "smol"], ["pull", REPO]):
        done = run_shimmy(args, offline, cwd=tmp_path, timeout=30)
        assert done.returncode == ExitCode.DOWNLOAD_FAILED
        assert done.stderr.startswith("error: The Hugging Face Hub is switched off")
    done = run_shimmy(["list"], offline, cwd=tmp_path)
    assert done.returncode == 0


PROGRESS = re.compile(
    r"^downloading\s+(?P<percent>[\d.]+)%\s+(?P<done>[\d.]+) MB / (?P<total>[\d.]+) MB"
    r"\s+(?P<speed>[\d.]+) (?P<unit>[kKMG]?B)/s\s+ETA (?P<eta>\S+)$"
)
SPEED_UNITS = {"B": 1e-6, "kB": 1e-3, "KB": 1e-3, "MB": 1.0, "GB": 1e3}


def _seconds(eta: str) -> int:
    """format_time_left back to seconds: "42s", "3:05", "1h07m"."""
    if m := re.fullmatch(r"(\d+)s", eta):
        return int(m[1])
    if m := re.fullmatch(r"(\d+):(\d\d)", eta):
        return int(m[1]) * 60 + int(m[2])
    m = re.fullmatch(r"(\d+)h(\d\d)m", eta)
    assert m, f"not an ETA: {eta!r}"
    return int(m[1]) * 3600 + int(m[2]) * 60


def test_progress_shows_speed_and_eta(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    """A throttled pull prints lines with the measured speed and the time left."""
    rate = 12.5  # MB/s: about 8 s for the 98.4 MB file
    fake_hub.throttle_bytes_per_second = rate * 1e6
    done = run_shimmy(["pull", REPO], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [PROGRESS.match(line) for line in done.stderr.splitlines()]
    progress = [m for m in lines if m is not None]
    assert len(progress) >= 5, done.stderr  # a line every tenth of the way
    for m in progress:
        speed = float(m["speed"]) * SPEED_UNITS[m["unit"]]  # MB/s
        assert 0 < speed < rate * 2, m[0]  # measured, and the throttle holds it down
        left = float(m["total"]) - float(m["done"])
        eta = _seconds(m["eta"])
        assert abs(eta - left / speed) <= 1.5, m[0]  # the time the rest takes at that speed
    early = [m for m in progress if float(m["percent"]) < 50]
    assert early and all(_seconds(m["eta"]) >= 2 for m in early), done.stderr


# -- rm at a terminal ------------------------------------------------------------------


def _in_terminal(
    args: list[str], env: dict[str, str], cwd: Path, answer: str, timeout: float = 60
) -> tuple[int, str]:
    """Run ``shimmy ARGS`` with a pseudo-terminal as its stdin, stdout and stderr,
    type ``answer`` and Enter at the y/N prompt; (exit status, all it printed)."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [SHIMMY, *args],
        env={**env, "TERM": "dumb"},
        cwd=cwd,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,  # the pty, not pytest's terminal, is its terminal
    )
    os.close(slave)
    output, answered = b"", False
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no exit after {timeout}s; output: {output!r}"
            ready, _, _ = select.select([master], [], [], min(left, 0.5))
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the command closed the terminal (it exited)
                chunk = b""
            if not chunk:
                break
            output += chunk
            if not answered and b"[y/N] " in output:
                os.write(master, answer.encode() + b"\n")
                answered = True
        process.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    assert answered, f"no y/N prompt; output: {output!r}"
    return process.returncode, output.decode(errors="replace").replace("\r\n", "\n")


def test_rm_asks_at_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["pull", REPO], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    name = done.stdout.strip()
    (model,) = _hf_models(env, tmp_path)
    path = Path(model["path"])
    blob = path.resolve()

    status, output = _in_terminal(["rm", name], env, tmp_path, "n")
    assert status == ExitCode.OK, output
    assert f"Delete {name} (98.4 MB, from {REPO})? [y/N] n\n" in output
    assert "not deleted" in output and "deleted " + name not in output
    assert path.exists() and blob.exists()
    assert [m["name"] for m in _hf_models(env, tmp_path)] == [name]

    status, output = _in_terminal(["rm", name], env, tmp_path, "y")
    assert status == ExitCode.OK, output
    assert f"[y/N] y\ndeleted {name} (98.4 MB freed)" in output
    assert not os.path.lexists(path) and not blob.exists()
    assert _hf_models(env, tmp_path) == []
