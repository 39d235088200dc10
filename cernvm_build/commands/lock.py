"""`lock`: shopping list -> closure lock (or --check a committed one)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import argparse

POLICIES = ("auto", "apt", "dnf", "libsolv")
# simple_args reads these as register() declares them: option -> (dest, takes a value)
_OPTIONS = {"-o": ("output", True), "--output": ("output", True), "--cache": ("cache", True),
            "--offline": ("offline", False), "--allow-expired": ("allow_expired", False),
            "--policy": ("policy", True), "--check": ("check", True), "-q": ("quiet", False),
            "--quiet": ("quiet", False)}
_VERBOSE = {"-v": 1, "-vv": 2, "-vvv": 3, "--verbose": 1}


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("lock", help="resolve a recipe (shopping list) into a pinned closure lock")
    p.add_argument("recipe", help="recipes/NAME.toml")
    p.add_argument("-o", "--output", help="lock file to write (default closures/NAME.lock.toml)")
    p.add_argument("--cache", help="metadata cache directory (default ~/.cache/cernvm-build)")
    p.add_argument("--offline", action="store_true", help="use only cached (still verified) metadata")
    p.add_argument("--allow-expired", action="store_true",
                   help="accept Release files past Valid-Until (historic snapshots); logged")
    p.add_argument("--policy", choices=POLICIES, default="auto",
                   help="whose choices to follow: apt's (Debian default), dnf's (rpm default) or plain libsolv's")
    p.add_argument("--check", metavar="LOCK", help="exit non-zero if re-resolving differs from LOCK; write nothing")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_lock, quick_exit=True)      # cli.run: no interpreter teardown after the lock


def simple_args(argv: list[str]) -> SimpleNamespace | None:
    """ARGV (`[-v...] lock RECIPE [options]`) read as argparse would read it, when it is that simple:
    every option spelled out in full, with its value in the next word or after `=`, no `--`, no
    help. Anything else gives None, and argparse reads the command line (and reports its errors).
    A warm lock takes a tenth of a second: argparse's import and parser are a few percent of it."""
    args = {"verbose": 0, "command": "lock", "recipe": None, "output": None, "cache": None, "offline": False,
            "allow_expired": False, "policy": "auto", "check": None, "quiet": False}
    words = iter(argv)
    for word in words:
        if word == "lock":
            break
        if word not in _VERBOSE:
            return None
        args["verbose"] += _VERBOSE[word]
    for word in words:
        if not word.startswith("-") or word == "-":
            if args["recipe"] is not None:
                return None
            args["recipe"] = word
            continue
        name, eq, value = word.partition("=")
        dest, takes_value = _OPTIONS.get(name, (None, False))
        if dest is None or (eq and not takes_value) or (eq and name == "-o"):
            return None
        if takes_value:
            if not eq:
                value = next(words, None)
                if value is None or value.startswith("-"):
                    return None
            if dest == "policy" and value not in POLICIES:
                return None
            args[dest] = value
        else:
            args[dest] = True
    if args["recipe"] is None:
        return None
    return SimpleNamespace(**args, func=_lock, quick_exit=True)


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
