"""`show`: a lock's summary (text, JSON, or one line per package)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("show", help="summarise a lock (counts, size, repositories)")
    p.add_argument("lock")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true", help="machine-readable summary")
    g.add_argument("--packages", action="store_true", help="one line per package: name, version, arch, repository")
    p.set_defaults(func=_show)


def _show(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import digest, read_lock
    from cernvm_build.lock.show import render_json, render_text

    closure = read_lock(args.lock)
    d = digest(Path(args.lock).read_bytes())
    if args.json:
        print(render_json(closure, d))
    elif args.packages:
        for p in closure.packages:
            print(f"{p.name}\t{p.evr}\t{p.arch}\t{p.repository}")
    else:
        print(render_text(closure, d))
    return 0
