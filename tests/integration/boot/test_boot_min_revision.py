"""The initramfs passes `cvmfs.min_revision=N` from the kernel command line to the client (qemu, slow)."""

from __future__ import annotations

import shutil

import pytest

from cernvm_build.boot.iso import IsoOptions, build_iso
from cernvm_build.boot.qemu import HOST_FROM_GUEST, QemuOptions, boot, extract_from_iso
from cernvm_build.cvmfs.publish import PublishOptions, publish
from cernvm_build.cvmfs.serve import serve_in_thread

from boot_helpers import BOOT_LOCK, FQRN, MARKER, fetch_options, make_boot_tree

pytestmark = [pytest.mark.boot, pytest.mark.skipif(not shutil.which("qemu-system-x86_64"), reason="no qemu")]
BOOT_TIMEOUT = 240


def test_min_revision_on_the_kernel_command_line_refuses_an_older_repository(repo, keys, tmp_path):
    tree = make_boot_tree(tmp_path / "tree")
    r = publish(tree, repo, keys, PublishOptions(tag="v1", durable=False))
    server, url = serve_in_thread(repo)
    try:
        url = f"http://{HOST_FROM_GUEST}:{server.server_address[1]}"
        opts = IsoOptions(boot_lock=BOOT_LOCK, repo_url=url, pubkeys=[keys / f"{FQRN}.pub"],
                          fetch=fetch_options(), tag="v1", error_timeout=1)
        iso = build_iso(tmp_path / "boot.iso", opts).path
        kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
        initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
        want = r.revision + 1
        append = f"console=ttyS0,115200 cvmfs.min_revision={want}"
        run = boot(QemuOptions(kernel=kernel, initrd=initrd, append=append), tmp_path / "serial.log",
                   BOOT_TIMEOUT)
    finally:
        server.shutdown()
    assert run.exited, run.tail()
    out = run.console
    assert f"older than the minimum revision {want}: refusing to mount" in out, run.tail()
    assert "cernvm-boot: ERROR: cannot mount the snapshot" in out
    assert "SNAPSHOT-INIT" not in out and MARKER not in out
