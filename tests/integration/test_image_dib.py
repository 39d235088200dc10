"""`image LOCK OUT --bootable`: a classic bootable disk image through diskimage-builder (issue 16).

One build (from closures/debian-bookworm-image.lock.toml, with no network: `unshare -n`, packages from the
cache) and one boot under qemu to a root login, within the suite's budget (~2 min on 2 cores). Hosts
without device-mapper get the PATH wrappers of tests/support/nodm-bin (tests only; see its README)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cernvm_build.cli import main
from tests.support import nodm

ROOT = Path(__file__).resolve().parents[2]
IMAGE_LOCK = ROOT / "closures" / "debian-bookworm-image.lock.toml"
NO_GRUB_LOCK = ROOT / "closures" / "debian-bookworm-minimal.lock.toml"
NO_KERNEL_LOCK = ROOT / "closures" / "boot-client.lock.toml"
PASSWORD = "cernvm-test"                       # the test image's root password (test only)
MARKER = "CERNVM-DISK-42 "


def _dib() -> str | None:
    return shutil.which("disk-image-create") or (
        str(Path(sys.executable).parent / "disk-image-create")
        if (Path(sys.executable).parent / "disk-image-create").exists() else None)


needs_build = [pytest.mark.skipif(os.geteuid() != 0, reason="diskimage-builder needs root (loop devices, mounts)"),
               pytest.mark.skipif(_dib() is None, reason="diskimage-builder missing (pip group `dib`)"),
               pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare missing")]


def _error_line(capsys, argv: list[str]) -> str:
    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


# ---- bad input: one line each --------------------------------------------------------------------------

def test_lock_without_bootloader_is_one_line(capsys, tmp_path):
    line = _error_line(capsys, ["image", str(NO_GRUB_LOCK), str(tmp_path / "x.qcow2"), "--bootable"])
    assert "no bootloader package" in line and "grub-pc" in line
    assert not list(tmp_path.iterdir())


def test_lock_without_kernel_is_one_line(capsys, tmp_path):
    line = _error_line(capsys, ["image", str(NO_KERNEL_LOCK), str(tmp_path / "x.qcow2"), "--bootable"])
    assert "no kernel package" in line


def test_tree_without_kernel_is_one_line(capsys, tmp_path):
    (tmp_path / "tree/boot").mkdir(parents=True)
    line = _error_line(capsys, ["image", str(tmp_path / "tree"), str(tmp_path / "x.raw"), "--bootable"])
    assert "no kernel" in line


def test_not_root_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    line = _error_line(capsys, ["image", str(IMAGE_LOCK), str(tmp_path / "x.qcow2"), "--bootable"])
    assert "needs root" in line


def test_dib_missing_is_one_line(capsys, tmp_path, monkeypatch):
    import cernvm_build.image.dib as dib

    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(dib.sys, "executable", str(tmp_path / "python"))
    line = _error_line(capsys, ["image", str(IMAGE_LOCK), str(tmp_path / "x.qcow2"), "--bootable"])
    assert "disk-image-create not found" in line and "[dib]" in line


def test_password_hash_needs_bootable(capsys, tmp_path):
    line = _error_line(capsys, ["image", str(tmp_path), str(tmp_path / "x.qcow2"), "--root-password-hash", "x"])
    assert "--bootable" in line


# ---- one build without network, one boot ---------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.network
@pytest.mark.boot
@needs_build[0]
@needs_build[1]
@needs_build[2]
def test_bootable_image_from_lock_builds_without_network_and_boots(tmp_path):
    from cernvm_build.boot.qemu import QemuOptions, boot

    # packages first (the network part), then the whole image build in a network namespace of its own
    assert main(["fetch", str(IMAGE_LOCK), "-q"]) == 0
    pw_hash = subprocess.run(["openssl", "passwd", "-6", "-salt", "cernvmtest", PASSWORD], check=True,
                             capture_output=True, text=True).stdout.strip()
    out = tmp_path / "disk.qcow2"
    t0 = time.monotonic()
    r = subprocess.run(["unshare", "-n", sys.executable, "-m", "cernvm_build.cli", "image", str(IMAGE_LOCK), str(out),
                        "--bootable", "--format", "qcow2", "--offline", "--root-password-hash", pw_hash,
                        "--dib-log", str(tmp_path / "dib.log")],
                       env=nodm.env(dict(os.environ, PYTHONPATH=str(ROOT))), capture_output=True, text=True)
    build_s = time.monotonic() - t0
    assert r.returncode == 0, (r.stderr or r.stdout)[-3000:]
    assert out.is_file() and not list(tmp_path.glob(".disk.qcow2*")), list(tmp_path.iterdir())
    info = subprocess.run(["qemu-img", "info", str(out)], capture_output=True, text=True, check=True).stdout
    assert "file format: qcow2" in info
    log = (tmp_path / "dib.log").read_text(errors="replace")
    assert "install-packages -m bootloader" not in log      # GRUB from the lock's tree, nothing installed
    assert "Installing for i386-pc platform." in log

    keys = [("login:", b"root\r"), ("Password:", PASSWORD.encode() + b"\r"),
            ("root@", b"echo CERNVM-DISK-$((6*7)) $(findmnt -n -o SOURCE,FSTYPE /); poweroff\r")]
    run = boot(QemuOptions(disk=out, disk_format="qcow2", memory_mb=1024), tmp_path / "serial.log", 400,
               MARKER, keys=keys)
    console = run.console
    assert MARKER + "/dev/vda1 ext4" in console, run.tail()
    login_at = console.find("login:")
    assert "Debian GNU/Linux 12" in console and login_at > 0
    print(f"\nbootable image: build {build_s:.1f}s (tree from the lock + disk-image-create), "
          f"{out.stat().st_size / 2**20:.0f} MiB qcow2; boot to the login, root shell and power-off "
          f"{run.marker_seconds or run.seconds:.1f}s")
