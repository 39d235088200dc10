"""`fetch`, `bundle`, `rootfs`, `tree-digest`: from a lock to verified packages and a root tree."""

from __future__ import annotations

import argparse
from pathlib import Path


def _mirrors(args: argparse.Namespace) -> tuple[Path, ...]:
    """--mirror dirs, plus the bundle a lock sits in (a bundle is its own mirror)."""
    from ..bundle import MARKER

    out = [Path(m) for m in (args.mirror or [])]
    here = Path(args.lock).resolve().parent
    if (here / MARKER).exists() and here not in out:
        out.append(here)
    return tuple(out)


def _fetch_opts(args: argparse.Namespace):
    from ..fetch import FetchOptions

    return FetchOptions(mirrors=_mirrors(args), offline=args.offline, jobs=args.jobs)


def _fetch(args: argparse.Namespace) -> int:
    from ..closure import read_lock
    from ..fetch import PackageStore, fetch_closure

    closure = read_lock(args.lock)
    report = fetch_closure(closure, PackageStore.at(args.cache), _fetch_opts(args))
    if not args.quiet:
        print(f"{args.lock}: {len(closure.packages)} packages verified: {report.summary()}")
    return 0


def _rootfs(args: argparse.Namespace) -> int:
    from ..closure import read_lock
    from ..fetch import PackageStore, fetch_closure, package_paths
    from ..rootfs import RootfsOptions, build_rootfs

    closure = read_lock(args.lock)
    store = PackageStore.at(args.cache)
    fetch_closure(closure, store, _fetch_opts(args))
    result = build_rootfs(closure, args.dest, package_paths(closure, store), RootfsOptions(mode=args.mode))
    if not args.quiet:
        print(f"{result.dest}: {result.packages} packages ({args.mode}) in {result.seconds:.1f}s, "
              f"SOURCE_DATE_EPOCH={result.sde}"
              + (f", {len(result.skipped_devices)} device nodes skipped" if result.skipped_devices else ""))
    return 0


def _tree_digest(args: argparse.Namespace) -> int:
    from ..rootfs.digest import iter_entries, tree_digest

    if args.list:
        for line in iter_entries(args.dir, args.mtimes):
            print(line)
        return 0
    print(tree_digest(args.dir, args.mtimes))
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from ..bundle import make_bundle

    out = make_bundle(args.lock, args.out, cache=args.cache, mirrors=_mirrors(args), offline=args.offline,
                      jobs=args.jobs)
    if not args.quiet:
        print(f"wrote bundle {out}")
    return 0


def _common(p: argparse.ArgumentParser, jobs: bool = True) -> None:
    p.add_argument("--cache", help="cache directory (default ~/.cache/cernvm-build); packages under packages/")
    p.add_argument("--mirror", action="append", metavar="DIR",
                   help="local directory with the packages (repository layout, bundle, or flat); tried first")
    p.add_argument("--offline", action="store_true", help="use only the cache and mirrors; list what is missing")
    if jobs:
        p.add_argument("-j", "--jobs", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("-q", "--quiet", action="store_true")


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("fetch", help="download and verify exactly a lock's packages into the package cache")
    p.add_argument("lock")
    _common(p)
    p.set_defaults(func=_fetch)

    p = sub.add_parser("rootfs", help="build a reproducible root tree from a lock")
    p.add_argument("lock")
    p.add_argument("dest", help="directory to create (built beside it, renamed when complete)")
    p.add_argument("--mode", choices=["unpack", "install"], default="unpack",
                   help="unpack payloads only, or also configure: Debian maintainer scripts in a chroot, "
                        "rpm scriptlets in one rpm transaction (needs root)")
    _common(p)
    p.set_defaults(func=_rootfs)

    p = sub.add_parser("bundle", help="self-contained preservation bundle: lock, packages, local repository")
    p.add_argument("lock")
    p.add_argument("out", help="bundle directory to create")
    _common(p)
    p.set_defaults(func=_bundle)

    p = sub.add_parser("tree-digest", help="one sha256 over a tree (paths, types, modes, owners, contents)")
    p.add_argument("dir")
    p.add_argument("--mtimes", action="store_true", help="include modification times")
    p.add_argument("--list", action="store_true", help="print the per-entry lines instead of the digest")
    p.set_defaults(func=_tree_digest)
