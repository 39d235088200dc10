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
from typing import NamedTuple

import solv

from cernvm_build.formats.deb.index import ESSENTIAL, FORCED, IMPORTANT, DebIndex
from cernvm_build.lock.resolve.universe import Universe

_OPS = {"<": solv.REL_LT, "<=": solv.REL_LT | solv.REL_EQ, "=": solv.REL_EQ,
        ">=": solv.REL_GT | solv.REL_EQ, ">": solv.REL_GT}

Alternatives = list[tuple[str, int]]            # (target name, dependency id), in field order


class Group(NamedTuple):
    """One or-group of a dependency field."""

    critical: bool                # Pre-Depends/Depends (Recommends are not)
    alts: Alternatives
    providers: frozenset[int]     # of every alternative: the group is satisfied once one is marked


class Facts(NamedTuple):
    """What apt's walk needs of one solvable, read once (every libsolv access makes a SWIG object)."""

    name: str
    index: DebIndex       # the side index of its part, and its position there
    pos: int
    flags: int
    priority: int
    order: int            # apt's package ID: first mention of the name in the index files


class AptWalk:
    """apt's MarkInstall over solvable ids (names are apt's package keys)."""

    def __init__(self, u: Universe, weak: bool, protected: set[str]):
        self.u = u
        self.pool = u.pool
        self.weak = weak
        self.protected = protected
        self.marked: dict[str, int] = {}          # name -> solvable id
        self.marked_ids: set[int] = set()
        self.walked: set[str] = set()
        self._cand: dict[str, int] = {}           # name -> candidate solvable id (0: none)
        self._facts: dict[int, Facts] = {}
        self._groups: dict[int, list[Group]] = {}
        self._deps: dict[tuple[str, str, str], tuple[str, int]] = {}
        self._prov: dict[int, list[int]] = {}
        self._is_cand: dict[int, bool] = {}
        self._sole: dict[frozenset[int], int | None] = {}
        self._single: dict[tuple[str, str, str], tuple[Alternatives, frozenset[int]]] = {}
        self._kinds = [("Pre-Depends", True), ("Depends", True)] + ([("Recommends", False)] if weak else [])
        self._rank = {id(p): n for n, p in enumerate(u.parts)}

    def facts(self, sid: int) -> Facts:
        f = self._facts.get(sid)      # (hot: the walk asks ~10 times per solvable it meets)
        if f is None:
            part = self.u.part_of_id(sid)
            idx, i = part.side, part.pos(sid)
            # the name from the side table (the same stanza's Package: no SWIG solvable object)
            f = self._facts[sid] = Facts(idx.package_name(i), idx, i, idx.flags[i],
                                         idx.priority[i], (self._rank[id(part)] << 40) + idx.name_rank[i])
        return f

    # -- candidates: apt's candidate is the highest version of a name (all sources at priority 500)
    def candidate(self, name: str) -> int:
        best = self._cand.get(name)
        if best is not None:
            return best
        pool = self.pool
        top = None
        nid = pool.str2id(name, False)
        if nid:
            for s in pool.whatprovides(nid):
                if s.nameid == nid and (top is None or s.evrcmp(top) > 0):
                    top = s
        best = self._cand[name] = top.id if top is not None else 0
        return best

    def is_candidate(self, sid: int) -> bool:
        yes = self._is_cand.get(sid)
        if yes is None:
            yes = self._is_cand[sid] = self.candidate(self.facts(sid).name) == sid
        return yes

    # -- dependencies in apt's order, from the raw control fields
    def groups(self, sid: int) -> list[Group]:
        """The or-groups of Pre-Depends, Depends (and Recommends), in field order."""
        cached = self._groups.get(sid)
        if cached is not None:
            return cached
        from apt_pkg import parse_depends

        f = self.facts(sid)
        fields = f.index.dep_fields(f.pos)
        out = []
        single = self._single
        for key, critical in self._kinds:
            text = fields.get(key)
            if not text:
                continue
            for group in parse_depends(text, False):
                if len(group) == 1:     # most groups: one alternative, met in many stanzas alike
                    alt = group[0]
                    hit = single.get(alt)
                    if hit is None:
                        d = self._dep(*alt)
                        hit = single[alt] = ([d], frozenset(self.providers(d[1])))
                    out.append(Group(critical, *hit))
                    continue
                alts = [self._dep(name, ver, op) for name, ver, op in group]
                out.append(Group(critical, alts, frozenset().union(*[self.providers(d) for _, d in alts])))
        self._groups[sid] = out
        return out

    def _dep(self, name: str, ver: str, op: str) -> tuple[str, int]:
        key = (name, ver, op)
        hit = self._deps.get(key)
        if hit is None:
            # ids straight from the pool (what pool.Dep(...).Rel(...) would make, without its objects)
            base = name.split(":", 1)[0]
            dep = self.pool.str2id(base)
            if op:
                dep = self.pool.rel2id(dep, self.pool.str2id(ver), _OPS[op])
            hit = self._deps[key] = (base, dep)
        return hit

    def providers(self, dep: int) -> list[int]:
        ids = self._prov.get(dep)
        if ids is None:
            ids = self._prov[dep] = [p.id for p in self.pool.whatprovides(dep)]
        return ids

    def satisfied(self, group: Group) -> bool:
        """Does something marked satisfy one of the group's alternatives?"""
        return not self.marked_ids.isdisjoint(group.providers)

    def order(self, sid: int) -> int:
        """apt's package ID: the first mention of the name in the index files (later = larger)."""
        return self.facts(sid).order

    def _sort_key(self, target: str, sid: int) -> tuple:
        f = self.facts(sid)
        return (
            0 if f.name in self.protected else 1,
            0 if f.name == target else 1,
            0 if f.flags & (ESSENTIAL | FORCED) else 1,
            0 if f.flags & (IMPORTANT | FORCED) else 1,
            f.priority,
            -f.order,
        )

    def solutions(self, alts: Alternatives) -> list[int]:
        result: list[int] = []
        for target, dep in alts:
            vers = [p for p in self.providers(dep) if self.is_candidate(p)]
            vers.sort(key=lambda p: self._sort_key(target, p))
            for v in vers:
                if not result or result[-1] != v:
                    result.append(v)
        return result

    def sole_candidate(self, group: Group) -> int | None:
        """The group's only installable provider (a candidate version), if it has exactly one."""
        key = group.providers
        if key in self._sole:
            return self._sole[key]
        found = None
        for p in key:
            if self.is_candidate(p):
                if found is not None:
                    found = None
                    break
                found = p
        self._sole[key] = found
        return found

    def mark_install(self, sid: int, from_user: bool) -> bool:
        name = self.facts(sid).name
        protected = name in self.protected
        if name in self.marked and not protected:
            return True
        if name in self.walked:
            return True
        self.walked.add(name)
        self.marked[name] = sid
        self.marked_ids.add(sid)
        todo = [g for g in self.groups(sid) if protected or not self.satisfied(g)]
        failed = False
        for group in todo:
            critical, alts = group.critical, group.alts
            if self.satisfied(group):
                # a protected package passes its protection down single-solution dependencies
                if protected and critical:
                    p = self.sole_candidate(group)
                    if p is not None:
                        pname = self.facts(p).name
                        if pname not in self.protected:
                            self.protected.add(pname)
                            self.walked.discard(pname)
                            if not self.mark_install(p, False):
                                failed = True
                continue
            found = False
            sols = self.solutions(alts)
            for cand in sols:
                if protected and critical and len(sols) == 1:
                    self.protected.add(self.facts(cand).name)
                if self.mark_install(cand, False):
                    found = True
                    break
            if not found and critical:
                failed = True
                if not from_user and not protected:
                    break
        if failed and not from_user and not protected:
            del self.marked[name]
            self.marked_ids.discard(sid)
            self.walked.discard(name)
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
        walk._cand[s.name] = s.id
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20000))
    try:
        # apt-get install: first mark every requested package without its dependencies, then
        # resolve dependencies package by package, in apt's package-ID order (a std::set).
        for s in requested:
            walk.marked.setdefault(s.name, s.id)
            walk.marked_ids.add(s.id)
        for sid in sorted((s.id for s in requested), key=walk.order):
            walk.mark_install(sid, True)
    finally:
        sys.setrecursionlimit(limit)
    return set(walk.marked_ids)
