"""`image`: a classic disk image of a tree (raw or qcow2): an ext4 file system for comparison, or with
--bootable a partitioned disk that boots (diskimage-builder with our cernvm-rootfs element)."""

from __future__ import annotations

import argparse

from cernvm_build.commands._shared import fetch_options, megabytes, package_source_args


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("image", help="classic disk image of a tree (raw or qcow2): ext4 for size comparison, "
                                     "or --bootable (a lock or tree, through diskimage-builder)")
    p.add_argument("tree", help="root tree; with --bootable also a lock (the tree is built from it)")
    p.add_argument("out")
    p.add_argument("--format", choices=["raw", "qcow2"], default="qcow2")
    p.add_argument("--size-mib", type=int, default=0, help="file system / disk size (default: from the tree)")
    p.add_argument("--source-date-epoch", type=int, help="timestamps (default: the tree root's mtime)")
    p.add_argument("--bootable", action="store_true",
                   help="a partitioned disk with the tree's GRUB (grub-pc in the lock) through diskimage-builder "
                        "(pip group `dib`; root)")
    p.add_argument("--root-password-hash", metavar="HASH",
                   help="with --bootable: root's crypt(3) password hash (e.g. from `openssl passwd -6`); "
                        "default: root stays locked as in the tree")
    p.add_argument("--dib-log", metavar="FILE", help="with --bootable: keep disk-image-create's log here")
    package_source_args(p)
    p.set_defaults(func=_image)


def _image(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cernvm_build.errors import ImageError

    if not args.bootable:
        if args.root_password_hash or args.dib_log:
            raise ImageError("--root-password-hash and --dib-log need --bootable")
        from cernvm_build.image.ext4 import ImageOptions, make_image

        r = make_image(args.tree, args.out, ImageOptions(format=args.format, size_mib=args.size_mib,
                                                         sde=args.source_date_epoch or 0))
        if not args.quiet:
            print(f"wrote {r.path}: {r.format} ext4 image, {megabytes(r.bytes)} file "
                  f"({megabytes(r.allocated_bytes)} allocated, {megabytes(r.virtual_bytes)} virtual), "
                  f"tree {megabytes(r.tree_bytes)}, sha256 {r.sha256}")
        return 0
    from cernvm_build.image.dib import BootableRequest, make_bootable_image

    args.lock = args.tree                        # a lock in a bundle: the bundle is its mirror

    r = make_bootable_image(BootableRequest(
        Path(args.tree), Path(args.out), format=args.format, root_password_hash=args.root_password_hash,
        cache_dir=Path(args.cache) if args.cache else None, fetch_options=fetch_options(args),
        image_size_mib=args.size_mib, keep_log=Path(args.dib_log) if args.dib_log else None))
    if not args.quiet:
        print(f"wrote {r.path}: bootable {r.format} image (MBR, ext4 {r.fs_uuid}), {megabytes(r.bytes)} file "
              f"({megabytes(r.virtual_bytes)} virtual), disk-image-create {r.seconds:.1f}s"
              + (f", tree {r.tree_seconds:.1f}s" if r.tree_seconds else "") + f", sha256 {r.sha256}")
    return 0
