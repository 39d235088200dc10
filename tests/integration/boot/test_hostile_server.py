"""cvmfs-mini against servers that lie: a real published repository behind a loopback HTTP server that
answers honestly except for one kind of lie per case.

Every case ends within a stated time with either a one-line refusal to mount or an EIO on the read
that touches the lie, the mount keeps answering other paths, and the client's peak memory (VmHWM,
or ru_maxrss of a client that refused) stays under MEMORY_BOUND whatever the server sends. Where a
second, honest server is configured the lie costs only time: the read succeeds from the other one.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Callable

import pytest

from cernvm_build.boot import client
from cernvm_build.cvmfs.objects import object_relpath
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.errors import MountError

from cvmfs_helpers import FQRN, IS_ROOT, make_tree

from tests.support.loopback import LoopbackServer

SMALL = dict(chunk_size=1 << 20, max_catalog_entries=25, min_catalog_entries=3, durable=False)
MEMORY_BOUND = 64 << 20  # bytes of peak RSS allowed to the client, whatever the server does
FLOOD = 256 << 20  # a lying server gives up after sending this much (the old client buffered it all)
TIMEOUT, DEADLINE, RETRIES = 2, 4, 1  # client: idle timeout, per-request deadline, retries
# one failing object on one server: (RETRIES + 1) attempts of at most DEADLINE s, back-off 1 s, slack
FAIL_WITHIN = (RETRIES + 1) * DEADLINE + 1 + 3

pytestmark = pytest.mark.skipif(not (IS_ROOT and os.path.exists("/dev/fuse")),
                                reason="needs root and /dev/fuse")

FIGURES: list[str] = []  # measured figures, printed at the end of the module (pytest -s or -rA)


# ------------------------------------------------------------------------------------- the server
Lie = Callable[["Handler", bytes | None], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "LyingServer"

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        f = self.server.repo / rel
        body = f.read_bytes() if rel and f.is_file() and "/txn/" not in rel else None
        lie = self.server.lies.get(rel)
        if lie is None:
            self.server.honest_hits.append(rel)
            if body is None:
                self.head(404, 0)
            else:
                self.head(200, len(body))
                self.wfile.write(body)
            return
        self.server.lie_hits.append(rel)
        try:
            lie(self, body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def head(self, status: int, length: int | None, extra: dict[str, str] | None = None) -> None:
        self.send_response_only(status)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()


class LyingServer(LoopbackServer):
    def __init__(self, repo: Path, lies: dict[str, Lie] | None = None):
        self.repo = repo
        self.lies = lies or {}
        self.lie_hits: list[str] = []
        self.honest_hits: list[str] = []
        super().__init__(Handler)


def _flood(h: Handler, chunk: bytes, limit: int = FLOOD) -> None:
    sent = 0
    while sent < limit:
        h.wfile.write(chunk)
        sent += len(chunk)


def huge_content_length(h: Handler, body: bytes | None) -> None:
    """Announce 100 GB and stream zeros."""
    h.head(200, 100 << 30)
    _flood(h, bytes(1 << 16))


def endless_chunked(h: Handler, body: bytes | None) -> None:
    """A chunked body that never ends."""
    h.head(200, None, {"Transfer-Encoding": "chunked"})
    _flood(h, b"10000\r\n" + bytes(1 << 16) + b"\r\n")


def truncated(h: Handler, body: bytes | None) -> None:
    """The right Content-Length, half the body, then the connection closes."""
    body = body or b"x" * 64
    h.head(200, len(body))
    h.wfile.write(body[: len(body) // 2])


def wrong_content(h: Handler, body: bytes | None) -> None:
    """Another valid zlib stream: the SHA-1 differs from the object's name."""
    evil = zlib.compress(b"#!/bin/sh\necho evil\n")
    h.head(200, len(evil))
    h.wfile.write(evil)


def slow_drip(h: Handler, body: bytes | None) -> None:
    """One byte per second (headers included): never idle long enough for the idle timeout."""
    body = body or b"x" * 64
    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    for i in range(len(head)):
        h.wfile.write(head[i:i + 1])
        h.wfile.flush()
        time.sleep(1)


