"""A hostile hub: every answer of the fake hub on 127.0.0.1 can lie (tests/hub/fakehub.py).

An ETag, a commit id or a file name that would lead out of the cache stops the
download with ``download_failed`` and nothing is written outside the cache;
every file is hashed (sha256 for LFS files, the git blob id for files kept in
git) and "verified" is said only then; more bytes than declared, redirects to
other schemes, and listings of absurd size, pages or values are refused. The
real ``shimmy pull``, the library and the dashboard's download queue are tried.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

from shimmy.errors import ExitCode, ShimmyError
from shimmy.models import hub
from shimmy.models.hub import client as hub_client
from shimmy.models.hub import files as hub_files
from shimmy.models.registry import ModelRegistry
from shimmy.tui.download_queue import DownloadQueue
from tests.e2e.harness import isolated_env, run_shimmy
from tests.hub.fakehub import FakeFile, FakeHub, FakeRepo, RawAnswer, git_blob_id
from tests.waiting import settle

TRAVERSAL_ETAG = '"../../../../tmp/x.sh"'  # blobs/../../../../tmp: beside HF_HOME
NAME = "tiny-Q4_K_M.gguf"


def tiny_gguf() -> bytes:
    """A valid GGUF of about a hundred bytes: a header and two keys, no tensors."""
    import gguf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, NAME)
        writer = gguf.GGUFWriter(str(path), "llama")
        writer.add_name("tiny")
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        writer.close()
        return path.read_bytes()


TINY = tiny_gguf()
WRONG = TINY[:-4] + b"evil"  # the same length, other bytes
BLOB = os.urandom(1_000_000)  # a small LFS file


def add(fake_hub: FakeHub, name: str, *files: FakeFile, **repo: Any) -> str:
    repo_id = f"hostile/{name}"
    fake_hub.add(FakeRepo(repo_id, list(files), **repo))
    return repo_id


def strays(root: Path, hf_home: Path, *allowed: Path) -> list[Path]:
    """Files and links under ``root`` outside the hub cache and ``allowed`` folders."""
    keep = [hf_home / "hub", *allowed]
    found = []
    for folder, dirs, files in os.walk(root):
        for name in [*files, *(d for d in dirs if os.path.islink(os.path.join(folder, d)))]:
            path = Path(folder, name)
            if not any(path.is_relative_to(k) for k in keep):
                found.append(path)
    return found


def download_error(repo_id: str) -> ShimmyError:
    with pytest.raises(ShimmyError) as info:
        (file,) = hub.list_gguf_files(repo_id)
        hub.download(file)
    return info.value


@pytest.fixture
def anyio_backend() -> str:
    """The dashboard's tests are coroutines; anyio's pytest plugin runs them on asyncio."""
    return "asyncio"


# -- the real command ------------------------------------------------------------------


@pytest.fixture
def env(fake_hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "user", HF_ENDPOINT=fake_hub.url)


def pull_fails(env: dict[str, str], cwd: Path, repo_id: str) -> str:
    """Run `shimmy pull REPO`: it must fail with download_failed's exit code and
    one error line, its last, and write nothing outside the cache; the line."""
    done = run_shimmy(["pull", repo_id], env, cwd=cwd)
    assert done.returncode == ExitCode.DOWNLOAD_FAILED, done.stderr
    lines = done.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], done.stderr
    assert "Traceback" not in done.stderr and "verified" not in done.stderr
    assert done.stdout == ""
    hf_home = Path(env["HF_HOME"])
    allowed = (Path(env["SHIMMY_HOME"]), Path(env["HOME"]))
    assert strays(cwd, hf_home, *allowed) == []
    blobs = list((hf_home / "hub").glob("models--*/blobs/*"))
    assert blobs == [], blobs  # nothing kept, not even inside the cache
    return lines[-1]


@pytest.mark.e2e
def test_pull_refuses_a_traversal_etag(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    repo_id = add(fake_hub, "etag-GGUF", FakeFile(NAME, text=TINY, etag=TRAVERSAL_ETAG))
    line = pull_fails(env, tmp_path, repo_id)
    assert line == (
        f"error: The hub sent an ETag for {NAME} that is not a file hash: "
        "'../../../../tmp/x.sh' (an ETag is a git blob id (40 hex digits) or a sha256 (64))"
    )
    target = Path(env["HF_HOME"]).parent / "tmp" / "x.sh"  # where it would have landed
    assert not target.exists() and not target.parent.exists()


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["dotdot", "absolute"])
def test_pull_refuses_a_traversal_file_name(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path, kind: str
) -> None:
    outside = tmp_path / "outside" / NAME
    name = "../../../../outside/" + NAME if kind == "dotdot" else str(outside)
    repo_id = add(fake_hub, "name-GGUF", FakeFile(name, text=TINY))
    line = pull_fails(env, tmp_path, repo_id)
    assert line.startswith(f"error: Refusing the file name {name[:20]!r}"[:-1])  # cut at 80
    assert f" in '{repo_id}' (it has " in line
    assert not outside.exists() and not outside.parent.exists()


@pytest.mark.e2e
def test_pull_refuses_a_commit_id_that_is_not_hex(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    commit = "../../../../../outside"
    repo_id = add(fake_hub, "commit-GGUF", FakeFile(NAME, text=TINY), commit=commit)
    line = pull_fails(env, tmp_path, repo_id)
    assert line == (
        f"error: The hub sent a commit id for {NAME} that is not one: {commit!r} "
        "(a commit id is 40 hex digits)"
    )
    assert not (tmp_path / "outside").exists()
    assert not list(Path(env["HF_HOME"]).glob("hub/models--*/snapshots"))


@pytest.mark.e2e
def test_pull_refuses_wrong_bytes_in_a_file_kept_in_git(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    repo_id = add(fake_hub, "git-GGUF", FakeFile(NAME, text=TINY, served=WRONG))
    line = pull_fails(env, tmp_path, repo_id)
    assert line == (
        f"error: Checksum mismatch for {NAME}: the download was deleted "
        f"(git blob id {git_blob_id(WRONG)}, the hub says {git_blob_id(TINY)})"
    )


@pytest.mark.e2e
def test_pull_verifies_a_file_kept_in_git(
    fake_hub: FakeHub, env: dict[str, str], tmp_path: Path
) -> None:
    repo_id = add(fake_hub, "git-GGUF", FakeFile(NAME, text=TINY))
    done = run_shimmy(["pull", repo_id], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"pulled {NAME} in " in done.stderr and ", git blob id verified; " in done.stderr
    assert "sha256" not in done.stderr  # it was not hashed with sha256: it does not say so
    storage = Path(env["HF_HOME"]) / "hub" / "models--hostile--git-GGUF"
    blob = storage / "blobs" / git_blob_id(TINY)
    assert blob.read_bytes() == TINY
    (pointer,) = storage.glob(f"snapshots/*/{NAME}")
    assert pointer.is_symlink() and pointer.resolve() == blob.resolve()
    assert (storage / "refs" / "main").read_text() == pointer.parent.name
    # Pulled again, the blob in the cache is hashed again before "verified" is said.
    os.chmod(blob, 0o644)
    blob.write_bytes(WRONG)
    done = run_shimmy(["pull", repo_id], env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "git blob id verified" in done.stderr and blob.read_bytes() == TINY


# -- ETags, commit ids, sizes and redirects -----------------------------------------------


@pytest.mark.parametrize(
    "etag",
    [
        TRAVERSAL_ETAG,
        '"/etc/passwd"',
        '"' + "A" * 64 + '"',  # upper case: not how the hub writes a hash
        '"' + "0" * 63 + '"',
        '"' + "0" * 64 + '/.."',
        '"' + "0" * 40 + '\\x"',
        '""',
    ],
)
@pytest.mark.parametrize("lfs", [False, True])
def test_etags_that_are_not_hashes_are_refused(
    fake_hub: FakeHub, isolated_home: Path, etag: str, lfs: bool
) -> None:
    repo_id = add(fake_hub, "etag-GGUF", FakeFile(NAME, text=BLOB, force_lfs=lfs, etag=etag))
    error = download_error(repo_id)
    assert error.code == "download_failed", error
    assert "ETag" in error.message or "no file metadata" in error.message
    assert strays(isolated_home, isolated_home / "hf", isolated_home / "home") == []
    assert not (isolated_home / "tmp").exists()


def test_weak_and_quoted_etags_are_read_as_huggingface_hub_reads_them(
    fake_hub: FakeHub, isolated_home: Path
) -> None:
    """huggingface_hub's `_normalize_etag` drops a W/ prefix and the quotes."""
    weak = FakeFile(NAME, text=TINY, etag=f'W/"{git_blob_id(TINY)}"')
    path = hub.download(hub.list_gguf_files(add(fake_hub, "weak-GGUF", weak))[0])
    assert path.read_bytes() == TINY
    bare = FakeFile(NAME, text=BLOB, force_lfs=True, etag=hashlib.sha256(BLOB).hexdigest())
    path = hub.download(hub.list_gguf_files(add(fake_hub, "bare-GGUF", bare))[0])
    assert path.read_bytes() == BLOB


