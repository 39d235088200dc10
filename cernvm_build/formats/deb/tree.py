"""Debian root trees: unpack payloads with our checked extractor, then (install mode) configure them.

Install mode does what debootstrap/mmdebstrap do after extracting the essential set, but without
unpacking every package a second time: the dpkg database (status with `install ok unpacked`, the
info/ files from each control archive, the trigger interest files) is written from the control
archives, preinst scripts run in a chroot, then the tree's own `dpkg --configure -a` runs every
postinst and pending trigger, with a policy-rc.d that stops services from starting and /proc
mounted only for that step.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import RootfsError
from cernvm_build.formats.deb.control import parse_stanza
from cernvm_build.lock.lockfile import Closure, LockedPackage
from cernvm_build.rootfs.chroot import mounted_proc
from cernvm_build.rootfs.safety import SafeTree, member_parts
from cernvm_build.util.content_store import copy_verified

log = logging.getLogger(__name__)

CONTROL_MEMBERS = {"control", "md5sums", "conffiles", "preinst", "postinst", "prerm", "postrm", "triggers",
                   "shlibs", "symbols", "templates", "config"}
SCRIPTS = {"preinst", "postinst", "prerm", "postrm", "config"}


@dataclass
class DebControl:
    """The control archive of one .deb, kept in memory (a few KiB)."""

    files: dict[str, bytes]
    fields: dict[str, str]
    text: str

    @property
    def multi_arch_same(self) -> bool:
        return self.fields.get("multi-arch", "").lower() == "same"


@dataclass
class Unpacked:
    """What unpacking one package produced: its control data and its file list."""

    pkg: LockedPackage
    control: DebControl
    listing: list[str] = field(default_factory=list)

    @property
    def info_name(self) -> str:
        """dpkg's name for the info/ files: pkg:arch for Multi-Arch: same packages."""
        arch = self.control.fields.get("architecture", self.pkg.arch)
        return f"{self.pkg.name}:{arch}" if self.control.multi_arch_same else self.pkg.name


def read_control(deb: Path, what: str) -> DebControl:
    proc = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True)
    if proc.returncode:
        raise RootfsError(f"{what}: dpkg-deb --ctrl-tarfile failed: {proc.stderr.decode().strip()}")
    import io

    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(proc.stdout), mode="r:") as tf:
        for m in tf:
            parts = member_parts(m.name, f"{what}: control.tar: {m.name}")
            if not parts and m.isdir():
                continue
            if len(parts) != 1 or not m.isreg():
                raise RootfsError(f"{what}: control.tar: unexpected member {m.name!r}; refused")
            if parts[0] in CONTROL_MEMBERS:
                f = tf.extractfile(m)
                files[parts[0]] = f.read() if f else b""
    if "control" not in files:
        raise RootfsError(f"{what}: control archive has no control file")
    text = files["control"].decode("utf-8", "replace")
    fields = parse_stanza(text, what, RootfsError)
    if fields.get("package") != what.split()[0] and fields.get("package"):
        raise RootfsError(f"{what}: control file names package {fields.get('package')!r}, not the locked one")
    return DebControl(files, fields, text)


def payload_tar(deb: Path, out: Path, what: str) -> Path:
    """The uncompressed data.tar of DEB written to OUT (run ahead in worker threads: xz/zstd
    decompression is the serial cost of unpacking, and dpkg-deb runs it outside the GIL)."""
    with open(out, "wb") as f:
        r = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=f, stderr=subprocess.PIPE)
    if r.returncode:
        raise RootfsError(f"{what}: dpkg-deb --fsys-tarfile failed: {r.stderr.decode().strip()}")
    return out


def unpack_all(tree: SafeTree, order: list[LockedPackage], files: dict[str, Path], workdir: Path,
               jobs: int | None = None, lookahead: int = 8) -> list[Unpacked]:
    """Unpack ORDER strictly in sequence while up to LOOKAHEAD later payloads decompress in parallel."""
    from cernvm_build.util.ahead import in_order_ahead

    workdir.mkdir(parents=True, exist_ok=True)

    def prepare(i: int, p: LockedPackage) -> tuple[DebControl, Path]:
        # the package is read once, hashed against the lock on the way into a private copy; dpkg-deb
        # reads only that copy, so a cache file changed after fetch never reaches the tree
        what = f"{p.name} {p.evr}"
        deb = copy_verified(files[p.name], p, workdir / f"{i}.deb")
        try:
            return read_control(deb, what), payload_tar(deb, workdir / f"{i}.tar", what)
        finally:
            deb.unlink(missing_ok=True)

    units: list[Unpacked] = []

    def consume(i: int, p: LockedPackage, prepared: tuple[DebControl, Path]) -> None:
        control, tar = prepared
        try:
            with open(tar, "rb") as f:
                units.append(Unpacked(p, control, tree.extract(f, f"{p.name} {p.evr}")))
        finally:
            tar.unlink(missing_ok=True)

    in_order_ahead(order, prepare, consume, jobs, lookahead)
    return units


