"""Whoever can write the cache cannot change what is built: packages are hashed when used, metadata and
derived files are trusted only under a seal made with a secret kept outside the cache."""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import read_lock
from cernvm_build.util.content_store import ContentStore
from tests.support.debrepo import EPOCH, _ar

CLI = [str(Path(sys.executable).with_name("cernvm-build"))]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="install mode chroots into the tree (root only)")


def run(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, **kw)


def ar_members(deb: bytes) -> list[tuple[str, bytes]]:
    assert deb.startswith(b"!<arch>\n")
    out, pos = [], 8
    while pos < len(deb):
        name, size = deb[pos:pos + 16].decode().strip(), int(deb[pos + 48:pos + 58])
        out.append((name, deb[pos + 60:pos + 60 + size]))
        pos += 60 + size + (size % 2)
    return out


def evil_deb_of_size(victim: bytes, size: int) -> bytes:
    """A valid .deb of exactly SIZE bytes: the victim's control data, another payload (/usr/bin/evil),
    and a trailing member dpkg ignores (deb(5)) to make the sizes equal."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        ti = tarfile.TarInfo("./usr/bin/evil")
        data = b"#!/bin/sh\necho evil\n"
        ti.size, ti.mtime, ti.mode = len(data), EPOCH, 0o755
        tf.addfile(ti, io.BytesIO(data))
    members = ar_members(victim)[:2] + [("data.tar.xz", lzma.compress(buf.getvalue()))]
    for pad in range(0, size):
        deb = _ar(members + [("_pad", b"\0" * pad)])
        if len(deb) == size:
            return deb
        if len(deb) > size:
            break
    raise AssertionError("cannot match the size")


@pytest.fixture
def poisoned(fixture_lock, tmp_path):
    """The fixture lock fetched into a cache, then alpha's cached file swapped for a valid .deb of the
    same size (what a restored CI cache or a shared ~/.cache could hold)."""
    cache = tmp_path / "cache"
    assert run("fetch", fixture_lock, "--cache", cache, "-q").returncode == 0
    alpha = read_lock(fixture_lock).package("alpha")
    stored = ContentStore(cache).package(alpha.sha256)
    stored.write_bytes(evil_deb_of_size(stored.read_bytes(), alpha.size))
    assert ContentStore(cache).has(alpha)              # the size check alone is fooled
    listing = subprocess.run(["dpkg-deb", "-c", str(stored)], capture_output=True, text=True)
    assert "./usr/bin/evil" in listing.stdout           # and it is a real package dpkg would unpack
    return fixture_lock, cache


@pytest.mark.parametrize("mode", ["unpack", pytest.param("install", marks=needs_root)])
def test_swapped_cached_package_is_refused_when_used(poisoned, tmp_path, mode):
    lock, cache = poisoned
    dest = tmp_path / "tree"
    res = run("rootfs", lock, dest, "--mode", mode, "--cache", cache)
    assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "package alpha" in res.stderr and "changed after it was verified" in res.stderr
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith("tree")]


def test_swapped_cached_package_never_enters_a_bundle(poisoned, tmp_path):
    lock, cache = poisoned
    res = run("bundle", lock, tmp_path / "bundle", "--cache", cache)
    assert res.returncode == 1 and "package alpha" in res.stderr and not (tmp_path / "bundle").exists()


@pytest.fixture
def locked(debrepo, tmp_path):
    cache = tmp_path / "cache"
    recipe = tmp_path / "r.toml"
    recipe.write_text(debrepo.recipe("fixture", ["delta"]))
    assert run("lock", recipe, "-o", tmp_path / "a.lock", "--cache", cache, "-q").returncode == 0
    return recipe, cache


def test_forged_gpgv_memo_does_not_make_metadata_verified(locked, tmp_path):
    """A cache writer swaps the cached InRelease for an altered one and writes what the memo would
    say for it; the memo is sealed with a secret outside the cache, so gpgv runs and refuses."""
    recipe, cache = locked
    store = ContentStore(cache)
    pointer = next((cache / "pointers").glob("deb-release-*"))
    kind, _, digest = pointer.read_text().strip().partition(" ")
    original = store.blob(digest).read_bytes()
    forged = original.replace(b"Suite: stable", b"Suite: stablx").replace(b"Codename: stable", b"Codename: stablx")
    forged = original.replace(b"Label:", b"Label: forged,") if forged == original else forged
    import hashlib

    fdigest = hashlib.sha256(forged).hexdigest()
    store.blob(fdigest).parent.mkdir(parents=True, exist_ok=True)
    store.blob(fdigest).write_bytes(forged)
    pointer.write_text(f"{kind} {fdigest}\n")
    ring = hashlib.sha256(Path(next(line.split('"')[1] for line in recipe.read_text().splitlines()
                                    if line.startswith("keyring"))).read_bytes()).hexdigest()
    # what an unsealed memo would have accepted (the record earlier versions kept in the cache) ...
    (cache / "verified").mkdir(exist_ok=True)
    (cache / "verified" / f"{fdigest}-{ring}").write_bytes(b"fingerprints ABCDEF\n" + forged)
    # ... and a sealed-looking one: the attacker does not know the secret outside the cache
    name = f"gpgv:{fdigest}-{ring}"
    store._seal_path(name).parent.mkdir(parents=True, exist_ok=True)
    store._seal_path(name).write_bytes(b"0" * 64 + b"\nfingerprints ABCDEF\n" + forged)
    res = run("lock", recipe, "-o", tmp_path / "b.lock", "--cache", cache, "--offline")
    assert res.returncode == 1 and "BAD signature" in res.stderr, res.stderr


def _derived_files(cache: Path) -> list[Path]:
    """The files derived from the index: the side index (a lock reads only what its request reaches)
    and libsolv's .solv (written when the whole universe was loaded)."""
    return sorted((cache / "solv").glob("*.debindex")) + sorted((cache / "solv").glob("*.solv"))