def test_an_etag_that_is_not_the_lfs_sha256_is_refused(fake_hub: FakeHub) -> None:
    other = FakeFile(NAME, text=BLOB, force_lfs=True, etag=f'"{"0" * 64}"')
    error = download_error(add(fake_hub, "other-GGUF", other))
    assert error.message == f"The hub's ETag for {NAME} is not its LFS sha256"
    sha1 = FakeFile(NAME, text=BLOB, force_lfs=True, etag=f'"{git_blob_id(BLOB)}"')
    assert "is not its LFS sha256" in download_error(add(fake_hub, "sha1-GGUF", sha1)).message


@pytest.mark.parametrize(
    "commit", ["g" * 40, "A" * 40, "0" * 39, "0" * 41, "0" * 40 + "/..", "../" + "0" * 37]
)
def test_commit_ids_that_are_not_hex_are_refused(
    fake_hub: FakeHub, isolated_home: Path, commit: str
) -> None:
    repo_id = add(fake_hub, "commit-GGUF", FakeFile(NAME, text=TINY), commit=commit)
    error = download_error(repo_id)
    assert error.code == "download_failed"
    assert error.message.startswith(f"The hub sent a commit id for {NAME} that is not one")
    assert not list((isolated_home / "hf").glob("hub/*/snapshots"))


