"""The installed `shimmy` command, run as a user would, with the real model."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from shimmy import __version__
from tests.e2e.harness import SHIMMY, isolated_env, run_shimmy

pytestmark = [pytest.mark.e2e]

MODEL = "smollm2-135m-instruct-q4_1"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def env(home) -> dict[str, str]:
    return isolated_env(home)


@pytest.fixture(scope="module")
def corrupt_dir(home) -> Path:
    folder = home / "corrupt"
    folder.mkdir()
    (folder / "not-a-model.gguf").write_bytes(b"this is not a gguf file at all")
    return folder


def test_version_flags(env, home):
    for flag in ("-V", "--version"):
        result = run_shimmy([flag], env, cwd=home)
        assert result.returncode == 0
        assert result.stdout.strip() == f"shimmy {__version__}"


def test_help_lists_every_command(env, home):
    for flag in ("-h", "--help"):
        result = run_shimmy([flag], env, cwd=home)
        assert result.returncode == 0
        for command in ("serve", "generate", "list", "probe", "diag"):
            assert command in result.stdout


def test_serve_help_documents_the_seed_flags(env, home):
    result = run_shimmy(["serve", "--help"], env, cwd=home)
    assert "--bind" in result.stdout and "--port" in result.stdout
    assert "127.0.0.1:11435" in result.stdout


def test_unknown_command_is_a_usage_error(env, home):
    result = run_shimmy(["frobnicate"], env, cwd=home)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
    assert "Traceback" not in result.stderr


def test_list_shows_the_packaged_model(env, home):
    result = run_shimmy(["list"], env, cwd=home)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith(MODEL))
    assert "python" in line and "Q4_1" in line and "llama" in line and line.rstrip().endswith("ok")


def test_list_json_and_corrupt_file_listed_as_unusable(env, home, corrupt_dir):
    result = run_shimmy(["list", "--json", "--model-dirs", str(corrupt_dir)], env, cwd=home)
    assert result.returncode == 0, result.stderr
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models[MODEL]["usable"] is True
    assert models[MODEL]["quantization"] == "Q4_1"
    bad = models["not-a-model"]
    assert bad["usable"] is False and "GGUF" in bad["error"]


def test_model_paths_env_adds_places(home, corrupt_dir):
    env = isolated_env(home, SHIMMY_MODEL_PATHS=str(corrupt_dir))
    result = run_shimmy(["list"], env, cwd=home)
    assert "not-a-model" in result.stdout


@pytest.mark.model
def test_generate_streams_to_stdout_and_is_deterministic_at_temperature_zero(env, home):
    args = ["generate", "--prompt", "What is 2+2?", "--max-tokens", "16", "--temperature", "0"]
    first = run_shimmy(args, env, cwd=home)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip()
    assert first.stderr == ""
    second = run_shimmy(args, env, cwd=home)
    assert second.stdout == first.stdout


@pytest.mark.model
def test_generate_reads_stdin_and_reports_stats_with_verbose(env, home):
    result = run_shimmy(
        ["-v", "generate", "--max-tokens", "4", "--model", MODEL],
        env,
        cwd=home,
        input="Hello there",
    )
    assert result.returncode == 0, result.stderr
    assert "completion tokens" in result.stderr and "tok/s" in result.stderr


POEM = ["generate", "--prompt", "Write a poem about the sea.", "--max-tokens", "24"]
# Temperature 1 over the whole vocabulary: only the flag under test narrows it.
UNTRUNCATED = ["--temperature", "1", "--top-k", "0", "--top-p", "1", "--min-p", "0"]


def generated(args: list[str], env: dict[str, str], home: Path) -> str:
    result = run_shimmy(args, env, cwd=home)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    return result.stdout


@pytest.fixture(scope="module")
def greedy_poem(env, home) -> str:
    return generated([*POEM, "--temperature", "0"], env, home)


@pytest.mark.model
def test_generate_seed_repeats_at_temperature_one(env, home, greedy_poem):
    seeded = [*POEM, "--temperature", "1"]
    first = generated([*seeded, "--seed", "5"], env, home)
    assert generated([*seeded, "--seed", "5"], env, home) == first
    assert generated([*seeded, "--seed", "6"], env, home) != first
    assert first != greedy_poem


@pytest.mark.model
def test_generate_stop_ends_the_text_before_the_stop_string(env, home, greedy_poem):
    words = greedy_poem.split()
    assert len(words) >= 4, greedy_poem
    stop = words[3]
    cut = generated([*POEM, "--temperature", "0", "--stop", stop, "--stop", "\u2603"], env, home)
    assert cut == greedy_poem[: greedy_poem.index(stop)] + "\n"


@pytest.mark.model
def test_generate_top_k_1_is_greedy(env, home, greedy_poem):
    sampled = generated([*POEM, *UNTRUNCATED, "--seed", "5"], env, home)
    assert sampled != greedy_poem  # the control: this seed alone is not greedy
    top_k = generated([*POEM, *UNTRUNCATED, "--seed", "5", "--top-k", "1"], env, home)
    assert top_k == greedy_poem


@pytest.mark.model
def test_generate_streams_output_before_it_finishes(env, home):
    """The first words reach stdout (a pipe, not a terminal) long before the last."""
    args = ["generate", "--prompt", "Write a long essay about the history of Rome."]
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}  # as a user's shell has it
    with (home / "stream-stderr.log").open("w+") as stderr:
        process = subprocess.Popen(
            [SHIMMY, *args, "--max-tokens", "200", "--temperature", "0"],
            env=env,
            cwd=home,
            stdout=subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        arrivals: list[tuple[float, bytes]] = []
        try:
            while chunk := os.read(process.stdout.fileno(), 65536):
                arrivals.append((time.monotonic(), chunk))
            returncode = process.wait(600)
        finally:
            process.kill()
            process.stdout.close()
        exited = time.monotonic()
        stderr.seek(0)
        assert returncode == 0, stderr.read()
    text = b"".join(chunk for _, chunk in arrivals).decode()
    assert len(text.split()) > 60, text  # a long answer, not an early stop
    first, last = arrivals[0][0], arrivals[-1][0]
    assert len(arrivals) >= 10, [c for _, c in arrivals]
    assert last - first >= 0.5 and exited - first >= 0.5, (first, last, exited)


def test_generate_errors_are_one_line_with_exit_codes(env, home):
    unknown = run_shimmy(["generate", "--prompt", "x", "--model", "nope"], env, cwd=home)
    assert unknown.returncode == 3
    assert unknown.stderr.strip().splitlines() == [
        "error: The specified model was not found (Model 'nope' is not available)"
    ]
    bad = run_shimmy(["generate", "--prompt", "x", "--max-tokens", "0"], env, cwd=home)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --max-tokens")
    typo = run_shimmy(["generate", "--prompt", "x", "--max-tokens", "ten"], env, cwd=home)
    assert typo.returncode == 2 and "invalid int value" in typo.stderr


@pytest.mark.model
def test_probe_reports_metadata_load_memory_and_speed(env, home):
    result = run_shimmy(["probe", MODEL, "--json"], env, cwd=home)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == MODEL
    assert report["architecture"] == "llama" and report["quantization"] == "Q4_1"
    assert report["context_length"] == 8192
    assert 0 < report["load_seconds"] < 30
    assert report["memory_bytes"] > 50_000_000
    assert report["tokens_per_second"] > 1
    assert report["completion_tokens"] > 0
    text = run_shimmy(["probe"], env, cwd=home)
    assert text.returncode == 0
    assert "tok/s" in text.stdout and "load time" in text.stdout


def test_probe_of_a_corrupt_file_fails_with_one_line(env, home, corrupt_dir):
    result = run_shimmy(["probe", "not-a-model", "--model-dirs", str(corrupt_dir)], env, cwd=home)
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "GGUF" in lines[0]


def test_probe_of_an_unknown_model_exits_3(env, home):
    result = run_shimmy(["probe", "nope"], env, cwd=home)
    assert result.returncode == 3 and result.stderr.startswith("error: The specified model")


def test_diag_reports_system_build_and_places(env, home, corrupt_dir):
    result = run_shimmy(["diag", "--json", "--model-dirs", str(corrupt_dir)], env, cwd=home)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["shimmy"] == __version__
    assert data["cpu"]["logical_cores"] >= 1
    assert data["llama_cpp"]["version"] == "0.3.36"
    assert "CPU" in data["llama_cpp"]["system_info"]
    sources = {p["source"] for p in data["model_places"]}
    assert {"path", "local", "shimmy", "huggingface", "ollama", "lmstudio", "python"} <= sources
    python = [p for p in data["model_places"] if p["source"] == "python"]
    assert sum(p["models"] for p in python) >= 1
    assert data["models"]["unusable"] >= 1
    text = run_shimmy(["diag"], env, cwd=home)
    assert text.returncode == 0 and "model places:" in text.stdout


def test_serve_refuses_a_port_in_use(env, home):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_shimmy(["serve", "--bind", f"127.0.0.1:{port}"], env, cwd=home, timeout=30)
    assert result.returncode == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_a_bad_bind(env, home):
    result = run_shimmy(["serve", "--bind", "127.0.0.1:notaport"], env, cwd=home, timeout=30)
    assert result.returncode == 2 and "Bad port" in result.stderr
