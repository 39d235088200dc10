"""The boot ISO: the lock's kernel and the initramfs, bootable by BIOS and by UEFI, from a CD or (hybrid
MBR + GPT) a USB stick, written by xorriso with every date and the volume UUID fixed by SOURCE_DATE_EPOCH.

BIOS boots isolinux; UEFI boots a small GRUB image (El Torito EFI entry, a FAT image of ~0.75 MB) whose
built-in script finds this ISO by a marker file named after the kernel, initramfs and menu digests and
hands over to GRUB's normal mode, which reads /boot/grub/grub.cfg from the ISO and loads the same /boot
files isolinux does: the kernel and initramfs are stored once. The GRUB image is not signed, so UEFI
Secure Boot must be off (as for any unsigned loader).

Both loaders show the same boot menu, on the screen and on the serial console (isolinux: ttyS0 at
115200 baud itself; GRUB: through the firmware's console, see grub_cfg()), one entry per snapshot (IsoOptions.menu, newest first; the first is the default, booted after
MENU_TIMEOUT_S seconds without a key), each booting the common kernel command line plus its own
cvmfs.tag= and cvmfs.root_hash=. The command line can be edited there: Tab in isolinux, e in GRUB.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
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
# the menu: menu.c32 links against libutil.c32, and both call into libcom32.c32 (malloc, printf...)
ISOLINUX_MODULES = ("ldlinux.c32", "libcom32.c32", "libutil.c32", "menu.c32")
GRUB_EFI_DIR = Path("/usr/lib/grub/x86_64-efi")
# iso9660 + search: find this ISO; linux + boot: load and start it; part_*: a USB stick's tables;
# efi_gop: hand the firmware's frame buffer to the kernel (console on a real screen); normal +
# configfile + echo + test: the menu (grub.cfg), its editor and a usable grub> prompt. No serial
# module: see grub_cfg()
GRUB_MODULES = ("iso9660", "search", "search_fs_file", "linux", "boot", "part_msdos", "part_gpt", "efi_gop",
                "normal", "configfile", "echo", "test")
GRUB_CFG = "boot/grub/grub.cfg"
EFI_IMAGE = "boot/grub/efi.img"
EFI_IMAGE_KB = 768          # GRUB with normal mode is ~620 KB
MENU_TIMEOUT_S = 3
MENU_TITLE = "CernVM-FS snapshots, newest first"
CONSOLE_ARGS = "console=tty0 console=ttyS0,115200"
VOLUME_ID = "CERNVM_BOOT"


TAG_RE = re.compile(r"^[A-Za-z0-9._-]+$")
ROOT_HASH_RE = re.compile(r"^[0-9a-f]{40}(-[a-z0-9]+)?$")
# what both menus show verbatim: printable ASCII, without ^ (isolinux's hotkey marker)
_TEXT_RE = re.compile(r"^[ -\]_-~]*$")
_GRUB_PLAIN = re.compile(r"^[A-Za-z0-9_.,:/=+@%-]+$")
MAX_LABEL = 60
MAX_DESCRIPTION = 160


def _find(name: str) -> Path:
    for d in ISOLINUX_DIRS:
        if (d / name).is_file():
            return d / name
    raise BootError(f"{name} not found in {', '.join(map(str, ISOLINUX_DIRS))} (install isolinux syslinux-common)")


@dataclass(frozen=True)
class MenuEntry:
    """One boot-menu entry: the ISO's common kernel command line plus cvmfs.tag=TAG and, when given,
    cvmfs.root_hash=ROOT_HASH (pinned: the entry boots that snapshot even if the tag moves)."""

    label: str                          # shown in the menu (printable ASCII, no ^); "" = the tag
    tag: str                            # letters, digits, . _ -
    root_hash: str | None = None
    description: str = ""              # one line: isolinux's help line, GRUB prints it when booting

    @property
    def title(self) -> str:
        return self.label or self.tag

    def args(self) -> str:
        return f"cvmfs.tag={self.tag}" + (f" cvmfs.root_hash={self.root_hash}" if self.root_hash else "")


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
    # the boot menu: the tags known at build time, NEWEST FIRST; the first is the default, and the
    # initramfs's built-in tag/root hash. Empty: one entry booting tag/root_hash above (as before).
    menu: list[MenuEntry] = field(default_factory=list)


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
    menu: tuple[tuple[str, str], ...] = ()  # (menu title, kernel command line) per entry, default first


@dataclass(frozen=True)
class BootEntry:
    """A menu entry as both loaders write it: what is shown, and the whole kernel command line."""

    title: str
    cmdline: str
    help: str


def _check_text(what: str, text: str, limit: int) -> None:
    if len(text) > limit or not _TEXT_RE.fullmatch(text):
        raise BootError(f"{what} {text!r}: use at most {limit} printable ASCII characters other than ^ "
                        "(boot menus show it verbatim)")


def _shown(text: str) -> str:
    """TEXT with what a menu cannot show verbatim replaced by '?'."""
    return "".join(c if _TEXT_RE.fullmatch(c) else "?" for c in text)


def check_menu(menu: list[MenuEntry]) -> None:
    """One-line BootErrors for what the loaders' config syntax or the kernel command line cannot carry."""
    seen: set[str] = set()
    for n, e in enumerate(menu, 1):
        if not isinstance(e, MenuEntry):
            raise BootError(f"menu entry {n}: expected a MenuEntry, got {type(e).__name__}")
        if not TAG_RE.fullmatch(e.tag or ""):
            raise BootError(f"menu entry {n}: tag {e.tag!r} is not a tag name (letters, digits, . _ -)")
        if e.tag in seen:
            raise BootError(f"menu entry {n}: tag {e.tag!r} is listed twice")
        seen.add(e.tag)
        if e.root_hash is not None and not ROOT_HASH_RE.fullmatch(e.root_hash):
            raise BootError(f"menu entry {n} (tag {e.tag}): root hash {e.root_hash!r} is not a catalog hash "
                            "(40 lower-case hex digits)")
        _check_text(f"menu entry {n} (tag {e.tag}): label", e.label, MAX_LABEL)
        _check_text(f"menu entry {n} (tag {e.tag}): description", e.description, MAX_DESCRIPTION)


