"""Summaries of a lock for people (text) and machines (JSON)."""

from __future__ import annotations

import json
from collections import Counter

from cernvm_build.lock.lockfile import Closure


def summary(c: Closure) -> dict:
    per_repo = Counter(p.repository for p in c.packages)
    return {
        "name": c.name,
        "flavour": c.flavour,
        "arch": c.arch,
        "recipe_digest": c.recipe_digest,
        "solver": {"name": c.solver.name, "version": c.solver.version, "policy": c.solver.policy,
                   "weak": c.solver.weak},
        "requests": list(c.requests),
        "roots": list(c.roots),
        "packages": len(c.packages),
        "download_size": c.total_size(),
        "delta": None if c.delta is None else {
            "base_name": c.delta.base_name, "base_digest": c.delta.base_digest, "add": list(c.delta.add),
            "remove": list(c.delta.remove), "upgrade": list(c.delta.upgrade), "local": list(c.delta.local)},
        "repositories": [
            {"name": r.name, "url": r.url, "suite": r.suite, "components": list(r.components),
             "metadata": r.metadata, "metadata_sha256": r.metadata_sha256, "date": r.date,
             "revision": r.revision, "key_fingerprints": list(r.key_fingerprints),
             "packages": per_repo.get(r.name, 0)}
            for r in c.repositories
        ],
    }


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{n} B"
        size /= 1024
    return f"{n} B"


def render_text(c: Closure, digest: str | None = None) -> str:
    s = summary(c)
    lines = [f"closure {s['name']} ({s['flavour']}, {s['arch']})"]
    if digest:
        lines.append(f"  lock digest:  {digest}")
    lines += [
        f"  packages:     {s['packages']}",
        f"  download:     {human_size(s['download_size'])}",
        f"  requests:     {len(s['requests'])} ({', '.join(s['requests'][:6])}{' ...' if len(s['requests']) > 6 else ''})",
        f"  solver:       libsolv {c.solver.version}, policy {c.solver.policy}, "
        f"weak dependencies {'on' if c.solver.weak else 'off'}",
    ]
    if c.delta is not None:
        d = c.delta
        lines.append(f"  local delta:  on {d.base_name} {d.base_digest}: {len(d.local)} local package(s); "
                     f"added {', '.join(d.add) or '-'}; removed {', '.join(d.remove) or '-'}; "
                     f"upgraded {', '.join(d.upgrade) or '-'}")
    lines.append("  repositories:")
    for r in s["repositories"]:
        where = f"{r['url']} {r['suite']} {' '.join(r['components'])}".strip()
        lines.append(f"    {r['name']}: {r['packages']} packages from {where}")
        lines.append(f"      {r['metadata']} sha256 {r['metadata_sha256'][:16]}… {r['date'] or r['revision']}")
        for fp in r["key_fingerprints"]:
            lines.append(f"      signed by {fp}")
    return "\n".join(lines)


def render_json(c: Closure, digest: str | None = None) -> str:
    s = summary(c)
    if digest:
        s["lock_digest"] = digest
    return json.dumps(s, indent=2, sort_keys=True)
