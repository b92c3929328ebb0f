"""A preset naming a Hugging Face model that is not on this machine, through the
real `shimmy serve` and the fake hub (which serves the real SmolLM2 bytes):
listed before it is pulled, pulled by its first request (and only once for two
requests at a time), then served; a pull that fails (no such quantization, no
such repository, a hub that lies about the bytes) is a clear download_failed
while the server serves on; a client never starts a download itself."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.harness import isolated_env, run_shimmy, start_server
from tests.hub.fakehub import FakeFile, FakeHub, FakeRepo

pytestmark = [pytest.mark.e2e, pytest.mark.model]

REPO = "shimmy-test/SmolLM2-135M-Instruct-GGUF"
LIAR = "shimmy-test/Liar-GGUF"
CONFIG = f"""
[models.fresh]
model = "hf.co/{REPO}:Q8_0"
temperature = 0.0

[models.no-such-quant]
model = "hf.co/{REPO}:Q5_K_M"

[models.no-such-repo]
model = "hf.co/shimmy-test/no-such-repo:Q4_K_M"

[models.liar]
model = "hf.co/{LIAR}:Q4_K_M"

[models.cli-fresh]
model = "hf.co/{REPO}:IQ4_XS"
"""
GENERATE = {"prompt": "Say hi.", "max_tokens": 4, "temperature": 0}


def file_fetches(hub: FakeHub, name: str) -> list[str | None]:
    """The CDN's GETs of a file's bytes (the Range each asked for)."""
    return [r for method, path, r in hub.requests if method == "GET" and path.endswith("/" + name)]


def test_a_preset_is_pulled_on_first_use_once_and_a_failed_pull_is_clear(
    fake_hub: FakeHub, smollm2_path: Path, tmp_path: Path
) -> None:
    size = smollm2_path.stat().st_size
    # A hub whose file is not the bytes it says (its LFS sha256 is another file's).
    fake_hub.add(
        FakeRepo(
            LIAR,
            [FakeFile("Liar-Q4_K_M.gguf", smollm2_path, 0, size, claimed_sha256="ab" * 32)],
        )
    )
    (tmp_path / "config.toml").write_text(CONFIG)
    env = isolated_env(
        tmp_path / "user", HF_ENDPOINT=fake_hub.url, SHIMMY_CONFIG=str(tmp_path / "config.toml")
    )

    listed = run_shimmy(["list"], env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    line = next(x for x in listed.stdout.splitlines() if x.startswith("fresh "))
    assert line.endswith(f"pulled on first use (hf.co/{REPO}:Q8_0)")
    assert not fake_hub.requests  # listing asks the hub nothing

    srv = start_server(["--no-preload", "--ctx-size", "256", "--parallel", "1"], env, cwd=tmp_path)
    try:
        with httpx.Client(base_url=srv.url, timeout=240) as client:
            native = {m["id"]: m for m in client.get("/api/models").json()["models"]}
            assert native["fresh"]["source"] == "preset" and native["fresh"]["size"] == 0
            assert "first used" in native["fresh"]["description"]
            assert "fresh" in {m["id"] for m in client.get("/v1/models").json()["data"]}
            # ... as OpenAI's own SDK lists models.
            with openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused") as sdk:
                assert "fresh" in {m.id for m in sdk.models.list()}
                assert sdk.models.retrieve("fresh").id == "fresh"

            # A client naming a hub model (one no preset names, or a preset's own
            # hub name) is not found: only the operator's config starts a pull.
            for name in (f"hf.co/{REPO}:IQ4_XS", f"hf.co/{REPO}:Q8_0"):
                refused = client.post("/api/generate", json={"model": name, **GENERATE})
                assert refused.status_code == 404, refused.text
                assert refused.json()["error"]["code"] == "model_not_found"
            assert not fake_hub.requests

            # Two requests at once while it downloads: one download, both served.
            fake_hub.throttle_bytes_per_second = 40_000_000  # about 2.5 s for the file
            answers: list[httpx.Response] = []
            threads = [
                threading.Thread(
                    target=lambda: answers.append(
                        client.post("/api/generate", json={"model": "fresh", **GENERATE})
                    )
                )
                for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(240)
            fake_hub.throttle_bytes_per_second = None
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            texts = {a.json()["choices"][0]["text"] for a in answers}
            assert len(texts) == 1 and texts != {""}  # the preset's greedy default
            assert file_fetches(fake_hub, "SmolLM2-135M-Instruct-Q8_0.gguf") == [None]
            log = srv.log()
            assert f"fresh: pulling {REPO}/SmolLM2-135M-Instruct-Q8_0.gguf" in log
            assert re.search(r"fresh: downloading 5\d%", log) and "fresh: done 100%" in log

            # Now it is the file in the Hugging Face cache, where `shimmy pull` puts it.
            native = {m["id"]: m for m in client.get("/api/models").json()["models"]}
            assert native["fresh"]["size"] == size
            assert list((tmp_path / "user/hf/hub").glob("models--*/snapshots/*/*Q8_0.gguf"))

            for name, reason in (
                ("no-such-quant", f"'{REPO}' has no Q5_K_M file"),
                ("no-such-repo", "shimmy-test/no-such-repo"),
                ("liar", "Checksum mismatch for Liar-Q4_K_M.gguf: the download was deleted"),
            ):
                failed = client.post("/api/generate", json={"model": name, **GENERATE})
                assert failed.status_code == 502, failed.text
                error = failed.json()["error"]
                assert error["code"] == "download_failed"
                assert error["message"].startswith(
                    f"Model '{name}' could not be pulled from Hugging Face (hf.co/"
                )
                assert reason in error["details"], error
                assert "Traceback" not in failed.text
            assert not list((tmp_path / "user/hf/hub").glob("models--*Liar*/**/*.gguf"))

            # The server serves on, the pulled preset and the plain model alike.
            again = client.post("/api/generate", json={"model": "fresh", **GENERATE})
            assert again.status_code == 200, again.text
            assert client.get("/api/health").status_code == 200
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()

    # `shimmy generate` pulls a preset's model on first use too. (The fake hub's
    # IQ4_XS is the Q8_0 file's bytes, so nothing is fetched again, and discovery
    # lists those bytes once, under one of the two names: the other preset finds
    # its file by the pull's record.)
    args = ["--prompt", "Say hi.", "--max-tokens", "3", "--temperature", "0", "--ctx-size", "256"]
    done = run_shimmy(["generate", "--model", "cli-fresh", *args], env, cwd=tmp_path, timeout=240)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert f"cli-fresh: pulling {REPO}/SmolLM2-135M-Instruct-IQ4_XS.gguf" in done.stderr
    relisted = run_shimmy(["list"], env, cwd=tmp_path)
    for name in ("fresh", "cli-fresh"):  # two names, one file listed: both found
        line = next(x for x in relisted.stdout.splitlines() if x.startswith(f"{name} "))
        assert line.endswith(" ok"), line