def effective_menu(opts: IsoOptions) -> list[MenuEntry]:
    """The menu this ISO shows, default first, checked against the built-in tag/root hash: a menu's
    first entry must be the snapshot the initramfs names (IsoOptions.tag/root_hash, when given)."""
    menu = list(opts.menu)
    check_menu(menu)
    if not menu:
        return []
    first = menu[0]
    if opts.tag and opts.tag != first.tag:
        raise BootError(f"the menu's default (first) entry boots tag {first.tag!r}, but the ISO's tag is "
                        f"{opts.tag!r}: put it first")
    if opts.root_hash:
        if first.root_hash not in (None, opts.root_hash):
            raise BootError(f"the menu's default (first) entry boots root hash {first.root_hash}, but the ISO "
                            f"is pinned to {opts.root_hash}")
        menu[0] = MenuEntry(first.label, first.tag, opts.root_hash, first.description)
    return menu


def parse_menu_tag(spec: str) -> MenuEntry:
    """`TAG` or `TAG=ROOTHASH` (the CLI's --menu-tag) as a checked MenuEntry labelled with the tag."""
    tag, _, root_hash = spec.partition("=")
    entry = MenuEntry("", tag, root_hash or None)
    try:
        check_menu([entry])
    except BootError as e:
        raise BootError(f"--menu-tag {spec!r}: {str(e).split(': ', 1)[1]}") from None
    return entry


