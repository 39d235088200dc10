"""bundle: a preservation directory from which fetch and rootfs work with no network and no cache."""

from __future__ import annotations

import json
import shutil

from cernvm_build.cli import main
from cernvm_build.lock.lockfile import read_lock
from cernvm_build.rootfs.digest import tree_digest


def test_bundle_respawns_offline(fixture_lock, debrepo, tmp_path, capsys):
    sig = fixture_lock.with_name(fixture_lock.name + ".sigstore.json")
    sig.write_text('{"placeholder": "signature bundle"}\n')
    try:
        out = tmp_path / "bundle"
        assert main(["bundle", str(fixture_lock), str(out), "--cache", str(tmp_path / "cache"), "-q"]) == 0
    finally:
        sig.unlink()
    closure = read_lock(fixture_lock)
    assert (out / fixture_lock.name).read_bytes() == fixture_lock.read_bytes()
    assert (out / sig.name).exists()
    inv = json.loads((out / "cernvm-bundle.json").read_text())
    assert inv["packages"] == 5 and inv["lock"] == fixture_lock.name
    packages = (out / "repos/fixture/dists/stable/main/binary-amd64/Packages").read_text()
    for p in closure.packages:
        assert (out / "repos/fixture" / p.location).is_file()
        assert f"Package: {p.name}\n" in packages and f"SHA256: {p.sha256}" in packages
    assert "SHA256:" in (out / "repos/fixture/dists/stable/Release").read_text()
    assert not list(tmp_path.glob(".bundle.*"))

    # move the bundle somewhere else; the original repository and the cache are not used
    moved = tmp_path / "archive" / "bundle"
    moved.parent.mkdir()
    shutil.move(out, moved)
    lock = moved / fixture_lock.name
    capsys.readouterr()
    assert main(["fetch", str(lock), "--mirror", str(moved), "--offline", "--cache", str(tmp_path / "c2")]) == 0
    assert "5 from mirror" in capsys.readouterr().out
    # rootfs finds the bundle it sits in by itself
    assert main(["rootfs", str(lock), str(tmp_path / "r1"), "--offline", "--cache", str(tmp_path / "c3"), "-q"]) == 0
    assert main(["rootfs", str(fixture_lock), str(tmp_path / "r2"), "--cache", str(tmp_path / "c2"), "-q"]) == 0
    assert tree_digest(tmp_path / "r1", mtimes=True) == tree_digest(tmp_path / "r2", mtimes=True)
