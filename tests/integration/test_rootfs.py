"""rootfs: unpack/install from a lock, bit-identical across builds, and safe against hostile payloads."""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.errors import RootfsError
from cernvm_build.lock.lockfile import Closure, LockedPackage, Solver, lock_epoch, read_lock
from cernvm_build.rootfs import install_order
from cernvm_build.rootfs.digest import tree_digest
from cernvm_build.rootfs.safety import SafeTree
from tests.support.debrepo import DebPkg, build_deb_repo, tar_bytes

IS_ROOT = os.geteuid() == 0


def _build(lock, dest, cache, mode="unpack", *extra):
    rc = main(["rootfs", str(lock), str(dest), "--cache", str(cache), "--mode", mode, "-q", *extra])
    assert rc == 0
    return dest


def test_install_order_dependencies_first_cycles_by_name():
    def pkg(n, *deps):
        return LockedPackage(n, 0, "1", "", "all", "r", f"{n}.deb", 1, "0" * 64, tuple(deps))

    c = Closure("t", "deb", "amd64", "", Solver(), (), (), (),
                (pkg("z"), pkg("b", "z"), pkg("a", "z"), pkg("libc", "libgcc"), pkg("libgcc", "libc"),
                 pkg("app", "a", "b", "libc")))
    assert [p.name for p in install_order(c)] == ["libc", "libgcc", "z", "a", "b", "app"]


def test_unpack_tree_contents(fixture_lock, tmp_path):
    root = _build(fixture_lock, tmp_path / "root", tmp_path / "cache")
    assert (root / "usr/bin/alpha").read_text() == "#!/bin/sh\necho alpha\n"
    assert os.readlink(root / "usr/bin/beta") == "alpha"
    st = os.stat(root / "usr/bin/beta-suid")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert os.stat(root / "usr/lib/beta/data").st_ino == os.stat(root / "usr/lib/beta/data-link").st_ino
    assert stat.S_IMODE(os.stat(root / "var/lib/beta").st_mode) == 0o700
    assert (root / "etc/machine-id").read_bytes() == b""
    status = (root / "var/lib/dpkg/status").read_text()
    assert status.count("Status: install ok unpacked") == 5
    assert (root / "var/lib/dpkg/info/gamma:amd64.list").read_text().splitlines()[0] == "/."
    assert "/usr/share/alpha-plugins alpha/noawait" in (root / "var/lib/dpkg/triggers/File").read_text()
    # no maintainer script ran in unpack mode
    assert not (root / "var/lib/alpha/log").exists()
    # nothing left beside the tree
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "root"]


def test_same_lock_gives_bit_identical_trees(fixture_lock, tmp_path, capsys):
    cache = tmp_path / "cache"
    a = _build(fixture_lock, tmp_path / "a", cache)
    time.sleep(1.1)                                  # a different wall clock must not matter
    b = _build(fixture_lock, tmp_path / "elsewhere" / "b", cache)
    assert tree_digest(a) == tree_digest(b)
    assert tree_digest(a, mtimes=True) == tree_digest(b, mtimes=True)
    capsys.readouterr()
    assert main(["tree-digest", str(a), "--mtimes"]) == 0
    assert capsys.readouterr().out.strip() == tree_digest(b, mtimes=True)
    sde = lock_epoch(read_lock(fixture_lock))
    assert sde == 1700000000                         # the fixture Release's Date, not the clock
    for dirpath, dirnames, filenames in os.walk(a):
        for n in dirnames + filenames:
            assert os.lstat(os.path.join(dirpath, n)).st_mtime <= sde


