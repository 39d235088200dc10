"""cvmfs-mini through HTTP proxies: Debian's real squid, started by each test on a loopback port with its
own configuration, memory cache and access log, in front of a loopback origin that serves a published
repository with the caching headers of a stratum-0/1 (Cache-Control: max-age=61 for .cvmfs*, 3 days
for objects; no Last-Modified or ETag) and records every request (path, bytes, whether a proxy made it:
squid adds a Via header).

Shown: two clients through one squid, the second served from squid's cache; failover when a squid dies
in the middle of a file; a squid holding a corrupted object is asked again with no-cache and the read
succeeds; no request ever goes DIRECT unless the proxy list says DIRECT; a slow proxy that delivers within
the deadline keeps its traffic. Figures are printed at the end of the module (pytest -s or -rA).
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from cvmfs_helpers import FQRN, IS_ROOT, make_tree

from cernvm_build.boot import client
from cernvm_build.cvmfs.objects import object_relpath
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.errors import MountError
from tests.support.loopback import LoopbackServer
from tests.support.nginx import free_port
from tests.support.squid import SQUID, Squid

SMALL = dict(chunk_size=1 << 20, max_catalog_entries=25, min_catalog_entries=3, durable=False)

pytestmark = [
    pytest.mark.skipif(not (IS_ROOT and os.path.exists("/dev/fuse")), reason="needs root and /dev/fuse"),
    pytest.mark.skipif(not os.path.exists(SQUID), reason="squid not installed (tools/setup.sh)"),
]

FIGURES: list[str] = []


# ------------------------------------------------------------------------------------- the origin
class OriginHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "Origin"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        rel = self.path.split("?", 1)[0]
        if rel.startswith("http://"):  # absolute form: only a proxy should receive that
            rel = "/" + rel.split("/", 3)[3]
        rel = rel.lstrip("/")
        f = self.server.repo / rel
        body = f.read_bytes() if rel and f.is_file() and "/txn/" not in rel else None
        if body is not None and self.server.corrupt.get(rel, 0) > 0:
            self.server.corrupt[rel] -= 1
            body = zlib.compress(b"#!/bin/sh\necho evil\n")  # a valid zlib stream with the wrong SHA-1
        if self.server.delay:
            time.sleep(self.server.delay)
        via = self.headers.get("Via")
        with self.server.lock:
            self.server.log.append((rel, via, len(body or b""), self.headers.get("Cache-Control")))
        if body is None:
            self.send_response_only(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response_only(200)
        self.send_header("Date", self.date_time_string())  # without it squid revalidates every hit
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=61" if rel.rsplit("/", 1)[-1].startswith(".cvmfs")
                         else "max-age=259200")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # a squid killed by the test
            self.close_connection = True


class Origin(LoopbackServer):
    """The repository server (stratum-0/1 stand-in) on 127.0.0.1."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.corrupt: dict[str, int] = {}  # relative path -> how many more times to send wrong bytes
        self.delay = 0.0
        self.lock = threading.Lock()
        self.log: list[tuple[str, str | None, int, str | None]] = []  # (path, Via, bytes, Cache-Control)
        super().__init__(OriginHandler)

    def handle_error(self, request, client_address) -> None:  # a squid killed mid-request: not news
        pass

    def direct(self) -> list[str]:
        """Requests that came without a proxy (no Via header)."""
        return [p for p, via, _, _ in self.log if not via]

    def data_bytes(self, since: int = 0) -> int:
        return sum(n for p, _, n, _ in self.log[since:] if p.startswith("data/"))


# --------------------------------------------------------------------------------------- squid
@pytest.fixture
def squids(tmp_path):
    made: list[Squid] = []

    def make(name: str, host: str = "127.0.0.1") -> Squid:
        s = Squid(tmp_path, name, host)
        made.append(s)  # cleaned up even when it fails to start
        return s.start()

    yield make
    for s in made:
        s.cleanup()


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def origin(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    o = Origin(repo)
    yield tree, o, r
    o.stop()


def _opts(origin: Origin, keys: Path, cache: Path, proxy: str | None, **kw) -> client.ClientOptions:
    kw.setdefault("timeout", 5)
    kw.setdefault("retries", 1)
    return client.ClientOptions(urls=[origin.url], pubkeys=[keys / f"{FQRN}.pub"], cache_dir=cache,
                                proxy=proxy, connect_timeout=2, **kw)


def _mnt(tmp_path: Path, name: str = "mnt") -> Path:
    m = tmp_path / name
    m.mkdir(exist_ok=True)
    return m


def _files(tree: Path) -> list[str]:
    return sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file() and not p.is_symlink())


def _read_all(mnt: Path, tree: Path, files: list[str]) -> int:
    n = 0
    for rel in files:
        assert (mnt / rel).read_bytes() == (tree / rel).read_bytes(), rel
        n += 1
    return n


