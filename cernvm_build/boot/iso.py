"""The boot ISO: isolinux (BIOS, hybrid MBR so it also boots from a USB stick), the lock's kernel and
the initramfs, written by xorriso with every date and the volume UUID fixed by SOURCE_DATE_EPOCH.
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

from ..cache import default_cache_dir
from ..closure import read_lock
from ..errors import BootError
from ..fetch import FetchOptions
from ..fsutil import atomic_path, source_date_epoch
from . import client as client_mod
from .initramfs import DEFAULT_BUSYBOX, BootConfig, build_initramfs
from .kernel import DEFAULT_MODULES, kernel_parts

ISOLINUX_DIRS = (Path("/usr/lib/ISOLINUX"), Path("/usr/lib/syslinux/modules/bios"))
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
    tag: str | None = None
    root_hash: str | None = None
    append: str = ""
    modules: tuple[str, ...] = DEFAULT_MODULES
    kernel_package: str | None = None
    scratch_label: str = "CVMSCRATCH"
    cache_mb: int = 2048
    error_timeout: int = 60
    busybox: Path = DEFAULT_BUSYBOX
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


def isolinux_cfg(cmdline: str) -> str:
    return ("SERIAL 0 115200\nDEFAULT cernvm\nPROMPT 0\nTIMEOUT 0\n"
            "LABEL cernvm\n  KERNEL /boot/vmlinuz\n  INITRD /boot/initrd.img\n"
            f"  APPEND {cmdline}\n")


def _xorriso_date(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y%m%d%H%M%S00")


def build_iso(out: str | Path, opts: IsoOptions) -> IsoResult:
    """Build OUT: kernel and modules from the boot lock, initramfs with the client, isolinux."""
    if opts.tag and opts.root_hash:
        raise BootError("give a tag or a root hash, not both")
    if not shutil.which("xorriso"):
        raise BootError("xorriso is not installed (run tools/setup.sh)")
    cache_root = Path(opts.cache_root or default_cache_dir())
    closure = read_lock(opts.boot_lock)
    kernel = kernel_parts(closure, opts.modules, cache_root=cache_root, kernel_package=opts.kernel_package,
                          fetch_options=opts.fetch)
    binary = client_mod.build_client(cache_root)
    epoch = source_date_epoch(0)
    config = BootConfig(repo_url=opts.repo_url, tag=opts.tag, root_hash=opts.root_hash,
                        scratch_label=opts.scratch_label, cache_mb=opts.cache_mb, error_timeout=opts.error_timeout)
    cmdline = " ".join(x for x in (CONSOLE_ARGS, opts.append.strip()) if x)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="iso-", dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "stage"
        (stage / "boot").mkdir(parents=True)
        (stage / "isolinux").mkdir()
        shutil.copyfile(kernel.vmlinuz, stage / "boot" / "vmlinuz")
        initrd = build_initramfs(stage / "boot" / "initrd.img", kernel, binary, opts.pubkeys, config,
                                 opts.busybox, epoch)
        shutil.copyfile(_find("isolinux.bin"), stage / "isolinux" / "isolinux.bin")
        shutil.copyfile(_find("ldlinux.c32"), stage / "isolinux" / "ldlinux.c32")
        (stage / "isolinux" / "isolinux.cfg").write_text(isolinux_cfg(cmdline))
        for p in sorted(stage.rglob("*"), reverse=True):
            os.utime(p, (epoch, epoch), follow_symlinks=False)
        os.utime(stage, (epoch, epoch))
        with atomic_path(out) as target:
            target.unlink()
            cmd = ["xorriso", "-as", "mkisofs", "-o", str(target), "-V", VOLUME_ID, "-R", "-l",
                   "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
                   "-boot-load-size", "4", "-boot-info-table", "-isohybrid-mbr", str(_find("isohdpfx.bin")),
                   "--modification-date=" + _xorriso_date(epoch), "--set_all_file_dates",
                   "set_to_mtime", str(stage)]
            env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                raise BootError(f"xorriso failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    data = out.read_bytes()
    return IsoResult(out, len(data), hashlib.sha256(data).hexdigest(), kernel.version,
                     kernel.vmlinuz.stat().st_size, initrd.size, cmdline)
