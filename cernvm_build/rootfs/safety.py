"""Extract package payloads into a root tree without ever writing outside it.

Every tar member is checked before anything is written: no absolute names, no `..`, and the parent
directory is resolved *inside* the tree component by component. Symlinks met on the way are followed
only when they are relative and stay inside the tree (merged /usr: `bin -> usr/bin`); an absolute
symlink in a parent would mean the host's directory to any naive extractor, so it is refused, as is
anything that would climb above the root. The final component is never written through: an existing
symlink or file is replaced, not followed. Device nodes need root; without it they are skipped with
a warning (the boot-time devtmpfs provides them anyway).
"""

from __future__ import annotations

import logging
import os
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Callable

from cernvm_build.errors import RootfsError

log = logging.getLogger(__name__)

MAX_SYMLINKS = 40
CHUNK = 1 << 20


def member_parts(name: str, what: str) -> tuple[str, ...]:
    """Split a member name into safe components, or raise naming WHAT (package and member)."""
    if "\x00" in name:
        raise RootfsError(f"{what}: member name contains NUL; refused")
    if name.startswith("/"):
        raise RootfsError(f"{what}: absolute member path {name!r}; refused")
    parts = tuple(p for p in PurePosixPath(name).parts if p not in ("", "."))
    if ".." in parts:
        raise RootfsError(f"{what}: member path {name!r} contains '..'; refused")
    return parts