def _xattr(mnt: Path, name: str) -> str:
    return os.getxattr(mnt, f"user.{name}").decode()


def _objects(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(code, url) for code, url in rows if "/data/" in url]


# --------------------------------------------------------------------------------------- tests
def test_two_clients_through_one_squid_second_is_served_from_its_cache(origin, keys, tmp_path, binary,
                                                                       squids):
    tree, o, _ = origin
    sq = squids("shared")
    files = _files(tree)
    with client.start(_opts(o, keys, tmp_path / "cache1", sq.url), _mnt(tmp_path, "m1"), binary) as c1:
        _read_all(tmp_path / "m1", tree, files)
        assert _xattr(tmp_path / "m1", "proxy") == sq.url
        rx1 = int(_xattr(tmp_path / "m1", "rx_bytes"))
    first_requests, first_bytes = len(o.log), o.data_bytes()
    rows1 = len(sq.access())
    with client.start(_opts(o, keys, tmp_path / "cache2", sq.url), _mnt(tmp_path, "m2"), binary):
        _read_all(tmp_path / "m2", tree, files)
        rx2 = int(_xattr(tmp_path / "m2", "rx_bytes"))
    second = o.log[first_requests:]
    rows2 = sq.access()[rows1:]
    objs = _objects(rows2)
    hits = [c for c, _ in objs if c in ("TCP_HIT", "TCP_MEM_HIT")]
    assert not o.direct(), o.direct()  # every request to the origin came through squid
    assert objs and len(hits) == len(objs), objs  # every object of the second client: a cache hit
    assert o.data_bytes(first_requests) == 0 and not [p for p, *_ in second if p.startswith("data/")], second
    assert first_bytes > 3 << 20  # the first client's objects did come from the origin (big file: 3 MB)
    assert "is corrupted" not in c1.output()
    FIGURES.append(f"two clients, one squid: {len(files)} files; origin sent {first_bytes} object bytes in "
                   f"{first_requests} requests for client 1, {o.data_bytes(first_requests)} object bytes in "
                   f"{len(second)} requests ({', '.join(sorted({p for p, *_ in second})) or 'none'}) "
                   f"for client 2; "
                   f"client 2: {len(hits)}/{len(objs)} object requests {sorted(set(hits))}; "
                   f"client rx {rx1} / {rx2} bytes")


def test_failover_when_the_proxy_dies_in_the_middle_of_a_file(origin, keys, tmp_path, binary, squids):
    """Two load-balanced members of one group: the client starts on the member its machine hashes to; that
    squid is killed after the first chunk of a 3-chunk file; the rest comes through the other member."""
    tree, o, _ = origin
    a, b = squids("a"), squids("b")
    mnt = _mnt(tmp_path)
    big = (tree / "usr/share/data/big.bin").read_bytes()
    with client.start(_opts(o, keys, tmp_path / "cache", f"{a.url}|{b.url}"), mnt, binary) as c:
        first = _xattr(mnt, "proxy")
        assert first in (a.url, b.url)
        dead, other = (a, b) if first == a.url else (b, a)
        with open(mnt / "usr/share/data/big.bin", "rb") as f:
            head = f.read(1 << 20)  # the first chunk, through the first proxy
            dead.kill()
            t0 = time.monotonic()
            rest = f.read()
            took = time.monotonic() - t0
        assert head + rest == big
        _read_all(mnt, tree, _files(tree))
        assert _xattr(mnt, "proxy") == other.url
        assert int(_xattr(mnt, "proxy_failovers")) == 1 and int(_xattr(mnt, "host_failovers")) == 0
        assert f"switching proxy from {dead.url} to {other.url}" in c.output()
    assert _objects(other.access()), "the surviving squid served nothing"
    assert not o.direct(), o.direct()
    assert took < 5, took
    FIGURES.append(f"proxy killed mid-file: the remaining 2 chunks (2 MiB) read in {took:.2f} s through the "
                   f"other member ({len(_objects(other.access()))} object requests there); started on "
                   f"{'a' if first == a.url else 'b'} (machine hash)")


def test_groups_are_tried_in_order_and_the_backup_group_takes_over(origin, keys, tmp_path, binary, squids):
    tree, o, _ = origin
    primary, backup = squids("primary"), squids("backup")
    mnt = _mnt(tmp_path)
    with client.start(_opts(o, keys, tmp_path / "cache", f"{primary.url};{backup.url}"), mnt, binary):
        assert (mnt / "etc/hostname").read_bytes() == (tree / "etc/hostname").read_bytes()
        assert _xattr(mnt, "proxy") == primary.url and not backup.access()
        primary.kill()
        t0 = time.monotonic()
        _read_all(mnt, tree, _files(tree))
        took = time.monotonic() - t0
        assert _xattr(mnt, "proxy") == backup.url
    assert _objects(backup.access()) and not o.direct()
    FIGURES.append(f"primary group killed: every file read through the backup group in {took:.2f} s")


