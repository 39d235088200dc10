"""What the reference tools need from our writer: objects the reference replication re-compresses are
written at zlib's default level, and `.cvmfsreflog` is kept as cvmfs_server keeps it."""

from __future__ import annotations

import hashlib
import sqlite3
import zlib

from cvmfs_helpers import FQRN, run_cli

from cernvm_build.cvmfs import compression as comp
from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs import reflog as rl
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.reader import Repository

SMALL = dict(chunk_size=256 * 1024, max_catalog_entries=40, min_catalog_entries=5, durable=False)


def _tree(root, n=5):
    root.mkdir()
    for i in range(n):
        (root / f"f{i}").write_bytes(b"content %d\n" % i * 50)
    return root


def test_recompressed_objects_are_at_zlib_default_level(repo, keys, tmp_path):
    """cvmfs_swissknife pull inflates X (and M) and deflates again at Z_DEFAULT_COMPRESSION: the bytes
    it stores must be ours, or the replica's certificate no longer matches the manifest's X hash."""
    publish(_tree(tmp_path / "tree"), repo, keys, PublishOptions(tag="v1", **SMALL))
    checked = 0
    for path in (repo / "data").glob("??/*"):
        if path.name[-1] in obj.RECOMPRESSED_SUFFIXES:
            blob = path.read_bytes()
            content = zlib.decompress(blob)
            assert zlib.compress(content) == blob, f"{path} is not at zlib's default level"
            assert zlib.compress(content, zlib.Z_DEFAULT_COMPRESSION) == blob
            checked += 1
    with Repository(repo) as r:
        cert = r.blob(r.manifest.certificate, obj.SUFFIX_CERTIFICATE)
        assert zlib.compress(zlib.decompress(cert), 6) == cert
        assert hashlib.sha1(zlib.compress(zlib.decompress(cert))).hexdigest() == r.manifest.certificate
    assert checked >= 1
    # data objects are the pinned compressor's (libdeflate by default): the reference copies them byte for byte
    with Repository(repo) as r:
        data = r.blob(r.lookup("/f0").hash)
    assert comp.load(comp.DEFAULT).compress(zlib.decompress(data)) == data


def _reflog(repo):
    db = sqlite3.connect(repo / ".cvmfsreflog")
    try:
        props = dict(db.execute("SELECT key, value FROM properties"))
        refs = {h: (t, ts) for h, t, ts in db.execute("SELECT hash, type, timestamp FROM refs")}
        cols = [(r[1], r[2], r[5]) for r in db.execute("PRAGMA table_info(refs)")]
    finally:
        db.close()
    return props, refs, cols


def test_reflog_written_by_init_publish_and_gc(keys, tmp_path, monkeypatch):
    from cernvm_build.cvmfs.publish import init_repository

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    repo = tmp_path / "stratum0"
    init_repository(repo, FQRN, keys)
    with Repository(repo) as r:
        assert r.manifest.reflog == hashlib.sha1((repo / ".cvmfsreflog").read_bytes()).hexdigest()
    props, refs, cols = _reflog(repo)
    assert props == {"schema": "1.0", "schema_revision": "0", "fqrn": FQRN}
    assert cols == [("hash", "TEXT", 1), ("type", "INTEGER", 0), ("timestamp", "INTEGER", 0)]
    tree = _tree(tmp_path / "tree", 60)
    for d in range(3):  # nested catalogs
        (tree / f"d{d}").mkdir()
        (tree / f"d{d}" / ".cvmfscatalog").write_bytes(b"")
        (tree / f"d{d}" / "x").write_bytes(b"x%d" % d)
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    (tree / "f0").write_bytes(b"changed")
    publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    props, refs, _ = _reflog(repo)
    with Repository(repo) as r:
        m = r.manifest
        assert m.reflog == hashlib.sha1((repo / ".cvmfsreflog").read_bytes()).hexdigest()
        assert refs[m.root_catalog][0] == 0 and refs[m.certificate][0] == 1 and refs[m.history][0] == 2
        catalogs = {c.hash for t in r.tags() for c in Repository(repo, tag=t.name).catalogs()}
    assert len(catalogs) >= 5 and catalogs <= {h for h, (t, _) in refs.items() if t == 0}
    assert {ts for _, ts in refs.values()} == {1700000000}  # the revision time, never the clock
    # every reference names an existing object
    for h, (t, _) in refs.items():
        assert (repo / obj.object_relpath(h, "CXHM"[t])).exists()
    run_cli("cvmfs", "verify", repo, "--pubkey", keys / f"{FQRN}.pub")

    # gc drops v1: the reflog loses the references of the objects it deletes
    run_cli("cvmfs", "gc", repo, "--keep", "v2", "--keys", keys)
    _, after, _ = _reflog(repo)
    assert len(after) < len(refs)
    for h, (t, _) in after.items():
        assert (repo / obj.object_relpath(h, "CXHM"[t])).exists(), f"reflog names deleted object {h}"
    with Repository(repo) as r:
        assert r.manifest.reflog == hashlib.sha1((repo / ".cvmfsreflog").read_bytes()).hexdigest()
        assert not rl.missing_from(after, r.manifest)
    run_cli("cvmfs", "verify", repo, "--pubkey", keys / f"{FQRN}.pub")
    again = run_cli("cvmfs", "gc", repo, "--keep", "v2", "--keys", keys)
    assert b"removed 0 objects" in again.stdout


def test_reflog_is_deterministic_and_does_not_change_the_root(keys, tmp_path, monkeypatch):
    from cernvm_build.cvmfs.publish import init_repository

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    tree = _tree(tmp_path / "tree")
    out = []
    for i in range(2):
        r = tmp_path / f"r{i}"
        init_repository(r, FQRN, keys)
        res = publish(tree, r, keys, PublishOptions(tag="snap", workers=1 + i, **SMALL))
        with Repository(r) as rr:
            out.append((res.root_hash, rr.manifest.reflog, (r / ".cvmfsreflog").read_bytes()))
    assert out[0] == out[1]


def test_verify_checks_the_reflog(repo, keys, tmp_path):
    from cernvm_build.cvmfs.keys import load_keys
    from cernvm_build.cvmfs.publish import sign_and_install
    from cernvm_build.cvmfs.reader import verify_repository
    from cernvm_build.errors import CvmfsIntegrityError

    publish(_tree(tmp_path / "tree"), repo, keys, PublishOptions(tag="v1", **SMALL))
    with Repository(repo) as r:
        assert verify_repository(r).problems == []
        m = r.manifest
    # a stale reflog (publisher killed between reflog and manifest) is reported
    _, refs, _ = _reflog(repo)
    rl.write_reflog(repo / ".cvmfsreflog", FQRN, {**refs, "0" * 40: (0, 1)})
    with Repository(repo) as r:
        assert "stale reflog" in verify_repository(r).problems[0]
    # a reflog that matches Y but lacks the root catalog is refused, as cvmfs_server check does
    sign_and_install(repo, load_keys(keys, FQRN), m, {h: v for h, v in refs.items() if h != m.root_catalog})
    with Repository(repo) as r:
        import pytest

        with pytest.raises(CvmfsIntegrityError, match=f"does not list the manifest's C {m.root_catalog}"):
            verify_repository(r)