def test_wrong_bytes_in_an_lfs_file_are_deleted(fake_hub: FakeHub) -> None:
    wrong = bytes(b ^ 1 for b in BLOB)
    repo_id = add(fake_hub, "lfs-GGUF", FakeFile(NAME, text=BLOB, force_lfs=True, served=wrong))
    error = download_error(repo_id)
    assert error.message == f"Checksum mismatch for {NAME}: the download was deleted"
    assert error.details == (
        f"sha256 {hashlib.sha256(wrong).hexdigest()}, "
        f"the hub says {hashlib.sha256(BLOB).hexdigest()}"
    )
    storage = hub.repo_storage(repo_id)
    assert list((storage / "blobs").iterdir()) == [] and not (storage / "snapshots").exists()


def test_a_correct_lfs_file_is_verified(fake_hub: FakeHub) -> None:
    repo_id = add(fake_hub, "lfs-GGUF", FakeFile(NAME, text=BLOB, force_lfs=True))
    (file,) = hub.list_gguf_files(repo_id)
    assert file.checksums == "sha256"
    phases: list[str] = []
    path = hub.download(file, progress=lambda p: phases.append(p.phase))
    assert path.read_bytes() == BLOB and "verifying" in phases
    assert path.resolve().name == hashlib.sha256(BLOB).hexdigest()
    # A blob already in the cache is hashed again, and fetched again if damaged.
    path.resolve().write_bytes(bytes(len(BLOB)))
    fake_hub.requests.clear()
    assert hub.download(file).read_bytes() == BLOB
    assert [p for _, p, _ in fake_hub.requests if p.startswith("/hostile/")]  # the CDN's


