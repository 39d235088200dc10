"""Resolution with libsolv: a small request/response API (recipe + verified repositories -> closure).

One install job per shopping-list entry; excludes and pins narrow the considered packages; weak
dependencies follow the recipe. When the request asks for the format's own choices (the default),
the format steers libsolv the way its native tool decides: Debian's apt choices become install jobs
(formats/deb/apt_choices.py), so the closure equals apt's own resolution while libsolv remains the
judge of consistency; rpm adds dnf's one rule plain libsolv jobs lack, that a plain-name entry also
accepts the packages that obsolete it (formats/rpm/dnf_choices.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import solv

from cernvm_build.errors import RecipeError, ResolveError, UnknownPackageError
from cernvm_build.lock.lockfile import Closure, LockedPackage, Solver, split_evr
from cernvm_build.lock.recipe import PackageSpec, Recipe
from cernvm_build.lock.resolve.repository import LoadedRepo
from cernvm_build.lock.resolve.universe import Universe, libsolv_version
from cernvm_build.util.timing import mark
from cernvm_build.util.log import getLogger

log = getLogger(__name__)

SEL = solv.Selection


@dataclass(frozen=True)
class Request:
    """What to solve: the recipe's entries, plus the Debian priority/essential sets it asks for."""

    specs: tuple[PackageSpec, ...]
    exclude: tuple[str, ...] = ()
    pin: tuple[tuple[str, str], ...] = ()
    weak: bool = False
    choices: str = "libsolv"           # whose choices: the format's native tool's ("apt", "dnf") or libsolv's
    locked: tuple[int, ...] = ()       # solvable ids that must stay (update policy diverge: the base)
    erase: tuple[str, ...] = ()        # names that must not be in the closure (diverge: local removals)
    exact_choices: bool = False        # the native tool's choices must be closed as they are, or ChoicesNotClosed


class ChoicesNotClosed(Exception):
    """The native tool's choices are no consistent closure as they are (a conflict, or a dependency
    libsolv satisfies otherwise): libsolv would choose itself, which a narrowed universe must not let
    it do, as its choices could depend on what is loaded (resolve() widens it and solves again)."""


def _all_names(pool: "solv.Pool") -> list[str]:
    return sorted({s.name for s in pool.solvables_iter()})


def _select(u: Universe, spec: PackageSpec) -> "solv.Selection":
    pool = u.pool
    flags = SEL.SELECTION_NAME | SEL.SELECTION_REL | SEL.SELECTION_DOTARCH
    sel = pool.select(spec.solv_dep(), flags)
    if sel.isempty():
        flags = SEL.SELECTION_PROVIDES | SEL.SELECTION_REL
        if spec.name.startswith("/"):
            flags |= SEL.SELECTION_FILELIST
        sel = pool.select(spec.solv_dep(), flags)
    if sel.isempty():
        byname = pool.select(spec.name, SEL.SELECTION_NAME | SEL.SELECTION_PROVIDES)
        if not byname.isempty() and spec.op:
            versions = sorted({s.evr for s in byname.solvables()})
            raise UnknownPackageError(f"{spec}: no version of '{spec.name}' satisfies '{spec.op} "
                                      f"{spec.version}' (available: {', '.join(versions[:8])})")
        import difflib

        close = difflib.get_close_matches(spec.name, _all_names(pool), n=3, cutoff=0.75)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownPackageError(f"unknown package '{spec.name}': no repository provides it{hint}")
    return sel


def _considered(u: Universe, req: Request) -> list[int] | None:
    if not req.exclude and not req.pin:
        return None
    excluded = set(req.exclude)
    pins = dict(req.pin)
    seen_pins: set[str] = set()
    ids = []
    for s in u.pool.solvables_iter():
        if s.name in excluded:
            continue
        pin = pins.get(s.name)
        if pin is not None:
            if s.evr != pin:
                continue
            seen_pins.add(s.name)
        ids.append(s.id)
    for name in sorted(set(pins) - seen_pins):
        versions = sorted({s.evr for s in u.pool.solvables_iter() if s.name == name})
        avail = ", ".join(versions[:8]) or "none: no repository has this package"
        raise RecipeError(f"pin.{name} = {pins[name]!r}: no such version (available: {avail})")
    return ids


def describe_problems(problems: list) -> list[str]:
    """libsolv's problems and proposed solutions, in plain words."""
    lines = []
    for i, p in enumerate(problems, 1):
        lines.append(f"problem {i}: {p}")
        for j, sol in enumerate(p.solutions(), 1):
            what = "; ".join(e.str() for e in sol.elements(True))
            lines.append(f"  solution {i}.{j}: {what}")
    return lines


def requires_ids(s: "solv.XSolvable", weak: bool) -> list[int]:
    """The ids of S's Pre-Depends/Depends (requires, prerequisites included), and of its Recommends
    when WEAK: ids, not Dep objects (one SWIG object per dependency otherwise)."""
    deps = s.lookup_idarray(solv.SOLVABLE_REQUIRES, 1) + s.lookup_idarray(solv.SOLVABLE_REQUIRES, -1)
    if weak:
        deps += s.lookup_idarray(solv.SOLVABLE_RECOMMENDS)
    return deps


