"""Format-level units: path hashes, xattr blobs, objects, chunks, letters, whitelist, catalogs, partition."""

from __future__ import annotations

import hashlib
import stat
import zlib

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cvmfs_helpers import FQRN

from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs.catalog import (
    FLAG_DIR,
    FLAG_FILE,
    FLAG_FILE_CHUNK,
    CatalogReader,
    Counters,
    Entry,
    NestedRef,
    content_digest,
    md5_pair,
    parse_xattrs,
    serialize_xattrs,
    write_catalog,
)
from cernvm_build.cvmfs.keys import load_keys
from cernvm_build.cvmfs.manifest import (
    Manifest,
    Whitelist,
    certificate_fingerprint,
    raw_rsa_sign,
    verify_manifest_signature,
    verify_whitelist,
)
from cernvm_build.cvmfs.publish import Node, partition
from cernvm_build.errors import CvmfsIntegrityError, CvmfsSignatureError, CvmfsWhitelistExpired


def test_md5_path_pairs_match_reference_vectors():
    assert md5_pair("") == (338333539836370388, 9098107892288553193)
    assert md5_pair("/foo") == (5745132282796244766, -5819618580357280866)
    assert md5_pair("/bar/3") == (391926897258923327, 4373697408302966759)


def test_xattr_blob_uses_single_byte_lengths_in_key_order():
    blob = serialize_xattrs({"user.b": b"2", "user.a": b"xyz"})
    assert blob == bytes([1, 2, 6, 3]) + b"user.axyz" + bytes([6, 1]) + b"user.b2"
    assert parse_xattrs(blob) == {"user.a": b"xyz", "user.b": b"2"}
    assert serialize_xattrs({}) is None


def test_empty_object_and_paths():
    assert obj.EMPTY_OBJECT == bytes.fromhex("789c030000000001")
    assert obj.EMPTY_HASH == "e8ec3d88b62ebf526e4e5a4ff6162a3aa48a6b78"
    assert obj.object_relpath("ff049c626904064d641feca0e9936e5b211807c6", "C") == \
        "data/ff/049c626904064d641feca0e9936e5b211807c6C"
    assert obj.parse_object_name("ff", "049c626904064d641feca0e9936e5b211807c6P") == \
        ("ff049c626904064d641feca0e9936e5b211807c6", "P")
    assert obj.parse_object_name("ff", "not-an-object") is None


def test_store_hashes_compressed_bytes_and_chunks_exactly(tmp_path):
    store = obj.ObjectStore(tmp_path, chunk_size=1000)
    store.create_layout()
    data = b"".join(b"line %d of a compressible file\n" % i for i in range(100))[:2500]
    (tmp_path / "f").write_bytes(data)
    fc = store.ingest_file(tmp_path / "f")
    assert fc.hash is None and [(c.offset, c.size) for c in fc.chunks] == [(0, 1000), (1000, 1000), (2000, 500)]
    for c in fc.chunks:
        blob = (tmp_path / obj.object_relpath(c.hash, "P")).read_bytes()
        assert hashlib.sha1(blob).hexdigest() == c.hash
        assert zlib.decompress(blob) == data[c.offset:c.offset + c.size]
    # exactly one chunk's worth is not chunked (a sole piece is stored as a plain object)
    (tmp_path / "g").write_bytes(data[:1000])
    fg = store.ingest_file(tmp_path / "g")
    assert fg.hash and not fg.chunks and store.get(fg.hash) == data[:1000]
    # a flipped byte is detected on read
    p = store.path(fg.hash)
    raw = bytearray(p.read_bytes())
    raw[-1] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(CvmfsIntegrityError, match="corrupted"):
        store.get(fg.hash)
    assert not list(store.txn.iterdir()), "scratch files left behind"


def test_manifest_letter_sign_verify_and_tamper(session_keys):
    keys = load_keys(session_keys, FQRN, need_master=True)
    m = Manifest(root_catalog="a" * 40, revision=7, fqrn=FQRN, root_catalog_size=1024, certificate="b" * 40,
                 history="c" * 40, timestamp=1_700_000_000)
    signed = m.sign(keys.repo_key)
    assert signed.startswith(b"Caaaa")
    assert b"\nB1024\nRd41d8cd98f00b204e9800998ecf8427e\nD240\nS7\nGno\nAno\nNtest.example.org\nX" in signed
    parsed, payload, digest, sig = Manifest.parse(signed)
    assert parsed.payload() == payload and parsed.revision == 7
    verify_manifest_signature(payload, digest, sig, keys.certificate)
    tampered = signed.replace(b"S7\n", b"S8\n")
    with pytest.raises(CvmfsSignatureError, match="modified"):
        verify_manifest_signature(*Manifest.parse(tampered)[1:], keys.certificate)
    other = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    forged = Manifest.parse(m.sign(other))
    with pytest.raises(CvmfsSignatureError, match="does not verify"):
        verify_manifest_signature(*forged[1:], keys.certificate)