def test_corrupted_object_in_squid_is_fetched_again_with_no_cache(origin, repo, keys, tmp_path, binary,
                                                                   squids):
    """The origin sends one wrong copy of an object; a request through squid caches it (3 days). The
    client gets the poisoned copy from squid's cache, refuses it (SHA-1), asks again with no-cache: squid
    refetches from the origin, which is honest now; later clients get the good copy from squid's cache."""
    tree, o, _ = origin
    sq = squids("poisoned")
    with Repository(repo) as rr:
        rel = object_relpath(rr.lookup("/bin/tool").hash)
    o.corrupt[rel] = 1
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": sq.url}))
    poisoned = opener.open(f"{o.url}/{rel}", timeout=10).read()
    assert poisoned == zlib.compress(b"#!/bin/sh\necho evil\n")
    assert opener.open(f"{o.url}/{rel}", timeout=10).read() == poisoned  # squid keeps serving it
    mnt = _mnt(tmp_path)
    with client.start(_opts(o, keys, tmp_path / "cache", sq.url, debug=True), mnt, binary) as c:
        assert (mnt / "bin/tool").read_bytes() == (tree / "bin/tool").read_bytes()
        assert "retrying with no-cache" in c.output()  # a debug line: the read succeeded, no error to report
    codes = sq.codes(rel, 4)  # two priming requests, then the client's two
    assert codes[:2] == ["TCP_MISS", "TCP_MEM_HIT"], codes
    assert codes[2] == "TCP_MEM_HIT" and codes[3] in ("TCP_MISS", "TCP_CLIENT_REFRESH_MISS"), codes
    asked = [cc for p, _, _, cc in o.log if p == rel]  # what squid asked the origin for this object
    assert len(asked) == 2 and "no-cache" in (asked[1] or ""), asked
    mnt2 = _mnt(tmp_path, "m2")
    with client.start(_opts(o, keys, tmp_path / "cache2", sq.url), mnt2, binary) as c2:
        assert (mnt2 / "bin/tool").read_bytes() == (tree / "bin/tool").read_bytes()
        assert "no-cache" not in c2.output()
    assert sq.codes(rel, 5)[4:] == ["TCP_MEM_HIT"]
    assert not o.direct()
    FIGURES.append(f"poisoned squid: squid log for the object {codes} then a hit for the next client")


def test_never_direct_unless_the_list_says_direct(origin, keys, tmp_path, binary, squids):
    tree, o, _ = origin
    dead1, dead2 = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    mnt = _mnt(tmp_path)
    # every proxy dead: a one-line refusal, and the origin never hears from the client
    t0 = time.monotonic()
    refusal = r"cannot fetch \.cvmfspublished: GET \S+ via proxy http://127\.0\.0\.1:\d+: cannot connect"
    with pytest.raises(MountError, match=refusal):
        client.start(_opts(o, keys, tmp_path / "cache", f"{dead1}|{dead2};{dead2}"), mnt, binary)
    refused_in = time.monotonic() - t0
    assert o.log == []
    # mounted through squid, then squid dies: reads of what is not cached are EIO, still nothing direct
    sq = squids("only")
    with client.start(_opts(o, keys, tmp_path / "cache", sq.url), mnt, binary):
        assert (mnt / "etc/hostname").read_bytes() == (tree / "etc/hostname").read_bytes()
        sq.kill()
        t0 = time.monotonic()
        with pytest.raises(OSError) as exc:
            (mnt / "usr/share/data/big.bin").read_bytes()
        eio_in = time.monotonic() - t0
        assert exc.value.errno == errno.EIO
        # cached: still there
        assert (mnt / "etc/hostname").read_bytes() == (tree / "etc/hostname").read_bytes()
    assert o.log and not o.direct(), o.direct()
    # DIRECT named as the last group: used once the proxies fail
    n = len(o.log)
    with client.start(_opts(o, keys, tmp_path / "cache3", f"{dead1};DIRECT"), mnt, binary):
        _read_all(mnt, tree, ["etc/hostname", "usr/share/data/big.bin"])
        assert _xattr(mnt, "proxy") == "DIRECT"
    assert len(o.direct()) == len(o.log) - n > 0
    FIGURES.append(f"all proxies dead: mount refused in {refused_in:.2f} s with 0 origin requests; "
                   f"squid killed after mounting: EIO in {eio_in:.2f} s, 0 direct requests; "
                   f"'{{dead}};DIRECT': "
                   f"{len(o.direct())} direct requests")


