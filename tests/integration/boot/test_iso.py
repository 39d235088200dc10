"""Kernel modules, initramfs and ISO: contents, size, determinism (no boot; see test_boot.py)."""

from __future__ import annotations

import hashlib
import lzma
import subprocess
from pathlib import Path

import pytest
from boot_helpers import BOOT_LOCK, FQRN, fetch_options
from cvmfs_helpers import run_cli

from cernvm_build.boot import initramfs
from cernvm_build.boot.iso import IsoOptions, MenuEntry, build_iso
from cernvm_build.boot.kernel import modinfo_depends, resolve_modules
from cernvm_build.boot.qemu import extract_from_iso
from cernvm_build.errors import BootError

MAX_ISO = 15 * 2**20


def test_kernel_modules_resolved_with_dependencies(boot_kernel):
    mods = [Path(m).name for m in boot_kernel.modules]
    for need in ("virtio_net.ko", "virtio_pci.ko", "virtio_blk.ko", "fuse.ko", "overlay.ko", "ext4.ko"):
        assert need in mods
    # dependencies come before the modules that need them
    assert mods.index("virtio.ko") < mods.index("virtio_pci.ko") < mods.index("virtio_net.ko")
    assert mods.index("jbd2.ko") < mods.index("ext4.ko") and mods.index("failover.ko") < mods.index("net_failover.ko")
    assert "af_packet" in boot_kernel.builtin
    ext4 = (boot_kernel.root / boot_kernel.modules[mods.index("ext4.ko")]).read_bytes()
    assert {"jbd2", "mbcache"} <= set(modinfo_depends(ext4))
    with pytest.raises(BootError, match="no module or built-in driver named nosuchdriver"):
        resolve_modules(boot_kernel.root, ["nosuchdriver"])


def test_cpio_is_sorted_with_fixed_metadata():
    a = initramfs.Archive(mtime=1_700_000_000)
    a.file("z/file", b"x" * 5, 0o600)
    a.symlink("bin/sh", "busybox")
    a.device("dev/console", 0o020000, 5, 1)
    out = subprocess.run(["cpio", "-itv", "--quiet"], input=a.cpio(), capture_output=True, check=True).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in out.splitlines()]
    assert names == sorted(names) and set(names) == {"bin", "bin/sh", "dev", "dev/console", "z", "z/file"}
    assert all("2023" in line and " root " in line for line in out.splitlines())
    assert a.cpio() == a.cpio()


MENU = [MenuEntry("Fixture v1", "v1", description="the newest fixture"), MenuEntry("", "v0", "ab" * 20)]


@pytest.fixture(scope="module")
def iso_pair(tmp_path_factory, session_keys, boot_kernel):
    """Two builds of one ISO with a two-entry boot menu (v1, the default, then v0)."""
    d = tmp_path_factory.mktemp("iso")
    opts = IsoOptions(boot_lock=BOOT_LOCK, repo_url="http://10.0.2.2:8000", pubkeys=[session_keys / f"{FQRN}.pub"],
                      tag="v1", fetch=fetch_options(), menu=MENU)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1700000000")
        first = build_iso(d / "a.iso", opts)
        second = build_iso(d / "b.iso", opts)
    return first, second, d


def test_iso_small_and_deterministic(iso_pair):
    first, second, _ = iso_pair
    assert first.size <= MAX_ISO, f"ISO is {first.size / 2**20:.1f} MiB"
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.sha256 == hashlib.sha256(second.path.read_bytes()).hexdigest()
    assert "console=tty0 console=ttyS0,115200" in first.cmdline