def menu_from_repository(location: str | Path, pubkeys: list[Path], limit: int | None = None) -> list[MenuEntry]:
    """The named tags of the repository at LOCATION (directory or URL, verified with PUBKEYS), newest
    revision first, each pinned to its root hash: the menu of an ISO that boots any of them."""
    import datetime as dt

    from cernvm_build.cvmfs.history import TRUNK, TRUNK_PREVIOUS
    from cernvm_build.cvmfs.keys import load_public_key
    from cernvm_build.cvmfs.reader import Repository

    repo = Repository(location, master_keys=[load_public_key(Path(k)) for k in pubkeys])
    try:
        tags = [t for t in repo.tags() if t.name not in (TRUNK, TRUNK_PREVIOUS)]
    finally:
        repo.close()
    tags.sort(key=lambda t: (-t.revision, t.name))
    menu = []
    for t in tags[:limit]:
        if not TAG_RE.fullmatch(t.name):
            raise BootError(f"tag {t.name!r} of {location} cannot be a menu entry (letters, digits, . _ - only)")
        day = dt.datetime.fromtimestamp(t.timestamp, dt.UTC).strftime("%Y-%m-%d")
        description = _shown(f"revision {t.revision}, {day}" + (f", {t.description}" if t.description else ""))
        menu.append(MenuEntry("", t.name, t.hash, description[:MAX_DESCRIPTION]))
    if not menu:
        raise BootError(f"{location} has no tags for the boot menu")
    check_menu(menu)
    return menu


def boot_entries(cmdline: str, menu: list[MenuEntry], tag: str | None = None,
                 root_hash: str | None = None) -> list[BootEntry]:
    """Each entry's title, whole command line and help line, the default first. Without a menu: one
    entry with CMDLINE alone, booting what the initramfs names (TAG/ROOT_HASH or the newest revision)."""
    cmdline = " ".join(cmdline.split())      # one line in either config, whatever --append held
    if not menu:       # (a tag given alone was never checked beyond the initramfs's shell quoting)
        what = (f"tag {tag}" if tag else "the newest revision") + (f", root hash {root_hash}" if root_hash else "")
        return [BootEntry(_shown(tag or "newest revision")[:MAX_LABEL], cmdline, _shown(f"Boots {what}."))]
    out = []
    for n, e in enumerate(menu):
        help_ = (f"tag {e.tag}" + (f", root hash {e.root_hash[:12]}" if e.root_hash else "")
                 + (" (newest, the default)" if n == 0 else "") + (f": {e.description}" if e.description else ""))
        # the default is the snapshot the initramfs names (boot.conf): no cvmfs.* words, so the
        # stay/rebase rules of a plain boot hold (a scratch disk records it; cvmfs.rebase=1 moves on)
        out.append(BootEntry(e.title, cmdline if n == 0 else f"{cmdline} {e.args()}", help_))
    return out


def isolinux_cfg(entries: list[BootEntry], timeout_s: int = MENU_TIMEOUT_S) -> str:
    """menu.c32 on screen and serial console; the first entry is the default after TIMEOUT_S; Tab edits."""
    lines = ["# cernvm-build boot menu (isolinux): arrows choose, Enter boots, Tab edits the command line",
             "SERIAL 0 115200", "UI menu.c32", "PROMPT 0", f"TIMEOUT {timeout_s * 10}", "ALLOWOPTIONS 1",
             "DEFAULT entry0", f"MENU TITLE {MENU_TITLE}", "MENU AUTOBOOT Booting the default in # s...",
             "MENU TABMSG Enter boots, Tab edits the kernel command line (cvmfs.url=, cvmfs.proxy=...)"]
    for n, e in enumerate(entries):
        lines += ["", f"LABEL entry{n}", f"  MENU LABEL {e.title}"]
        if n == 0:
            lines.append("  MENU DEFAULT")
        lines += ["  KERNEL /boot/vmlinuz", "  INITRD /boot/initrd.img", f"  APPEND {e.cmdline}",
                  "  TEXT HELP", f"  {e.help}", "  ENDTEXT"]
    return "\n".join(lines) + "\n"


def _grub_quote(word: str) -> str:
    """One GRUB script word, verbatim: single quotes, with embedded ones closed and escaped."""
    return "'" + word.replace("'", "'\\''") + "'"


def _grub_word(word: str) -> str:
    """WORD as is when GRUB's parser reads it verbatim (easier to edit with e), else quoted."""
    return word if _GRUB_PLAIN.fullmatch(word) else _grub_quote(word)


