"""Boot the ISO under qemu (TCG, 2 vCPUs) against a repository served by the test on the host.

The guest reaches the host's loopback at 10.0.2.2 (qemu user networking); everything is asserted on
the serial console. Each boot of the fixture snapshot takes ~15 s with software emulation.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from boot_helpers import BOOT_LOCK, CLIENT_LOCK, FQRN, MARKER, fetch_options, make_boot_tree

from cernvm_build.boot.iso import IsoOptions, build_iso
from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot, extract_from_iso
from cernvm_build.cvmfs.keys import create_keys
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.serve import serve_in_thread

pytestmark = [pytest.mark.boot, pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no qemu")]
BOOT_TIMEOUT = 240


@pytest.fixture
def served(repo, keys, tmp_path):
    tree = make_boot_tree(tmp_path / "tree")
    lock = tmp_path / "closure.lock.toml"
    lock.write_text('lock-version = 1\nname = "boot-fixture"\n')
    r = publish(tree, repo, keys, PublishOptions(tag="v1", lock_file=lock, durable=False))
    server, url = serve_in_thread(repo)
    port = server.server_address[1]
    yield tree, f"http://{HOST_FROM_GUEST}:{port}", lock, r
    server.shutdown()


def _iso(tmp_path: Path, url: str, pubkey: Path, name: str = "boot.iso", **kw) -> Path:
    opts = IsoOptions(boot_lock=BOOT_LOCK, repo_url=url, pubkeys=[pubkey], fetch=fetch_options(), **kw)
    return build_iso(tmp_path / name, opts).path


@pytest.mark.parametrize("firmware, user_space", [("bios", "host"), ("uefi", "host"), ("bios", "lock")])
def test_boot_runs_the_snapshot_init_and_powers_off(served, keys, tmp_path, firmware, user_space):
    """The same ISO boots by BIOS (isolinux) and by UEFI (OVMF -> GRUB EFI image -> same kernel); with
    --client-lock, busybox, the client (compiled in the lock's chroot) and its libraries come from a lock."""
    if user_space == "lock" and os.geteuid() != 0:
        pytest.skip("compiling in the client lock's chroot needs root")
    tree, url, lock, r = served
    extra = {"client_lock": CLIENT_LOCK} if user_space == "lock" else {}
    iso = _iso(tmp_path, url, keys / f"{FQRN}.pub", tag="v1", **extra)
    run = boot(QemuOptions(iso=iso, firmware=firmware), tmp_path / "serial.log", BOOT_TIMEOUT, MARKER)
    assert run.exited, f"guest did not power off within {BOOT_TIMEOUT} s:\n{run.tail()}"
    out = run.console
    assert "SNAPSHOT-INIT: pid 1 running /sbin/init from the snapshot" in out, run.tail()
    assert 'PRETTY_NAME="CernVM fixture snapshot"' in out
    assert f"LOCK-DIGEST: {hashlib.sha256(lock.read_bytes()).hexdigest()}" in out
    assert f"mounted {FQRN} revision {r.revision} tag v1 (root catalog {r.root_hash})" in out
    assert "overlay / overlay" in out and "/mnt/.ro fuse.cvmfs-mini ro" in out
    assert MARKER in out
    if firmware == "uefi":          # the kernel was started by GRUB through the EFI stub, not isolinux
        assert "efi: EFI v" in out and "ISOLINUX" not in out, run.tail()
    print(f"{firmware}, {user_space} user space: boot to marker: {run.marker_seconds:.1f} s, "
          f"total {run.seconds:.1f} s")


def test_boot_with_wrong_key_refuses_with_clear_message(served, tmp_path):
    _, url, _, _ = served
    other = tmp_path / "other-keys"
    create_keys(other, FQRN, 1_700_000_000)
    iso = _iso(tmp_path, url, other / f"{FQRN}.pub", tag="v1", error_timeout=2)
    run = boot(QemuOptions(iso=iso), tmp_path / "serial.log", BOOT_TIMEOUT)
    assert run.exited, run.tail()
    out = run.console
    assert f"cvmfs-mini: error: .cvmfswhitelist of {FQRN} is not signed by the given master key" in out, run.tail()
    assert "cernvm-boot: ERROR: cannot mount the snapshot" in out
    assert "press Enter within 2 s for a rescue shell" in out and "cernvm-boot: powering off" in out
    assert "SNAPSHOT-INIT" not in out and MARKER not in out


def test_scratch_disk_stay_then_rebase(served, repo, keys, tmp_path):
    tree, url, _, r1 = served
    disk = tmp_path / "scratch.img"
    with open(disk, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "CVMSCRATCH", str(disk)], check=True)
    iso = _iso(tmp_path, url, keys / f"{FQRN}.pub")  # no tag: the newest revision on first boot
    first = boot(QemuOptions(iso=iso, disk=disk), tmp_path / "serial1.log", BOOT_TIMEOUT, MARKER)
    assert MARKER in first.console and "scratch disk /dev/vda" in first.console, first.tail()
    assert f"root catalog {r1.root_hash}" in first.console

    (tree / "etc" / "os-release").write_text('PRETTY_NAME="CernVM fixture snapshot v2"\n')
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", durable=False))
    second = boot(QemuOptions(iso=iso, disk=disk), tmp_path / "serial2.log", BOOT_TIMEOUT, MARKER)
    assert f"snapshot: stay on {r1.root_hash}" in second.console, second.tail()
    assert 'PRETTY_NAME="CernVM fixture snapshot"' in second.console and "v2" not in second.console.split(
        "SNAPSHOT-INIT")[-1]

    # the same kernel and initramfs, with cvmfs.rebase=1 on the command line: move to the newest
    kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
    initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
    third = boot(QemuOptions(kernel=kernel, initrd=initrd, disk=disk,
                             append="console=ttyS0,115200 cvmfs.rebase=1"), tmp_path / "serial3.log",
                 BOOT_TIMEOUT, MARKER)
    assert f"snapshot: rebase from {r1.root_hash}" in third.console, third.tail()
    assert f"root catalog {r2.root_hash}" in third.console
    assert 'PRETTY_NAME="CernVM fixture snapshot v2"' in third.console
    fourth = boot(QemuOptions(kernel=kernel, initrd=initrd, disk=disk, append="console=ttyS0,115200"),
                  tmp_path / "serial4.log", BOOT_TIMEOUT, MARKER)
    assert f"snapshot: stay on {r2.root_hash}" in fourth.console, fourth.tail()