def test_whitelist_raw_rsa_signature_expiry_and_fingerprint(session_keys):
    keys = load_keys(session_keys, FQRN, need_master=True)
    fp = certificate_fingerprint(keys.certificate)
    assert len(fp) == 59 and fp == fp.upper()
    wl = Whitelist(created=1_700_000_000, expires=1_700_000_000 + 3600 * 30, fqrn=FQRN, fingerprints=[fp])
    data = wl.sign(keys.master_key)
    # raw PKCS#1 type 1 over the hex text: the public operation gives back the padded hex digest itself
    digest = hashlib.sha1(wl.payload()).hexdigest().encode()
    sig = data.split(b"--\n", 1)[1].split(b"\n", 1)[1]
    n, e = keys.master_public.public_numbers().n, keys.master_public.public_numbers().e
    em = pow(int.from_bytes(sig, "big"), e, n).to_bytes(256, "big")
    assert em.startswith(b"\x00\x01\xff") and em.endswith(b"\x00" + digest)
    assert raw_rsa_sign(digest, keys.master_key) == sig
    verify_whitelist(data, FQRN, keys.certificate, [keys.master_public], now=1_700_000_000)
    with pytest.raises(CvmfsWhitelistExpired, match="expired"):
        verify_whitelist(data, FQRN, keys.certificate, [keys.master_public], now=1_700_000_000 + 3600 * 31)
    verify_whitelist(data, FQRN, keys.certificate, [keys.master_public], now=1_700_000_000 + 3600 * 31,
                     allow_expired=True)
    with pytest.raises(CvmfsSignatureError, match="not signed by the given master key"):
        verify_whitelist(data, FQRN, keys.certificate, [keys.repo_key.public_key()], now=1_700_000_000)
    with pytest.raises(CvmfsSignatureError, match="not 'other.example.org'"):
        verify_whitelist(data, "other.example.org", keys.certificate, [], now=1_700_000_000)
    unlisted = Whitelist(1_700_000_000, 1_800_000_000, FQRN, ["00:" * 19 + "00"]).sign(keys.master_key)
    with pytest.raises(CvmfsSignatureError, match="not on the whitelist"):
        verify_whitelist(unlisted, FQRN, keys.certificate, [keys.master_public], now=1_700_000_000)


def test_catalog_write_read_counters_and_digest(tmp_path):
    entries = [Entry("", stat.S_IFDIR | 0o755, 4096, 10, FLAG_DIR, linkcount=2),
               Entry("/f", stat.S_IFREG | 0o644, 5, 11, FLAG_FILE, hash="ab" * 20, xattr=serialize_xattrs(
                   {"user.k": b"v"})),
               Entry("/c", stat.S_IFREG | 0o644, 20, 12, FLAG_FILE | FLAG_FILE_CHUNK,
                     chunks=(obj.Chunk(0, 10, "cd" * 20), obj.Chunk(10, 10, "ef" * 20)))]
    counters = Counters()
    for e in entries:
        counters.add_entry(e)
    counters.add_child(Counters(self_={**counters.self_, "dir": 3}))
    write_catalog(tmp_path / "c.db", entries, [NestedRef("/n", "12" * 20, 4096)], {"schema": "2.5",
                  "schema_revision": "7", "revision": "1"}, counters)
    cat = CatalogReader(tmp_path / "c.db")
    stats = cat.statistics()
    assert len(stats) == 24
    assert stats["self_regular"] == 2 and stats["self_chunked"] == 1 and stats["self_chunks"] == 2
    assert stats["self_file_size"] == 25 and stats["self_xattr"] == 1 and stats["subtree_dir"] == 3
    got = cat.all_entries()
    assert [e.path for e in got] == ["", "/c", "/f"]
    assert got[1].chunks == entries[2].chunks and got[2].xattrs == {"user.k": b"v"}
    assert content_digest(got, cat.nested()) == content_digest(entries, [NestedRef("/n", "12" * 20, 4096)])
    assert cat.properties["schema"] == "2.5"
    cols = [r[1] for r in cat.db.execute("PRAGMA table_info(catalog)")]
    assert cols == ["md5path_1", "md5path_2", "parent_1", "parent_2", "hardlinks", "hash", "size", "mode", "mtime",
                    "mtimens", "flags", "name", "symlink", "uid", "gid", "xattr"]
    tables = {r[0] for r in cat.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"catalog", "chunks", "nested_catalogs", "bind_mountpoints", "statistics", "properties"}


def _dir(path: str, children: list[Node]) -> Node:
    return Node(path=path, mode=stat.S_IFDIR | 0o755, children=children)


def _file(path: str) -> Node:
    return Node(path=path, mode=stat.S_IFREG | 0o644)


def test_partition_splits_heaviest_subtrees_and_honours_markers():
    big = _dir("/big", [_file(f"/big/f{i}") for i in range(50)])
    small = _dir("/small", [_file(f"/small/f{i}") for i in range(5)])
    marked = _dir("/m", [_file("/m/.cvmfscatalog"), _file("/m/x")])
    mid = _dir("/mid", [_file(f"/mid/f{i}") for i in range(20)])
    root = _dir("", [big, marked, mid, small])
    partition(root, max_entries=40, min_entries=10)
    assert big.nested and marked.nested and not small.nested and not mid.nested
    assert any(c.name == ".cvmfscatalog" for c in big.children)  # marker added to automatic nested roots
    assert root.weight <= 40


def test_same_content_from_many_threads_is_written_and_counted_once(tmp_path):
    """publish stores files in parallel: identical contents must give one write and one count (the
    objects-written figure of a publish does not depend on thread timing)."""
    import threading

    store = obj.ObjectStore(tmp_path / "repo")
    store.create_layout()
    barrier = threading.Barrier(8)

    def put():
        barrier.wait()
        for i in range(50):
            store.put(b"same content %d" % i)

    threads = [threading.Thread(target=put) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.stats.objects_written == 50
    assert len(list((tmp_path / "repo" / "data").glob("??/*"))) == 50
