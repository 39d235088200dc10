"""`graph`: the closure's dependency graph (DOT)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("graph", help="the closure's dependency graph")
    p.add_argument("lock")
    p.add_argument("--format", choices=["dot"], default="dot")
    p.set_defaults(func=_graph)


def _graph(args: argparse.Namespace) -> int:
    from cernvm_build.lock.graph import to_dot
    from cernvm_build.lock.lockfile import read_lock

    print(to_dot(read_lock(args.lock)), end="")
    return 0
