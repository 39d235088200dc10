"""The pinned compressor (determinism, the pin, re-pinning) and files stored uncompressed."""

from __future__ import annotations

import hashlib
import sys
import zlib

import pytest
from cvmfs_helpers import FQRN, run_cli

from cernvm_build.cvmfs import compression as comp
from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs.catalog import FLAG_COMPRESSION_MASK, FLAG_COMPRESSION_SHIFT
from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.errors import CvmfsError

SMALL = dict(chunk_size=1 << 20, max_catalog_entries=40, min_catalog_entries=5, durable=False)
TEXT = b"".join(b"line %d: the quick brown fox jumps over the lazy dog %d\n" % (i, i * i) for i in range(60_000))


def _tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "text").write_bytes(TEXT[:200_000])  # compressible, judged whole
    (root / "text-big").write_bytes(TEXT[:900_000])  # compressible, judged on windows
    (root / "text-chunked").write_bytes(TEXT)  # compressible, chunked
    rnd = hashlib.sha256(b"seed").digest() * 8
    noise = b"".join(hashlib.sha256(rnd + i.to_bytes(4, "little")).digest() for i in range(100_000))
    (root / "noise-small").write_bytes(noise[:5000])  # incompressible, judged whole
    (root / "noise-big").write_bytes(noise[:700_000])  # incompressible, judged on windows
    (root / "sub" / "noise-chunked").write_bytes(noise[:2_700_000])  # incompressible, chunked
    words = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"eps ", b"zeta ", b"eta ", b"theta "]
    text = b"".join(words[b & 7] + words[b >> 5] for i in range(4000)
                    for b in hashlib.sha256(i.to_bytes(4, "little")).digest()[:16])
    (root / "sub" / "data.gz").write_bytes(zlib.compress(text, 6))  # an already compressed file
    (root / "tiny").write_bytes(b"hi\n")  # deflate would add bytes
    (root / "empty").write_bytes(b"")
    return root


def _flags(repo):
    with Repository(repo) as r:
        return {p: r.lookup(p) for p in ("/text", "/text-big", "/text-chunked", "/noise-small", "/noise-big",
                                         "/sub/noise-chunked", "/sub/data.gz", "/tiny", "/empty")}


@pytest.fixture
def epoch(monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def test_incompressible_files_are_stored_uncompressed_and_read_back(repo, keys, tmp_path, epoch):
    tree = _tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    entries = _flags(repo)
    raw = {p for p, e in entries.items() if not e.compressed}
    assert raw == {"/noise-small", "/noise-big", "/sub/noise-chunked", "/sub/data.gz", "/tiny"}
    for p, e in entries.items():  # the catalog's compression field: 0 = zlib, 1 = none
        assert (e.flags & FLAG_COMPRESSION_MASK) >> FLAG_COMPRESSION_SHIFT == (0 if e.compressed else 1), p
    assert entries["/sub/noise-chunked"].is_chunked and entries["/text-chunked"].is_chunked
    with Repository(repo) as rep:
        for p in entries:
            assert rep.read(p) == (tree / p[1:]).read_bytes(), p
        # an uncompressed object is the file's bytes, named by their SHA-1
        blob = rep.blob(entries["/noise-big"].hash)
        assert blob == (tree / "noise-big").read_bytes() and hashlib.sha1(blob).hexdigest() == entries["/noise-big"].hash
        for c in entries["/sub/noise-chunked"].chunks:
            assert rep.blob(c.hash, obj.SUFFIX_PARTIAL) == (tree / "sub/noise-chunked").read_bytes()[c.offset:c.offset + c.size]
        assert rep.blob(entries["/empty"].hash) == obj.EMPTY_OBJECT  # the reference's empty object
    run_cli("cvmfs", "verify", repo, "--pubkey", keys / f"{FQRN}.pub")
    # the stat cache keeps uncompressed entries as they are: nothing is read again
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    assert r2.files_read == 0 and r2.data_objects_written == 0
    assert {p for p, e in _flags(repo).items() if not e.compressed} == raw
    assert r.compressor == r2.compressor == comp.DEFAULT


@pytest.mark.parametrize("spec", [comp.DEFAULT, "zlib:6"])
def test_same_tree_gives_the_same_root_hash(keys, tmp_path, epoch, spec):
    tree = _tree(tmp_path / "tree")
    roots = []
    for name in ("a", "b"):
        repo = tmp_path / name
        init_repository(repo, FQRN, keys, compressor=spec)
        roots.append(publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL)).root_hash)
    assert roots[0] == roots[1]
    with Repository(tmp_path / "a") as r:
        root_props = next(r.catalogs()).reader.properties
        text = r.blob(r.lookup("/text").hash)
    assert root_props[comp.PROPERTY] == spec and root_props[comp.PROBE_PROPERTY] == comp.load(spec).probe
    assert comp.load(spec).compress(zlib.decompress(text)) == text


