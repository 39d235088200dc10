"""The read-only CernVM-FS client `cvmfs-mini` (C, FUSE 3): build it, run it, wait for its mount.

It is C because it must fit a boot ISO of ~15 MB with the stock kernel: a Python runtime would not.
The binary is built from `cvmfs-mini.c` beside this file and cached under the cache directory keyed
by the digest of everything that determines it (source, compiler identity, flags, library flags),
so a changed source or toolchain gives a new binary and an unchanged one is never rebuilt.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import ClientBuildError, MountError
from cernvm_build.util.content_store import ContentStore, default_cache_dir
from cernvm_build.util.files import atomic_path

SOURCE = Path(__file__).with_name("cvmfs-mini.c")
BINARY_NAME = "cvmfs-mini"
PKG_CONFIG_PACKAGES = ("fuse3", "sqlite3", "zlib", "libcrypto")
CFLAGS = ("-O2", "-Wall", "-Wextra", "-ffile-prefix-map=/=/", "-fno-ident")
SUBTYPE = "fuse.cvmfs-mini"


def _run(cmd: list[str], what: str) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise ClientBuildError(f"{what}: {cmd[0]} is not installed (run tools/setup.sh)") from exc
    if proc.returncode != 0:
        raise ClientBuildError(f"{what} failed ({' '.join(cmd[:3])} ...)", proc.stderr.strip())
    return proc.stdout.strip()


def library_flags() -> list[str]:
    out = _run(["pkg-config", "--cflags", "--libs", *PKG_CONFIG_PACKAGES],
               "pkg-config " + " ".join(PKG_CONFIG_PACKAGES) + " (libfuse3-dev libsqlite3-dev zlib1g-dev libssl-dev)")
    return out.split()


def compiler() -> str:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "cc"


def build_key(cc: str, flags: list[str]) -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(_run([cc, "--version"], f"{cc} --version").encode())
    h.update("\0".join([*CFLAGS, *flags]).encode())
    return h.hexdigest()[:32]


def build_client(cache_root: str | Path | None = None) -> Path:
    """Path of the compiled client for the current source and toolchain (compiled once, then cached)."""
    cc = compiler()
    flags = library_flags()
    key = build_key(cc, flags)
    root = Path(cache_root or default_cache_dir())
    dest = root / "boot" / "client" / key / BINARY_NAME
    store = ContentStore(root)
    # the cached binary runs as root (mount, the ISO): used only under the seal made when compiled
    if dest.is_file() and os.access(dest, os.X_OK) and store.trusted(dest):
        return dest
    with atomic_path(dest, 0o755) as tmp:
        _run([cc, *CFLAGS, "-s", "-o", str(tmp), str(SOURCE), *flags], f"compiling {SOURCE.name}")
    store.remember(dest)
    return dest


@dataclass
class ClientOptions:
    """What to mount and how; the command line of cvmfs-mini is derived from it."""

    urls: list[str]
    pubkeys: list[Path]
    tag: str | None = None
    root_hash: str | None = None
    cache_dir: Path | None = None
    cache_size_mb: int = 1024
    fqrn: str | None = None
    debug: bool = False
    retries: int = 3
    timeout: int = 20  # idle: seconds without a byte from a server
    connect_timeout: int | None = None
    deadline: int | None = None  # seconds for one whole request (default: the client's, 120)
    min_revision: int | None = None  # refuse manifests older than this revision
    proxy: str | None = None  # CVMFS_HTTP_PROXY syntax: "p1|p2;p3;DIRECT"; None: every request DIRECT
    root_hash_file: Path | None = None
    extra: list[str] = field(default_factory=list)

    def argv(self, binary: Path | str, mountpoint: Path | str, foreground: bool) -> list[str]:
        cmd = [str(binary)]
        for u in self.urls:
            cmd += ["--url", u]
        for k in self.pubkeys:
            cmd += ["--pubkey", str(k)]
        if self.tag:
            cmd += ["--tag", self.tag]
        if self.root_hash:
            cmd += ["--root-hash", self.root_hash]
        if self.cache_dir:
            cmd += ["--cache", str(self.cache_dir)]
        cmd += ["--cache-size", str(self.cache_size_mb), "--retries", str(self.retries),
                "--timeout", str(self.timeout)]
        if self.connect_timeout is not None:
            cmd += ["--connect-timeout", str(self.connect_timeout)]
        if self.deadline is not None:
            cmd += ["--deadline", str(self.deadline)]
        if self.min_revision is not None:
            cmd += ["--min-revision", str(self.min_revision)]
        if self.proxy:
            cmd += ["--proxy", self.proxy]
        if self.fqrn:
            cmd += ["--fqrn", self.fqrn]
        if self.root_hash_file:
            cmd += ["--root-hash-file", str(self.root_hash_file)]
        if self.debug:
            cmd.append("--debug")
        if foreground:
            cmd.append("--foreground")
        return [*cmd, *self.extra, str(mountpoint)]


def is_mounted(mountpoint: str | Path) -> bool:
    """True when MOUNTPOINT carries a cvmfs-mini mount (read from mountinfo, never stat'ing into it)."""
    target = os.path.realpath(mountpoint)
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        mp = parts[4].encode().decode("unicode_escape") if len(parts) > 4 else ""
        if mp == target and right.split()[:1] == [SUBTYPE]:
            return True
    return False


def unmount(mountpoint: str | Path) -> None:
    """fusermount3 -u (falls back to umount, as root)."""
    for cmd in (["fusermount3", "-u", str(mountpoint)], ["umount", str(mountpoint)]):
        try:
            if subprocess.run(cmd, capture_output=True).returncode == 0:
                return
        except FileNotFoundError:
            continue
    raise MountError(f"cannot unmount {mountpoint} (busy?)")


def _reason(stderr: str) -> str:
    """The client's one-line error (its last 'cvmfs-mini: error:' line), else its last line."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ": error: " in ln:
            return ln.split(": error: ", 1)[1]
    return lines[-1] if lines else "no output"


class MountedClient:
    """A running foreground client; `stop()` (or leaving the `with` block) unmounts and reaps it."""

    def __init__(self, proc: subprocess.Popen, mountpoint: Path, log: Path):
        self.proc = proc
        self.mountpoint = mountpoint
        self.log = log

    def __enter__(self) -> "MountedClient":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            try:
                unmount(self.mountpoint)
            except MountError:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                if is_mounted(self.mountpoint):
                    subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def start(options: ClientOptions, mountpoint: str | Path, binary: Path | None = None,
          wait: float = 60) -> MountedClient:
    """Run the client in the foreground (as a child process) and return once the mount is up.

    Raises MountError with the client's own one-line reason when it exits instead of mounting.
    """
    binary = binary or build_client()
    mp = Path(mountpoint)
    log = Path(options.cache_dir or mp.parent) / f".cvmfs-mini.{os.getpid()}.{time.monotonic_ns()}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(options.argv(binary, mp, foreground=True), stdout=subprocess.DEVNULL,
                                stderr=logf, start_new_session=True)
    client = MountedClient(proc, mp, log)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MountError(f"cannot mount {mp}: {_reason(client.output())}")
        if is_mounted(mp):
            return client
        time.sleep(0.02)
    client.stop()
    raise MountError(f"cannot mount {mp}: the client did not mount within {wait:.0f} s")


def mount_background(options: ClientOptions, mountpoint: str | Path, binary: Path | None = None) -> str:
    """Run the client as a daemon (it forks once mounted); returns its start-up message."""
    binary = binary or build_client()
    argv = options.argv(binary, mountpoint, foreground=False)
    if options.cache_dir and "--log" not in options.extra:
        argv[-1:-1] = ["--log", str(Path(options.cache_dir) / "cvmfs-mini.log")]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MountError(f"cannot mount {mountpoint}: {_reason(proc.stderr)}")
    return proc.stderr.strip()
