"""fetch: exactly the lock's packages, verified, into the content-addressed cache; mirrors; resume."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from cernvm_build.cli import main
from cernvm_build.errors import MissingPackagesError, PackageChecksumError
from cernvm_build.lock.lockfile import read_lock, write_lock
from cernvm_build.store.fetch import FetchOptions, fetch_closure
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.files import sha256_file
from tests.support.httpserver import RangeServer


def test_fetch_into_content_addressed_cache(fixture_lock, tmp_path, capsys):
    cache = tmp_path / "cache"
    assert main(["fetch", str(fixture_lock), "--cache", str(cache)]) == 0
    closure = read_lock(fixture_lock)
    store = ContentStore(cache)
    for p in closure.packages:
        f = cache / "packages" / "sha256" / p.sha256[:2] / p.sha256
        assert f.is_file() and sha256_file(f) == p.sha256 and f.stat().st_size == p.size
    assert not list((cache / "packages").glob("tmp/*"))
    report = fetch_closure(closure, store)
    assert sorted(report.cached) == sorted(p.name for p in closure.packages)
    assert report.downloaded == []
    assert "5 packages verified" in capsys.readouterr().out


def test_corrupted_mirror_file_is_refused_naming_the_package(fixture_lock, debrepo, tmp_path, capsys):
    closure = read_lock(fixture_lock)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for p in closure.packages:                       # a flat mirror directory
        shutil.copy(debrepo.root / p.location, mirror)
    beta = closure.package("beta")
    bad = mirror / beta.location.rsplit("/", 1)[1]
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF                     # same size, other content
    bad.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    rc = main(["fetch", str(fixture_lock), "--cache", str(cache), "--mirror", str(mirror), "--offline"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "package beta 2.0-3" in err and "sha256" in err and "refused" in err
    assert not ContentStore(cache).package(beta.sha256).exists()
    assert not list((cache / "packages").glob("tmp/*"))
    # the good ones did enter the cache
    assert ContentStore(cache).has(closure.package("alpha"))
    with pytest.raises(PackageChecksumError, match="beta"):
        fetch_closure(closure, ContentStore(cache), FetchOptions(mirrors=(mirror,), offline=True))


def test_offline_lists_what_is_missing(fixture_lock, tmp_path, capsys):
    closure = read_lock(fixture_lock)
    with pytest.raises(MissingPackagesError) as ei:
        fetch_closure(closure, ContentStore(tmp_path / "empty"), FetchOptions(offline=True))
    assert len(ei.value.missing) == len(closure.packages)
    assert any(m.startswith("gamma 1:3.1-2") for m in ei.value.missing)
    assert main(["fetch", str(fixture_lock), "--cache", str(tmp_path / "empty"), "--offline"]) == 1
    err = capsys.readouterr().err
    assert "missing: delta 0.9" in err


def _http_lock(fixture_lock, url, dest):
    closure = read_lock(fixture_lock)
    closure = dataclasses.replace(
        closure, repositories=tuple(dataclasses.replace(r, url=url) for r in closure.repositories))
    write_lock(closure, dest)
    return read_lock(dest)


def test_resume_partial_download_with_range(fixture_lock, debrepo, tmp_path):
    with RangeServer(debrepo.root) as srv:
        closure = _http_lock(fixture_lock, srv.url, tmp_path / "http.lock.toml")
        store = ContentStore(tmp_path / "cache")
        sh = closure.package("fixture-sh")          # the biggest package (dash + libc)
        full = (debrepo.root / sh.location).read_bytes()
        part = store.partial(sh.sha256)
        part.parent.mkdir(parents=True)
        part.write_bytes(full[: len(full) // 3])
        report = fetch_closure(closure, store, FetchOptions(jobs=3))
        assert "fixture-sh" in report.resumed
        ranges = [r for path, r in srv.state.requests if path.endswith(sh.location.rsplit("/", 1)[1])]
        assert ranges == [f"bytes={len(full) // 3}-"]
        assert sha256_file(store.package(sh.sha256)) == sh.sha256
        assert not part.exists()
        assert report.bytes_transferred < sum(p.size for p in closure.packages)


def test_truncated_transfer_is_retried_and_resumed(fixture_lock, debrepo, tmp_path):
    with RangeServer(debrepo.root) as srv:
        closure = _http_lock(fixture_lock, srv.url, tmp_path / "http.lock.toml")
        sh = closure.package("fixture-sh")
        name = sh.location.rsplit("/", 1)[1]
        srv.state.truncate[name] = 1                 # the first response stops half-way
        store = ContentStore(tmp_path / "cache")
        fetch_closure(closure, store, FetchOptions(jobs=2))
        ranges = [r for path, r in srv.state.requests if path.endswith(name)]
        assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
        assert store.has(sh) and sha256_file(store.package(sh.sha256)) == sh.sha256


def test_tampered_server_file_never_enters_cache(fixture_lock, debrepo, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(debrepo.root, served)
    closure = read_lock(fixture_lock)
    delta = closure.package("delta")
    f = served / delta.location
    f.write_bytes(f.read_bytes()[:-1] + b"\0")
    with RangeServer(served) as srv:
        closure = _http_lock(fixture_lock, srv.url, tmp_path / "http.lock.toml")
        store = ContentStore(tmp_path / "cache")
        with pytest.raises(PackageChecksumError, match="package delta 0.9"):
            fetch_closure(closure, store)
        assert not store.package(delta.sha256).exists()
        assert not store.partial(delta.sha256).exists()