def redirect_loop(h: Handler, body: bytes | None) -> None:
    """302 to itself, forever."""
    h.head(302, 0, {"Location": h.path})


def server_error(h: Handler, body: bytes | None) -> None:
    h.head(503, 7)
    h.wfile.write(b"go away")


def garbage(h: Handler, body: bytes | None) -> None:
    junk = os.urandom(200) + b"\n--\n" + os.urandom(100)
    h.head(200, len(junk))
    h.wfile.write(junk)


LIES: dict[str, Lie] = {
    "huge-content-length": huge_content_length,
    "endless-chunked": endless_chunked,
    "truncated": truncated,
    "wrong-content": wrong_content,
    "slow-drip": slow_drip,
    "redirect-loop": redirect_loop,
    "5xx": server_error,
}


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def published(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    return tree, r


def _opts(urls: list[str], keys: Path, tmp_path: Path, **kw) -> client.ClientOptions:
    kw.setdefault("cache_dir", tmp_path / "cache")
    return client.ClientOptions(urls=urls, pubkeys=[keys / f"{FQRN}.pub"], retries=RETRIES, timeout=TIMEOUT,
                                connect_timeout=TIMEOUT, deadline=DEADLINE, **kw)


def vmhwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _object(repo: Path, path: str) -> str:
    with Repository(repo) as rr:
        return str(object_relpath(rr.lookup(path).hash))


def _nested_catalog(repo: Path) -> str:
    """The object path of the catalog nested at /usr/share/data."""
    import sqlite3

    with Repository(repo) as rr:
        root = rr.root_hash
    db_file = repo / "root.sqlite"
    db_file.write_bytes(zlib.decompress((repo / object_relpath(root, "C")).read_bytes()))
    with sqlite3.connect(db_file) as db:
        rows = dict(db.execute("SELECT path, sha1 FROM nested_catalogs").fetchall())
    db_file.unlink()
    return str(object_relpath(rows["/usr/share/data"], "C"))


def run_refused(argv: list[str], limit: float) -> tuple[str, float, int]:
    """Run a client that is expected to refuse: (stderr, seconds, peak RSS bytes). The peak is VmHWM
    sampled every 10 ms while it runs (wait4's ru_maxrss would include the forking test process)."""
    t0 = time.monotonic()
    with open(Path(argv[argv.index("--cache") + 1]).parent / "refused.err", "w+b") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        peak = 0
        while proc.poll() is None:
            try:
                peak = max(peak, vmhwm(proc.pid))
            except (OSError, AssertionError):
                pass
            if time.monotonic() - t0 > limit + 30:
                proc.kill()
                proc.wait()
                raise AssertionError(f"client still running after {limit + 30:.0f} s")
            time.sleep(0.01)
        elapsed = time.monotonic() - t0
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    assert proc.returncode != 0, stderr
    return stderr, elapsed, peak


# -------------------------------------------------------------------- lies about one data object
@pytest.mark.parametrize("lie", sorted(LIES))
@pytest.mark.parametrize("failover", [False, True], ids=["one-server", "failover"])
def test_lie_about_a_file(lie, failover, published, repo, keys, tmp_path, binary):
    """One server lies about /bin/tool's object. Alone: EIO within FAIL_WITHIN s, the mount still
    answers. With an honest second server: the right bytes, from the other server."""
    tree, _ = published
    target = _object(repo, "/bin/tool")
    liar = LyingServer(repo, {target: LIES[lie]})
    honest = LyingServer(repo) if failover else None
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    urls = [liar.url] + ([honest.url] if honest else [])
    try:
        with client.start(_opts(urls, keys, tmp_path), mnt, binary) as m:
            assert (mnt / "etc" / "hostname").read_bytes() == b"cernvm\n"
            t0 = time.monotonic()
            if failover:
                assert (mnt / "bin" / "tool").read_bytes() == (tree / "bin" / "tool").read_bytes()
                assert honest.honest_hits.count(target) == 1
            else:
                with pytest.raises(OSError) as exc:
                    (mnt / "bin" / "tool").read_bytes()
                assert exc.value.errno == errno.EIO
            elapsed = time.monotonic() - t0
            assert target in liar.lie_hits
            # still serving: other files, directories, a chunked file, the attributes of the root
            assert (mnt / "usr" / "share" / "data" / "big.bin").read_bytes() == \
                (tree / "usr" / "share" / "data" / "big.bin").read_bytes()
            assert len([n for n in os.listdir(mnt / "usr" / "lib") if n.startswith("pkg")]) == 30
            assert os.getxattr(mnt, "user.fqrn").decode() == FQRN
            peak = vmhwm(m.proc.pid)
            log = m.output()
            assert m.proc.poll() is None
        lines = [ln for ln in log.splitlines() if target in ln]
        if failover:
            assert not lines, log  # a lie survived by failover is not an error
        else:
            assert len(lines) == 1 and "cannot fetch object" in lines[0], log
        FIGURES.append(f"{lie:20s} {'failover' if failover else 'one server':10s} "
                       f"{'read ok' if failover else 'EIO'} after {elapsed:5.2f} s, "
                       f"VmHWM {peak / 2**20:5.1f} MiB"
                       + ("" if failover else f"  [{lines[0].split(': ', 2)[-1][:90]}]"))
        assert elapsed < (DEADLINE + 3 if failover else FAIL_WITHIN), elapsed
        assert peak < MEMORY_BOUND, f"client peak RSS {peak / 2**20:.1f} MiB"
    finally:
        liar.stop()
        if honest:
            honest.stop()


@pytest.mark.parametrize("lie", ["endless-chunked", "huge-content-length", "wrong-content"])
def test_lie_about_a_nested_catalog(lie, published, repo, keys, tmp_path, binary):
    """A lie about the catalog nested at /usr/share/data: EIO below it, the rest keeps working."""
    tree, _ = published
    target = _nested_catalog(repo)
    liar = LyingServer(repo, {target: LIES[lie]})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with client.start(_opts([liar.url], keys, tmp_path), mnt, binary) as m:
            t0 = time.monotonic()
            with pytest.raises(OSError) as exc:
                (mnt / "usr" / "share" / "data" / "big.bin").stat()
            elapsed = time.monotonic() - t0
            assert exc.value.errno == errno.EIO
            assert (mnt / "bin" / "tool").read_bytes() == (tree / "bin" / "tool").read_bytes()
            peak = vmhwm(m.proc.pid)
        FIGURES.append(f"catalog {lie:12s} one server EIO after {elapsed:5.2f} s, "
                       f"VmHWM {peak / 2**20:5.1f} MiB")
        assert elapsed < FAIL_WITHIN and peak < MEMORY_BOUND, (elapsed, peak)
    finally:
        liar.stop()


# ---------------------------------------------------------------- lies about the manifest: refused
MANIFEST_LIES = {**{k: LIES[k] for k in ("huge-content-length", "endless-chunked", "truncated", "slow-drip",
                                          "redirect-loop", "5xx")}, "garbage": garbage}


@pytest.mark.parametrize("lie", sorted(MANIFEST_LIES))
def test_lie_about_the_manifest_refuses_with_one_line(lie, published, keys, tmp_path, binary, repo):
    liar = LyingServer(repo, {".cvmfspublished": MANIFEST_LIES[lie]})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        argv = _opts([liar.url], keys, tmp_path).argv(binary, mnt, foreground=True)
        stderr, elapsed, peak = run_refused(argv, FAIL_WITHIN)
    finally:
        liar.stop()
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    FIGURES.append(f"manifest {lie:19s} refused after {elapsed:5.2f} s, peak RSS {peak / 2**20:5.1f} MiB  "
                   f"[{lines[-1][:110] if lines else ''}]")
    assert len(lines) == 1 and lines[0].startswith("cvmfs-mini: error: "), stderr
    assert not client.is_mounted(mnt)
    assert elapsed < FAIL_WITHIN, elapsed
    assert peak < MEMORY_BOUND, peak


def test_manifest_failover_to_the_honest_server(published, keys, tmp_path, binary, repo):
    """A manifest that is too large on the first server: mounted from the second."""
    liar = LyingServer(repo, {".cvmfspublished": huge_content_length})
    honest = LyingServer(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with client.start(_opts([liar.url, honest.url], keys, tmp_path), mnt, binary) as m:
            assert (mnt / "etc" / "hostname").read_bytes() == b"cernvm\n"
            assert vmhwm(m.proc.pid) < MEMORY_BOUND
    finally:
        liar.stop()
        honest.stop()


@pytest.fixture
def unanswered():
    """An address whose TCP handshake never completes: a listener that never accepts, its backlog full."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(0)
    fillers = []
    for _ in range(4):  # Linux completes backlog + 1 handshakes, then drops SYNs
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(ls.getsockname())
        fillers.append(c)
    time.sleep(0.2)
    yield f"http://127.0.0.1:{ls.getsockname()[1]}"
    for c in fillers:
        c.close()
    ls.close()


def test_unanswered_connect_times_out_and_fails_over(published, keys, tmp_path, binary, repo, unanswered):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    argv = _opts([unanswered], keys, tmp_path).argv(binary, mnt, foreground=True)
    stderr, elapsed, peak = run_refused(argv, FAIL_WITHIN)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "timed out" in lines[0], stderr
    # (RETRIES + 1) connects of TIMEOUT s each and a 1 s back-off
    assert elapsed < (RETRIES + 1) * TIMEOUT + 1 + 2, elapsed
    FIGURES.append(f"unanswered connect  refused after {elapsed:5.2f} s, peak RSS {peak / 2**20:5.1f} MiB  "
                   f"[{lines[0][:100]}]")
    honest = LyingServer(repo)
    try:
        t0 = time.monotonic()
        with client.start(_opts([unanswered, honest.url], keys, tmp_path), mnt, binary):
            elapsed = time.monotonic() - t0
            assert (mnt / "etc" / "hostname").read_bytes() == b"cernvm\n"
        assert elapsed < TIMEOUT + 3, elapsed
        FIGURES.append(f"unanswered connect  failover mounted after {elapsed:5.2f} s")
    finally:
        honest.stop()


# ----------------------------------------------------------------- an older, validly signed manifest
@pytest.fixture
def two_revisions(published, repo, keys):
    """Revision 1 (tag v1) and 2 (tag v2); returns the tree and revision 1's manifest bytes."""
    tree, r1 = published
    old_manifest = (repo / ".cvmfspublished").read_bytes()
    (tree / "etc" / "hostname").write_text("second\n")
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    return tree, r1, r2, old_manifest


def _replay(old: bytes) -> Lie:
    def lie(h: Handler, body: bytes | None) -> None:
        h.head(200, len(old))
        h.wfile.write(old)
    return lie


def test_older_manifest_is_ignored_after_a_newer_one(two_revisions, keys, tmp_path, binary, repo):
    tree, r1, r2, old = two_revisions
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    honest = LyingServer(repo)
    try:
        with client.start(_opts([honest.url], keys, tmp_path), mnt, binary):
            assert os.getxattr(mnt, "user.revision") == str(r2.revision).encode()
    finally:
        honest.stop()
    state = (tmp_path / "cache" / f"revision-{FQRN}").read_text()
    assert state.startswith(f"revision {r2.revision}\n") and r2.root_hash in state
    stale = LyingServer(repo, {".cvmfspublished": _replay(old)})
    try:
        t0 = time.monotonic()
        with client.start(_opts([stale.url], keys, tmp_path), mnt, binary) as m:
            elapsed = time.monotonic() - t0
            assert (mnt / "etc" / "hostname").read_text() == "second\n"
            assert os.getxattr(mnt, "user.revision") == str(r2.revision).encode()
            assert os.getxattr(mnt, "user.root_hash").decode() == r2.root_hash
            peak = vmhwm(m.proc.pid)
            log = m.output()
        assert stale.lie_hits == [".cvmfspublished"]
        warnings = [ln for ln in log.splitlines() if "warning" in ln]
        assert len(warnings) == 1 and f"offer revision {r1.revision} " in warnings[0] and \
            f"revision {r2.revision} was seen before" in warnings[0], log
        FIGURES.append(f"older manifest      kept revision {r2.revision} after {elapsed:5.2f} s, "
                       f"VmHWM {peak / 2**20:5.1f} MiB")
        # the record is not lowered
        assert (tmp_path / "cache" / f"revision-{FQRN}").read_text() == state
        # explicit pins are choices, not rollbacks: they keep working against the same stale server
        with client.start(_opts([stale.url], keys, tmp_path, tag="v1"), mnt, binary) as m:
            assert (mnt / "etc" / "hostname").read_text() == "cernvm\n"
            assert "warning" in m.output()  # v1 resolved in revision 2's history, the manifest was stale
        with client.start(_opts([stale.url], keys, tmp_path, root_hash=r1.root_hash), mnt, binary) as m:
            assert (mnt / "etc" / "hostname").read_text() == "cernvm\n"
            assert "warning" not in m.output()
        # a tag only revision 2's history knows: found although the served manifest predates it
        with client.start(_opts([stale.url], keys, tmp_path, tag="v2"), mnt, binary):
            assert (mnt / "etc" / "hostname").read_text() == "second\n"
    finally:
        stale.stop()


def test_older_tag_against_an_up_to_date_server_is_no_rollback(two_revisions, keys, tmp_path, binary, repo):
    tree, r1, r2, old = two_revisions
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    honest = LyingServer(repo)
    try:
        with client.start(_opts([honest.url], keys, tmp_path), mnt, binary):
            pass
        with client.start(_opts([honest.url], keys, tmp_path, tag="v1"), mnt, binary) as m:
            assert (mnt / "etc" / "hostname").read_text() == "cernvm\n"
            assert os.getxattr(mnt, "user.revision") == str(r1.revision).encode()
            assert "warning" not in m.output()
    finally:
        honest.stop()


def test_min_revision_refuses_an_older_manifest(two_revisions, keys, tmp_path, binary, repo):
    """Without any cache state (an ISO without a scratch disk) --min-revision is the only defence."""
    tree, r1, r2, old = two_revisions
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    stale = LyingServer(repo, {".cvmfspublished": _replay(old)})
    honest = LyingServer(repo)
    try:
        argv = _opts([stale.url], keys, tmp_path, min_revision=r2.revision).argv(binary, mnt, foreground=True)
        stderr, elapsed, peak = run_refused(argv, 10)
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and f"offer revision {r1.revision} " in lines[0] and \
            f"minimum revision {r2.revision}:" in lines[0], stderr
        with client.start(_opts([honest.url], keys, tmp_path, min_revision=r2.revision), mnt, binary):
            assert (mnt / "etc" / "hostname").read_text() == "second\n"
        with pytest.raises(MountError, match=f"older than the minimum revision {r2.revision + 1}"):
            client.start(_opts([honest.url], keys, tmp_path, min_revision=r2.revision + 1), mnt, binary)
    finally:
        stale.stop()
        honest.stop()


# --------------------------------------------------------------------------------- relative paths
def test_relative_pubkey_and_log_paths_are_relative_to_the_start_directory(published, keys, tmp_path, binary,
                                                                             repo):
    work = tmp_path / "work"
    work.mkdir()
    (work / "master.pub").write_bytes((keys / f"{FQRN}.pub").read_bytes())
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    honest = LyingServer(repo)
    try:
        proc = subprocess.run([str(binary), "--url", honest.url, "--pubkey", "master.pub", "--cache", "cache",
                               "--log", "client.log", "--root-hash-file", "root_hash", str(mnt)],
                              cwd=work, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        try:
            assert (mnt / "etc" / "hostname").read_bytes() == b"cernvm\n"
            assert (work / "root_hash").read_text().strip() == os.getxattr(mnt, "user.root_hash").decode()
        finally:
            client.unmount(mnt)
        deadline = time.monotonic() + 10
        while not (work / "client.log").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (work / "client.log").exists() and not (work / "cache" / "client.log").exists()
    finally:
        honest.stop()


def test_zz_print_figures():
    print("\nhostile-server figures (time to error or recovery, client peak memory):")
    for f in FIGURES:
        print("  " + f)