@pytest.mark.parametrize("lfs", [True, False])
def test_more_bytes_than_declared_stop_the_download(
    fake_hub: FakeHub, isolated_home: Path, lfs: bool
) -> None:
    """The hub declares 1 MB and sends 200 MB more: the download stops at the
    first byte too many, not when the hub stops, and keeps nothing."""
    endless = FakeFile(NAME, text=BLOB, force_lfs=lfs, overflow=200_000_000)
    repo_id = add(fake_hub, "endless-GGUF", endless)
    started = time.monotonic()
    error = download_error(repo_id)
    assert error.code == "download_failed"
    assert error.message == (
        f"The hub sent more than the 1,000,000 bytes it declared for {NAME}: "
        "the download was deleted"
    )
    assert time.monotonic() - started < 30
    # What a socket's buffers hold besides the one chunk too many, not the 200 MB.
    assert fake_hub.sent[NAME] < len(BLOB) + 32_000_000
    storage = hub.repo_storage(repo_id)
    assert list((storage / "blobs").iterdir()) == []


@pytest.mark.parametrize("where", ["resolve", "cdn"])
def test_redirects_to_other_schemes_are_refused(fake_hub: FakeHub, where: str) -> None:
    target = "file:///etc/passwd"
    location = target if where == "resolve" else f"{fake_hub.cdn_url}/redirect?to={target}"
    repo_id = add(
        fake_hub, "scheme-GGUF", FakeFile(NAME, text=BLOB, force_lfs=True, location=location)
    )
    error = download_error(repo_id)
    assert error.code == "download_failed"
    what = "a download address" if where == "resolve" else "a redirect"
    assert error.message == f"The hub sent {what} that is not an http(s) URL: {target!r}"


# -- file names, repository names, revisions -------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x.gguf",
        "Q4/../../x.gguf",
        "/tmp/x.gguf",
        "Q4\\..\\..\\x.gguf",
        "x\x00.gguf",
        "x\n.gguf",
        "C:/x.gguf",
        "Q4//x.gguf",
        "./x.gguf",
        "Q4/",
        "x" * 300 + ".gguf",
        "",
    ],
)
def test_unsafe_file_names_in_the_tree_are_refused(fake_hub: FakeHub, name: str) -> None:
    # The unsafe name is one entry among honest ones; a hostile hub is refused whole.
    repo_id = add(fake_hub, "names-GGUF", FakeFile(NAME, text=TINY), FakeFile(name, text=TINY))
    with pytest.raises(ShimmyError) as info:
        hub.list_gguf_files(repo_id)
    assert info.value.code == "download_failed"
    assert info.value.message.startswith("Refusing the file name ")
    assert "must stay inside the repository" in (info.value.details or "")
    # Given to download() directly, the name never becomes a path either.
    bad = hub.HubFile(repo_id, name, (hub.HubPart(name, 5, None),), None)
    with pytest.raises(ShimmyError) as info:
        hub.download(bad)
    assert info.value.code == "download_failed"
    assert not hub.repo_storage(repo_id).exists()


def test_names_typed_by_a_user_are_checked() -> None:
    for spec in ("a/..b", "a/b--c", "../b", "a/b.git", "a/b/blob/../c.gguf", "a/b/..\\c.gguf"):
        with pytest.raises(ShimmyError) as info:
            hub.parse_pull_spec(spec)
        assert info.value.code == "invalid_request", spec
    for repo_id in ("../x", "a/b/c", "a/..", "/abs", "a\x00/b", "-a/b"):
        with pytest.raises(ShimmyError) as info:
            hub.repo_storage(repo_id)
        assert info.value.code == "invalid_request", repo_id
    with pytest.raises(ShimmyError) as info:
        hub.download(hub.HubFile("a/b", NAME, (hub.HubPart(NAME, 5, None),), None), revision="..")
    assert info.value.code == "invalid_request"
    assert hub.parse_pull_spec("hf.co/a-b/c.d_e:q4_k_m") == hub.PullSpec("a-b/c.d_e", "Q4_K_M")


