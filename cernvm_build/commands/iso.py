"""`iso`: a small boot ISO that boots a machine into a CernVM-FS snapshot."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("iso", help="build a small boot ISO that boots a machine into a CernVM-FS snapshot")
    p.add_argument("--boot-lock", required=True, type=Path, help="lock whose kernel package is booted")
    p.add_argument("--repo-url", required=True, help="repository URL as the booted machine sees it "
                   "(several separated by ';'); kernel parameter cvmfs.url= overrides it")
    p.add_argument("--pubkey", action="append", type=Path, required=True,
                   help="master public key put into the initramfs (repeatable)")
    p.add_argument("--tag", help="tag to boot (cvmfs.tag= overrides); default: the newest revision. With "
                   "--root-hash, a label of the pinned snapshot")
    p.add_argument("--root-hash", help="root catalog hash to boot, pinned (cvmfs.root_hash= overrides; "
                   "cvmfs.rebase=1 moves to the newest revision)")
    p.add_argument("--min-revision", type=int, metavar="N",
                   help="never mount a repository revision older than N (cvmfs.min_revision= overrides)")
    p.add_argument("--proxy", metavar="SPEC",
                   help="HTTP proxies the booted machine uses, CVMFS_HTTP_PROXY syntax: groups separated "
                        "by ';' tried in order, members separated by '|' share the load, DIRECT = no proxy (only "
                        "where named), e.g. 'http://squid1:3128|http://squid2:3128;DIRECT'; kernel parameter "
                        "cvmfs.proxy= overrides. Default: no proxy")
    menu = p.add_mutually_exclusive_group()
    menu.add_argument("--menu-tag", action="append", default=[], metavar="TAG[=ROOTHASH]",
                      help="a boot-menu entry booting TAG (pinned to ROOTHASH when given); repeatable, newest "
                           "first: the first is the default (and --tag, when given, must name it)")
    menu.add_argument("--menu-from-repo", metavar="REPO",
                      help="a boot-menu entry for every tag of this repository (directory or URL, verified with "
                           "--pubkey), newest revision first, each pinned to its root hash")
    p.add_argument("--menu-limit", type=int, metavar="N", help="with --menu-from-repo: the N newest tags only")
    p.add_argument("-o", "--output", required=True, type=Path, help="ISO file to write")
    p.add_argument("--append", default="", help="extra kernel command-line arguments")
    p.add_argument("--module", action="append", default=[], help="extra kernel module for the initramfs")
    p.add_argument("--kernel-package", help="kernel package name when the lock has several")
    p.add_argument("--client-lock", type=Path,
                   help="take busybox, the client's libraries and the compiler from this lock "
                        "(recipes/boot-client.toml; needs root) instead of the build host")
    p.add_argument("--scratch-label", default="CVMSCRATCH", help="label of the ext4 scratch disk (cache + writes)")
    p.add_argument("--cache-size", type=int, default=2048, metavar="MB", help="client cache limit on the scratch disk")
    p.add_argument("--error-timeout", type=int, default=60, metavar="S",
                   help="after a boot error: seconds to offer a rescue shell before powering off")
    p.add_argument("--mirror", action="append", type=Path, default=[], help="local package mirror for the kernel")
    p.add_argument("--offline", action="store_true", help="never download the kernel package")
    p.set_defaults(func=_iso)


def _iso(args: argparse.Namespace) -> int:
    from cernvm_build.boot.iso import IsoOptions, build_iso, menu_from_repository, parse_menu_tag
    from cernvm_build.boot.kernel import DEFAULT_MODULES
    from cernvm_build.errors import BootError
    from cernvm_build.store.fetch import FetchOptions

    if args.menu_limit is not None and (not args.menu_from_repo or args.menu_limit < 1):
        raise BootError("--menu-limit N needs --menu-from-repo and N >= 1")
    if args.menu_from_repo:
        menu = menu_from_repository(args.menu_from_repo, args.pubkey, args.menu_limit)
    else:
        menu = [parse_menu_tag(spec) for spec in args.menu_tag]
    opts = IsoOptions(boot_lock=args.boot_lock, repo_url=args.repo_url, pubkeys=args.pubkey, tag=args.tag,
                      root_hash=args.root_hash, min_revision=args.min_revision, proxy=args.proxy,
                      append=args.append,
                      modules=tuple(dict.fromkeys([*DEFAULT_MODULES, *args.module])),
                      kernel_package=args.kernel_package, scratch_label=args.scratch_label,
                      cache_mb=args.cache_size, error_timeout=args.error_timeout, client_lock=args.client_lock,
                      fetch=FetchOptions(mirrors=tuple(args.mirror), offline=args.offline), menu=menu)
    r = build_iso(args.output, opts)
    print(f"wrote {r.path}: {r.size / 2**20:.1f} MiB (kernel {r.kernel_version} {r.kernel_size / 2**20:.1f} MiB, "
          f"initramfs {r.initramfs_size / 2**20:.1f} MiB) sha256 {r.sha256}")
    print(f"kernel command line: {r.cmdline}")
    for n, (title, cmdline) in enumerate(r.menu):
        extra = cmdline[len(r.cmdline):].strip()
        print(f"menu {n + 1}: {title}{' (default)' if n == 0 else ''}{': ' + extra if extra else ''}")
    print(f"busybox, client and libraries from: {r.user_space}")
    return 0
