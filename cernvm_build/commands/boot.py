"""CLI for booting snapshots: `mount` (the C CernVM-FS client on the host) and `iso` (the boot ISO)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mount", help="mount a CernVM-FS snapshot read-only with the small C client (FUSE)")
    p.add_argument("url", help="repository URL (http://...); several separated by ';' are tried in turn")
    p.add_argument("mountpoint", type=Path)
    p.add_argument("--pubkey", action="append", type=Path, required=True,
                   help="master public key verifying the whitelist (repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tag", help="mount this named tag (default: the newest revision)")
    g.add_argument("--root-hash", help="mount this root catalog hash")
    p.add_argument("--cache", type=Path, help="object cache directory (default: <cache>/boot/mount-cache)")
    p.add_argument("--cache-size", type=int, default=1024, metavar="MB", help="LRU cache limit (default 1024)")
    p.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground until unmounted")
    p.add_argument("--debug", action="store_true", help="log every fetch")
    p.set_defaults(func=_mount)

    p = sub.add_parser("iso", help="build a small boot ISO that boots a machine into a CernVM-FS snapshot")
    p.add_argument("--boot-lock", required=True, type=Path, help="lock whose kernel package is booted")
    p.add_argument("--repo-url", required=True, help="repository URL as the booted machine sees it "
                   "(several separated by ';'); kernel parameter cvmfs.url= overrides it")
    p.add_argument("--pubkey", action="append", type=Path, required=True,
                   help="master public key put into the initramfs (repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tag", help="tag to boot (cvmfs.tag= overrides); default: the newest revision")
    g.add_argument("--root-hash", help="root catalog hash to boot (cvmfs.root_hash= overrides)")
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


def _mount(args: argparse.Namespace) -> int:
    from ..boot import client
    from ..cache import default_cache_dir

    opts = client.ClientOptions(urls=[args.url], pubkeys=args.pubkey, tag=args.tag, root_hash=args.root_hash,
                                cache_dir=args.cache or default_cache_dir() / "boot" / "mount-cache",
                                cache_size_mb=args.cache_size, debug=args.debug)
    binary = client.build_client()
    if args.foreground:
        try:
            return subprocess.run(opts.argv(binary, args.mountpoint, foreground=True)).returncode
        except KeyboardInterrupt:
            return 0
    msg = client.mount_background(opts, args.mountpoint, binary)
    print(msg.splitlines()[-1].removeprefix("cvmfs-mini: ") if msg else f"mounted {args.url} on {args.mountpoint}")
    print(f"unmount with: fusermount3 -u {args.mountpoint}", file=sys.stderr)
    return 0


def _iso(args: argparse.Namespace) -> int:
    from ..boot.iso import IsoOptions, build_iso
    from ..boot.kernel import DEFAULT_MODULES
    from ..fetch import FetchOptions

    opts = IsoOptions(boot_lock=args.boot_lock, repo_url=args.repo_url, pubkeys=args.pubkey, tag=args.tag,
                      root_hash=args.root_hash, append=args.append,
                      modules=tuple(dict.fromkeys([*DEFAULT_MODULES, *args.module])),
                      kernel_package=args.kernel_package, scratch_label=args.scratch_label,
                      cache_mb=args.cache_size, error_timeout=args.error_timeout, client_lock=args.client_lock,
                      fetch=FetchOptions(mirrors=tuple(args.mirror), offline=args.offline))
    r = build_iso(args.output, opts)
    print(f"wrote {r.path}: {r.size / 2**20:.1f} MiB (kernel {r.kernel_version} {r.kernel_size / 2**20:.1f} MiB, "
          f"initramfs {r.initramfs_size / 2**20:.1f} MiB) sha256 {r.sha256}")
    print(f"kernel command line: {r.cmdline}")
    print(f"busybox, client and libraries from: {r.user_space}")
    return 0