def test_tampered_cached_index_and_derived_files_are_not_used(locked, tmp_path):
    recipe, cache = locked
    store = ContentStore(cache)
    before = (tmp_path / "a.lock").read_bytes()
    lock = read_lock(tmp_path / "a.lock")
    index = store.blob(lock.repositories[0].indexes[0].sha256)
    derived = _derived_files(cache)
    assert derived
    # a package's sha256 in the cached Packages text, and junk appended to every derived file
    index.write_bytes(index.read_bytes().replace(lock.packages[0].sha256.encode(), b"0" * 64))
    for f in derived:
        with open(f, "ab") as out:
            out.write(b"junk")
    res = run("lock", recipe, "-o", tmp_path / "offline.lock", "--cache", cache, "--offline")
    assert res.returncode == 1 and "changed since it was verified" in res.stderr, res.stderr
    # online: the index is fetched and verified again, the side index rebuilt; the same lock results
    assert run("lock", recipe, "-o", tmp_path / "b.lock", "--cache", cache, "-q").returncode == 0
    assert (tmp_path / "b.lock").read_bytes() == before
    side = [f for f in derived if f.suffix == ".debindex"]
    assert side and not any(f.read_bytes().endswith(b"junk") for f in side)
    assert run("lock", recipe, "-o", tmp_path / "c.lock", "--cache", cache, "--offline", "-q").returncode == 0


def test_tampered_solv_is_not_used_by_a_whole_archive_resolution(locked, tmp_path):
    """`policy stay` and weak dependencies load the whole archive through libsolv's .solv cache: one
    anyone else wrote (unsealed) is rebuilt from the verified index, never read."""
    recipe, cache = locked
    weak = tmp_path / "weak.toml"
    weak.write_text(recipe.read_text().replace("\n[[repositories]]", "\nweak = true\n\n[[repositories]]", 1))
    assert run("lock", weak, "-o", tmp_path / "w1.lock", "--cache", cache, "--offline", "-q").returncode == 0
    solv = next((cache / "solv").glob("*.solv"))
    with open(solv, "ab") as f:
        f.write(b"junk")
    assert run("lock", weak, "-o", tmp_path / "w2.lock", "--cache", cache, "--offline", "-q").returncode == 0
    assert (tmp_path / "w2.lock").read_bytes() == (tmp_path / "w1.lock").read_bytes()
    assert not solv.read_bytes().endswith(b"junk")


def test_seals_are_bound_to_the_local_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("CERNVM_BUILD_SEAL_KEY", str(tmp_path / "key-a"))
    store = ContentStore(tmp_path / "cache")
    f = tmp_path / "cache" / "derived" / "x"
    f.parent.mkdir(parents=True)
    f.write_bytes(b"verified content")
    store.remember(f)
    assert store.trusted(f)
    f.write_bytes(b"verified content")                 # same bytes, but rewritten: a new ctime
    assert store.trusted(f)                            # the sealed digest still matches the content
    f.write_bytes(b"other content!!!")
    assert not store.trusted(f)
    f.write_bytes(b"verified content")
    store.remember(f)
    from cernvm_build.util import content_store

    monkeypatch.setenv("CERNVM_BUILD_SEAL_KEY", str(tmp_path / "key-b"))   # another machine's secret
    content_store._seal_key.cache_clear()
    assert not store.trusted(f)
    assert (tmp_path / "key-a").stat().st_mode & 0o777 == 0o600