def test_compressors_give_different_objects(keys, tmp_path, epoch):
    tree = _tree(tmp_path / "tree")
    hashes = {}
    for spec in ("libdeflate:6", "zlib:6"):
        repo = tmp_path / spec.replace(":", "-")
        init_repository(repo, FQRN, keys, compressor=spec)
        publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
        hashes[spec] = _flags(repo)["/text-big"].hash
    assert hashes["libdeflate:6"] != hashes["zlib:6"]


def test_the_pin_is_never_changed_silently(keys, tmp_path, epoch):
    tree = _tree(tmp_path / "tree")
    repo = tmp_path / "repo"
    init_repository(repo, FQRN, keys, compressor="zlib:6")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    # another compressor than the pin: refused, one line, naming both and the way out
    with pytest.raises(CvmfsError, match=r"pinned to compressor zlib:6.*libdeflate:6.*--repin-compression") as exc:
        publish(tree, repo, keys, PublishOptions(tag="v2", compressor="libdeflate:6", **SMALL))
    assert "\n" not in str(exc.value)
    # the same one, spelled out, is fine (a bare name means level 6)
    publish(tree, repo, keys, PublishOptions(tag="v2", compressor="zlib", **SMALL))
    # re-pinning re-compresses every file: the result equals a fresh repository pinned to the new one
    r = publish(tree, repo, keys, PublishOptions(tag="v3", compressor="libdeflate:6", repin_compression=True, **SMALL))
    assert r.files_read == 9 and r.compressor == "libdeflate:6"
    fresh = tmp_path / "fresh"
    init_repository(fresh, FQRN, keys, compressor="libdeflate:6")
    publish(tree, fresh, keys, PublishOptions(tag="v1", **SMALL))
    assert {p: (e.hash, e.chunks) for p, e in _flags(repo).items()} == \
        {p: (e.hash, e.chunks) for p, e in _flags(fresh).items()}
    # from then on the new pin is the repository's
    r = publish(tree, repo, keys, PublishOptions(tag="v4", **SMALL))
    assert r.compressor == "libdeflate:6" and r.files_read == 0
    with pytest.raises(CvmfsError, match="pinned to compressor libdeflate:6"):
        publish(tree, repo, keys, PublishOptions(tag="v5", compressor="zlib:6", **SMALL))


def test_a_pinned_compressor_that_is_missing_or_different_is_an_error(repo, keys, tmp_path, epoch, monkeypatch):
    tree = _tree(tmp_path / "tree")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))  # pinned to the default, libdeflate:6
    monkeypatch.setitem(sys.modules, "deflate", None)  # `import deflate` fails as if not installed
    with pytest.raises(CvmfsError, match=r"pinned to compressor libdeflate:6: .*not available here.*deflate") as exc:
        publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    assert "\n" not in str(exc.value)
    monkeypatch.delitem(sys.modules, "deflate")
    # a version of the library that compresses differently (the probe differs)
    monkeypatch.setattr(comp.Compressor, "probe", "0" * 40)
    with pytest.raises(CvmfsError, match="compresses differently from the one that pinned it"):
        publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    # re-pinning to the same one re-compresses everything with the library at hand
    r = publish(tree, repo, keys, PublishOptions(tag="v2", repin_compression=True, **SMALL))
    assert r.files_read == 9


def test_cli_init_pins_and_publish_checks(tmp_path, epoch):
    tree = _tree(tmp_path / "tree")
    repo, keys = tmp_path / "repo", tmp_path / "keys"
    run_cli("cvmfs", "init", repo, "--name", FQRN, "--keys", keys, "--compressor", "zlib:9")
    out = run_cli("publish", tree, "--repo", repo, "--keys", keys, "--tag", "v1", "--no-sync")
    assert out.returncode == 0
    bad = run_cli("publish", tree, "--repo", repo, "--keys", keys, "--tag", "v2", "--compressor", "libdeflate",
                  check=False)
    assert bad.returncode != 0 and b"pinned to compressor zlib:9" in bad.stderr
    with Repository(repo) as r:
        assert next(r.catalogs()).reader.properties[comp.PROPERTY] == "zlib:9"
    bad = run_cli("cvmfs", "init", tmp_path / "r2", "--name", FQRN, "--keys", tmp_path / "k2",
                  "--compressor", "zlib:12", check=False)
    assert bad.returncode != 0 and b"out of range" in bad.stderr


def test_a_repository_from_before_pins_is_compressed_anew_once(keys, tmp_path, epoch, monkeypatch):
    tree = _tree(tmp_path / "tree")
    repo = tmp_path / "repo"
    monkeypatch.setattr(comp.Compressor, "pin", lambda self: {})  # what init wrote before pins
    init_repository(repo, FQRN, keys, compressor="zlib:4")
    publish(tree, repo, keys, PublishOptions(tag="v1", **SMALL))
    monkeypatch.undo()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    r = publish(tree, repo, keys, PublishOptions(tag="v2", **SMALL))
    assert r.files_read == 9 and r.compressor == comp.DEFAULT  # unknown objects' compressor: all again
    r = publish(tree, repo, keys, PublishOptions(tag="v3", **SMALL))
    assert r.files_read == 0
