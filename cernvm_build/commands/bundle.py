"""`bundle`: a self-contained preservation bundle (lock, signature, packages, local repository)."""

from __future__ import annotations

import argparse

from cernvm_build.commands._shared import mirrors, package_source_args


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("bundle", help="self-contained preservation bundle: lock, packages, local repository")
    p.add_argument("lock")
    p.add_argument("out", help="bundle directory to create")
    package_source_args(p)
    p.set_defaults(func=_bundle)


def _bundle(args: argparse.Namespace) -> int:
    from cernvm_build.store.bundle import make_bundle

    out = make_bundle(args.lock, args.out, cache=args.cache, mirrors=mirrors(args), offline=args.offline,
                      jobs=args.jobs)
    if not args.quiet:
        print(f"wrote bundle {out}")
    return 0
