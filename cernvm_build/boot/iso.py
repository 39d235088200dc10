"""The boot ISO: the lock's kernel and the initramfs, bootable by BIOS and by UEFI, from a CD or (hybrid
MBR + GPT) a USB stick, written by xorriso with every date and the volume UUID fixed by SOURCE_DATE_EPOCH.

BIOS boots isolinux; UEFI boots a small GRUB image (El Torito EFI entry, a FAT image of ~0.5 MB) whose
built-in script finds this ISO by a marker file named after the kernel and initramfs digests and loads
the same /boot files isolinux does: the kernel and initramfs are stored once. The GRUB image is not
signed, so UEFI Secure Boot must be off (as for any unsigned loader).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.boot.initramfs import DEFAULT_BUSYBOX, BootConfig, build_initramfs
from cernvm_build.boot.kernel import DEFAULT_MODULES, kernel_parts
from cernvm_build.errors import BootError
from cernvm_build.lock.lockfile import read_lock
from cernvm_build.store.fetch import FetchOptions
from cernvm_build.util.content_store import default_cache_dir
from cernvm_build.util.files import atomic_path, source_date_epoch

ISOLINUX_DIRS = (Path("/usr/lib/ISOLINUX"), Path("/usr/lib/syslinux/modules/bios"))
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
# iso9660 + search: find this ISO; linux + boot: load and start it; part_*: a USB stick's tables;
# efi_gop: hand the firmware's frame buffer to the kernel (console on a real screen)
GRUB_MODULES = ("iso9660", "search", "search_fs_file", "linux", "boot", "part_msdos", "part_gpt", "efi_gop")
EFI_IMAGE = "boot/grub/efi.img"
EFI_IMAGE_KB = 512
CONSOLE_ARGS = "console=tty0 console=ttyS0,115200"
VOLUME_ID = "CERNVM_BOOT"


def _find(name: str) -> Path:
    for d in ISOLINUX_DIRS:
        if (d / name).is_file():
            return d / name
    raise BootError(f"{name} not found in {', '.join(map(str, ISOLINUX_DIRS))} (install isolinux syslinux-common)")


@dataclass
class IsoOptions:
    boot_lock: Path
    repo_url: str
    pubkeys: list[Path]
    tag: str | None = None                # with root_hash: a label; alone: the tag booted
    root_hash: str | None = None          # the snapshot booted (cvmfs.rebase=1 moves on to the newest)
    min_revision: int | None = None       # no older repository revision is ever mounted (replays, stale proxies)
    proxy: str | None = None              # HTTP proxies, CVMFS_HTTP_PROXY syntax (cvmfs.proxy= overrides)
    append: str = ""
    modules: tuple[str, ...] = DEFAULT_MODULES
    kernel_package: str | None = None
    scratch_label: str = "CVMSCRATCH"
    cache_mb: int = 2048
    error_timeout: int = 60
    busybox: Path = DEFAULT_BUSYBOX
    client_lock: Path | None = None       # busybox, client libraries and the compiler from this lock
    cache_root: Path | None = None
    fetch: FetchOptions = field(default_factory=FetchOptions)


@dataclass(frozen=True)
class IsoResult:
    path: Path
    size: int
    sha256: str
    kernel_version: str
    kernel_size: int
    initramfs_size: int
    cmdline: str
    user_space: str = "host"              # where busybox, the client and its libraries came from


def isolinux_cfg(cmdline: str) -> str:
    return ("SERIAL 0 115200\nDEFAULT cernvm\nPROMPT 0\nTIMEOUT 0\n"
            "LABEL cernvm\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd.img\n"
            f"  APPEND {cmdline}\n")


def _grub_quote(word: str) -> str:
    """One GRUB script word, verbatim: single quotes, with embedded ones closed and escaped."""
    return "'" + word.replace("'", "'\\''") + "'"


def grub_script(cmdline: str, marker: str) -> str:
    """GRUB's built-in script: select the device holding MARKER, boot its kernel with CMDLINE."""
    args = " ".join(_grub_quote(w) for w in cmdline.split())
    return (f"search --no-floppy --set=root --file {marker}\n"
            f"linux /boot/vmlinuz {args}\n"
            "initrd /boot/initrd.img\n"
            "boot\n")


def _run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [str(proc.returncode)]
        raise BootError(f"{what} failed: {last[0]}")


