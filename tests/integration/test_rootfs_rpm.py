"""rpm root trees and bundles from a lock of a real rpm-md repository (rpmbuild, createrepo_c, rpm).

The module builds its own copy of the fixture repository with three extra packages: one with a Lua
%post (rpm runs Lua itself, so the tree needs no /bin/sh) and a hostile pair whose first package
ships an absolute symlink that the second one's payload tries to write through.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.lock.lockfile import lock_epoch, read_lock
from cernvm_build.rootfs.digest import iter_entries, tree_digest
from tests.support.rpmrepo import Pkg, RpmRepo, build_fixture

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="rpm scriptlets run chrooted: install mode needs root")
POST = 'local f = io.open("/usr/share/scripted/post-ran", "w"); f:write("post ran\\n"); f:close()'


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("rpmroot")
    escape = root / "outside"
    escape.mkdir()
    extra = (
        Pkg("scripted", arch="noarch", spec="scripted", requires=("app",), post_lua=POST),
        Pkg("evil-link", arch="noarch", spec="evil1", symlinks=(("/opt/escape", str(escape)),)),
        Pkg("evil-file", arch="noarch", spec="evil2", requires=("evil-link",), files=("/opt/escape/pwned",)),
        Pkg("capped", arch="noarch", spec="capped", files=("/usr/bin/pinger", "/usr/bin/tracer", "/usr/bin/plain"),
            caps=(("/usr/bin/pinger", "cap_net_raw=ep"),
                  ("/usr/bin/tracer", "cap_chown+ei cap_net_admin,cap_sys_ptrace+ep"))),
    )
    r = build_fixture(root / "fx", extra)
    try:
        yield r, escape
    finally:
        r.gpg.close()


def _lock(r: RpmRepo, tmp: Path, packages: list[str], name: str = "r") -> Path:
    out = tmp / f"{name}.lock.toml"
    assert main(["lock", str(r.recipe(tmp / f"{name}.toml", packages)), "-o", str(out),
                 "--cache", str(tmp / "mdcache"), "-q"]) == 0
    return out


def _rootfs(lock: Path, dest: Path, cache: Path, mode: str = "unpack", *extra: str) -> Path:
    assert main(["rootfs", str(lock), str(dest), "--cache", str(cache), "--mode", mode, "-q", *extra]) == 0
    return dest


def rpm_qa(root: Path) -> list[str]:
    """The host's rpm, not our code, reads the tree's database."""
    r = subprocess.run(["rpm", "--root", str(root), "--dbpath", "/var/lib/rpm", "-qa", "--qf",
                        "%{NAME}-%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}.%{ARCH}\\n"],
                       capture_output=True, text=True, check=True)
    return sorted(r.stdout.split())


def lock_nevras(lock: Path) -> list[str]:
    return sorted(f"{p.name}-{p.evr}.{p.arch}" for p in read_lock(lock).packages)


PKGS = ["app", "toolbox", "optuser", "scripted"]


def test_rpm_unpack_tree(repo, tmp_path):
    r, _ = repo
    lock = _lock(r, tmp_path, PKGS)
    before = time.monotonic()
    root = _rootfs(lock, tmp_path / "root", tmp_path / "cache")
    seconds = time.monotonic() - before
    assert (root / "usr/share/app/app.txt").read_text() == "#!/bin/sh\necho app\n"
    assert stat.S_IMODE(os.stat(root / "usr/bin/foo").st_mode) == 0o755      # from foo-tools (epoch 1)
    assert (root / "opt/optdata/data.txt").is_file()
    assert rpm_qa(root) == lock_nevras(lock) and "foo-tools-1:3.1-1.x86_64" in rpm_qa(root)
    assert not (root / "usr/share/scripted/post-ran").exists()              # unpack runs no scriptlet
    db = root / "var/lib/rpm"
    assert sorted(p.name for p in db.iterdir()) == [".rpm.lock", "rpmdb.sqlite"]   # no -wal/-shm
    sde = lock_epoch(read_lock(lock))
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            assert os.lstat(os.path.join(dirpath, n)).st_mtime <= sde
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cache", "mdcache", "root"]
    assert seconds < 10


def test_rpm_unpack_twice_same_digest_and_query_keeps_it(repo, tmp_path):
    r, _ = repo
    lock = _lock(r, tmp_path, PKGS)
    a = _rootfs(lock, tmp_path / "a", tmp_path / "cache")
    time.sleep(1.1)                                  # the wall clock must not reach the tree or the rpmdb
    b = _rootfs(lock, tmp_path / "elsewhere" / "b", tmp_path / "cache")
    digest = tree_digest(a, mtimes=True)
    assert digest == tree_digest(b, mtimes=True)
    assert (a / "var/lib/rpm/rpmdb.sqlite").read_bytes() == (b / "var/lib/rpm/rpmdb.sqlite").read_bytes()
    rpm_qa(a)                                        # a reader does not leave -wal/-shm behind
    assert tree_digest(a, mtimes=True) == digest


@needs_root
def test_rpm_install_runs_scriptlets_and_is_reproducible(repo, tmp_path):
    r, _ = repo
    lock = _lock(r, tmp_path, PKGS)
    a = _rootfs(lock, tmp_path / "a", tmp_path / "cache", "install")
    assert (a / "usr/share/scripted/post-ran").read_text() == "post ran\n"
    assert rpm_qa(a) == lock_nevras(lock)
    assert not (a / "proc").exists() and not (a / "dev").exists()   # transaction-only mounts and nodes
    time.sleep(1.1)
    b = _rootfs(lock, tmp_path / "b", tmp_path / "cache", "install")
    assert tree_digest(a, mtimes=True) == tree_digest(b, mtimes=True)
    # install = unpack + what the scriptlet wrote: same files, same owners, same rpmdb bytes
    u = _rootfs(lock, tmp_path / "u", tmp_path / "cache", "unpack")
    diff = set(iter_entries(a)) ^ set(iter_entries(u))
    assert [line.split("\t")[0] for line in diff] == ["usr/share/scripted/post-ran"]


def test_rpm_hostile_payload_refused(repo, tmp_path, capsys):
    r, escape = repo
    lock = _lock(r, tmp_path, ["evil-file"])
    capsys.readouterr()
    rc = main(["rootfs", str(lock), str(tmp_path / "root"), "--cache", str(tmp_path / "cache"), "-q"])
    err = capsys.readouterr().err
    assert rc != 0
    assert "evil-file" in err and "absolute" in err and "/opt/escape" in err
    assert list(escape.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cache", "mdcache"]


def test_rpm_bundle_respawns_offline(repo, tmp_path, capsys):
    r, _ = repo
    lock = _lock(r, tmp_path, PKGS)
    out = tmp_path / "bundle"
    assert main(["bundle", str(lock), str(out), "--cache", str(tmp_path / "cache"), "-q"]) == 0
    closure = read_lock(lock)
    inv = json.loads((out / "cernvm-bundle.json").read_text())
    assert inv["flavour"] == "rpm" and inv["packages"] == len(closure.packages)
    assert (out / "repos/fixture/repodata/repomd.xml").is_file()

    # moved away from the original repository and with empty caches
    moved = tmp_path / "archive" / "bundle"
    moved.parent.mkdir()
    shutil.move(out, moved)
    blk = moved / lock.name
    capsys.readouterr()
    assert main(["fetch", str(blk), "--mirror", str(moved), "--offline", "--cache", str(tmp_path / "c2")]) == 0
    assert f"{len(closure.packages)} from mirror" in capsys.readouterr().out
    assert main(["rootfs", str(blk), str(tmp_path / "r1"), "--offline", "--cache", str(tmp_path / "c3"),
                 "-q"]) == 0
    _rootfs(lock, tmp_path / "r2", tmp_path / "cache")
    assert tree_digest(tmp_path / "r1", mtimes=True) == tree_digest(tmp_path / "r2", mtimes=True)

    # the bundle's createrepo_c repository is a working rpm-md repository: re-locking the same list
    # against it (unsigned: the bundle carries the lock, not the original repomd signature) gives
    # the same packages with the same checksums
    recipe = r.recipe(tmp_path / "again.toml", PKGS, repo=moved / "repos/fixture", gpgcheck=False)
    again = tmp_path / "again.lock.toml"
    assert main(["lock", str(recipe), "-o", str(again), "--cache", str(tmp_path / "md2"), "-q"]) == 0
    assert ({(p.name, p.evr, p.sha256, p.location) for p in read_lock(again).packages}
            == {(p.name, p.evr, p.sha256, p.location) for p in closure.packages})


@needs_root
def test_file_capabilities_same_in_unpack_and_install_mode(repo, tmp_path):
    """%caps from the rpm header land as security.capability in both modes, byte for byte as rpm
    (libcap) writes them, and survive into the tree digest."""
    r, _ = repo
    lock = _lock(r, tmp_path, ["capped"])
    trees = {m: _rootfs(lock, tmp_path / m, tmp_path / "cache", m) for m in ("unpack", "install")}
    for name, text in (("pinger", "cap_net_raw=ep"), ("tracer", "cap_chown=ei cap_net_admin,cap_sys_ptrace+ep")):
        got = {m: os.getxattr(t / "usr/bin" / name, "security.capability") for m, t in trees.items()}
        assert got["unpack"] == got["install"], name
        shown = subprocess.run(["getcap", str(trees["unpack"] / "usr/bin" / name)], capture_output=True,
                               text=True, check=True).stdout
        assert shown.split(maxsplit=1)[1].strip() == text, shown      # libcap's reading of our bytes
    with pytest.raises(OSError):
        os.getxattr(trees["unpack"] / "usr/bin/plain", "security.capability")
    lines = {m: [ln for ln in iter_entries(t) if ln.startswith("usr/bin/pinger")] for m, t in trees.items()}
    assert lines["unpack"] == lines["install"] and "security.capability=0100000200200000" in lines["unpack"][0]


@needs_root
def test_install_mode_ignores_host_rpm_configuration(repo, tmp_path):
    """A host /etc/rpm/macros.* (here: %_netsharedpath /usr/share, %_excludedocs 1) must not change
    the tree: rpm is given only its own rpmrc and macros."""
    r, _ = repo
    lock = _lock(r, tmp_path, ["app"])
    clean = _rootfs(lock, tmp_path / "clean", tmp_path / "cache", "install")
    etc = Path("/etc/rpm")
    made_dir = not etc.exists()
    host = etc / "macros.zz-cernvm-build-test"
    etc.mkdir(exist_ok=True)
    host.write_text("%_netsharedpath /usr/share\n%_excludedocs 1\n%_install_langs C\n")
    try:
        assert subprocess.run(["rpm", "--eval", "%{_netsharedpath}"], capture_output=True, text=True,
                              check=True).stdout.strip() == "/usr/share"     # the host rpm does see it
        dirty = _rootfs(lock, tmp_path / "dirty", tmp_path / "cache", "install")
    finally:
        host.unlink()
        if made_dir:
            etc.rmdir()
    assert (dirty / "usr/share/app/app.txt").is_file()
    assert tree_digest(dirty) == tree_digest(clean)