def solve(u: Universe, req: Request) -> tuple[list["solv.XSolvable"], list["solv.XSolvable"]]:
    """Returns (closure solvables, root solvables). Raises ResolveError with libsolv's explanation."""
    pool = u.pool
    considered = _considered(u, req)
    if considered is not None:
        pool.set_considered_list(considered)
    selections = [(spec, _select(u, spec)) for spec in req.specs]
    mark("select")
    jobs = []
    candidates: list[list[int]] = []       # per entry: the solvables that would satisfy it (for roots)
    native = req.choices == u.format.native_choices
    alternatives = u.format.alternatives(u, considered) if native else None
    for spec, sel in selections:
        ids = [s.id for s in sel.solvables()]
        extra = alternatives(spec, ids) if alternatives else []
        if extra:
            jobs.append(pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE_ONE_OF,
                                 pool.towhatprovides(ids + extra)))
        else:
            jobs += sel.jobs(solv.Job.SOLVER_INSTALL)
        candidates.append(ids + extra)
    for sid in req.locked:
        jobs.append(pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE, sid))
    for name in req.erase:
        jobs += pool.select(name, SEL.SELECTION_NAME).jobs(solv.Job.SOLVER_ERASE)
    solver = pool.Solver()
    solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, 0 if req.weak else 1)
    preferred = None
    if native:
        requested = []
        for _, sel in selections:
            best = pool.best_solvables(sel.solvables())
            if best:
                requested.append(best[0])
        preferred = u.format.preferred(u, requested, req.weak, [pool.id2solvable(i) for i in req.locked])
        mark(f"{req.choices}'s choices")
    if preferred is None:
        problems = solver.solve(jobs)
    else:
        chosen = sorted(preferred)
        # the native tool's marks as install jobs: libsolv proves them consistent and closed; if its
        # walk and libsolv disagree (a conflict it would have resolved later), only favour them instead.
        problems = solver.solve(jobs + [pool.Job(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_SOLVABLE, sid)
                                        for sid in chosen])
        if problems:
            if req.exact_choices:
                raise ChoicesNotClosed()
            log.info("%s's choices are not a consistent closure per libsolv; using them as preferences",
                     req.choices)
            jobs += [pool.Job(solv.Job.SOLVER_FAVOR | solv.Job.SOLVER_SOLVABLE, sid) for sid in chosen]
            problems = solver.solve(jobs)
    if problems:
        lines = describe_problems(problems)
        names = ", ".join(str(s) for s in req.specs[:5]) + (" ..." if len(req.specs) > 5 else "")
        raise ResolveError(f"no closure satisfies the request ({names}): {len(problems)} problem(s)", lines)
    mark("libsolv solve")
    trans = solver.transaction()
    closure = sorted(trans.newsolvables(), key=lambda s: (s.name, s.arch, s.evr))
    if req.exact_choices and {s.id for s in closure} != preferred:
        raise ChoicesNotClosed()        # libsolv completed the choices itself
    in_closure = {s.id for s in closure}
    roots = []
    for ids in candidates:
        chosen = [pool.id2solvable(sid) for sid in ids if sid in in_closure]
        roots += chosen[:1]
    return closure, roots


def to_closure(recipe: Recipe, u: Universe, loaded: list[LoadedRepo], closure: list, roots: list,
               weak: bool, choices: str) -> Closure:
    pool = u.pool
    names = {s.id: s.name for s in closure}
    within: dict[int, list[int]] = {}     # dependency -> its providers in the closure
    pkgs = []
    size = u.format.download_size
    for s in closure:
        sid, name, evr = s.id, s.name, s.evr
        part = u.part_of_id(sid)
        location = s.lookup_location()[0]
        checksum = s.lookup_checksum(solv.SOLVABLE_CHECKSUM)
        if checksum is None or checksum.typestr() != "sha256":
            raise ResolveError(f"{name} {evr}: the repository metadata lists no sha256 for it "
                               f"({checksum.typestr() if checksum else 'no checksum'}); refusing to pin "
                               "a package that cannot be verified")
        deps: set[int] = set()
        for dep in requires_ids(s, weak):
            providers = within.get(dep)
            if providers is None:
                providers = within[dep] = [p.id for p in pool.whatprovides(dep) if p.id in names]
            deps.update(providers)
        deps.discard(sid)
        epoch, version, release = split_evr(evr)
        pkgs.append(LockedPackage(
            name=name, epoch=epoch, version=version, release=release, arch=s.arch,
            repository=part.loaded.record.name, location=location, size=size(part, s),
            sha256=checksum.hex(), depends=tuple(sorted({names[i] for i in deps}))))
    return Closure(
        name=recipe.name, flavour=recipe.flavour, arch=recipe.arch, recipe_digest=recipe.digest(),
        solver=Solver("libsolv", libsolv_version(), choices, weak),
        requests=tuple(str(p) for p in recipe.packages) + _implicit_requests(recipe),
        roots=tuple(s.name for s in roots),
        repositories=tuple(lr.record for lr in loaded), packages=tuple(pkgs)).canonical()


def _implicit_requests(recipe: Recipe) -> tuple[str, ...]:
    extra = []
    if recipe.essential:
        extra.append("@essential")
    extra += [f"@priority:{p}" for p in recipe.priorities]
    return tuple(extra)