def efi_image(dest: Path, script: str, epoch: int, work: Path) -> Path:
    """A FAT image with EFI/BOOT/BOOTX64.EFI = GRUB with SCRIPT built in, byte-identical for one epoch."""
    for tool, pkg in (("grub-mkimage", "grub-efi-amd64-bin"), ("mkfs.fat", "dosfstools"), ("mcopy", "mtools")):
        if not shutil.which(tool) and not Path("/usr/sbin", tool).exists():
            raise BootError(f"{tool} is not installed (package {pkg}; run tools/setup.sh)")
    if not (GRUB_EFI_DIR / "linux.mod").is_file():
        raise BootError(f"GRUB EFI modules not found in {GRUB_EFI_DIR} (install grub-efi-amd64-bin)")
    cfg, efi = work / "grub-early.cfg", work / "BOOTX64.EFI"
    cfg.write_text(script)
    _run(["grub-mkimage", "-O", "x86_64-efi", "-d", str(GRUB_EFI_DIR), "-p", "/boot/grub", "-c", str(cfg),
          "-o", str(efi), *GRUB_MODULES], "grub-mkimage")
    os.utime(efi, (epoch, epoch))
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "MTOOLS_SKIP_CHECK": "1"}
    mkfs = shutil.which("mkfs.fat") or "/usr/sbin/mkfs.fat"
    dest.parent.mkdir(parents=True, exist_ok=True)
    _run([mkfs, "-C", "--invariant", "-n", "CERNVM_EFI", str(dest), str(EFI_IMAGE_KB)], "mkfs.fat", env)
    _run(["mmd", "-i", str(dest), "::/EFI", "::/EFI/BOOT"], "mmd", env)
    _run(["mcopy", "-m", "-i", str(dest), str(efi), "::/EFI/BOOT/BOOTX64.EFI"], "mcopy", env)
    return dest


def _xorriso_date(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y%m%d%H%M%S00")


def build_iso(out: str | Path, opts: IsoOptions) -> IsoResult:
    """Build OUT: kernel and modules from the boot lock, initramfs with the client, isolinux."""
    if not shutil.which("xorriso"):
        raise BootError("xorriso is not installed (run tools/setup.sh)")
    cache_root = Path(opts.cache_root or default_cache_dir())
    closure = read_lock(opts.boot_lock)
    kernel = kernel_parts(closure, opts.modules, cache_root=cache_root, kernel_package=opts.kernel_package,
                          fetch_options=opts.fetch)
    from cernvm_build.boot import toolchain

    user = (toolchain.from_lock(Path(opts.client_lock), cache_root, opts.fetch) if opts.client_lock
            else toolchain.from_host(cache_root, opts.busybox))
    epoch = source_date_epoch(0)
    config = BootConfig(repo_url=opts.repo_url, tag=opts.tag, root_hash=opts.root_hash,
                        scratch_label=opts.scratch_label, cache_mb=opts.cache_mb, error_timeout=opts.error_timeout,
                        min_revision=opts.min_revision, proxy=opts.proxy)
    cmdline = " ".join(x for x in (CONSOLE_ARGS, opts.append.strip()) if x)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="iso-", dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "stage"
        (stage / "boot").mkdir(parents=True)
        (stage / "isolinux").mkdir()
        shutil.copyfile(kernel.vmlinuz, stage / "boot" / "vmlinuz")
        initrd = build_initramfs(stage / "boot" / "initrd.img", kernel, user.client, opts.pubkeys, config,
                                 user.busybox, epoch, user.libraries)
        shutil.copyfile(_find("isolinux.bin"), stage / "isolinux" / "isolinux.bin")
        shutil.copyfile(_find("ldlinux.c32"), stage / "isolinux" / "ldlinux.c32")
        (stage / "isolinux" / "isolinux.cfg").write_text(isolinux_cfg(cmdline))
        # UEFI: GRUB finds this very ISO by a marker named after what it boots
        digest = hashlib.sha256((stage / "boot" / "vmlinuz").read_bytes()
                                + (stage / "boot" / "initrd.img").read_bytes()).hexdigest()
        marker = f"/boot/grub/cernvm-{digest[:16]}"
        (stage / marker.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (stage / marker.lstrip("/")).write_text("UEFI GRUB selects the device holding this file\n")
        efi_image(stage / EFI_IMAGE, grub_script(cmdline, marker), epoch, Path(tmp))
        for p in sorted(stage.rglob("*"), reverse=True):
            os.utime(p, (epoch, epoch), follow_symlinks=False)
        os.utime(stage, (epoch, epoch))
        with atomic_path(out) as target:
            target.unlink()
            cmd = ["xorriso", "-as", "mkisofs", "-o", str(target), "-V", VOLUME_ID, "-R", "-l",
                   "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
                   "-boot-load-size", "4", "-boot-info-table", "-isohybrid-mbr", str(_find("isohdpfx.bin")),
                   "-eltorito-alt-boot", "-e", EFI_IMAGE, "-no-emul-boot", "-isohybrid-gpt-basdat",
                   "--modification-date=" + _xorriso_date(epoch), "--set_all_file_dates",
                   "set_to_mtime", str(stage)]
            env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise BootError(f"xorriso failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    data = out.read_bytes()
    return IsoResult(out, len(data), hashlib.sha256(data).hexdigest(), kernel.version,
                     kernel.vmlinuz.stat().st_size, initrd.size, cmdline, user.origin)