class SlowProxyHandler(BaseHTTPRequestHandler):
    """A forward proxy that trickles each response: 32 KiB every 0.2 s (160 KiB/s): slow, never idle."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        with urllib.request.urlopen(self.path, timeout=10) as r:
            body = r.read()
        self.send_response_only(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 32768):
            self.wfile.write(body[i:i + 32768])
            self.wfile.flush()
            time.sleep(0.2)


def test_a_slow_proxy_that_delivers_within_the_deadline_keeps_the_traffic(origin, keys, tmp_path, binary,
                                                                          squids):
    """cvmfs issue 4445: a site proxy declared dead for being slow sent a site's traffic off-site. Here the
    slow proxy (160 KiB/s, never 2 s idle) delivers a 1 MiB chunk in ~7 s within the 15 s deadline: the
    backup group (a squid) sees nothing."""
    tree, o, _ = origin
    slow = LoopbackServer(SlowProxyHandler)
    slow.requests = []
    backup = squids("backup")
    mnt = _mnt(tmp_path)
    spec = f"{slow.url};{backup.url}"
    try:
        # no boot prefetch: this stand-in proxy serves only the file under test, and the list (asked
        # for through the proxies like any file) would fail over to the backup
        with client.start(_opts(o, keys, tmp_path / "cache", spec, timeout=2, deadline=15,
                                extra=["--prefetch", "0"]), mnt, binary):
            t0 = time.monotonic()
            with open(mnt / "usr/share/data/big.bin", "rb") as f:
                assert f.read(1 << 20) == (tree / "usr/share/data/big.bin").read_bytes()[:1 << 20]
            took = time.monotonic() - t0
            assert _xattr(mnt, "proxy_failovers") == "0"
    finally:
        slow.stop()
    assert backup.access() == [] and slow.requests
    assert took > 3, took  # it really was slow
    FIGURES.append(f"slow proxy (160 KiB/s): a 1 MiB chunk in {took:.1f} s, 0 failovers, backup squid unused")


@pytest.mark.boot
@pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no qemu")
def test_iso_boots_through_squid_and_cvmfs_proxy_overrides(repo, keys, tmp_path, squids):
    """The ISO's boot.conf names squid (the guest reaches the host's loopback as 10.0.2.2); the repository
    URL is the origin's 127.0.0.1 address, which only the host (squid) can reach: a DIRECT request from the
    guest could not succeed. Then the same kernel and initramfs with cvmfs.proxy= on the command line (';'
    and '|' in a kernel parameter): a dead first group, then squid."""
    from boot_helpers import BOOT_LOCK, MARKER, fetch_options, make_boot_tree

    from cernvm_build.boot.iso import IsoOptions, build_iso
    from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot, extract_from_iso

    tree = make_boot_tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", durable=False))
    o = Origin(repo)
    sq = squids("boot")
    via = f"http://{HOST_FROM_GUEST}:{sq.port}"
    try:
        iso = build_iso(tmp_path / "boot.iso", IsoOptions(boot_lock=BOOT_LOCK, repo_url=o.url,
                                                          pubkeys=[keys / f"{FQRN}.pub"], tag="v1", proxy=via,
                                                          fetch=fetch_options())).path
        run = boot(QemuOptions(iso=iso), tmp_path / "serial1.log", 240, MARKER)
        assert MARKER in run.console, run.tail()
        assert f"cernvm-boot: proxies: {via}" in run.console
        assert f"mounted {FQRN} revision {r.revision} tag v1" in run.console
        first = len(o.log)
        assert first and not o.direct(), o.log
        dead = f"http://{HOST_FROM_GUEST}:{free_port()}"
        dead2 = f"http://{HOST_FROM_GUEST}:{free_port()}"
        spec = f"{dead}|{dead2};{via}"
        kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
        initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
        again = boot(QemuOptions(kernel=kernel, initrd=initrd,
                                 append=f"console=ttyS0,115200 cvmfs.proxy={spec}"),
                     tmp_path / "serial2.log", 240, MARKER)
        assert MARKER in again.console, again.tail()
        assert f"cernvm-boot: proxies: {spec}" in again.console
        assert f" to {via}" in again.console and "switching proxy from http://10.0.2.2" in again.console, \
            again.tail()
        assert not o.direct()
        hits = [c for c, u in _objects(sq.access()) if c in ("TCP_HIT", "TCP_MEM_HIT")]
        assert hits, sq.access()  # the second boot's objects came from squid's cache
        FIGURES.append(f"ISO through squid: boot to marker {run.marker_seconds:.1f} s, origin {first} "
                       f"requests (all via squid); second boot via cvmfs.proxy= ({spec}): "
                       f"{again.marker_seconds:.1f} s, "
                       f"origin {len(o.log) - first} more requests, {len(hits)} object hits in squid")
    finally:
        o.stop()


def test_figures():
    print("\n" + "\n".join(FIGURES))