@dataclass
class SafeTree:
    """A root directory plus the rules for writing into it."""

    root: Path
    as_root: bool = field(default_factory=lambda: os.geteuid() == 0)
    warn: Callable[[str], None] = log.warning
    skipped_devices: list[str] = field(default_factory=list)
    # uid/gid for a member when running as root; None: the member's numeric ids (Debian's data.tar).
    # rpm payloads carry only user/group *names*, resolved against the tree's own passwd/group.
    owner: Callable[[tarfile.TarInfo], tuple[int, int]] | None = None

    def _ids(self, m: tarfile.TarInfo) -> tuple[int, int]:
        return self.owner(m) if self.owner else (m.uid, m.gid)

    # -- resolution --------------------------------------------------------------------------------
    def resolve_dir(self, parts: tuple[str, ...], what: str, create: bool = True, chroot: bool = False) -> Path:
        """The real directory for PARTS (relative to root), following only safe in-tree symlinks.

        CHROOT: an absolute symlink restarts at the tree's root (as inside a chroot of the tree)
        instead of being refused; for reading a finished tree, never for extracting into one."""
        cur: list[str] = []
        pending = list(parts)
        hops = 0
        while pending:
            comp = pending.pop(0)
            if comp in ("", "."):
                continue
            if comp == "..":
                if not cur:
                    raise RootfsError(f"{what}: a symlink in the path climbs above the root; refused")
                cur.pop()
                continue
            path = self.root.joinpath(*cur, comp)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if not create:
                    raise RootfsError(f"{what}: {'/'.join(cur + [comp])} does not exist")
                os.mkdir(path, 0o755)
                cur.append(comp)
                continue
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_SYMLINKS:
                    raise RootfsError(f"{what}: too many symlinks resolving the parent directory; refused")
                target = os.readlink(path)
                if target.startswith("/") and chroot:
                    cur = []
                elif target.startswith("/"):
                    raise RootfsError(f"{what}: parent /{'/'.join(cur + [comp])} is a symlink to the absolute "
                                      f"path {target!r}, which would leave the tree; refused")
                pending = [p for p in PurePosixPath(target).parts if p != "/"] + pending
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise RootfsError(f"{what}: parent /{'/'.join(cur + [comp])} is not a directory; refused")
            cur.append(comp)
        return self.root.joinpath(*cur)

    def regular_file(self, parts: tuple[str, ...], what: str, role: str) -> Path:
        """An already extracted regular file of the tree (its parents resolved safely, itself not followed)."""
        path = self.resolve_dir(parts[:-1], f"{what} ({role})", create=False) / parts[-1]
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise RootfsError(f"{what}: {role} was not extracted") from None
        if not stat.S_ISREG(st.st_mode):
            raise RootfsError(f"{what}: {role} is not a regular file; refused")
        return path

    # -- extraction --------------------------------------------------------------------------------
    def _remove_existing(self, path: Path, what: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise RootfsError(f"{what}: would replace the directory {path.relative_to(self.root)} "
                              "with a non-directory; refused")
        os.unlink(path)

    def _owner_mode(self, path: Path, m: tarfile.TarInfo, is_link: bool = False) -> None:
        if self.as_root:
            os.chown(path, *self._ids(m), follow_symlinks=False)
        if not is_link:
            os.chmod(path, m.mode & 0o7777)

    def extract(self, stream: IO[bytes], what: str) -> list[str]:
        """Extract a tar stream; returns the member paths in order ('/.', '/usr', ...) like dpkg's .list."""
        listing: list[str] = []
        dirs: list[tuple[Path, tarfile.TarInfo]] = []
        try:
            tf = tarfile.open(fileobj=stream, mode="r|")
        except tarfile.TarError as exc:
            raise RootfsError(f"{what}: not a tar archive: {exc}") from exc
        with tf:
            for m in tf:
                mwhat = f"{what}: {m.name}"
                parts = member_parts(m.name, mwhat)
                if not parts:
                    if m.isdir():
                        listing.append("/.")
                        continue
                    raise RootfsError(f"{mwhat}: a non-directory member names the root; refused")
                parent = self.resolve_dir(parts[:-1], mwhat)
                path = parent / parts[-1]
                rel = "/" + "/".join(parts)
                if m.isdir():
                    try:
                        st = os.lstat(path)
                    except FileNotFoundError:
                        os.mkdir(path, 0o700)
                        st = os.lstat(path)
                    if stat.S_ISLNK(st.st_mode):
                        # dpkg keeps a symlink to a directory (merged /usr); nothing is written through it
                        if os.readlink(path).startswith("/"):
                            self.warn(f"{mwhat}: kept the existing absolute symlink; its contents will be refused")
                    elif not stat.S_ISDIR(st.st_mode):
                        raise RootfsError(f"{mwhat}: would replace a non-directory with a directory; refused")
                    else:
                        dirs.append((path, m))
                elif m.isreg():
                    self._remove_existing(path, mwhat)
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        src = tf.extractfile(m)
                        assert src is not None
                        while block := src.read(CHUNK):
                            out.write(block)
                    self._owner_mode(path, m)
                    os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
                elif m.issym():
                    self._remove_existing(path, mwhat)
                    os.symlink(m.linkname, path)
                    if self.as_root:
                        os.chown(path, *self._ids(m), follow_symlinks=False)
                    os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
                elif m.islnk():
                    lparts = member_parts(m.linkname, f"{mwhat} (hard link target)")
                    if not lparts:
                        raise RootfsError(f"{mwhat}: hard link to the root; refused")
                    src = self.regular_file(lparts, mwhat, f"hard link target {m.linkname!r}")
                    self._remove_existing(path, mwhat)
                    os.link(src, path, follow_symlinks=False)
                elif m.ischr() or m.isblk() or m.isfifo():
                    if m.isfifo() or self.as_root:
                        self._remove_existing(path, mwhat)
                        kind = stat.S_IFIFO if m.isfifo() else stat.S_IFCHR if m.ischr() else stat.S_IFBLK
                        os.mknod(path, kind | 0o600, os.makedev(m.devmajor, m.devminor) if not m.isfifo() else 0)
                        self._owner_mode(path, m)
                        os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
                    else:
                        self.skipped_devices.append(rel)
                        self.warn(f"{mwhat}: device node skipped (not running as root)")
                        continue
                else:
                    raise RootfsError(f"{mwhat}: unsupported tar member type {m.type!r}; refused")
                listing.append(rel)
        # directory modes and times last, deepest first, so a read-only directory does not block its children
        for path, m in reversed(dirs):
            self._owner_mode(path, m)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        return listing