def test_a_pull_record_never_holds_or_deletes_a_path_outside_the_cache(
    isolated_home: Path,
) -> None:
    outside = isolated_home / "precious.txt"
    outside.write_text("keep me")
    file = hub.HubFile("a/b", NAME, (hub.HubPart(NAME, 5, None),), None)
    with pytest.raises(ShimmyError) as info:
        hub.record_pull(file, [outside], "main")
    assert info.value.code == "download_failed" and hub.pulled_records() == []
    assert hub.remove_pulled({"paths": [str(outside)]}) == 0
    assert outside.read_text() == "keep me"


# -- listings: bounded -------------------------------------------------------------------


def test_search_values_are_bounded(fake_hub: FakeHub) -> None:
    items = [
        b'{"id": "ok/model-GGUF", "downloads": 100000000000000000000000000000000000000000, '
        b'"likes": -3, "lastModified": "' + b"9" * 10_000 + b'", "gguf": {"total": "many"}}',
        *[b'{"id": "ok/more-GGUF"}'] * 4999,  # 5000 results for a limit of 20
    ]
    fake_hub.answers["/api/models"] = RawAnswer(b"[" + b",".join(items) + b"]")
    found = hub.search_models("x", limit=20)
    assert len(found) == 20
    assert found[0] == hub.HubModel("ok/model-GGUF", None, None, None, None)
    with pytest.raises(ShimmyError) as info:
        hub.search_models("x", limit=5000)
    assert info.value.code == "invalid_request"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (RawAnswer(b'[{"id": "' + b"a" * 1_000_000 + b'/b"}]'), "is not a Hugging Face repository"),
        (RawAnswer(b'[{"id": "../../etc"}]'), "is not a Hugging Face repository name"),
        (RawAnswer(b'[{"id": "a/b"}, 5]'), "a search result that is not an object"),
        (RawAnswer(b'{"id": "a/b"}'), "The hub's answer for the search is not a list"),
        (RawAnswer(b"[" * 200_000), "The hub's answer for the search is not JSON"),
        (
            RawAnswer(b'{"id": "a/b"},', repeat=4_000_000, head=b"[", tail=b"{}]"),
            "The hub's answer for the search is larger than 16,777,216 bytes",
        ),
        (RawAnswer(b"[]", next_page="/api/models"), "has more than 50 pages"),
        (
            RawAnswer(b"[]", next_page="http://127.0.0.2:9/api/models"),
            "The hub's next page of the search is on another site",
        ),
    ],
    ids=["huge-id", "traversal-id", "not-object", "not-list", "nested", "huge", "pages", "site"],
)
def test_search_answers_that_lie_are_refused(
    fake_hub: FakeHub, answer: RawAnswer, message: str
) -> None:
    if answer.next_page and answer.next_page.startswith("/"):
        answer.next_page = fake_hub.url + answer.next_page
    fake_hub.answers["/api/models"] = answer
    with pytest.raises(ShimmyError) as info:
        hub.search_models("x")
    assert info.value.code == "download_failed"
    assert message in info.value.message
    assert fake_hub.sent.get("/api/models", 0) < 48_000_000  # not the 60 MB of "huge"
    assert answer.times <= hub_client.MAX_PAGES


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "file", "path": NAME, "size": -1, "oid": "0" * 40}, "as -1 bytes"),
        ({"type": "file", "path": NAME, "size": 10**30, "oid": "0" * 40}, "bytes"),
        ({"type": "file", "path": NAME, "size": True, "oid": "0" * 40}, "as True bytes"),
        ({"type": "file", "path": NAME, "size": "5", "oid": "0" * 40}, "as '5' bytes"),
        (
            {"type": "file", "path": NAME, "size": 5, "lfs": {"oid": "../x", "size": 5}},
            "no LFS sha256",
        ),
        (
            {"type": "file", "path": NAME, "size": 5, "lfs": {"oid": "0" * 64, "size": 6}},
            "with two sizes",
        ),
        ("a string", "not a file entry"),
    ],
)
def test_tree_entries_that_lie_are_refused(fake_hub: FakeHub, entry: object, message: str) -> None:
    repo_id = add(fake_hub, "tree-GGUF", FakeFile("README.md", text=b"hi"), extra_entries=[entry])
    with pytest.raises(ShimmyError) as info:
        hub.list_gguf_files(repo_id)
    assert info.value.code == "download_failed" and message in info.value.message


