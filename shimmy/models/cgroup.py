"""The memory limit of this process's cgroups: what the kernel's OOM killer
enforces in a container or a systemd unit with ``MemoryMax``, whatever the RAM.

psutil reports the machine's RAM, but a process whose cgroup has a memory limit
is killed when the cgroup's charge reaches that limit, however much RAM is
free. So the memory budget (memory.py) takes the tighter of the two. Both cgroup
versions are read: v2's ``memory.max``, ``memory.current`` and ``memory.stat``
(under ``/sys/fs/cgroup``), v1's ``memory.limit_in_bytes``,
``memory.usage_in_bytes`` and ``memory.stat`` (under ``/sys/fs/cgroup/memory``).
Every level from this process's cgroup up to the root is read, since a parent's
limit bounds its children; a level that is not visible (a container sees its
own cgroup as the root) is skipped. The file cache the kernel reclaims before
it kills (inactive file pages) counts as free, as the kernel's ``MemAvailable``
counts it.

The files are read under ``root`` (``/``, or a fake tree in the tests), each
bounded and opened without blocking, and anything unexpected (missing,
unreadable, garbage, a path that climbs out) means "no limit known there":
reading them never raises, and with nothing readable the budget is the RAM's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

# A limit this large is "no limit": cgroup v1 writes PAGE_COUNTER_MAX pages
# (9223372036854771712 bytes with 4 KiB pages), and no machine has 2**60 bytes.
NO_LIMIT_ABOVE = 1 << 60
MAX_FILE_BYTES = 64 * 1024  # memory.stat is about 1-2 KB; /proc/self/cgroup less
MAX_LEVELS = 64  # cgroup trees are a few levels deep; more is not a real tree
MAX_PATH_CHARS = 4096


@dataclass(frozen=True)
class _Version:
    number: int
    mount: str  # under root
    limit: str
    usage: str
    inactive_file: str  # memory.stat's key for the reclaimable file cache


_V2 = _Version(2, "sys/fs/cgroup", "memory.max", "memory.current", "inactive_file")
_V1 = _Version(
    1,
    "sys/fs/cgroup/memory",
    "memory.limit_in_bytes",
    "memory.usage_in_bytes",
    "total_inactive_file",  # v1's hierarchical figure (this cgroup and its children)
)


@dataclass(frozen=True)
class CgroupMemory:
    """The memory limit that binds this process (see the module docstring)."""

    version: int  # 1 or 2
    path: str  # the cgroup with the least room, as /proc/self/cgroup names it
    limit: int  # the tightest limit of any level, bytes
    available: int  # the least room at any level: limit less charge, inactive file cache free


def cgroup_memory(root: Path = Path("/")) -> CgroupMemory | None:
    """The memory limit of this process's cgroups read under ``root``; None when
    no level has one (or nothing can be read, or this is not Linux)."""
    found = _own_cgroup(root)
    if found is None:
        return None
    version, path = found
    mount = root / version.mount
    parts = [p for p in path.split("/") if p]
    best: CgroupMemory | None = None
    limit = None
    for depth in range(len(parts), -1, -1):
        folder = mount.joinpath(*parts[:depth])
        level = _level(folder, version)
        if level is None:
            continue
        level_limit, room = level
        limit = level_limit if limit is None else min(limit, level_limit)
        if best is None or room < best.available:
            best = CgroupMemory(version.number, "/" + "/".join(parts[:depth]), level_limit, room)
    if best is None or limit is None:
        return None
    return CgroupMemory(best.version, best.path, limit, min(best.available, limit))


def _own_cgroup(root: Path) -> tuple[_Version, str] | None:
    """Which hierarchy holds this process's memory controller, and its path there.

    ``/proc/self/cgroup`` has a ``ID:CONTROLLERS:PATH`` line per v1 hierarchy and
    ``0::PATH`` for v2. A v1 line for ``memory`` wins: on a hybrid system v2's
    hierarchy exists but memory is controlled in v1."""
    text = _read(root / "proc/self/cgroup")
    if text is None:
        return None
    unified = None
    for line in text.splitlines()[:MAX_LEVELS]:
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if not _safe_path(path):
            continue
        if "memory" in controllers.split(","):
            return _V1, path
        if number == "0" and controllers == "":
            unified = path
    return (_V2, unified) if unified is not None else None


def _safe_path(path: str) -> bool:
    """A cgroup path as the kernel writes one: absolute, not too long, never
    climbing out of the hierarchy's mount."""
    if not path.startswith("/") or len(path) > MAX_PATH_CHARS or "\0" in path:
        return False
    parts = [p for p in path.split("/") if p]
    return len(parts) <= MAX_LEVELS and not any(p in (".", "..") for p in parts)


def _level(folder: Path, version: _Version) -> tuple[int, int] | None:
    """(limit, room) of one cgroup; None when it has no limit, or none can be read.
    A limit with an unreadable charge gives the limit itself as the room (the
    most there can be)."""
    limit = _limit(_read(folder / version.limit))
    if limit is None:
        return None
    usage = _number(_read(folder / version.usage))
    if usage is None:
        return limit, limit
    reclaimable = _stat(_read(folder / "memory.stat"), version.inactive_file)
    return limit, max(0, min(limit, limit - usage + min(reclaimable, usage)))


def _limit(text: str | None) -> int | None:
    value = _number(text)
    if value is None or value >= NO_LIMIT_ABOVE:
        return None  # "max" (v2), a huge number (v1) or garbage: no limit known
    return value


def _number(text: str | None) -> int | None:
    if text is None:
        return None
    word = text.strip()
    if not word.isascii() or not word.isdigit() or len(word) > 20:
        return None
    return int(word)


def _stat(text: str | None, key: str) -> int:
    """The value of ``key`` in a memory.stat (0 when absent or garbage)."""
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            return _number(value) or 0
    return 0


def _read(path: Path) -> str | None:
    """At most MAX_FILE_BYTES of ``path``, or None. Opened without blocking, so a
    FIFO where a cgroup file should be cannot hang the caller."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except (OSError, ValueError):
        return None
    chunks: list[bytes] = []
    left = MAX_FILE_BYTES
    try:
        while left > 0:  # procfs and sysfs may hand over a file a page at a time
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", errors="replace")
