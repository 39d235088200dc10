"""`rootfs`: a reproducible root tree from a lock."""

from __future__ import annotations

import argparse

from cernvm_build.commands._shared import fetch_options, package_source_args


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("rootfs", help="build a reproducible root tree from a lock")
    p.add_argument("lock")
    p.add_argument("dest", help="directory to create (built beside it, renamed when complete)")
    p.add_argument("--mode", choices=["unpack", "install"], default="unpack",
                   help="unpack payloads only, or also configure: Debian maintainer scripts in a chroot, "
                        "rpm scriptlets in one rpm transaction (needs root)")
    package_source_args(p)
    p.set_defaults(func=_rootfs)


def _rootfs(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import read_lock
    from cernvm_build.rootfs import RootfsOptions, build_rootfs
    from cernvm_build.store.fetch import fetch_closure, package_paths
    from cernvm_build.util.content_store import ContentStore

    closure = read_lock(args.lock)
    store = ContentStore.at(args.cache)
    fetch_closure(closure, store, fetch_options(args))
    result = build_rootfs(closure, args.dest, package_paths(closure, store), RootfsOptions(mode=args.mode))
    if not args.quiet:
        print(f"{result.dest}: {result.packages} packages ({args.mode}) in {result.seconds:.1f}s, "
              f"SOURCE_DATE_EPOCH={result.sde}"
              + (f", {len(result.skipped_devices)} device nodes skipped" if result.skipped_devices else ""))
    return 0
