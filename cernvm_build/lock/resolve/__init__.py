"""The lock stage: recipe -> verified metadata -> libsolv -> canonical closure lock (and, in update.py,
the update policies: resolutions relative to an existing lock).

The format (formats/) loads and verifies each repository and adds it to the libsolv universe; the
solver resolves the shopping list there, steered by the format's own tool's choices unless plain
libsolv is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from cernvm_build import formats
from cernvm_build.errors import RecipeError, ResolveError, UnknownPackageError
from cernvm_build.lock.lockfile import Closure, write_lock
from cernvm_build.lock.recipe import PackageSpec, Recipe
from cernvm_build.lock.resolve.repository import LoadedRepo, MetadataOptions
from cernvm_build.lock.resolve.solver import ChoicesNotClosed, Request, solve, to_closure
from cernvm_build.lock.resolve.universe import Universe, open_universe
from cernvm_build.util.content_store import ContentStore
from cernvm_build.util.timing import mark
from cernvm_build.util.log import getLogger

log = getLogger(__name__)


@dataclass(frozen=True)
class LockOptions:
    """How to lock: where the metadata cache is, whether to go online, whose choices to follow."""

    cache_dir: str | Path | None = None
    offline: bool = False
    allow_expired: bool = False
    choices: str = "auto"         # "auto": the format's own tool's (apt for deb, dnf for rpm); or "libsolv"


def choices_for(recipe: Recipe, options: LockOptions) -> str:
    """The choices to resolve with: `auto` means the format's native tool's."""
    if options.choices == "auto":
        return formats.get(recipe.flavour, RecipeError).native_choices
    return options.choices


def load_universe(recipe: Recipe, options: LockOptions,
                  needed: Callable[[Universe], Iterable[str]] | None = None) -> tuple[Universe, list[LoadedRepo]]:
    """The recipe's repositories, verified, in libsolv; only what NEEDED reaches when it is given
    and the format can narrow (u.narrowed)."""
    fmt = formats.get(recipe.flavour, RecipeError)
    store = ContentStore.at(options.cache_dir)
    meta = MetadataOptions(offline=options.offline, allow_expired=options.allow_expired,
                           with_filelists=fmt.file_dependencies and any(
                               p.name.startswith("/") for p in recipe.packages))
    loaded = [fmt.load_repository(repo, recipe.arch, store, meta) for repo in recipe.repositories]
    mark("signed metadata: Release, gpgv, index seals")
    u = open_universe(fmt, recipe.arch, loaded, store, needed)
    if fmt.file_dependencies and not meta.with_filelists and u.unprovided_files:
        # dnf (4) always reads filelists; we read them only when primary.xml leaves a file
        # dependency without provider (they are large), which gives dnf's answer at primary's cost.
        log.info("file dependencies outside primary.xml (%s): loading filelists",
                 ", ".join(u.unprovided_files[:3]))
        meta = replace(meta, with_filelists=True)
        loaded = [fmt.load_repository(repo, recipe.arch, store, meta) for repo in recipe.repositories]
        u = open_universe(fmt, recipe.arch, loaded, store)
    return u, loaded


def _specs(u: Universe, recipe: Recipe) -> list[PackageSpec]:
    """The recipe's entries, after those it asks for by property (Debian: Essential, priorities)."""
    specs = list(recipe.packages)
    base = u.format.base_specs(u, recipe)
    if base:
        have = {s.name for s in specs}
        specs = [s for s in base if s.name not in have] + specs
    return specs


def _request_names(recipe: Recipe, specs: list[PackageSpec] | None = None) -> Callable[[Universe], set[str]]:
    """The names a narrowed universe starts from: every entry (and what its spelling may select:
    `name:arch`, `name.arch`) and every pinned name. The entries are put in SPECS (computed once:
    Debian's Essential/priority entries take a pass over every stanza)."""

    def names(u: Universe) -> set[str]:
        entries = _specs(u, recipe)
        if specs is not None:
            specs[:] = entries
        out = {n for n, _ in recipe.pin}
        for spec in entries:
            out |= {spec.name, spec.name.split(":", 1)[0], spec.name.rsplit(".", 1)[0]}
        return out

    return names


def resolve(recipe: Recipe, options: LockOptions = LockOptions()) -> Closure:
    """Resolve RECIPE into a closure (nothing is written).

    With the format's own choices and no weak dependencies, libsolv gets only what the request can
    reach (formats/deb/universe.py) and must find the native tool's choices closed as they are: then
    it only checks them, and the answer is the one the whole archive gives. Anything else (an unknown
    name, a conflict, choices libsolv would complete itself) is resolved again over everything, so
    that answers and error messages never depend on the narrowing.
    """
    choices = choices_for(recipe, options)
    fmt = formats.get(recipe.flavour, RecipeError)
    narrow = choices == fmt.native_choices and not recipe.weak
    specs: list[PackageSpec] = []
    u, loaded = load_universe(recipe, options, _request_names(recipe, specs) if narrow else None)
    if u.narrowed:
        try:
            return _resolve_in(u, loaded, recipe, choices, specs)
        except (ChoicesNotClosed, UnknownPackageError, ResolveError, RecipeError) as exc:
            log.info("resolving over the whole universe (%s)", type(exc).__name__)
        u = open_universe(fmt, recipe.arch, loaded, ContentStore.at(options.cache_dir))
    return _resolve_in(u, loaded, recipe, choices, specs or _specs(u, recipe))


def _resolve_in(u: Universe, loaded: list[LoadedRepo], recipe: Recipe, choices: str,
                specs: list[PackageSpec]) -> Closure:
    req = Request(specs=tuple(specs), exclude=recipe.exclude, pin=recipe.pin, weak=recipe.weak,
                  choices=choices, exact_choices=u.narrowed)
    closure, roots = solve(u, req)
    closure = to_closure(recipe, u, loaded, closure, roots, recipe.weak, choices)
    mark("closure records")
    return closure


def lock(recipe: Recipe, output: str | Path, options: LockOptions = LockOptions()) -> tuple[Closure, str]:
    """Resolve and write the lock atomically (only when the solve succeeded). Returns (closure, digest)."""
    closure = resolve(recipe, options)
    written = write_lock(closure, output)
    mark("write")
    return closure, written
