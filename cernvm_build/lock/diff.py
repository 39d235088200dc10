"""Closure diffs: what changed between two locks, for people (text), machines (JSON) and CI (Markdown).

JSON schema (stable, `format` = "cernvm-build/closure-diff/v1"):
  {"format", "old": {name, digest, packages}, "new": {...},
   "summary": {added, removed, upgraded, downgraded, rebuilt, moved},
   "added"/"removed": [{name, arch, version, repository}],
   "upgraded"/"downgraded"/"rebuilt"/"moved": [{name, arch, old_version, new_version,
                                               old_repository, new_repository, old_sha256, new_sha256}],
   "repositories": [{name, change: added|removed|changed, old_metadata_sha256, new_metadata_sha256,
                     old_date, new_date}]}
Every list is sorted by (name, arch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from cernvm_build.lock.lockfile import Closure, LockedPackage
from cernvm_build.lock.versions import compare

KINDS = ("added", "removed", "upgraded", "downgraded", "rebuilt", "moved")
FORMAT = "cernvm-build/closure-diff/v1"


@dataclass(frozen=True)
class Change:
    name: str
    arch: str
    old: LockedPackage | None
    new: LockedPackage | None


@dataclass
class ClosureDiff:
    old: Closure
    new: Closure
    old_digest: str = ""
    new_digest: str = ""
    changes: dict[str, list[Change]] = field(default_factory=lambda: {k: [] for k in KINDS})
    repositories: list[dict] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(self.changes.values()) and not self.repositories

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.changes.items()}


def diff(old: Closure, new: Closure, old_digest: str = "", new_digest: str = "") -> ClosureDiff:
    d = ClosureDiff(old, new, old_digest, new_digest)
    a = {p.key: p for p in old.packages}
    b = {p.key: p for p in new.packages}
    flavour = new.flavour or old.flavour
    for key in sorted(set(a) | set(b)):
        pa, pb = a.get(key), b.get(key)
        if pa is None:
            kind = "added"
        elif pb is None:
            kind = "removed"
        else:
            c = compare(flavour, pa.evr, pb.evr)
            if c < 0:
                kind = "upgraded"
            elif c > 0:
                kind = "downgraded"
            elif pa.sha256 != pb.sha256:
                kind = "rebuilt"
            elif pa.repository != pb.repository:
                kind = "moved"
            else:
                continue
        d.changes[kind].append(Change(key[0], key[1], pa, pb))
    ra = {r.name: r for r in old.repositories}
    rb = {r.name: r for r in new.repositories}
    for name in sorted(set(ra) | set(rb)):
        x, y = ra.get(name), rb.get(name)
        if x and y and x.metadata_sha256 == y.metadata_sha256:
            continue
        d.repositories.append({
            "name": name, "change": "added" if x is None else "removed" if y is None else "changed",
            "old_metadata_sha256": x.metadata_sha256 if x else None,
            "new_metadata_sha256": y.metadata_sha256 if y else None,
            "old_date": x.date if x else None, "new_date": y.date if y else None,
        })
    return d


def _side(c: Closure, digest: str) -> dict:
    return {"name": c.name, "digest": digest, "packages": len(c.packages)}


def to_json(d: ClosureDiff) -> str:
    out: dict = {"format": FORMAT, "old": _side(d.old, d.old_digest), "new": _side(d.new, d.new_digest),
                 "summary": d.counts(), "repositories": d.repositories}
    for kind in ("added", "removed"):
        out[kind] = [{"name": c.name, "arch": c.arch, "version": (c.new or c.old).evr,
                      "repository": (c.new or c.old).repository} for c in d.changes[kind]]
    for kind in ("upgraded", "downgraded", "rebuilt", "moved"):
        out[kind] = [{"name": c.name, "arch": c.arch, "old_version": c.old.evr, "new_version": c.new.evr,
                      "old_repository": c.old.repository, "new_repository": c.new.repository,
                      "old_sha256": c.old.sha256, "new_sha256": c.new.sha256} for c in d.changes[kind]]
    return json.dumps(out, indent=2, sort_keys=True)


def _source(c: Change) -> str:
    """Where the package comes from: the repository, or both when it moved (security, updates...)."""
    if c.old is not None and c.new is not None and c.old.repository != c.new.repository:
        return f"{c.old.repository} -> {c.new.repository}"
    return (c.new or c.old).repository


def _line(kind: str, c: Change) -> str:
    if kind == "added":
        return f"+ {c.name} {c.new.evr} ({c.arch}) from {_source(c)}"
    if kind == "removed":
        return f"- {c.name} {c.old.evr} ({c.arch}) from {_source(c)}"
    if kind == "moved":
        return f"~ {c.name} {c.new.evr}: {_source(c)}"
    if kind == "rebuilt":
        return f"~ {c.name} {c.new.evr}: rebuilt (sha256 {c.old.sha256[:12]} -> {c.new.sha256[:12]}) from {_source(c)}"
    return f"~ {c.name} {c.old.evr} -> {c.new.evr} from {_source(c)}"


def summary_line(d: ClosureDiff) -> str:
    counts = d.counts()
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    return ", ".join(parts) if parts else "no package changes"


def to_text(d: ClosureDiff) -> str:
    lines = [f"{d.old.name} ({len(d.old.packages)} packages) -> {d.new.name} ({len(d.new.packages)} packages): "
             f"{summary_line(d)}"]
    for kind in KINDS:
        if d.changes[kind]:
            lines.append(f"{kind}:")
            lines += ["  " + _line(kind, c) for c in d.changes[kind]]
    for r in d.repositories:
        lines.append(f"repository {r['name']} {r['change']}: metadata {r['old_date'] or '-'} -> {r['new_date'] or '-'}")
    return "\n".join(lines)


def to_markdown(d: ClosureDiff) -> str:
    lines = [f"### Closure diff: `{d.old.name}` → `{d.new.name}`", "",
             f"**{summary_line(d)}** ({len(d.old.packages)} → {len(d.new.packages)} packages)", ""]
    if any(d.changes.values()):
        lines += ["| change | package | arch | old | new | repository |", "|---|---|---|---|---|---|"]
        for kind in KINDS:
            for c in d.changes[kind]:
                old = f"`{c.old.evr}`" if c.old else ""
                new = f"`{c.new.evr}`" if c.new else ""
                lines.append(f"| {kind} | `{c.name}` | {c.arch} | {old} | {new} | {_source(c)} |")
        lines.append("")
    if d.repositories:
        lines += ["| repository | change | old metadata | new metadata |", "|---|---|---|---|"]
        for r in d.repositories:
            lines.append(f"| {r['name']} | {r['change']} | {r['old_date'] or ''} | {r['new_date'] or ''} |")
        lines.append("")
    return "\n".join(lines)
