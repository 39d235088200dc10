"""`lock`: shopping list -> closure lock (or --check a committed one)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("lock", help="resolve a recipe (shopping list) into a pinned closure lock")
    p.add_argument("recipe", help="recipes/NAME.toml")
    p.add_argument("-o", "--output", help="lock file to write (default closures/NAME.lock.toml)")
    p.add_argument("--cache", help="metadata cache directory (default ~/.cache/cernvm-build)")
    p.add_argument("--offline", action="store_true", help="use only cached (still verified) metadata")
    p.add_argument("--allow-expired", action="store_true",
                   help="accept Release files past Valid-Until (historic snapshots); logged")
    p.add_argument("--policy", choices=["auto", "apt", "dnf", "libsolv"], default="auto",
                   help="whose choices to follow: apt's (Debian default), dnf's (rpm default) or plain libsolv's")
    p.add_argument("--check", metavar="LOCK", help="exit non-zero if re-resolving differs from LOCK; write nothing")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_lock, quick_exit=True)      # cli.run: no interpreter teardown after the lock


def _lock(args: argparse.Namespace) -> int:
    from cernvm_build.errors import LockError
    from cernvm_build.lock.lockfile import digest, dumps, read_lock
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve import LockOptions, lock, resolve
    from cernvm_build.util.timing import mark

    mark("imports")
    recipe = load_recipe(args.recipe)
    mark("recipe")
    options = LockOptions(cache_dir=args.cache, offline=args.offline, allow_expired=args.allow_expired,
                          choices=args.policy)
    output = args.output or Path("closures") / f"{recipe.name}.lock.toml"
    if args.check:
        committed = Path(args.check)
        old = read_lock(committed)
        text = dumps(resolve(recipe, options))
        if text != committed.read_text():
            from cernvm_build.lock.lockfile import loads

            new = loads(text)
            old_v = {p.name: p.evr for p in old.packages}
            new_v = {p.name: p.evr for p in new.packages}
            changed = sorted(n for n in set(old_v) | set(new_v) if old_v.get(n) != new_v.get(n))
            raise LockError(f"{committed}: re-resolution differs from the committed lock "
                            f"({len(changed)} package(s) changed: {', '.join(changed[:10])}"
                            f"{' ...' if len(changed) > 10 else ''}; metadata may have moved)")
        print(f"{committed}: up to date ({digest(text)})")
        return 0
    closure, d = lock(recipe, output, options)
    if not args.quiet:
        print(f"wrote {output}: {len(closure.packages)} packages, {d}")
    return 0
