"""Garbage collection: drop tags not kept and delete every object unreachable from the kept ones.

The new history (without the dropped tags) and re-signed manifest are committed *before* anything is
deleted, so a collector killed midway leaves a consistent repository with a few extra objects.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.cvmfs import objects as obj
from cernvm_build.cvmfs import reflog as rl
from cernvm_build.cvmfs.history import TRUNK
from cernvm_build.cvmfs.keys import check_outside, load_keys
from cernvm_build.cvmfs.publish import commit_revision, repository_lock, revision_time, sign_and_install
from cernvm_build.cvmfs.reader import LocalSource, Repository
from cernvm_build.errors import CvmfsError


@dataclass
class GcResult:
    kept_tags: list[str] = field(default_factory=list)
    removed_tags: list[str] = field(default_factory=list)
    objects_kept: int = 0
    objects_removed: int = 0
    bytes_removed: int = 0


def reachable_objects(repo: Repository, root_hashes: set[str]) -> set[tuple[str, str]]:
    """(hex, suffix) of every catalog, file object and chunk reachable from ROOT_HASHES."""
    seen: set[tuple[str, str]] = set()
    stack = sorted(root_hashes)
    while stack:
        h = stack.pop()
        if (h, obj.SUFFIX_CATALOG) in seen:
            continue
        seen.add((h, obj.SUFFIX_CATALOG))
        cat = repo.catalog(h)
        for (raw,) in cat.db.execute("SELECT hash FROM catalog WHERE hash IS NOT NULL"):
            seen.add((raw.hex(), obj.SUFFIX_NONE))
        for (raw,) in cat.db.execute("SELECT hash FROM chunks"):
            seen.add((raw.hex(), obj.SUFFIX_PARTIAL))
        stack.extend(n.hash for n in cat.nested())
    return seen


def collect_garbage(repo: str | os.PathLike, keydir: str | os.PathLike, keep: list[str], *,
                    wait: float = 0.0, dry_run: bool = False) -> GcResult:
    """Keep the tags named in KEEP (trunk is always kept); remove other tags and unreachable objects."""
    repo = Path(repo)
    check_outside(Path(keydir), repo)
    result = GcResult()
    with repository_lock(repo, wait):
        with Repository(LocalSource(repo), check_whitelist=False) as r:
            tags = r.tags()
            names = {t.name for t in tags}
            unknown = sorted(set(keep) - names)
            if unknown:
                raise CvmfsError(f"no such tag(s) in {r.fqrn}: {', '.join(unknown)} (see 'cvmfs tags')")
            kept = [t for t in tags if t.name in set(keep) | {TRUNK}]
            result.kept_tags = [t.name for t in kept]
            result.removed_tags = sorted(names - set(result.kept_tags))
            live = reachable_objects(r, {t.hash for t in kept} | {r.manifest.root_catalog})
            manifest = r.manifest

            def keep_ref(h: str, type_: int) -> bool:  # the reflog lists only objects that survive
                if type_ == rl.TYPE_CATALOG:
                    return (h, obj.SUFFIX_CATALOG) in live
                return h in {rl.TYPE_CERTIFICATE: manifest.certificate, rl.TYPE_METAINFO: manifest.metainfo,
                             rl.TYPE_HISTORY: manifest.history}.get(type_)

            if result.removed_tags and not dry_run:
                keys = load_keys(Path(keydir), r.fqrn)
                store = obj.ObjectStore(repo)
                manifest = commit_revision(repo, store, keys, manifest.root_catalog,
                                           manifest.root_catalog_size or 0, manifest.revision, kept,
                                           manifest.history, revision_time(), manifest.ttl, durable=True,
                                           keep_ref=lambda h, t: t == rl.TYPE_CATALOG and keep_ref(h, t))
            elif not dry_run:
                refs = rl.load_refs(repo)
                if refs is not None and any(not keep_ref(h, t) for h, (t, _) in refs.items()):
                    # objects named in the reflog are about to go: re-sign the same revision with a pruned one
                    keys = load_keys(Path(keydir), r.fqrn)
                    pruned = {h: v for h, v in refs.items() if keep_ref(h, v[0])}
                    manifest = sign_and_install(repo, keys, manifest, pruned)
            # a dry run that drops tags reports the current history as garbage: the real run replaces it
            history = None if (dry_run and result.removed_tags) else manifest.history
            for h, suffix in ((manifest.certificate, obj.SUFFIX_CERTIFICATE), (history, obj.SUFFIX_HISTORY), (manifest.metainfo, obj.SUFFIX_METAINFO),
                              (obj.EMPTY_HASH, obj.SUFFIX_NONE)):
                if h:
                    live.add((h, suffix))
        data = repo / "data"
        for sub in sorted(os.listdir(data)):
            if len(sub) != 2:
                continue
            for name in sorted(os.listdir(data / sub)):
                parsed = obj.parse_object_name(sub, name)
                if parsed is None:
                    continue
                if parsed in live:
                    result.objects_kept += 1
                    continue
                path = data / sub / name
                result.objects_removed += 1
                result.bytes_removed += path.stat().st_size
                if not dry_run:
                    path.unlink()
    return result
