"""What the reference tools need from our writer: objects the reference replication re-compresses are
written at zlib's default level, and `.cvmfsreflog` is kept as cvmfs_server keeps it."""

from __future__ import annotations

import hashlib
import sqlite3
import zlib

from cvmfs_helpers import FQRN, run_cli

from cernvm_build.cvmfs import objects as obj
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
    # data objects keep the faster level (4): the reference copies them byte for byte
    with Repository(repo) as r:
        data = r.blob(r.lookup("/f0").hash)
    assert zlib.compress(zlib.decompress(data), obj.DEFAULT_LEVEL) == data
