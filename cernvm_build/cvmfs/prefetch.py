"""Boot working-set lists: which objects a boot of a snapshot reads, in order, published beside the
snapshot as `.cvmfsprefetch-<root hash>` so the boot client (cvmfs-mini --prefetch) can fetch them in
parallel while the machine is still starting.

Format (text): the line `cvmfs-prefetch 1 <root hash>`, then one object name per line — 40 lower-case
hex digits and an optional capital suffix (`C` catalog, `P` chunk...), as in data/xx/<rest>. The list
is not signed: the client checks every object against its name as always, so a wrong list costs
time, never correctness (see cvmfs-mini.c, "boot prefetch").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from cernvm_build.errors import CvmfsError
from cernvm_build.util.files import atomic_path

PREFIX = ".cvmfsprefetch-"
NAME_RE = re.compile(r"^[0-9a-f]{40}[A-Z]?$")
ROOT_RE = re.compile(r"^[0-9a-f]{40}$")
MAX_ENTRIES = 65536          # the client refuses longer lists


def names_from_requests(paths: Iterable[str]) -> list[str]:
    """Request paths as a server saw them (`/data/97/a925...X`, `/.cvmfspublished`...) -> the object
    names, first occurrence order, without the signed files."""
    out, seen = [], set()
    for p in paths:
        p = p.split("?")[0]
        parts = [x for x in p.split("/") if x]
        if len(parts) < 3 or parts[-3] != "data" or len(parts[-2]) != 2:
            continue
        name = parts[-2] + parts[-1]
        if NAME_RE.match(name) and name not in seen:
            seen.add(name)
            out.append(name)
    return out


def list_text(root_hash: str, names: Iterable[str]) -> str:
    if not ROOT_RE.match(root_hash):
        raise CvmfsError(f"root hash {root_hash!r}: expected 40 hex digits")
    names = list(names)
    bad = [n for n in names if not NAME_RE.match(n)]
    if bad:
        raise CvmfsError(f"not an object name: {bad[0]!r}")
    if len(names) > MAX_ENTRIES or len(set(names)) != len(names):
        raise CvmfsError(f"a prefetch list has at most {MAX_ENTRIES} distinct names")
    return "".join(f"{x}\n" for x in [f"cvmfs-prefetch 1 {root_hash}", *names])


def uncompressed_objects(repo: str | Path, root_hash: str) -> set[str]:
    """The objects of snapshot ROOT_HASH stored uncompressed (files deflate does not shrink): the
    client's workers cannot tell them from a lying server's bytes, so a list never names them."""
    from cernvm_build.cvmfs.reader import Repository

    raw: set[str] = set()
    with Repository(str(repo), check_whitelist=False) as r:
        stack = [root_hash]
        while stack:
            cat = r.catalog(stack.pop())
            stack.extend(n.hash for n in cat.nested())
            for e in cat.all_entries(ordered=False):
                if not e.is_regular or e.compressed:
                    continue
                if e.hash:
                    raw.add(e.hash)
                if e.is_chunked:
                    raw.update(c.hash + "P" for c in cat.chunks(e.path))
    return raw


def write_list(repo: str | Path, root_hash: str, names: Iterable[str]) -> Path:
    """Publish the list for ROOT_HASH in the repository directory REPO (atomically), leaving out the
    snapshot's uncompressed objects (the mount fetches those itself)."""
    out = Path(repo) / f"{PREFIX}{root_hash}"
    raw = uncompressed_objects(repo, root_hash)
    text = list_text(root_hash, [n for n in names if n not in raw])
    with atomic_path(out) as tmp:
        tmp.write_text(text)
    out.chmod(0o644)
    return out
