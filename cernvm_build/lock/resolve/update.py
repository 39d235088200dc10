"""Update policies as closure diffs: stay, diverge, rebase (DESIGN.md, "Update policies").

They live with the resolver because each is a resolution relative to a lock: stay re-resolves and
diffs, diverge solves on a locked base, rebase re-solves a recorded delta on a new base.

- stay: keep the pinned closure; report what a re-resolution would bring (security updates pending).
- diverge: local additions/upgrades/removals on top of a base lock, solved with the base locked; the
  result is itself a lock whose [delta] table records the base digest and the local changes.
- rebase: move a local lock onto a new base and re-solve its delta; every local package is reported
  as kept, now-in-base, upgraded, dropped or in conflict (with libsolv's problem text). A conflicting
  rebase writes no lock unless asked to drop the conflicting additions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import solv

from cernvm_build.errors import LockError, RebaseConflict, RecipeError, ResolveError
from cernvm_build.lock.diff import ClosureDiff, diff
from cernvm_build.lock.lockfile import Closure, Delta, digest, read_lock
from cernvm_build.lock.recipe import PackageSpec, Recipe
from cernvm_build.lock.resolve import LockOptions, choices_for, load_universe, resolve
from cernvm_build.lock.resolve.solver import Request, solve, to_closure
from cernvm_build.lock.resolve.universe import Universe


def _check_compatible(base: Closure, recipe: Recipe, what: str) -> None:
    if (base.flavour, base.arch) != (recipe.flavour, recipe.arch):
        raise RecipeError(f"{recipe.path or recipe.name}: is {recipe.flavour}/{recipe.arch} but {what} is "
                          f"{base.flavour}/{base.arch}")


def locate(u: Universe, c: Closure, skip: set[str] = frozenset(), what: str = "base") -> dict[str, int]:
    """The pool's solvable for each package of C (exact name, version, arch and sha256)."""
    pool = u.pool
    found: dict[str, int] = {}
    for p in c.packages:
        if p.name in skip:
            continue
        sel = pool.select(p.name, solv.Selection.SELECTION_NAME)
        match = None
        for s in sel.solvables():
            if s.evr == p.evr and s.arch == p.arch:
                chk = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
                if chk is not None and chk.hex() == p.sha256:
                    match = s
                    break
        if match is None:
            raise LockError(f"{what} package {p.name} {p.evr} ({p.arch}, sha256 {p.sha256[:12]}) is not in the "
                            "repositories' current metadata: lock the base against the same metadata first")
        found[p.name] = match.id
    return found


def _local_names(local: Closure, base: Closure) -> tuple[str, ...]:
    b = {p.name: p.sha256 for p in base.packages}
    return tuple(sorted(p.name for p in local.packages if b.get(p.name) != p.sha256))


def _solve_on(u: Universe, loaded, recipe: Recipe, base: Closure, base_digest: str, delta: Delta,
              options: LockOptions) -> Closure:
    ids = locate(u, base, set(delta.remove) | set(delta.upgrade))
    specs = tuple(PackageSpec.parse(a, "add") for a in delta.add) + tuple(PackageSpec(n) for n in delta.upgrade)
    choices = choices_for(recipe, options)
    req = Request(specs=specs, exclude=recipe.exclude, pin=recipe.pin, weak=recipe.weak, choices=choices,
                  locked=tuple(sorted(ids.values())), erase=tuple(delta.remove))
    closure, roots = solve(u, req)
    c = to_closure(recipe, u, loaded, closure, roots, recipe.weak, choices)
    names = {p.name for p in c.packages}
    base_roots = tuple(r for r in base.roots if r in names)
    new = replace(c, name=recipe.name, requests=base.requests + tuple(delta.add),
                  roots=tuple(sorted(set(base_roots) | {s.name for s in roots})))
    return replace(new, delta=replace(delta, base_name=base.name, base_digest=base_digest,
                                      local=_local_names(new, base))).canonical()


def diverge(base_lock: str | Path, recipe: Recipe, add: list[str] = (), remove: list[str] = (),
            upgrade: list[str] = (), options: LockOptions = LockOptions()) -> Closure:
    """base + local delta, solved with the base locked. Raises ResolveError when impossible.

    The local additions are RECIPE's packages plus ADD; RECIPE also names the repositories."""
    base = read_lock(base_lock)
    add = [str(p) for p in recipe.packages] + [a for a in add if a not in {str(p) for p in recipe.packages}]
    _check_compatible(base, recipe, str(base_lock))
    base_names = {p.name for p in base.packages}
    for n in list(remove) + list(upgrade):
        if n not in base_names:
            raise RecipeError(f"{n}: not in base {base_lock}, so it cannot be removed or upgraded")
    u, loaded = load_universe(recipe, options)
    delta = Delta(base.name, digest(Path(base_lock).read_bytes()), tuple(add), tuple(sorted(remove)),
                  tuple(sorted(upgrade)))
    return _solve_on(u, loaded, recipe, base, delta.base_digest, delta, options)


@dataclass
class RebaseEntry:
    name: str
    status: str                 # kept | now-in-base | upgraded | dropped | conflict
    old_version: str
    new_version: str = ""
    problem: list[str] = field(default_factory=list)