def test_iso_boots_by_bios_and_uefi(iso_pair):
    """El Torito lists isolinux (BIOS) and a FAT image with GRUB as EFI/BOOT/BOOTX64.EFI (UEFI); the
    hybrid image has an MBR and a GPT whose EFI partition is that FAT image; GRUB's built-in script
    loads the very /boot/vmlinuz and /boot/initrd.img isolinux does (stored once)."""
    first, _, d = iso_pair
    report = subprocess.run(["xorriso", "-indev", str(first.path), "-report_el_torito", "plain",
                             "-report_system_area", "plain"], capture_output=True, text=True, check=True).stdout
    assert "El Torito boot img :   1  BIOS  y   none" in report and "/isolinux/isolinux.bin" in report
    assert "El Torito boot img :   2  UEFI  y   none" in report and "/boot/grub/efi.img" in report
    # on a USB stick: the MBR's type-0xEF partition and a GPT entry are that same FAT image
    assert "MBR partition path :   2  /boot/grub/efi.img" in report and " 0xef " in report
    assert "GPT partition path :   2  /boot/grub/efi.img" in report
    efi = extract_from_iso(first.path, "/boot/grub/efi.img", d / "efi.img")
    listing = subprocess.run(["mdir", "-i", str(efi), "-b", "::/EFI/BOOT"], capture_output=True, text=True,
                             check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert listing.split() == ["::/EFI/BOOT/BOOTX64.EFI"]
    grub = subprocess.run(["mtype", "-i", str(efi), "::/EFI/BOOT/BOOTX64.EFI"], capture_output=True,
                          check=True, env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}).stdout
    assert grub[:2] == b"MZ" and efi.stat().st_size <= 1 << 20
    # the built-in script finds this ISO and hands over to normal mode, which reads its grub.cfg
    assert b"set prefix=($root)/boot/grub" in grub
    cfg = extract_from_iso(first.path, "/boot/grub/grub.cfg", d / "grub.cfg").read_bytes()
    assert b"linux /boot/vmlinuz console=tty0 console=ttyS0,115200\n" in cfg      # the default: boot.conf
    assert b"console=ttyS0,115200 cvmfs.tag=v0 cvmfs.root_hash=abab" in cfg
    assert b"initrd /boot/initrd.img" in cfg
    marker = grub.split(b"search --no-floppy --set=root --file ")[1].split(b"\n")[0].decode()
    digest = hashlib.sha256(extract_from_iso(first.path, "/boot/vmlinuz", d / "vmlinuz").read_bytes()
                            + extract_from_iso(first.path, "/boot/initrd.img", d / "initrd").read_bytes() + cfg)
    assert marker == f"/boot/grub/cernvm-{digest.hexdigest()[:16]}"
    extract_from_iso(first.path, marker, d / "marker")


def test_iso_carries_both_menus_and_isolinux_menu_modules(iso_pair):
    """isolinux's menu.c32 with the libraries it loads; both menus list v1 (the default) then v0."""
    first, _, d = iso_pair
    for name in ("ldlinux.c32", "libcom32.c32", "libutil.c32", "menu.c32"):   # (isolinux.bin gets a boot info table)
        host = Path("/usr/lib/syslinux/modules/bios") / name
        assert extract_from_iso(first.path, f"/isolinux/{name}", d / name).read_bytes() == host.read_bytes()
    cfg = extract_from_iso(first.path, "/isolinux/isolinux.cfg", d / "isolinux.cfg").read_text()
    assert "UI menu.c32" in cfg and "TIMEOUT 30" in cfg and "DEFAULT entry0" in cfg
    assert cfg.index("MENU LABEL Fixture v1") < cfg.index("MENU LABEL v0")
    assert f"APPEND console=tty0 console=ttyS0,115200 cvmfs.tag=v0 cvmfs.root_hash={'ab' * 20}" in cfg
    grub = extract_from_iso(first.path, "/boot/grub/grub.cfg", d / "grub.cfg").read_text()
    assert grub.index("menuentry 'Fixture v1' --id entry0") < grub.index("menuentry 'v0' --id entry1")
    assert "set timeout=3" in grub and "set default=0" in grub


def test_initramfs_in_iso_has_client_libraries_keys_modules(iso_pair, boot_kernel, session_keys):
    first, _, d = iso_pair
    initrd = extract_from_iso(first.path, "/boot/initrd.img", d / "initrd.img")
    cfg = extract_from_iso(first.path, "/isolinux/isolinux.cfg", d / "isolinux.cfg").read_text()
    assert "APPEND console=tty0 console=ttyS0,115200" in cfg
    raw = lzma.decompress(initrd.read_bytes())
    listing = subprocess.run(["cpio", "-it", "--quiet"], input=raw, capture_output=True, check=True).stdout.decode()
    names = set(listing.split())
    for need in ("init", "bin/busybox", "bin/sh", "sbin/switch_root", "sbin/cvmfs-mini", "etc/cernvm/boot.conf",
                 "lib64/ld-linux-x86-64.so.2", "lib/x86_64-linux-gnu/libfuse3.so.3",
                 "lib/x86_64-linux-gnu/libcrypto.so.3", "lib/x86_64-linux-gnu/libsqlite3.so.0",
                 f"etc/cvmfs/keys/{FQRN}.pub", "dev/console",
                 f"lib/modules/{boot_kernel.version}/kernel/fs/fuse/fuse.ko"):
        assert need in names, need
    work = d / "unpacked"
    work.mkdir()
    subprocess.run(["cpio", "-id", "--quiet", "init", "etc/cernvm/boot.conf", f"etc/cvmfs/keys/{FQRN}.pub"],
                   input=raw, cwd=work, check=True)
    conf = (work / "etc/cernvm/boot.conf").read_text()
    assert "CVMFS_URL=http://10.0.2.2:8000" in conf and "CVMFS_TAG=v1" in conf
    assert (work / f"etc/cvmfs/keys/{FQRN}.pub").read_bytes() == (session_keys / f"{FQRN}.pub").read_bytes()


