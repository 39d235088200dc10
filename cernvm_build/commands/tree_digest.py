"""`tree-digest`: one sha256 over a tree (paths, types, modes, owners, contents)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("tree-digest", help="one sha256 over a tree (paths, types, modes, owners, contents)")
    p.add_argument("dir")
    p.add_argument("--mtimes", action="store_true", help="include modification times")
    p.add_argument("--list", action="store_true", help="print the per-entry lines instead of the digest")
    p.set_defaults(func=_tree_digest)


def _tree_digest(args: argparse.Namespace) -> int:
    from cernvm_build.rootfs.digest import iter_entries, tree_digest

    if args.list:
        for line in iter_entries(args.dir, args.mtimes):
            print(line)
        return 0
    print(tree_digest(args.dir, args.mtimes))
    return 0
