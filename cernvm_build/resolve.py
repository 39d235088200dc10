"""The lock stage: recipe -> verified metadata -> libsolv -> canonical closure lock."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

from .cache import Cache
from .closure import Closure, write_lock
from .recipe import Recipe
from .repos import FetchOptions, LoadedRepo, load_repository
from .solver import Request, debian_base_specs, solve, to_closure
from .universe import Universe, open_universe

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LockOptions:
    cache_dir: str | Path | None = None
    offline: bool = False
    allow_expired: bool = False
    policy: str = "auto"          # "auto": apt's choices for deb, dnf's for rpm; or "apt" / "dnf" / "libsolv"


def load_universe(recipe: Recipe, options: LockOptions) -> tuple[Universe, list[LoadedRepo]]:
    cache = Cache.at(options.cache_dir)
    fetch = FetchOptions(offline=options.offline, allow_expired=options.allow_expired,
                         with_filelists=recipe.flavour == "rpm" and any(
                             p.name.startswith("/") for p in recipe.packages))
    loaded = [load_repository(recipe, repo, cache, fetch) for repo in recipe.repositories]
    u = open_universe(recipe.flavour, recipe.arch, loaded, cache)
    if recipe.flavour == "rpm" and not fetch.with_filelists and u.unprovided_files:
        # dnf (4) always reads filelists; we read them only when primary.xml leaves a file
        # dependency without provider (they are large), which gives dnf's answer at primary's cost.
        log.info("file dependencies outside primary.xml (%s): loading filelists",
                 ", ".join(u.unprovided_files[:3]))
        fetch = replace(fetch, with_filelists=True)
        loaded = [load_repository(recipe, repo, cache, fetch) for repo in recipe.repositories]
        u = open_universe(recipe.flavour, recipe.arch, loaded, cache)
    return u, loaded


def resolve(recipe: Recipe, options: LockOptions = LockOptions()) -> Closure:
    """Resolve RECIPE into a closure (nothing is written)."""
    u, loaded = load_universe(recipe, options)
    policy = options.policy
    if policy == "auto":
        policy = "apt" if recipe.flavour == "deb" else "dnf"
    specs = list(recipe.packages)
    if recipe.flavour == "deb" and (recipe.essential or recipe.priorities):
        base = debian_base_specs(u, recipe.essential, recipe.priorities)
        have = {s.name for s in specs}
        specs = [s for s in base if s.name not in have] + specs
    req = Request(specs=tuple(specs), exclude=recipe.exclude, pin=recipe.pin, weak=recipe.weak,
                  apt_policy=policy == "apt", dnf_policy=policy == "dnf")
    closure, roots = solve(u, req)
    return to_closure(recipe, u, loaded, closure, roots, recipe.weak, policy)


def lock(recipe: Recipe, output: str | Path, options: LockOptions = LockOptions()) -> tuple[Closure, str]:
    """Resolve and write the lock atomically (only when the solve succeeded). Returns (closure, digest)."""
    closure = resolve(recipe, options)
    return closure, write_lock(closure, output)
