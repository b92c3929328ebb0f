"""The cgroup memory limit (shimmy/models/cgroup.py), read from fake cgroup trees:
v2 and v1, "max" and huge values, nested limits, files that are garbage; and
the memory budget bounded by it (memory.py)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from shimmy.errors import ShimmyError
from shimmy.models import memory
from shimmy.models.cgroup import CgroupMemory, cgroup_memory
from shimmy.models.memory import MIB, Budget, SystemMemory, plan_room, system_memory

GIB = 1024 * MIB
V1_NO_LIMIT = "9223372036854771712"  # what cgroup v1 writes for "no limit"


def tree(tmp_path: Path, proc: str, files: dict[str, str | bytes]) -> Path:
    """A root with ``proc/self/cgroup`` and ``files`` (paths relative to the root)."""
    root = tmp_path / "root"
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(proc)
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


V2_UNIT = "sys/fs/cgroup/system.slice/shimmy.service"


def test_v2_a_unit_with_memory_max(tmp_path):
    root = tree(
        tmp_path,
        "0::/system.slice/shimmy.service\n",
        {
            f"{V2_UNIT}/memory.max": f"{2 * GIB}\n",
            f"{V2_UNIT}/memory.current": f"{GIB}\n",
            f"{V2_UNIT}/memory.stat": f"anon 5\nfile 9\ninactive_file {256 * MIB}\nactive_file 3\n",
            "sys/fs/cgroup/system.slice/memory.max": "max\n",
        },
    )
    # The inactive file cache is reclaimed before the OOM killer runs: free.
    assert cgroup_memory(root) == CgroupMemory(
        2, "/system.slice/shimmy.service", 2 * GIB, GIB + 256 * MIB
    )


def test_v2_max_everywhere_is_no_limit(tmp_path):
    root = tree(
        tmp_path,
        "0::/user.slice/session-1.scope\n",
        {
            "sys/fs/cgroup/user.slice/session-1.scope/memory.max": "max\n",
            "sys/fs/cgroup/user.slice/session-1.scope/memory.current": "1000\n",
            "sys/fs/cgroup/user.slice/memory.max": "max\n",
        },
    )
    assert cgroup_memory(root) is None


def test_a_parent_limit_bounds_its_children(tmp_path):
    root = tree(
        tmp_path,
        "0::/machine.slice/box/app\n",
        {
            "sys/fs/cgroup/machine.slice/box/app/memory.max": f"{4 * GIB}",
            "sys/fs/cgroup/machine.slice/box/app/memory.current": f"{100 * MIB}",
            "sys/fs/cgroup/machine.slice/box/memory.max": f"{GIB}",
            "sys/fs/cgroup/machine.slice/box/memory.current": f"{900 * MIB}",
            "sys/fs/cgroup/machine.slice/memory.max": "max",
        },
    )
    found = cgroup_memory(root)
    assert found == CgroupMemory(2, "/machine.slice/box", GIB, 124 * MIB)


def test_the_level_with_least_room_binds_even_with_a_larger_limit(tmp_path):
    # The parent's 8 GiB is nearly all taken by siblings; the leaf's own 2 GiB is not.
    root = tree(
        tmp_path,
        "0::/a/b\n",
        {
            "sys/fs/cgroup/a/b/memory.max": f"{2 * GIB}",
            "sys/fs/cgroup/a/b/memory.current": f"{100 * MIB}",
            "sys/fs/cgroup/a/memory.max": f"{8 * GIB}",
            "sys/fs/cgroup/a/memory.current": f"{7 * GIB + 512 * MIB}",
        },
    )
    assert cgroup_memory(root) == CgroupMemory(2, "/a", 2 * GIB, 512 * MIB)


def test_a_container_sees_its_own_cgroup_as_the_root(tmp_path):
    root = tree(
        tmp_path,
        "0::/\n",
        {"sys/fs/cgroup/memory.max": f"{GIB}\n", "sys/fs/cgroup/memory.current": f"{GIB // 4}"},
    )
    assert cgroup_memory(root) == CgroupMemory(2, "/", GIB, 3 * GIB // 4)


def test_v1_memory_controller(tmp_path):
    root = tree(
        tmp_path,
        "9:name=systemd:/docker/abc\n4:memory:/docker/abc\n3:cpuset:/\n0::/\n",
        {
            "sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": f"{512 * MIB}\n",
            "sys/fs/cgroup/memory/docker/abc/memory.usage_in_bytes": f"{300 * MIB}\n",
            "sys/fs/cgroup/memory/docker/abc/memory.stat": (
                f"inactive_file 1\ntotal_inactive_file {100 * MIB}\n"
            ),
            "sys/fs/cgroup/memory/docker/memory.limit_in_bytes": V1_NO_LIMIT,
            "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_NO_LIMIT,
            # A v2 hierarchy beside it (hybrid): memory is controlled in v1.
            "sys/fs/cgroup/memory.max": f"{64 * MIB}",
        },
    )
    assert cgroup_memory(root) == CgroupMemory(1, "/docker/abc", 512 * MIB, 312 * MIB)


def test_v1_huge_values_are_no_limit(tmp_path):
    root = tree(
        tmp_path,
        "4:memory:/process_api/x\n0::/\n",
        {
            "sys/fs/cgroup/memory/process_api/x/memory.limit_in_bytes": V1_NO_LIMIT,
            "sys/fs/cgroup/memory/process_api/x/memory.usage_in_bytes": "3552935936",
            "sys/fs/cgroup/memory/memory.limit_in_bytes": V1_NO_LIMIT,
        },
    )
    assert cgroup_memory(root) is None


def test_v1_a_path_not_visible_in_the_mount_falls_to_the_mount_root(tmp_path):
    # Without a cgroup namespace the path is the host's; the mount is the container's.
    root = tree(
        tmp_path,
        "4:memory:/docker/abc\n",
        {
            "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{GIB}",
            "sys/fs/cgroup/memory/memory.usage_in_bytes": f"{GIB // 2}",
        },
    )
    assert cgroup_memory(root) == CgroupMemory(1, "/", GIB, GIB // 2)


def test_a_charge_over_the_limit_leaves_no_room(tmp_path):
    root = tree(
        tmp_path,
        "0::/\n",
        {"sys/fs/cgroup/memory.max": f"{GIB}", "sys/fs/cgroup/memory.current": f"{2 * GIB}"},
    )
    assert cgroup_memory(root) == CgroupMemory(2, "/", GIB, 0)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        # A limit that is not a number: no limit known, the RAM's figures.
        ({"memory.max": "lots\n", "memory.current": "5"}, None),
        ({"memory.max": "-1", "memory.current": "5"}, None),
        ({"memory.max": "1e9", "memory.current": "5"}, None),
        ({"memory.max": "9" * 400, "memory.current": "5"}, None),
        ({"memory.max": b"\xff\xfe\x00\x01", "memory.current": "5"}, None),
        ({"memory.max": "", "memory.current": "5"}, None),
        # A limit with an unreadable charge: the limit itself is the most there can be.
        ({"memory.max": f"{GIB}", "memory.current": "a lot"}, CgroupMemory(2, "/", GIB, GIB)),
        ({"memory.max": f"{GIB}"}, CgroupMemory(2, "/", GIB, GIB)),
        # A stat that is garbage frees nothing; one that claims more than the charge
        # cannot make room beyond the limit.
        (
            {"memory.max": f"{GIB}", "memory.current": f"{GIB}", "memory.stat": "\0\0 garbage"},
            CgroupMemory(2, "/", GIB, 0),
        ),
        (
            {
                "memory.max": f"{GIB}",
                "memory.current": f"{GIB // 2}",
                "memory.stat": f"inactive_file {100 * GIB}",
            },
            CgroupMemory(2, "/", GIB, GIB),
        ),
        (
            {
                "memory.max": f"{GIB}",
                "memory.current": f"{GIB // 2}",
                "memory.stat": "inactive_file -5\ninactive_file",
            },
            CgroupMemory(2, "/", GIB, GIB // 2),
        ),
    ],
)
def test_garbage_files_never_raise(tmp_path, files, expected):
    root = tree(tmp_path, "0::/\n", {f"sys/fs/cgroup/{k}": v for k, v in files.items()})
    assert cgroup_memory(root) == expected


@pytest.mark.parametrize(
    "proc",
    [
        "0::/../../etc\n",  # climbs out of the mount
        "0::/a/./b\n",
        "0::relative/path\n",
        "4:memory:\n",
        "garbage without colons\n",
        "0::/" + "a/" * 5000 + "\n",
        "",
    ],
)
def test_a_bad_proc_self_cgroup_is_no_limit(tmp_path, proc):
    root = tree(tmp_path, proc, {"sys/fs/cgroup/memory.max": f"{GIB}"})
    # The mount root has a limit, but a path that is not one is never followed.
    assert cgroup_memory(root) is None


def test_missing_files_and_folders_are_no_limit(tmp_path):
    assert cgroup_memory(tmp_path / "nothing-here") is None
    root = tree(tmp_path, "0::/a\n", {})
    assert cgroup_memory(root) is None


def test_a_directory_or_a_fifo_where_a_file_should_be(tmp_path):
    root = tree(tmp_path, "0::/a\n", {})
    (root / "sys/fs/cgroup/a/memory.max").mkdir(parents=True)
    os.mkfifo(root / "sys/fs/cgroup/memory.max")  # read without blocking: nothing there
    assert cgroup_memory(root) is None


def test_random_bytes_in_every_file_never_raise(tmp_path):
    rng = random.Random(20)
    names = ["memory.max", "memory.current", "memory.stat"]
    for round_ in range(30):
        root = tmp_path / str(round_)
        files: dict[str, str | bytes] = {
            f"sys/fs/cgroup/x/{n}": rng.randbytes(rng.randint(0, 300)) for n in names
        }
        files["sys/fs/cgroup/memory.limit_in_bytes"] = rng.randbytes(40)
        found = cgroup_memory(tree(root, "0::/x\n4:memory:/x\n"[: rng.randint(0, 20)], files))
        assert found is None or 0 <= found.available <= found.limit


def test_a_huge_proc_file_is_read_within_bounds(tmp_path):
    root = tree(tmp_path, "1:cpu:/\n" * 200_000, {"sys/fs/cgroup/memory.max": f"{GIB}"})
    assert cgroup_memory(root) is None


# -- the budget under a cgroup limit ------------------------------------------------------


def test_the_tighter_of_ram_and_the_cgroup_bounds_the_figures():
    boxed = SystemMemory(10 * GIB, 16 * GIB, CgroupMemory(2, "/box", 4 * GIB, GIB))
    assert (boxed.available, boxed.total, boxed.cgroup_bounds) == (GIB, 4 * GIB, True)
    roomy = SystemMemory(10 * GIB, 16 * GIB, CgroupMemory(2, "/box", 64 * GIB, 60 * GIB))
    assert (roomy.available, roomy.total, roomy.cgroup_bounds) == (10 * GIB, 16 * GIB, False)
    bare = SystemMemory(10 * GIB, 16 * GIB)
    assert (bare.available, bare.total, bare.cgroup_bounds) == (10 * GIB, 16 * GIB, False)


def test_system_memory_reads_the_cgroup_under_its_root(tmp_path):
    root = tree(
        tmp_path,
        "0::/\n",
        {"sys/fs/cgroup/memory.max": f"{64 * MIB}", "sys/fs/cgroup/memory.current": "0"},
    )
    found = system_memory(root)
    assert found.cgroup == CgroupMemory(2, "/", 64 * MIB, 64 * MIB)
    assert found.total == 64 * MIB and found.available <= 64 * MIB and found.cgroup_bounds


def test_a_cgroup_limit_bounds_the_budget_and_the_refusal_says_so(monkeypatch):
    monkeypatch.setattr(
        memory, "cgroup_memory", lambda root=None: CgroupMemory(2, "/box", 2 * GIB, GIB)
    )
    budget = Budget.now(None)
    assert budget.available <= GIB and budget.cgroup_limit == 2 * GIB
    assert budget.headroom == memory.headroom_bytes(2 * GIB)  # a tenth of the limit
    with pytest.raises(ShimmyError) as caught:
        plan_room("big", 4 * GIB, [], budget)
    error = caught.value
    assert error.code == "model_load_failed"
    assert "available under the cgroup memory limit of 2.0GB" in (error.details or "")


def test_without_a_cgroup_limit_the_budget_is_the_ram(monkeypatch):
    monkeypatch.setattr(memory, "cgroup_memory", lambda root=None: None)
    budget = Budget.now(None)
    assert budget.cgroup_limit is None
    with pytest.raises(ShimmyError) as caught:
        plan_room("big", 1 << 50, [], budget)
    assert "of RAM available" in (caught.value.details or "")