def merged_usr_wanted(packages: list[LockedPackage]) -> bool:
    """bookworm and later are merged-/usr: usr-is-merged's preinst refuses a split tree."""
    names = {p.name for p in packages}
    return "usr-is-merged" in names or "usrmerge" in names


def setup_merged_usr(root: Path, arch: str) -> None:
    """The symlinks debootstrap creates before extracting (relative, so they resolve in the tree)."""
    dirs = ["bin", "sbin", "lib"] + {"amd64": ["lib64"], "i386": [], "arm64": []}.get(arch, [])
    for d in dirs:
        (root / "usr" / d).mkdir(parents=True, exist_ok=True)
        link = root / d
        if not os.path.lexists(link):
            os.symlink(f"usr/{d}", link)


# ---- install mode --------------------------------------------------------------------------------

def _status_stanza(u: Unpacked, root: Path) -> str:
    lines = []
    for line in u.control.text.rstrip("\n").splitlines():
        if not line.strip():
            break
        lines.append(line)
        if line.lower().startswith("package:"):
            lines.append("Status: install ok unpacked")
    conffiles = [c.strip() for c in u.control.files.get("conffiles", b"").decode().splitlines() if c.strip()]
    conffiles = [c for c in conffiles if not c.startswith(("remove-on-upgrade ",))]
    if conffiles:
        lines.append("Conffiles:")
        for c in conffiles:
            name = c.split()[-1]
            p = root / name.lstrip("/")
            md5 = hashlib.md5(p.read_bytes()).hexdigest() if p.is_file() else "newconffile"
            lines.append(f" {name} {md5}")
    return "\n".join(lines) + "\n"


def _md5sums(root: Path, u: Unpacked) -> bytes:
    conf = {c.split()[-1] for c in u.control.files.get("conffiles", b"").decode().splitlines() if c.strip()}
    out = []
    for rel in u.listing:
        p = root / rel.lstrip("/")
        if rel in conf or rel == "/." or p.is_symlink() or not p.is_file():
            continue
        out.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {rel.lstrip('/')}\n")
    return "".join(out).encode()


def write_dpkg_database(root: Path, units: list[Unpacked]) -> None:
    """status + info/ + triggers/ as dpkg itself would leave them after `dpkg --unpack`."""
    admin = root / "var/lib/dpkg"
    for d in ("info", "updates", "triggers", "alternatives", "parts"):
        (admin / d).mkdir(parents=True, exist_ok=True)
    for f in ("available", "diversions", "statoverride"):
        (admin / f).touch()
    stanzas = []
    file_interest: list[str] = []
    named: dict[str, list[str]] = {}
    for u in sorted(units, key=lambda u: u.pkg.name):
        info = admin / "info"
        (info / f"{u.info_name}.list").write_text("\n".join(u.listing) + "\n")
        files = dict(u.control.files)
        if "md5sums" not in files:      # dpkg computes them on unpack when a package ships none
            files["md5sums"] = _md5sums(root, u)
        for name, data in sorted(files.items()):
            if name == "control":
                continue
            p = info / f"{u.info_name}.{name}"
            p.write_bytes(data)
            os.chmod(p, 0o755 if name in SCRIPTS else 0o644)
        stanzas.append(_status_stanza(u, root))
        for line in u.control.files.get("triggers", b"").decode().splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) != 2 or not words[0].startswith("interest"):
                continue
            directive, trig = words
            who = u.info_name + ("/noawait" if directive == "interest-noawait" else "")
            if trig.startswith("/"):
                file_interest.append(f"{trig} {who}")
            else:
                named.setdefault(trig, []).append(who)
    (admin / "status").write_text("\n".join(stanzas))
    # Interests as dpkg registers them on unpack. Activations by packages unpacked in the same run
    # reach only unconfigured packages, which dpkg drops (their postinst configure does the work),
    # exactly as with `dpkg --install` of the whole set: so Unincorp starts empty.
    trig_dir = admin / "triggers"
    if file_interest:
        (trig_dir / "File").write_text("\n".join(sorted(file_interest)) + "\n")
    for trig, who in named.items():
        (trig_dir / trig).write_text("\n".join(sorted(who)) + "\n")
    (trig_dir / "Unincorp").write_text("")
    (trig_dir / "Lock").touch()


DEV_NODES = (("null", 1, 3, 0o666), ("zero", 1, 5, 0o666), ("full", 1, 7, 0o666), ("random", 1, 8, 0o666),
             ("urandom", 1, 9, 0o666), ("tty", 5, 0, 0o666), ("console", 5, 1, 0o600), ("ptmx", 5, 2, 0o666))