def test_tree_digest_sees_modes_contents_and_mtimes(tmp_path):
    (tmp_path / "t").mkdir()
    f = tmp_path / "t" / "f"
    f.write_text("x")
    os.symlink("f", tmp_path / "t" / "l")
    d0, m0 = tree_digest(tmp_path / "t"), tree_digest(tmp_path / "t", mtimes=True)
    os.utime(f, (1, 1))
    assert tree_digest(tmp_path / "t") == d0 and tree_digest(tmp_path / "t", mtimes=True) != m0
    f.chmod(0o600)
    d1 = tree_digest(tmp_path / "t")
    assert d1 != d0
    f.write_text("y")
    assert tree_digest(tmp_path / "t") != d1
    os.unlink(tmp_path / "t" / "l")
    os.symlink("g", tmp_path / "t" / "l")
    assert tree_digest(tmp_path / "t") not in (d0, d1)


# ---- hostile payloads ----------------------------------------------------------------------------

def _ti(name, kind=tarfile.REGTYPE, linkname="", mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname, ti.mode, ti.mtime = kind, linkname, mode, 1700000000
    return ti


EVIL_PAYLOADS = {
    "dotdot": [_ti("./", tarfile.DIRTYPE, mode=0o755), (_ti("./../evil-dotdot"), b"pwned")],
    "absolute": [(_ti("/tmp/cvb-evil-absolute"), b"pwned")],
    "abs-symlink-parent": [_ti("./", tarfile.DIRTYPE, mode=0o755),
                           _ti("./escape", tarfile.SYMTYPE, linkname="{outside}"),
                           (_ti("./escape/evil-abs"), b"pwned")],
    "rel-symlink-parent": [_ti("./", tarfile.DIRTYPE, mode=0o755),
                           _ti("./a", tarfile.DIRTYPE, mode=0o755),
                           _ti("./a/up", tarfile.SYMTYPE, linkname="../../../../../../../../.."),
                           (_ti("./a/up/tmp/evil-rel"), b"pwned")],
    "hardlink-outside": [_ti("./", tarfile.DIRTYPE, mode=0o755),
                         _ti("./passwd", tarfile.LNKTYPE, linkname="../../../etc/passwd")],
}


def _evil_tar(kind: str, outside: Path) -> bytes:
    entries = []
    for e in EVIL_PAYLOADS[kind]:
        ti, data = (e if isinstance(e, tuple) else (e, None))
        ti = _ti(ti.name, ti.type, ti.linkname.replace("{outside}", str(outside)), ti.mode)
        entries.append((ti, data) if data is not None else ti)
    return tar_bytes(entries)


@pytest.mark.parametrize("kind", sorted(EVIL_PAYLOADS))
def test_hostile_payload_refused_at_member_level(kind, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "deep" / "er" / "root"
    root.mkdir(parents=True)
    import io

    with pytest.raises(RootfsError, match="refused|not extracted"):
        SafeTree(root).extract(io.BytesIO(_evil_tar(kind, outside)), "evil 1.0")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "deep" / "er" / "evil-dotdot").exists()
    assert not Path("/tmp/cvb-evil-absolute").exists()
    assert not Path("/tmp/evil-rel").exists()


def test_hostile_package_in_a_lock_leaves_no_tree(tmp_path, capsys):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = build_deb_repo(tmp_path / "repo", [
        DebPkg("nice", files={"/usr/share/nice": "ok\n"}),
        DebPkg("evil", depends=["nice"], data_tar=_evil_tar("abs-symlink-parent", outside)),
    ])
    (tmp_path / "r.toml").write_text(repo.recipe("evil", ["evil"]))
    lock = tmp_path / "evil.lock.toml"
    assert main(["lock", str(tmp_path / "r.toml"), "-o", str(lock), "--cache", str(tmp_path / "c"), "-q"]) == 0
    dest = tmp_path / "out" / "root"
    rc = main(["rootfs", str(lock), str(dest), "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "evil 1.0" in err and "absolute path" in err and "refused" in err
    assert not dest.exists() and list((tmp_path / "out").iterdir()) == []
    assert list(outside.iterdir()) == []


def test_merged_usr_symlinks_are_followed_inside_the_tree(tmp_path):
    import io

    root = tmp_path / "root"
    root.mkdir()
    (root / "usr/bin").mkdir(parents=True)
    os.symlink("usr/bin", root / "bin")
    data = tar_bytes([_ti("./", tarfile.DIRTYPE, mode=0o755), _ti("./bin", tarfile.DIRTYPE, mode=0o755),
                      (_ti("./bin/sh", mode=0o755), b"#!")])
    listing = SafeTree(root).extract(io.BytesIO(data), "sh 1")
    assert listing == ["/.", "/bin", "/bin/sh"]
    assert os.path.islink(root / "bin") and (root / "usr/bin/sh").read_bytes() == b"#!"


def test_device_nodes_skipped_without_root(tmp_path):
    import io

    ti = _ti("./dev/null", tarfile.CHRTYPE, mode=0o666)
    ti.devmajor, ti.devminor = 1, 3
    warnings = []
    tree = SafeTree(tmp_path, as_root=False, warn=warnings.append)
    tree.extract(io.BytesIO(tar_bytes([_ti("./dev", tarfile.DIRTYPE, mode=0o755), ti])), "devs 1")
    assert tree.skipped_devices == ["/dev/null"] and "device node skipped" in warnings[0]
    assert not (tmp_path / "dev/null").exists()


# ---- install mode --------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(not IS_ROOT, reason="install mode chroots into the tree (root only)")


@needs_root
def test_install_mode_runs_maintainer_scripts(fixture_lock, tmp_path):
    root = _build(fixture_lock, tmp_path / "root", tmp_path / "cache", "install")
    log = (root / "var/lib/alpha/log").read_text().splitlines()
    assert log[0] == "preinst install" and log[1].startswith("postinst configure")
    status = (root / "var/lib/dpkg/status").read_text()
    assert status.count("Status: install ok installed") == 5
    assert " /etc/alpha.conf " in status                         # conffile recorded with its md5
    audit = subprocess.run(["dpkg", f"--root={root}", "--audit"], capture_output=True, text=True)
    assert audit.returncode == 0 and audit.stdout.strip() == "", audit.stdout
    q = subprocess.run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Package} ${Version}\n"],
                       capture_output=True, text=True, check=True)
    assert "gamma 1:3.1-2" in q.stdout.splitlines()
    assert not (root / "usr/sbin/policy-rc.d").exists()
    assert not os.path.ismount(root / "proc") and list((root / "proc").iterdir()) == []
    assert stat.S_ISCHR(os.lstat(root / "dev/null").st_mode)
    subprocess.run(["chroot", str(root), "/bin/sh", "-c", "exit 0"], check=True)
    again = _build(fixture_lock, tmp_path / "again", tmp_path / "cache", "install")
    assert tree_digest(root, mtimes=True) == tree_digest(again, mtimes=True)


@needs_root
def test_failing_maintainer_script_leaves_nothing(tmp_path, capsys):
    from tests.support.debrepo import host_shell_package

    repo = build_deb_repo(tmp_path / "repo", [
        host_shell_package(),
        DebPkg("broken", depends=["fixture-sh"], scripts={"postinst": "#!/bin/sh\necho boom >&2\nexit 3\n"}),
    ])
    (tmp_path / "r.toml").write_text(repo.recipe("broken", ["broken"]))
    lock = tmp_path / "b.lock.toml"
    assert main(["lock", str(tmp_path / "r.toml"), "-o", str(lock), "--cache", str(tmp_path / "c"), "-q"]) == 0
    rc = main(["rootfs", str(lock), str(tmp_path / "out" / "root"), "--cache", str(tmp_path / "c"),
               "--mode", "install"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "dpkg --configure -a failed" in err and "boom" in err
    assert not (tmp_path / "out" / "root").exists() and list((tmp_path / "out").iterdir()) == []


def test_rootfs_refuses_existing_dest(fixture_lock, tmp_path, capsys):
    (tmp_path / "root").mkdir()
    assert main(["rootfs", str(fixture_lock), str(tmp_path / "root"), "--cache", str(tmp_path / "c")]) == 1
    assert "already exists" in capsys.readouterr().err