def test_tree_listings_are_bounded(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_files, "MAX_TREE_ENTRIES", 100)
    folders = [{"type": "directory", "path": f"d{i}", "oid": "0" * 40} for i in range(101)]
    repo_id = add(fake_hub, "tree-GGUF", FakeFile(NAME, text=TINY), extra_entries=folders)
    with pytest.raises(ShimmyError) as info:
        hub.list_gguf_files(repo_id)
    assert info.value.message == f"The hub lists more than 100 files in '{repo_id}'"
    # An error answer's body is read for its message only as far as 64 KiB.
    tree = f"/api/models/{repo_id}/tree/main"
    fake_hub.answers[tree] = RawAnswer(
        b"x" * 65536, repeat=1000, status=404, headers={"X-Error-Code": "RepoNotFound"}
    )
    with pytest.raises(ShimmyError) as info:
        hub.list_gguf_files(repo_id)
    assert info.value.code == "model_not_found"
    assert fake_hub.sent[tree] < 32_000_000  # of 65 MB


# -- the dashboard's download queue ------------------------------------------------------


class QueueApp(App[None]):
    """The download queue alone, as the Hub tab holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: list[DownloadQueue.Finished] = []

    def compose(self) -> ComposeResult:
        yield DownloadQueue(SimpleNamespace(registry=ModelRegistry()))

    def on_download_queue_finished(self, message: DownloadQueue.Finished) -> None:
        self.finished.append(message)


async def queue_download(file: hub.HubFile) -> tuple[DownloadQueue.Finished, str]:
    """Download ``file`` with the dashboard's queue: how it ended and the line it shows."""
    app = QueueApp()
    async with app.run_test() as pilot:
        app.query_one(DownloadQueue).add(file)
        await settle(pilot, lambda: app.finished, 60, what="the download's end")
        await app.workers.wait_for_complete()
        (finished,) = app.finished
        return finished, str(app.query_one("#download-line", Static).content)


@pytest.mark.anyio
async def test_the_dashboard_queue_reports_the_same_failures(
    fake_hub: FakeHub, isolated_home: Path
) -> None:
    lies: dict[str, dict[str, Any]] = {
        "etag-GGUF": {"etag": TRAVERSAL_ETAG},
        "git-GGUF": {"served": WRONG},
    }
    for name, lie in lies.items():
        repo_id = add(fake_hub, name, FakeFile(NAME, text=TINY, **lie))
        (file,) = hub.list_gguf_files(repo_id)
        finished, line = await queue_download(file)
        expected = download_error(repo_id).one_line()  # what `shimmy pull` prints
        assert (finished.state, finished.error) == ("failed", expected)
        assert line == f"{NAME}: {expected}" and "verified" not in line
    commit = add(fake_hub, "commit-GGUF", FakeFile(NAME, text=TINY), commit="../../x")
    finished, _ = await queue_download(hub.list_gguf_files(commit)[0])
    assert finished.state == "failed" and "commit id" in (finished.error or "")
    assert strays(isolated_home, isolated_home / "hf", isolated_home / "home") == []
    assert not (isolated_home / "tmp").exists()


@pytest.mark.anyio
async def test_the_dashboard_queue_says_which_hash_it_verified(
    fake_hub: FakeHub, isolated_home: Path
) -> None:
    repo_id = add(fake_hub, "git-GGUF", FakeFile(NAME, text=TINY))
    finished, line = await queue_download(hub.list_gguf_files(repo_id)[0])
    assert finished.state == "done", finished.error
    assert line == f"{NAME}: downloaded as {finished.model_name}, git blob id verified"
