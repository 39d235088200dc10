"""Filesystem helpers shared by every stage: atomic writes and digests.

Nothing half-written may be left under a final name, so every output goes to a temporary sibling
first and is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike, mode: int = 0o644) -> Iterator[Path]:
    """Yield a temporary path beside DEST; on success fsync and rename it onto DEST, else remove it."""
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _new_sibling(dest)
    except OSError as exc:      # report the file the user named, not our temporary one
        raise OSError(exc.errno, exc.strerror, str(dest)) from exc
    try:
        yield tmp_path
        os.chmod(tmp_path, mode)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def _new_sibling(dest: Path) -> Path:
    """Create an empty, new file beside DEST (tempfile.mkstemp's job, without importing tempfile,
    random and shutil into every command that writes a file)."""
    while True:
        tmp = dest.with_name(f".{dest.name}.{os.urandom(6).hex()}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            return tmp
        except FileExistsError:
            continue


def atomic_write(dest: str | os.PathLike, data: bytes | str, mode: int = 0o644) -> None:
    """Write DEST atomically (temp file + rename)."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(dest, mode) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside DEST; rename it onto DEST only when the block succeeds."""
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def source_date_epoch(default: int = 0) -> int:
    """SOURCE_DATE_EPOCH from the environment (reproducible builds), else DEFAULT."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        from cernvm_build.errors import CernVMBuildError

        raise CernVMBuildError(f"SOURCE_DATE_EPOCH={value!r} is not an integer") from exc
