"""`fetch`: exactly a lock's packages, downloaded and verified into the content store."""

from __future__ import annotations

import argparse

from cernvm_build.commands._shared import fetch_options, package_source_args


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("fetch", help="download and verify exactly a lock's packages into the package cache")
    p.add_argument("lock")
    package_source_args(p)
    p.set_defaults(func=_fetch)


def _fetch(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.store.fetch import fetch_closure
    from cernvm_build.util.content_store import ContentStore

    closure = read_lock(args.lock)
    report = fetch_closure(closure, ContentStore.at(args.cache), fetch_options(args))
    if not args.quiet:
        print(f"{args.lock}: {len(closure.packages)} packages verified: {report.summary()}")
    return 0