def test_pinned_iso_boots_its_root_hash_until_rebased(served, repo, keys, tmp_path):
    """The pipeline's ISO: pinned to the snapshot it was built for (tag v1 is a label). After the
    repository moved on, it still boots that root hash; cvmfs.rebase=1 moves to the newest revision."""
    tree, url, _, r1 = served
    iso = _iso(tmp_path, url, keys / f"{FQRN}.pub", tag="v1", root_hash=r1.root_hash)
    (tree / "etc" / "os-release").write_text('PRETTY_NAME="CernVM fixture snapshot v2"\n')
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", durable=False))
    pinned = boot(QemuOptions(iso=iso), tmp_path / "serial1.log", BOOT_TIMEOUT, MARKER)
    assert f"snapshot: root hash {r1.root_hash} (tag v1), the one this ISO was built for" in pinned.console, \
        pinned.tail()
    assert f"root catalog {r1.root_hash}" in pinned.console and "v2" not in pinned.console.split("SNAPSHOT-INIT")[-1]
    kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
    initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
    moved = boot(QemuOptions(kernel=kernel, initrd=initrd, append="console=ttyS0,115200 cvmfs.rebase=1"),
                 tmp_path / "serial2.log", BOOT_TIMEOUT, MARKER)
    assert "snapshot: tag newest" in moved.console and f"root catalog {r2.root_hash}" in moved.console, moved.tail()
    assert 'PRETTY_NAME="CernVM fixture snapshot v2"' in moved.console


@pytest.mark.skipif(os.geteuid() != 0, reason="rootfs --mode install needs root")
def test_unmodified_iso_boots_bookworm_minimal_systemd_to_login(tmp_path):
    """(c) The real thing: the bookworm minimal lock built with maintainer scripts, published, booted
    by systemd from the snapshot to the serial login prompt. ~60 s rootfs + ~10 s publish + ~25 s boot."""
    from boot_helpers import CountingServer, build_minimal_snapshot, repo_bytes

    repo, keydir, r, stages = build_minimal_snapshot(tmp_path)
    server = CountingServer(repo)
    try:
        iso = _iso(tmp_path, f"http://{HOST_FROM_GUEST}:{server.port}", keydir / "os.example.org.pub",
                   tag="bookworm-minimal")
        for firmware in ("bios", "uefi"):     # the same ISO, booted by both firmwares
            server.reset()
            run = boot(QemuOptions(iso=iso, firmware=firmware), tmp_path / f"serial-{firmware}.log", 600,
                       "login:", stop_at_marker=True)
            out = run.console
            assert run.marker_seconds is not None, f"{firmware}: no login prompt within 600 s:\n{run.tail()}"
            assert f"root catalog {r.root_hash}" in out and "Debian GNU/Linux 12" in out
            assert "Started serial-getty@ttyS0" in out.replace("\x1b[0;1;39m", "")
            assert "FAILED" not in out, [ln for ln in out.splitlines() if "FAILED" in ln]
            assert server.bytes < repo_bytes(repo) / 4, "the boot should fetch a small part of the snapshot"
            print(f"{firmware}: stages {stages}; login prompt after {run.marker_seconds:.1f} s; fetched "
                  f"{server.bytes / 1e6:.1f} MB in {server.requests} requests of {repo_bytes(repo) / 1e6:.1f} MB")
        # through a site squid: the repository URL is the host's loopback, which the guest cannot reach
        # itself, so every byte of this boot comes through the proxy (10.0.2.2 is the host's 127.0.0.1)
        from tests.support.squid import SQUID, Squid

        if os.path.exists(SQUID):
            squid = Squid(tmp_path, "bookworm").start()
            try:
                server.reset()
                kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
                initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
                append = (f"console=ttyS0,115200 cvmfs.url=http://127.0.0.1:{server.port} "
                          f"cvmfs.proxy=http://{HOST_FROM_GUEST}:{squid.port}")
                run = boot(QemuOptions(kernel=kernel, initrd=initrd, append=append),
                           tmp_path / "serial-squid.log", 600, "login:", stop_at_marker=True)
                assert run.marker_seconds is not None, f"through squid: no login prompt:\n{run.tail()}"
                assert f"root catalog {r.root_hash}" in run.console and server.requests > 0
                assert len(squid.access()) >= server.requests
                print(f"through squid: login prompt after {run.marker_seconds:.1f} s; {server.requests} requests "
                      f"reached the server, {len(squid.access())} passed squid")
            finally:
                squid.cleanup()
    finally:
        server.shutdown()
