"""`why`: dependency paths from the shopping list to a package, from the lock alone."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("why", help="dependency paths from the shopping list to a package, from the lock alone")
    p.add_argument("lock")
    p.add_argument("package")
    p.set_defaults(func=_why)


def _why(args: argparse.Namespace) -> int:
    from cernvm_build.lock.graph import why
    from cernvm_build.lock.lockfile import read_lock

    c = read_lock(args.lock)
    paths = why(c, args.package)
    if not paths:
        print(f"{args.package} is in the closure but no requested package leads to it")
        return 0
    for path in paths:
        print(" -> ".join(path))
    return 0