def make_dev_nodes(root: Path) -> None:
    """The device nodes maintainer scripts expect (debootstrap makes the same set); fixed numbers."""
    dev = root / "dev"
    dev.mkdir(exist_ok=True)
    import stat as st

    for name, major, minor, mode in DEV_NODES:
        p = dev / name
        if not os.path.lexists(p):
            os.mknod(p, st.S_IFCHR | mode, os.makedev(major, minor))
            os.chmod(p, mode)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        if not os.path.lexists(dev / name):
            os.symlink(target, dev / name)
    (dev / "pts").mkdir(exist_ok=True)
    (dev / "shm").mkdir(exist_ok=True)


@contextlib.contextmanager
def services_disabled(root: Path):
    """policy-rc.d 101: invoke-rc.d and deb-systemd-invoke start nothing while we configure."""
    p = root / "usr/sbin/policy-rc.d"
    p.parent.mkdir(parents=True, exist_ok=True)
    existed = os.path.lexists(p)
    if not existed:
        p.write_text("#!/bin/sh\n# cernvm-build: no services start while the tree is built\nexit 101\n")
        os.chmod(p, 0o755)
    try:
        yield
    finally:
        if not existed:
            p.unlink(missing_ok=True)


def chroot_env(sde: int) -> dict[str, str]:
    return {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "HOME": "/root", "TERM": "dumb",
        "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "DEBIAN_PRIORITY": "critical", "SOURCE_DATE_EPOCH": str(sde),
    }


def _run(cmd: list[str], env: dict[str, str], what: str, logfile: list[str]) -> None:
    r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    logfile.append(f"$ {' '.join(cmd)}\n{r.stdout}{r.stderr}")
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise RootfsError(f"{what} failed (exit {r.returncode}): {tail}")


def configure(root: Path, units: list[Unpacked], sde: int) -> list[str]:
    """Run preinst (install) in dependency order, then dpkg --configure -a inside the tree."""
    if os.geteuid() != 0:
        raise RootfsError("--mode install runs maintainer scripts in a chroot and needs root "
                          "(use --mode unpack as an ordinary user)")
    if not (root / "bin/sh").exists() and not (root / "usr/bin/sh").exists():
        raise RootfsError("--mode install: the closure provides no /bin/sh to run maintainer scripts with")
    log_lines: list[str] = []
    write_dpkg_database(root, units)
    make_dev_nodes(root)
    env = chroot_env(sde)
    in_tree_dpkg = (root / "usr/bin/dpkg").exists()
    with services_disabled(root), mounted_proc(root):
        for u in units:
            if "preinst" in u.control.files:
                e = dict(env, DPKG_ROOT="", DPKG_ADMINDIR="/var/lib/dpkg", DPKG_MAINTSCRIPT_PACKAGE=u.pkg.name, DPKG_MAINTSCRIPT_NAME="preinst",
                         DPKG_MAINTSCRIPT_ARCH=u.control.fields.get("architecture", u.pkg.arch))
                _run(["chroot", str(root), f"/var/lib/dpkg/info/{u.info_name}.preinst", "install"], e,
                     f"{u.pkg.name}: preinst install", log_lines)
        if in_tree_dpkg:
            cmd = ["chroot", str(root), "dpkg", "--force-confdef", "--force-confold", "--configure", "-a"]
        else:  # a tree without dpkg (test fixtures): the host's dpkg, scripts still chrooted
            cmd = ["dpkg", f"--root={root}", "--force-bad-path", "--force-confdef", "--force-confold",
                   "--configure", "-a"]
        _run(cmd, env, "dpkg --configure -a", log_lines)
        if (root / "sbin/ldconfig").exists() or (root / "usr/sbin/ldconfig").exists():
            _run(["chroot", str(root), "ldconfig"], env, "ldconfig", log_lines)
    return log_lines


# ---- entry point ---------------------------------------------------------------------------------

def build(closure: Closure, root: Path, files: dict[str, Path], options, sde: int) -> dict:
    """Every package of CLOSURE unpacked into ROOT in the lock's order; install mode then configures."""
    from cernvm_build.rootfs import install_order

    order = install_order(closure)
    merged = options.merged_usr if options.merged_usr is not None else merged_usr_wanted(order)
    if merged:
        setup_merged_usr(root, closure.arch)
    tree = SafeTree(root, warn=options.warn)
    for p in order:
        if p.name not in files:
            raise RootfsError(f"package {p.name} {p.evr}: no verified file (fetch it first)")
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.payloads-", dir=root.parent))
    try:
        units = unpack_all(tree, order, files, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if options.mode == "install":
        configure(root, units, sde)
    else:
        # unpack mode still records what is in the tree: dpkg's database, every package unpacked
        write_dpkg_database(root, units)
    return {"skipped_devices": tree.skipped_devices}
