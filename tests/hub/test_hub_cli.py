"""`shimmy search`, `shimmy pull` and `shimmy rm`: the real command against the fake hub."""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import time
from pathlib import Path

import pytest

from shimmy.errors import ExitCode
from tests.e2e.harness import SHIMMY, isolated_env, run_shimmy
from tests.hub.fakehub import FakeHub

pytestmark = pytest.mark.e2e

REPO = "shimmy-test/SmolLM2-135M-Instruct-GGUF"


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
    assert json.loads(done.stdout)[0]["repo_id"] == "shimmy-test/SmolLM2-split-GGUF"


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


def test_pull_split_model(env: dict[str, str], tmp_path: Path) -> None:
    done = run_shimmy(["pull", "shimmy-test/SmolLM2-split-GGUF:Q4_K_M"], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "in 2 parts" in done.stderr
    (model,) = _hf_models(env, tmp_path)
    assert len(model["parts"]) == 2


def test_killed_pull_resumes_from_kept_bytes(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path, smollm2_path: Path
) -> None:
    fake_hub.throttle_bytes_per_second = 10_000_000
    blobs = Path(env["HF_HOME"]) / "hub" / "models--shimmy-test--SmolLM2-135M-Instruct-GGUF"
    process = subprocess.Popen(
        [SHIMMY, "pull", REPO],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kept = 0
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and kept < 15_000_000:
            partials = list(blobs.glob("blobs/*.shimmy.incomplete"))
            kept = partials[0].stat().st_size if partials else 0
            time.sleep(0.05)
    finally:
        process.kill()  # SIGKILL: no chance to clean up
        process.wait()
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
