"""apt's choices, computed over the libsolv pool, to steer libsolv toward what Debian users expect.

Plain libsolv satisfies `A | B` and virtual packages by its own preferences (measured on bookworm:
gawk over mawk for `awk`, elogind, gnome-console, mew-beta-bin for `pinentry`). apt instead walks
dependencies depth-first in field order (Pre-Depends, Depends, then Recommends when enabled), skips
an or-group that something already marked satisfies, and otherwise takes the first alternative that
can be installed, ordering the providers of each alternative by apt's CompareProviders: requested by
the user, same name as the target, Essential, Important, then Priority, then the later-created
package. This module replays that walk (apt 2.6 pkgDepCache::MarkInstall for a fresh system) and
returns the packages apt would mark; the solver then favours exactly those, so libsolv still proves
the closure consistent but breaks its ties the way apt does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import solv

from cernvm_build.formats.deb.index import ESSENTIAL, FORCED, IMPORTANT
from cernvm_build.formats.deb.universe import side_index
from cernvm_build.lock.resolve.universe import Universe

_OPS = {"<": solv.REL_LT, "<=": solv.REL_LT | solv.REL_EQ, "=": solv.REL_EQ,
        ">=": solv.REL_GT | solv.REL_EQ, ">": solv.REL_GT}


@dataclass
class AptWalk:
    u: Universe
    weak: bool
    protected: set[str] = field(default_factory=set)
    marked: dict[str, int] = field(default_factory=dict)       # name -> solvable id
    marked_ids: set[int] = field(default_factory=set)
    _cand: dict[str, "solv.XSolvable | None"] = field(default_factory=dict)
    _groups: dict[int, list[tuple[bool, list[tuple[str, "solv.Dep"]]]]] = field(default_factory=dict)
    _order: dict[int, int] = field(default_factory=dict)
    walked: set[str] = field(default_factory=set)
    _deps: dict = field(default_factory=dict)
    _prov: dict[int, list[int]] = field(default_factory=dict)

    # -- candidates: apt's candidate is the highest version of a name (all sources at priority 500)
    def candidate(self, name: str) -> "solv.XSolvable | None":
        if name in self._cand:
            return self._cand[name]
        pool = self.u.pool
        best = None
        nid = pool.str2id(name, False)
        if nid:
            for s in pool.whatprovides(nid):
                if s.nameid == nid and (best is None or s.evrcmp(best) > 0):
                    best = s
        self._cand[name] = best
        return best

    def is_candidate(self, s: "solv.XSolvable") -> bool:
        c = self.candidate(s.name)
        return c is not None and c.id == s.id

    # -- dependencies in apt's order, from the raw control fields
    def groups(self, s: "solv.XSolvable") -> list[tuple[bool, list[tuple[str, "solv.Dep"]]]]:
        """[(critical, [(target name, dep), ...]), ...] for Pre-Depends, Depends (and Recommends)."""
        cached = self._groups.get(s.id)
        if cached is not None:
            return cached
        import apt_pkg

        idx, i = side_index(self.u, s)
        fields = idx.dep_fields(i)
        out = []
        kinds = [("Pre-Depends", True), ("Depends", True)] + ([("Recommends", False)] if self.weak else [])
        for key, critical in kinds:
            text = fields.get(key)
            if not text:
                continue
            for group in apt_pkg.parse_depends(text, False):
                out.append((critical, [self._dep(name, ver, op) for name, ver, op in group]))
        self._groups[s.id] = out
        return out

    def _dep(self, name: str, ver: str, op: str) -> tuple[str, "solv.Dep"]:
        key = (name, ver, op)
        hit = self._deps.get(key)
        if hit is None:
            base = name.split(":", 1)[0]
            dep = self.u.pool.Dep(base)
            if op:
                dep = dep.Rel(_OPS[op], self.u.pool.Dep(ver))
            hit = self._deps[key] = (base, dep)
        return hit

    def providers(self, dep: "solv.Dep") -> list[int]:
        ids = self._prov.get(dep.id)
        if ids is None:
            ids = self._prov[dep.id] = [p.id for p in self.u.pool.whatprovides(dep.id)]
        return ids

    def satisfied(self, dep: "solv.Dep") -> bool:
        return any(p in self.marked_ids for p in self.providers(dep))

    def order(self, s: "solv.XSolvable") -> int:
        """apt's package ID: the first mention of the name in the index files (later = larger)."""
        o = self._order.get(s.id)
        if o is None:
            idx, i = side_index(self.u, s)
            part = self.u.parts.index(self.u.part_of(s))
            o = self._order[s.id] = (part << 40) + idx.name_rank[i]
        return o

    def _sort_key(self, target: str, s: "solv.XSolvable"):
        idx, i = side_index(self.u, s)
        flags = idx.flags[i]
        return (
            0 if s.name in self.protected else 1,
            0 if s.name == target else 1,
            0 if flags & (ESSENTIAL | FORCED) else 1,
            0 if flags & (IMPORTANT | FORCED) else 1,
            idx.priority[i],
            -self.order(s),
        )

    def solutions(self, alts: list[tuple[str, "solv.Dep"]]) -> list["solv.XSolvable"]:
        result: list = []
        for target, dep in alts:
            vers = [p for p in self.u.pool.whatprovides(dep.id) if self.is_candidate(p)]
            vers.sort(key=lambda p: self._sort_key(target, p))
            for v in vers:
                if not result or result[-1].id != v.id:
                    result.append(v)
        return result

    def possible(self, alts: list[tuple[str, "solv.Dep"]]) -> set[int]:
        pool = self.u.pool
        return {p for _, d in alts for p in self.providers(d) if self.is_candidate(pool.id2solvable(p))}

    def mark_install(self, s: "solv.XSolvable", from_user: bool) -> bool:
        protected = s.name in self.protected
        if s.name in self.marked and not protected:
            return True
        if s.name in self.walked:
            return True
        self.walked.add(s.name)
        self.marked[s.name] = s.id
        self.marked_ids.add(s.id)
        todo = [(crit, alts) for crit, alts in self.groups(s)
                if protected or not any(self.satisfied(d) for _, d in alts)]
        failed = False
        for critical, alts in todo:
            if any(self.satisfied(d) for _, d in alts):
                # a protected package passes its protection down single-solution dependencies
                if protected and critical:
                    only = self.possible(alts)
                    if len(only) == 1:
                        p = self.u.pool.id2solvable(next(iter(only)))
                        if p.name not in self.protected:
                            self.protected.add(p.name)
                            self.walked.discard(p.name)
                            if not self.mark_install(p, False):
                                failed = True
                continue
            found = False
            sols = self.solutions(alts)
            for cand in sols:
                if protected and critical and len(sols) == 1:
                    self.protected.add(cand.name)
                if self.mark_install(cand, False):
                    found = True
                    break
            if not found and critical:
                failed = True
                if not from_user and not protected:
                    break
        if failed and not from_user and not protected:
            del self.marked[s.name]
            self.marked_ids.discard(s.id)
            self.walked.discard(s.name)
            return False
        return True


def apt_choices(u: Universe, requested: list["solv.XSolvable"], weak: bool,
                installed: list["solv.XSolvable"] = ()) -> set[int]:
    """Solvable ids apt would mark when asked to install REQUESTED (in order) on a system that has
    INSTALLED (a locked base: those versions are kept and satisfy dependencies as they are)."""
    walk = AptWalk(u, weak, protected={s.name for s in requested})
    for s in installed:
        walk.marked[s.name] = s.id
        walk.marked_ids.add(s.id)
        walk.walked.add(s.name)
        walk._cand[s.name] = s
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        # apt-get install: first mark every requested package without its dependencies, then
        # resolve dependencies package by package, in apt's package-ID order (a std::set).
        for s in requested:
            walk.marked.setdefault(s.name, s.id)
            walk.marked_ids.add(s.id)
        for s in sorted(requested, key=walk.order):
            walk.mark_install(s, True)
    finally:
        sys.setrecursionlimit(limit)
    return set(walk.marked_ids)
