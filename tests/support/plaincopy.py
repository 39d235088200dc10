"""The baseline a replicator is measured against: every file of a served repository copied over plain
HTTP by wget (one keep-alive connection, no verification), from a list of all files — what
`wget --mirror` would fetch if the server listed directories (stratum-0/1s do not)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def wget_copy(url: str, repo: Path, dest: Path) -> tuple[float, int, int]:
    """(seconds, files, bytes) of copying every file below REPO, as served at URL, into DEST."""
    files = sorted(p.relative_to(repo).as_posix() for p in repo.rglob("*")
                   if p.is_file() and not p.relative_to(repo).as_posix().startswith("data/txn/"))
    dest.mkdir(parents=True, exist_ok=True)
    listing = dest.parent / f"{dest.name}.urls"
    listing.write_text("".join(f"{url.rstrip('/')}/{f}\n" for f in files))
    t = time.monotonic()
    subprocess.run(["wget", "-q", "-x", "-nH", "-P", str(dest), "-i", str(listing)], check=True)
    seconds = time.monotonic() - t
    got = [p for p in dest.rglob("*") if p.is_file()]
    return seconds, len(got), sum(p.stat().st_size for p in got)
