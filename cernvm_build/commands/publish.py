"""`publish`: a root tree as a new tagged revision of a CernVM-FS repository."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("publish", help="publish a root tree as a new tagged revision of a CernVM-FS repository")
    p.add_argument("tree", type=Path, help="root tree to publish")
    p.add_argument("--repo", required=True, type=Path, help="stratum-0 directory (as served over HTTP)")
    p.add_argument("--keys", required=True, type=Path, help="key directory (outside the repository)")
    p.add_argument("--tag", required=True, help="name of the new tag")
    p.add_argument("--description", default="", help="tag description")
    p.add_argument("--lock", type=Path, help="closure lock: stored at /.cernvm/closure.lock.toml, digest in the tag")
    p.add_argument("--signature", type=Path, help="the lock's signature bundle (LOCK.sigstore.json from `sign`): "
                   "stored beside it at /.cernvm/closure.lock.toml.sigstore.json")
    p.add_argument("--max-catalog-entries", type=int, default=100_000, help="split catalogs above this size")
    p.add_argument("--min-catalog-entries", type=int, default=1_000, help="smallest automatic nested catalog")
    p.add_argument("--chunk-size", type=int, default=8 << 20, help="files larger than this are chunked (bytes)")
    p.add_argument("--compressor", default=None, metavar="NAME[:LEVEL]",
                   help="check that the repository is pinned to this compressor (libdeflate:N, zlib:N); with "
                        "--repin-compression, pin it instead (default: the repository's pinned one)")
    p.add_argument("--repin-compression", action="store_true",
                   help="re-compress every file with --compressor (or again with the pinned one) and pin it")
    p.add_argument("-j", "--jobs", type=int, default=0, help="compressing threads (default: two per core)")
    p.add_argument("--wait", type=float, default=0.0, help="seconds to wait for another publisher")
    p.add_argument("--no-xattrs", action="store_true", help="do not record extended attributes")
    p.add_argument("--no-sync", action="store_true", help="skip the disk sync before the manifest (tests)")
    p.set_defaults(func=_publish)


def _publish(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.publish import PublishOptions, publish

    opts = PublishOptions(tag=args.tag, description=args.description, lock_file=args.lock, signature=args.signature,
                          max_catalog_entries=args.max_catalog_entries, min_catalog_entries=args.min_catalog_entries,
                          chunk_size=args.chunk_size, compressor=args.compressor,
                          repin_compression=args.repin_compression, workers=args.jobs,
                          wait=args.wait, xattrs=not args.no_xattrs, durable=not args.no_sync)
    r = publish(args.tree, args.repo, args.keys, opts)
    print(f"published {r.fqrn} revision {r.revision} tag {r.tag}: root catalog {r.root_hash}; {r.files} files "
          f"({r.files_read} read), {r.data_objects_written} new data objects, {r.catalogs_written}/{r.catalogs} "
          f"catalogs written, {r.bytes_written / 1e6:.1f} MB written in {r.seconds:.2f} s")
    return 0
