"""cvmfs-mini's boot prefetch: a list of objects published beside a snapshot
(.cvmfsprefetch-<root hash>, cernvm_build.cvmfs.prefetch) is fetched in parallel by worker processes
after mounting. The list is an unsigned input from the network: it may only cost time, never
correctness. Host mounts (root, /dev/fuse) of a small published repository behind a loopback server.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from cernvm_build.boot import client
from cernvm_build.cvmfs import prefetch
from cernvm_build.cvmfs.publish import PublishOptions, publish

from cvmfs_helpers import FQRN, IS_ROOT, make_tree

from tests.support.loopback import LoopbackServer

pytestmark = pytest.mark.skipif(not (IS_ROOT and os.path.exists("/dev/fuse")), reason="needs root and /dev/fuse")
SMALL = dict(chunk_size=1 << 20, max_catalog_entries=25, min_catalog_entries=3, durable=False)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Server"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        with self.server.lock:
            self.server.hits[rel] += 1
            self.server.peers.add(self.client_address)
            first = self.server.first_peer = self.server.first_peer or self.client_address
        f = self.server.repo / rel
        body = f.read_bytes() if rel and f.is_file() and "/txn/" not in rel else None
        if self.server.refuse_objects and rel.startswith("data/"):
            body = None
        lie = self.server.lies.get(rel)
        if lie is not None and body is not None and self.client_address != first:
            body = bytes(len(body))     # wrong bytes to the prefetch workers, right ones to the mount
        if body is None:
            self.send_response_only(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response_only(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(LoopbackServer):
    def __init__(self, repo: Path, lies: dict[str, int] | None = None):
        self.repo, self.lies, self.hits, self.peers = repo, lies or {}, Counter(), set()
        self.lock = threading.Lock()
        self.refuse_objects = False
        self.first_peer = None       # the mount's own connection (manifest, catalogs)
        super().__init__(Handler)


@pytest.fixture
def published(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    for i in range(60):      # enough objects for four workers to interleave with the reads
        (tree / "usr" / "lib" / f"extra{i:02d}.bin").write_bytes(os.urandom(20_000 + 997 * i))
    r = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    return tree, r


def all_objects(repo: Path) -> list[str]:
    """Every object of the repository (data/xx/rest), in a fixed order."""
    return sorted(p.parent.name + p.name for p in (repo / "data").glob("??/*") if p.is_file())


def regular_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def opts(url: str, keys: Path, tmp_path: Path, workers: int = 4) -> client.ClientOptions:
    return client.ClientOptions(urls=[url], pubkeys=[keys / f"{FQRN}.pub"], cache_dir=tmp_path / "cache",
                                retries=1, timeout=2, connect_timeout=2, deadline=4,
                                extra=["--prefetch", str(workers)])


def wait_for(log: Path | client.MountedClient, text: str, limit: float = 30) -> str:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        out = log.output()
        if text in out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged within {limit} s:\n{log.output()}")


def read_all(mnt: Path, tree: Path) -> None:
    for f in regular_files(tree):
        assert (mnt / f.relative_to(tree)).read_bytes() == f.read_bytes(), f


def test_list_is_used_in_parallel_and_reads_race_it_correctly(published, repo, keys, tmp_path, binary):
    """Every listed object is fetched once (by the workers, over several connections); reads started
    at once, racing the workers, see the right bytes; afterwards the server can refuse every object
    and the whole tree still reads from the prefetched cache."""
    tree, r = published
    raw = prefetch.uncompressed_objects(repo, r.root_hash)
    names = [n for n in all_objects(repo) if n not in raw]   # what write_list keeps
    prefetch.write_list(repo, r.root_hash, all_objects(repo))
    server = Server(repo)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with client.start(opts(server.url, keys, tmp_path), mnt, binary) as m:
            read_all(mnt, tree)                      # racing the workers
            out = wait_for(m, "prefetch: ")
            assert f"prefetch: {len(names)} objects listed, 4 workers" in out, out
            assert "could not" not in out, out
            fetched = {k: v for k, v in server.hits.items() if k.startswith("data/")}
            # a worker and the mount may both fetch one object in a narrow race (not refused: only time)
            dups = [k for k, v in fetched.items() if v > 1]
            assert max(fetched.values()) <= 2 and len(dups) <= len(names) // 10, dups
            assert len(server.peers) >= 3             # the workers' own connections beside the mount's
            server.refuse_objects = True
            for f in regular_files(tree):             # the page cache must not answer
                fd = os.open(mnt / f.relative_to(tree), os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
            read_all(mnt, tree)
        assert not list((tmp_path / "cache" / "data").glob("??/.pf*")), "claims left behind"
    finally:
        server.stop()


def _boot_without_damage(repo, keys, tmp_path, binary, tree, server) -> str:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with client.start(opts(server.url, keys, tmp_path), mnt, binary) as m:
            read_all(mnt, tree)
            time.sleep(0.5)
            return m.output()
    finally:
        server.stop()


@pytest.mark.parametrize("damage", ["bad-line", "other-root-hash", "unknown-objects", "oversized", "no-newline"])
def test_a_lying_list_costs_time_never_correctness(damage, published, repo, keys, tmp_path, binary):
    tree, r = published
    names = all_objects(repo)
    path = repo / f"{prefetch.PREFIX}{r.root_hash}"
    good = prefetch.list_text(r.root_hash, names)
    if damage == "bad-line":
        path.write_text(good + "../../etc/passwd\n")
    elif damage == "other-root-hash":
        path.write_text(prefetch.list_text("0" * 40, names))
    elif damage == "unknown-objects":
        path.write_text(prefetch.list_text(r.root_hash, [f"{i:040x}" for i in range(1, 200)] + names))
    elif damage == "oversized":
        path.write_text(good + ("f" * 40 + "\n") * ((5 << 20) // 41 + 1))
    elif damage == "no-newline":
        path.write_text(good.rstrip("\n"))
    out = _boot_without_damage(repo, keys, tmp_path, binary, tree, Server(repo))
    if damage == "unknown-objects":
        assert "HTTP 404" in out, out
    else:
        assert "prefetch list" in out and ("ignored" in out or "booting without it" in out), out


def test_an_object_corrupted_for_the_prefetch_is_fetched_again(published, repo, keys, tmp_path, binary):
    """The server answers the workers with wrong bytes for a third of the listed objects: nothing
    wrong enters the cache; the file system fetches them itself and reads the right bytes."""
    tree, r = published
    names = all_objects(repo)
    prefetch.write_list(repo, r.root_hash, names)
    lied = {f"data/{n[:2]}/{n[2:]}": 1 for n in names[::3] if not n.endswith(("C", "X", "H"))}
    server = Server(repo, lies=lied)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with client.start(opts(server.url, keys, tmp_path), mnt, binary) as m:
            wait_for(m, "prefetch: ")
            read_all(mnt, tree)
            out = m.output()
        assert "some objects could not be fetched" in out, out
    finally:
        server.stop()


def test_no_list_and_prefetch_off(published, repo, keys, tmp_path, binary):
    """Without a list the client asks for it once and boots as before; --prefetch 0 never asks."""
    tree, r = published
    for workers, asked in ((4, 1), (0, 0)):
        server = Server(repo)
        mnt = tmp_path / f"mnt{workers}"
        mnt.mkdir()
        try:
            o = opts(server.url, keys, tmp_path / f"c{workers}", workers)
            with client.start(o, mnt, binary):
                read_all(mnt, tree)
                time.sleep(0.3)
            assert server.hits[f"{prefetch.PREFIX}{r.root_hash}"] == asked
        finally:
            server.stop()


def test_list_format():
    with pytest.raises(Exception):
        prefetch.list_text("x" * 40, [])
    with pytest.raises(Exception):
        prefetch.list_text("a" * 40, ["A" * 40])
    assert prefetch.names_from_requests(["/.cvmfspublished", "/data/97/" + "a" * 38 + "X", "/data/97/" + "a" * 38 + "X",
                                         "/cvmfs/r/data/01/" + "b" * 38 + "?x"]) == ["97" + "a" * 38 + "X",
                                                                                   "01" + "b" * 38]