def test_iso_cli(tmp_path, session_keys, boot_kernel):
    out = tmp_path / "boot.iso"
    proc = run_cli("iso", "--boot-lock", BOOT_LOCK, "--repo-url", "http://10.0.2.2:8000", "--pubkey",
                   session_keys / f"{FQRN}.pub", "--root-hash", "0" * 40, "-o", out, "--append", "quiet")
    assert out.stat().st_size <= MAX_ISO and b"wrote" in proc.stdout
    assert b"console=tty0 console=ttyS0,115200 quiet" in proc.stdout
    bad = run_cli("iso", "--boot-lock", BOOT_LOCK, "--repo-url", "http://x", "--pubkey", tmp_path / "missing.pub",
                  "-o", tmp_path / "x.iso", check=False)
    assert bad.returncode != 0 and not (tmp_path / "x.iso").exists()


@pytest.mark.skipif(__import__("os").geteuid() != 0, reason="compiling in the client lock's chroot needs root")
def test_user_space_from_the_client_lock(tmp_path, session_keys, boot_kernel):
    """--client-lock: busybox and every library in the initramfs are byte-for-byte the files of the
    lock's verified packages (not the host's), and the ISO is reproducible from the locks alone."""
    from boot_helpers import CLIENT_LOCK

    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.util.content_store import ContentStore

    opts = IsoOptions(boot_lock=BOOT_LOCK, repo_url="http://10.0.2.2:8000", pubkeys=[session_keys / f"{FQRN}.pub"],
                      tag="v1", fetch=fetch_options(), client_lock=CLIENT_LOCK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", "1700000000")
        first = build_iso(tmp_path / "a.iso", opts)
        second = build_iso(tmp_path / "b.iso", opts)
    assert first.path.read_bytes() == second.path.read_bytes() and first.size <= MAX_ISO
    assert first.user_space == "lock sha256:" + hashlib.sha256(CLIENT_LOCK.read_bytes()).hexdigest()
    raw = lzma.decompress(extract_from_iso(first.path, "/boot/initrd.img", tmp_path / "initrd").read_bytes())
    work = tmp_path / "initramfs"
    work.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=raw, cwd=work, check=True)
    closure = read_lock(CLIENT_LOCK)
    store = ContentStore.at(None)
    packages = tmp_path / "packages"
    for name in ("busybox-static", "libssl3", "libfuse3-3", "libsqlite3-0", "zlib1g", "libc6"):
        pkg = next(p for p in closure.packages if p.name == name)
        dest = packages / name
        dest.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(store.package(pkg.sha256)), str(dest)], check=True)
    for in_initramfs, package, in_package in [
        ("bin/busybox", "busybox-static", "bin/busybox"),
        ("lib/x86_64-linux-gnu/libcrypto.so.3", "libssl3", "usr/lib/x86_64-linux-gnu/libcrypto.so.3"),
        ("lib/x86_64-linux-gnu/libfuse3.so.3", "libfuse3-3", "lib/x86_64-linux-gnu/libfuse3.so.3"),
        ("lib/x86_64-linux-gnu/libc.so.6", "libc6", "lib/x86_64-linux-gnu/libc.so.6"),
    ]:
        # where the lock's loader found it: /lib or /usr/lib (both are on glibc's default path)
        got = next((g for g in (work / in_initramfs, work / "usr" / in_initramfs) if g.is_file()), None)
        assert got is not None, in_initramfs
        want = (packages / package / in_package).resolve()
        assert got.read_bytes() == want.read_bytes(), in_initramfs


def test_cut_out_kernel_in_the_cache_is_checked_on_every_use(tmp_path):
    """The boot kernel cached under boot/kernel/ is sealed: a swapped vmlinuz or module is cut out again
    from the verified package, never put into an ISO."""
    from cernvm_build.boot.kernel import kernel_parts
    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.store.fetch import FetchOptions
    from cernvm_build.util.content_store import default_cache_dir

    lock = read_lock(BOOT_LOCK)
    opts = FetchOptions(mirrors=(default_cache_dir(), *fetch_options().mirrors))
    cache = tmp_path / "cache"
    first = kernel_parts(lock, ("fuse",), cache_root=cache, fetch_options=opts)
    good_kernel = first.vmlinuz.read_bytes()
    module = first.root / first.modules[-1]
    good_module = module.read_bytes()
    first.vmlinuz.write_bytes(b"MZ evil kernel" + good_kernel[14:])
    module.write_bytes(good_module + b"\0")
    again = kernel_parts(lock, ("fuse",), cache_root=cache, fetch_options=opts)
    assert again.vmlinuz.read_bytes() == good_kernel
    assert (again.root / again.modules[-1]).read_bytes() == good_module


def test_cached_client_binary_is_used_only_as_compiled(tmp_path):
    """The compiled cvmfs-mini runs as root (mount, the ISO's initramfs): a binary swapped in the cache
    is compiled again, not run."""
    from cernvm_build.boot import client

    first = client.build_client(tmp_path / "cache")
    good = first.read_bytes()
    first.write_bytes(good[:-16] + b"\0" * 16)
    again = client.build_client(tmp_path / "cache")
    assert again == first and again.read_bytes() == good
