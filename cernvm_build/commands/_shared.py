"""What several commands share: the package-source options (fetch, rootfs, bundle) and sizes in words."""

from __future__ import annotations

import argparse
from pathlib import Path


def package_source_args(p: argparse.ArgumentParser, jobs: bool = True) -> None:
    p.add_argument("--cache", help="cache directory (default ~/.cache/cernvm-build); packages under packages/")
    p.add_argument("--mirror", action="append", metavar="DIR",
                   help="local directory with the packages (repository layout, bundle, or flat); tried first")
    p.add_argument("--offline", action="store_true", help="use only the cache and mirrors; list what is missing")
    if jobs:
        p.add_argument("-j", "--jobs", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("-q", "--quiet", action="store_true")


def mirrors(args: argparse.Namespace) -> tuple[Path, ...]:
    """--mirror dirs, plus the bundle a lock sits in (a bundle is its own mirror)."""
    from cernvm_build.store.bundle import MARKER

    out = [Path(m) for m in (args.mirror or [])]
    here = Path(args.lock).resolve().parent
    if (here / MARKER).exists() and here not in out:
        out.append(here)
    return tuple(out)


def fetch_options(args: argparse.Namespace):
    from cernvm_build.store.fetch import FetchOptions

    return FetchOptions(mirrors=mirrors(args), offline=args.offline, jobs=args.jobs)


def megabytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"