def grub_cfg(entries: list[BootEntry], timeout_s: int = MENU_TIMEOUT_S) -> str:
    """/boot/grub/grub.cfg: the menu; default first; e edits an entry.

    GRUB draws on the firmware console, which UEFI firmware with a serial console (OVMF, servers'
    console redirection) mirrors to the serial port and reads keys from. GRUB's own serial terminal
    is not added: beside the firmware's it drew every screen twice, and the two drivers reading one
    UART scrambled typed keys (measured under OVMF)."""
    lines = ["# cernvm-build boot menu (GRUB, UEFI): arrows choose, Enter boots, e edits (Ctrl-x boots)",
             f"set timeout={timeout_s}", "set timeout_style=menu", "set default=0"]
    for n, e in enumerate(entries):
        args = " ".join(_grub_word(w) for w in e.cmdline.split())
        lines += ["", f"menuentry {_grub_quote(e.title)} --id entry{n} {{", f"  echo {_grub_quote(e.help)}",
                  f"  linux /boot/vmlinuz {args}", "  initrd /boot/initrd.img", "}"]
    return "\n".join(lines) + "\n"


def grub_script(marker: str) -> str:
    """GRUB's built-in script: select the device holding MARKER; normal mode then reads its grub.cfg."""
    return (f"search --no-floppy --set=root --file {marker}\n"
            "set prefix=($root)/boot/grub\n")


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
    menu = effective_menu(opts)       # bad menu input fails before the slow work
    cache_root = Path(opts.cache_root or default_cache_dir())
    closure = read_lock(opts.boot_lock)
    kernel = kernel_parts(closure, opts.modules, cache_root=cache_root, kernel_package=opts.kernel_package,
                          fetch_options=opts.fetch)
    from cernvm_build.boot import toolchain

    user = (toolchain.from_lock(Path(opts.client_lock), cache_root, opts.fetch) if opts.client_lock
            else toolchain.from_host(cache_root, opts.busybox))
    epoch = source_date_epoch(0)
    tag, root_hash = (menu[0].tag, menu[0].root_hash) if menu else (opts.tag, opts.root_hash)
    cmdline = " ".join(x for x in (CONSOLE_ARGS, opts.append.strip()) if x)
    entries = boot_entries(cmdline, menu, tag, root_hash)
    config = BootConfig(repo_url=opts.repo_url, tag=tag, root_hash=root_hash,
                        scratch_label=opts.scratch_label, cache_mb=opts.cache_mb, error_timeout=opts.error_timeout,
                        min_revision=opts.min_revision, proxy=opts.proxy)
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="iso-", dir=out.parent if out.parent.exists() else None) as tmp:
        stage = Path(tmp) / "stage"
        (stage / "boot").mkdir(parents=True)
        (stage / "isolinux").mkdir()
        shutil.copyfile(kernel.vmlinuz, stage / "boot" / "vmlinuz")
        initrd = build_initramfs(stage / "boot" / "initrd.img", kernel, user.client, opts.pubkeys, config,
                                 user.busybox, epoch, user.libraries)
        for name in ("isolinux.bin", *ISOLINUX_MODULES):
            shutil.copyfile(_find(name), stage / "isolinux" / name)
        (stage / "isolinux" / "isolinux.cfg").write_text(isolinux_cfg(entries))
        (stage / "boot" / "grub").mkdir()
        (stage / GRUB_CFG).write_text(grub_cfg(entries))
        # UEFI: GRUB finds this very ISO by a marker named after what it boots
        digest = hashlib.sha256((stage / "boot" / "vmlinuz").read_bytes()
                                + (stage / "boot" / "initrd.img").read_bytes()
                                + (stage / GRUB_CFG).read_bytes()).hexdigest()
        marker = f"/boot/grub/cernvm-{digest[:16]}"
        (stage / marker.lstrip("/")).write_text("UEFI GRUB selects the device holding this file\n")
        efi_image(stage / EFI_IMAGE, grub_script(marker), epoch, Path(tmp))
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
                     kernel.vmlinuz.stat().st_size, initrd.size, cmdline, user.origin,
                     tuple((e.title, e.cmdline) for e in entries))
