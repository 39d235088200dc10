"""`image`: a classic ext4 disk image of a tree (raw or qcow2), for comparison."""

from __future__ import annotations

import argparse

from cernvm_build.commands._shared import megabytes


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("image", help="classic ext4 disk image of a tree (raw or qcow2), for size comparison")
    p.add_argument("tree")
    p.add_argument("out")
    p.add_argument("--format", choices=["raw", "qcow2"], default="qcow2")
    p.add_argument("--size-mib", type=int, default=0, help="file system size (default: from the tree)")
    p.add_argument("--source-date-epoch", type=int, help="timestamps (default: the tree root's mtime)")
    p.set_defaults(func=_image)


def _image(args: argparse.Namespace) -> int:
    from cernvm_build.image.ext4 import ImageOptions, make_image

    r = make_image(args.tree, args.out, ImageOptions(format=args.format, size_mib=args.size_mib,
                                                     sde=args.source_date_epoch or 0))
    print(f"wrote {r.path}: {r.format} ext4 image, {megabytes(r.bytes)} file ({megabytes(r.allocated_bytes)} allocated, "
          f"{megabytes(r.virtual_bytes)} virtual), tree {megabytes(r.tree_bytes)}, sha256 {r.sha256}")
    return 0