@dataclass
class RebaseReport:
    closure: Closure | None
    entries: list[RebaseEntry]
    conflicts: dict[str, list[str]]      # added spec -> libsolv problem text

    def text(self) -> str:
        lines = []
        for e in self.entries:
            ver = f"{e.old_version} -> {e.new_version}" if e.new_version and e.new_version != e.old_version \
                else e.old_version
            lines.append(f"{e.status:12} {e.name} {ver}")
            lines += [f"{'':12}   {p}" for p in e.problem]
        return "\n".join(lines)


def rebase(local_lock: str | Path, new_base_lock: str | Path, recipe: Recipe,
           options: LockOptions = LockOptions(), drop_conflicts: bool = False) -> RebaseReport:
    """Re-solve LOCAL's recorded delta on NEW_BASE; RECIPE names the repositories (its packages are
    not used: the delta is the one recorded in the local lock)."""
    local = read_lock(local_lock)
    if local.delta is None:
        raise LockError(f"{local_lock}: not a local lock (no [delta] table); make one with `policy diverge`")
    new_base = read_lock(new_base_lock)
    _check_compatible(new_base, recipe, str(new_base_lock))
    new_digest = digest(Path(new_base_lock).read_bytes())
    u, loaded = load_universe(recipe, options)
    delta = local.delta
    new_names = {p.name for p in new_base.packages}
    delta = replace(delta, remove=tuple(n for n in delta.remove if n in new_names),
                    upgrade=tuple(n for n in delta.upgrade if n in new_names))
    conflicts: dict[str, list[str]] = {}
    try:
        result = _solve_on(u, loaded, recipe, new_base, new_digest, delta, options)
    except ResolveError:
        # isolate which local additions no longer fit, each with its own problem text
        for spec in delta.add:
            try:
                _solve_on(u, loaded, recipe, new_base, new_digest, replace(delta, add=(spec,)), options)
            except ResolveError as exc:
                conflicts[spec] = exc.problems or [str(exc)]
        if not conflicts:
            raise
        # what the rebase gives without them: reported either way, written only when asked
        result = _solve_on(u, loaded, recipe, new_base, new_digest,
                           replace(delta, add=tuple(a for a in delta.add if a not in conflicts)), options)
    old = {p.name: p for p in local.packages}
    new = {p.name: p for p in result.packages} if result else {}
    base_v = {p.name: p.evr for p in new_base.packages}
    conflict_roots = {PackageSpec.parse(a, "add").name for a in conflicts}
    entries = []
    for name in local.delta.local:
        o = old[name]
        if name in conflict_roots:
            spec = next(a for a in conflicts if PackageSpec.parse(a, "add").name == name)
            entries.append(RebaseEntry(name, "conflict", o.evr, "", conflicts[spec]))
        elif name in base_v and (result is None or name not in result.delta.local):
            entries.append(RebaseEntry(name, "now-in-base", o.evr, base_v[name]))
        elif name in new:
            status = "kept" if new[name].evr == o.evr else "upgraded"
            entries.append(RebaseEntry(name, status, o.evr, new[name].evr))
        else:
            entries.append(RebaseEntry(name, "dropped", o.evr))
    report = RebaseReport(result if drop_conflicts or not conflicts else None, entries, conflicts)
    if conflicts and not drop_conflicts:
        raise RebaseConflict(f"rebase of {local_lock} onto {new_base_lock}: {len(conflicts)} local addition(s) "
                             f"conflict with the new base ({', '.join(sorted(conflicts))}); no lock written "
                             "(use --drop-conflicts to drop them)", report.text().splitlines())
    return report


@dataclass
class StayReport:
    diff: ClosureDiff
    security: list[str]                  # package names whose newer version comes from a -security suite

    def text(self) -> str:
        d = self.diff
        pending = sum(len(v) for v in d.changes.values())
        head = (f"{d.old.name}: staying on {d.old_digest or 'the pinned closure'}; "
                f"{pending} change(s) pending, {len(self.security)} from security repositories")
        lines = [head]
        if self.security:
            lines.append("security updates not applied: " + ", ".join(self.security))
        from cernvm_build.lock.diff import to_text

        lines.append(to_text(d))
        return "\n".join(lines)


def stay(lock: str | Path, recipe: Recipe | None = None, newest: str | Path | None = None,
         options: LockOptions = LockOptions()) -> StayReport:
    """What the pinned closure is not getting: its diff to a fresh resolution (or to NEWEST)."""
    current = read_lock(lock)
    if newest is not None:
        latest = read_lock(newest)
    elif recipe is not None:
        latest = resolve(recipe, options)
    else:
        raise RecipeError("stay needs --recipe (to re-resolve) or --newest LOCK")
    d = diff(current, latest, digest(Path(lock).read_bytes()), "")
    security_repos = {r.name for r in latest.repositories if r.suite.endswith(("-security", "/updates"))}
    sec = sorted(c.name for kind in ("upgraded", "added", "rebuilt") for c in d.changes[kind]
                 if c.new is not None and c.new.repository in security_repos)
    return StayReport(d, sec)
