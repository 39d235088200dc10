"""Serving as stratum-0/1s do: `serve` and a real nginx configured by `cvmfs serve-config --nginx` send
the reference caching headers (cvmfs-format.md §13.4), and clients read the repository through both."""

from __future__ import annotations

import os
import shutil
import urllib.request

import pytest
from cvmfs_helpers import FQRN, IS_ROOT, make_tree, run_cli

from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.serve import serve_in_thread
from tests.support.nginx import MODULE, Nginx, free_port

needs_nginx = pytest.mark.skipif(not (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx"))
                                 or not MODULE.exists(), reason="nginx and its headers-more module (tools/setup.sh)")


@pytest.fixture
def published(repo, keys, tmp_path):
    tree = make_tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", durable=False))
    obj = next(p for p in sorted((repo / "data").glob("??/*")) if p.is_file())
    return tree, r, obj.relative_to(repo).as_posix()


def head(url: str, **headers: str):
    req = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return resp.status, resp.headers


def status_of(url: str) -> int:
    try:
        return head(url)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def check_rules(base: str, obj: str) -> None:
    """The reference rules: 61 s for .cvmfs*, 3 days for objects, no validators, IMS ignored."""
    for name, age, ctype in ((".cvmfspublished", 61, "application/x-cvmfs"),
                             (".cvmfswhitelist", 61, "application/x-cvmfs"),
                             (obj, 259200, "application/octet-stream")):
        status, h = head(f"{base}/{name}", **{"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})
        assert status == 200, name
        assert h["Cache-Control"] == f"max-age={age}" and h["Expires"], (name, dict(h))
        assert h["Content-Type"] == ctype, (name, h["Content-Type"])
        assert "Last-Modified" not in h and "ETag" not in h, (name, dict(h))
    assert status_of(f"{base}/data/txn/publish.lock") == 404
    assert status_of(f"{base}/no-such-object") == 404


def test_serve_sends_the_reference_caching_headers(published, repo):
    _, _, obj = published
    server, url = serve_in_thread(repo)
    try:
        check_rules(url, obj)
        assert status_of(f"{url}/data/../.cvmfspublished") in (200, 404)   # normalised or refused, never outside
        assert status_of(f"{url}/%2e%2e/%2e%2e/etc/passwd") == 404
    finally:
        server.shutdown()


@needs_nginx
def test_nginx_site_from_serve_config_serves_the_repository(published, repo, keys, tmp_path):
    tree, r, obj = published
    port = free_port()
    site = tmp_path / "nginx" / "site.conf"
    run_cli("cvmfs", "serve-config", "--nginx", repo, "--listen", f"127.0.0.1:{port}", "-o", site)
    with Nginx(tmp_path / "nginx", site, port) as n:
        base = f"http://127.0.0.1:{port}/cvmfs/{FQRN}"
        check_rules(base, obj)
        out = run_cli("cvmfs", "verify", base, "--pubkey", keys / f"{FQRN}.pub").stdout
        assert f"root {r.root_hash}: OK".encode() in out
        assert run_cli("cvmfs", "cat", base, "/etc/hostname", "--pubkey", keys / f"{FQRN}.pub").stdout == \
            (tree / "etc" / "hostname").read_bytes()
        assert f"GET /cvmfs/{FQRN}/.cvmfspublished" in n.access_log.read_text()


@needs_nginx
@pytest.mark.skipif(not (IS_ROOT and os.path.exists("/dev/fuse")), reason="needs root and /dev/fuse")
def test_boot_client_mounts_through_nginx(published, repo, keys, tmp_path):
    from cernvm_build.boot import client

    tree, r, _ = published
    port = free_port()
    site = tmp_path / "nginx" / "site.conf"
    run_cli("cvmfs", "serve-config", "--nginx", repo, "--listen", f"127.0.0.1:{port}", "-o", site)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with Nginx(tmp_path / "nginx", site, port):
        opts = client.ClientOptions(urls=[f"http://127.0.0.1:{port}/cvmfs/{FQRN}"], pubkeys=[keys / f"{FQRN}.pub"],
                                    cache_dir=tmp_path / "cache", retries=1, timeout=5, tag="v1")
        with client.start(opts, mnt, client.build_client()):
            assert (mnt / "etc" / "hostname").read_bytes() == (tree / "etc" / "hostname").read_bytes()
