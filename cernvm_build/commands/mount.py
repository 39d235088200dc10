"""`mount`: a CernVM-FS snapshot mounted read-only on the host with the small C client (FUSE)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
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
    p.add_argument("--min-revision", type=int, metavar="N", help="refuse a repository older than revision N")
    p.add_argument("--timeout", type=int, default=20, metavar="S",
                   help="seconds without a byte from a server before the next is tried (default 20)")
    p.add_argument("--deadline", type=int, metavar="S", help="seconds for one whole request (default 120)")
    p.add_argument("--proxy", metavar="SPEC",
                   help="HTTP proxies, CVMFS_HTTP_PROXY syntax: groups separated by ';' tried in order, "
                        "members separated by '|' share the load, DIRECT = no proxy (used only where named), e.g. "
                        "'http://squid1:3128|http://squid2:3128;DIRECT'. Default: no proxy")
    p.add_argument("--foreground", "-f", action="store_true", help="stay in the foreground until unmounted")
    p.add_argument("--debug", action="store_true", help="log every fetch")
    p.set_defaults(func=_mount)


def _mount(args: argparse.Namespace) -> int:
    from cernvm_build.boot import client
    from cernvm_build.util.content_store import default_cache_dir

    opts = client.ClientOptions(urls=[args.url], pubkeys=args.pubkey, tag=args.tag, root_hash=args.root_hash,
                                cache_dir=args.cache or default_cache_dir() / "boot" / "mount-cache",
                                cache_size_mb=args.cache_size, debug=args.debug, min_revision=args.min_revision,
                                timeout=args.timeout, deadline=args.deadline,
                                proxy=args.proxy)
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
