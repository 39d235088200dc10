"""dnf's one resolution rule that plain libsolv jobs lack: a plain-name entry also accepts the packages
that obsolete it. Otherwise dnf and libsolv agree (tests/integration/test_lock_rpm.py checks dnf)."""

from __future__ import annotations

from typing import Callable

import solv

from cernvm_build.lock.recipe import PackageSpec
from cernvm_build.lock.resolve.universe import Universe

SEL = solv.Selection


def alternatives(u: Universe, considered: list[int] | None) -> Callable[[PackageSpec, list[int]], list[int]] | None:
    """The candidates dnf adds to each entry, or None when nothing obsoletes anything."""
    obsoletes = _obsoletes_by_name(u, considered)
    if not obsoletes:
        return None
    return lambda spec, ids: _dnf_obsoleters(u, spec, ids, obsoletes)


def _obsoletes_by_name(u: Universe, considered: list[int] | None) -> dict[str, list[tuple[int, int]]]:
    """Every Obsoletes of the considered packages, by the name it obsoletes: (solvable id, dep id)."""
    allowed = set(considered) if considered is not None else None
    index: dict[str, list[tuple[int, int]]] = {}
    for d in u.pool.Dataiterator(solv.SOLVABLE_OBSOLETES, None, 0):
        if allowed is None or d.solvid in allowed:
            index.setdefault(u.pool.dep2str(d.id).split(" ", 1)[0], []).append((d.solvid, d.id))
    return index


def _dnf_obsoleters(u: Universe, spec: PackageSpec, targets: list[int],
                    obsoletes: dict[str, list[tuple[int, int]]]) -> list[int]:
    """Packages that obsolete what a plain-name entry names: dnf offers them as alternatives.

    `dnf install NAME` (dnf.Base.install -> hawkey Subject._get_best_selectors, with the default
    obsoletes=True) turns a request that is just a package name into ONE selector over the packages
    of that name *plus every package whose Obsoletes matches one of them* (matched on name and EVR,
    as rpm does, not on provides); libsolv then prefers the obsoleting package. Plain libsolv with a
    name job would install the obsoleted package instead, so for the rpm flavour the same candidate
    set becomes one SOLVER_SOLVABLE_ONE_OF job. Only entries without a version or arch qualifier.
    """
    if spec.op or spec.name not in obsoletes:
        return []
    pool = u.pool
    if pool.select(spec.name, SEL.SELECTION_NAME).isempty():
        return []                            # matched through provides or name.arch: dnf adds nothing
    wanted = set(targets)
    extra = {sid for sid, dep in obsoletes[spec.name] if sid not in wanted
             and any(pool.id2solvable(t).matchesdep(solv.SOLVABLE_NAME, dep) for t in targets)}
    return sorted(extra)
