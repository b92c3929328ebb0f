"""What `shimmy diag` and `shimmy ps` say of the memory budget: whether a cgroup
limit is what bounds it, and a model's memory on the GPUs beside the host's."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shimmy.cli.entry import main
from shimmy.models import memory
from shimmy.models.cgroup import CgroupMemory

GB = 1_000_000_000


@pytest.mark.parametrize(
    ("cgroup", "said"),
    [
        (
            CgroupMemory(2, "/system.slice/shimmy.service", 2 * GB, GB),
            "bounded by it, not by the RAM",
        ),
        (CgroupMemory(1, "/docker/abc", 10**15, 10**15), "the RAM is tighter"),
        (None, "no memory limit"),
    ],
)
def test_diag_says_whether_a_cgroup_limit_bounds_the_budget(
    isolated_home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cgroup: CgroupMemory | None,
    said: str,
) -> None:
    monkeypatch.setattr(memory, "cgroup_memory", lambda root=None: cgroup)
    assert main(["diag"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cgroup"))
    assert said in line
    if cgroup is not None:
        assert cgroup.path in line and f"v{cgroup.version}" in line
    assert main(["diag", "--json"]) == 0
    reported = json.loads(capsys.readouterr().out)["memory"]["cgroup"]
    if cgroup is None:
        assert reported is None
    else:
        assert reported["limit_bytes"] == cgroup.limit
        assert reported["bounds_budget"] == (said.startswith("bounded"))


@pytest.fixture
def fake_server() -> Iterator[tuple[str, dict[str, Any]]]:
    """A server answering GET /api/ps with whatever the test puts in the dict."""
    answer: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", answer
    server.shutdown()
    server.server_close()
    thread.join(5)


MIB = 1024 * 1024


def loaded(name: str, memory_bytes: int, gpu_bytes: int) -> dict[str, Any]:
    return {
        "name": name,
        "memory_bytes": memory_bytes,
        "memory": f"{memory_bytes // MIB}MB",
        "gpu_memory_bytes": gpu_bytes,
        "context_length": 4096,
        "slots": 4,
        "slots_busy": 0,
        "queued": 0,
        "unloads_in_seconds": None,
    }


def test_ps_shows_gpu_memory_and_the_cgroup_limit(
    isolated_home: Path, fake_server: tuple[str, dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    bind, answer = fake_server
    answer["models"] = [loaded("on-gpu", 120 * MIB, 2048 * MIB), loaded("on-cpu", 488 * MIB, 0)]
    answer["memory"] = {
        "used_bytes": 608 * MIB,
        "limit_bytes": None,
        "available_bytes": 1024 * MIB,
        "cgroup_limit_bytes": 2048 * MIB,
        "max_loaded_models": 0,
    }
    assert main(["ps", "--bind", bind]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("on-")}
    assert "120MB + 2.0GB GPU" in rows["on-gpu"]
    assert "488MB" in rows["on-cpu"] and "GPU" not in rows["on-cpu"]
    assert "with 1.0GB available under a 2.0GB cgroup limit" in out
    # Without a cgroup limit (an older server, too), the RAM as before.
    answer["memory"]["cgroup_limit_bytes"] = None
    assert main(["ps", "--bind", bind]) == 0
    assert "with 1.0GB of RAM available" in capsys.readouterr().out
