"""`cvmfs init|verify|ls|cat|tags|gc|resign|replicate`: create, read, verify and maintain repositories."""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    cv = sub.add_parser("cvmfs", help="create, inspect, verify and maintain CernVM-FS repositories")
    cs = cv.add_subparsers(dest="cvmfs_command", metavar="SUBCOMMAND", required=True)

    p = cs.add_parser("init", help="create a repository: keys, whitelist, empty first revision")
    p.add_argument("dir", type=Path)
    p.add_argument("--name", required=True, help="fully qualified repository name, e.g. os.example.org")
    p.add_argument("--keys", required=True, type=Path, help="key directory (created; outside DIR)")
    p.add_argument("--whitelist-days", type=int, default=30)
    p.add_argument("--compressor", default=None, metavar="NAME[:LEVEL]",
                   help="deflate implementation pinned for every publish: libdeflate:1-12 (default libdeflate:6) "
                        "or zlib:1-9 (zlib:6 = cvmfs_server's bytes)")
    p.set_defaults(func=_init)

    def reader_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("repo", help="repository URL (http://...) or stratum-0 directory")
        p.add_argument("--pubkey", action="append", type=Path, default=[],
                       help="master public key verifying the whitelist (repeatable)")
        p.add_argument("--tag", help="read this tag instead of the current revision")
        p.add_argument("--allow-expired-whitelist", action="store_true",
                       help="accept an expired whitelist (archived repositories)")

    p = cs.add_parser("verify", help="check signatures, whitelist, catalogs and every object")
    reader_args(p)
    p.add_argument("--integrity-only", action="store_true",
                   help="without a master key: check signatures' consistency and every hash, but not who "
                        "signed (reported as UNTRUSTED)")
    p.set_defaults(func=_verify)
    p = cs.add_parser("ls", help="list a directory")
    reader_args(p)
    p.add_argument("path", nargs="?", default="/")
    p.add_argument("-l", "--long", action="store_true")
    p.add_argument("-R", "--recursive", action="store_true")
    p.set_defaults(func=_ls)
    p = cs.add_parser("cat", help="write a file's content to stdout")
    reader_args(p)
    p.add_argument("path")
    p.set_defaults(func=_cat)
    p = cs.add_parser("tags", help="list named tags")
    reader_args(p)
    p.set_defaults(func=_tags)

    p = cs.add_parser("gc", help="remove tags not kept and objects unreachable from the kept ones")
    p.add_argument("dir", type=Path)
    p.add_argument("--keep", required=True, action="append",
                   help="tags to keep (comma-separated, repeatable); trunk is always kept")
    p.add_argument("--keys", required=True, type=Path, help="key directory (the manifest is re-signed)")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--wait", type=float, default=0.0)
    p.set_defaults(func=_gc)

    p = cs.add_parser("serve-config", help="web server configuration serving a repository as stratum-0/1s do "
                                           "(caching headers of the reference setup)")
    p.add_argument("dir", type=Path, help="repository directory (stratum-0 or replica)")
    p.add_argument("--nginx", action="store_true", required=True, help="a server block for Debian's nginx")
    p.add_argument("--listen", default="80", help="nginx listen address (default 80)")
    p.add_argument("--location", help="URL path of the repository (default /cvmfs/FQRN/)")
    p.add_argument("-o", "--output", type=Path, help="write here (e.g. /etc/nginx/sites-enabled/cvmfs) "
                                                    "instead of standard output")
    p.set_defaults(func=_serve_config)

    p = cs.add_parser("replicate", help="make or update a stratum-1 replica of a served repository")
    p.add_argument("source", help="repository URL (http://host/cvmfs/FQRN), e.g. a stratum-0 or another replica")
    p.add_argument("dest", type=Path, help="replica directory (created; serve it like a stratum-0)")
    p.add_argument("--pubkey", action="append", type=Path, required=True,
                   help="master public key verifying the source's whitelist (repeatable)")
    p.add_argument("--allow-expired-whitelist", action="store_true",
                   help="accept an expired whitelist (archived repositories)")
    p.add_argument("-j", "--jobs", type=int, default=8, help="parallel downloads (default 8)")
    p.add_argument("--wait", type=float, default=0.0, help="wait up to S seconds for a concurrent run")
    p.add_argument("--timeout", type=float, default=30.0, help="connect/read timeout in seconds (default 30)")
    p.add_argument("--object-deadline", type=float, default=900.0,
                   help="longest time one response may take, in seconds (default 900)")
    p.add_argument("--deadline", type=float, default=24 * 3600.0,
                   help="longest time the whole run may take, in seconds (default 86400)")
    p.set_defaults(func=_replicate)

    p = cs.add_parser("resign", help="renew the whitelist with the master key")
    p.add_argument("dir", type=Path)
    p.add_argument("--keys", required=True, type=Path)
    p.add_argument("--days", type=int, default=30)
    p.set_defaults(func=_resign)


def _init(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.publish import init_repository

    m = init_repository(args.dir, args.name, args.keys, whitelist_days=args.whitelist_days, compressor=args.compressor)
    print(f"created {m.fqrn} in {args.dir} (revision {m.revision}); keys in {args.keys}; "
          f"clients need {args.keys / (m.fqrn + '.pub')}")
    return 0


def _open(args: argparse.Namespace):
    from cernvm_build.cvmfs.keys import load_public_key
    from cernvm_build.cvmfs.reader import Repository

    keys = [load_public_key(p) for p in args.pubkey]
    return Repository(args.repo, master_keys=keys, allow_expired_whitelist=args.allow_expired_whitelist,
                      tag=args.tag)


def _verify(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.reader import verify_repository
    from cernvm_build.errors import CvmfsError

    if args.pubkey and args.integrity_only:
        raise CvmfsError("cvmfs verify: --integrity-only is for checking without a master key; "
                         "with --pubkey the whole chain is checked")
    if not args.pubkey and not args.integrity_only:
        raise CvmfsError(f"cvmfs verify {args.repo}: give the repository's master public key (--pubkey "
                         "FQRN.pub) to check who signed it, or --integrity-only to check hashes alone (UNTRUSTED)")
    with _open(args) as repo:
        rep = verify_repository(repo)
        wl = repo.whitelist
        signer = "whitelist signed by the given master key" if repo.whitelist_signature_checked else \
            "whitelist signature NOT checked (no master key)"
        verdict = "OK" if repo.whitelist_signature_checked else "UNTRUSTED (integrity only)"
        print(f"{repo.fqrn} revision {repo.tag.revision if repo.tag else repo.manifest.revision} "
              f"root {repo.root_hash}: {verdict} — manifest signature valid, {signer}, whitelist expires "
              f"{wl.expires_text if wl else '?'}; {rep.catalogs} catalogs, {rep.entries} entries, {rep.files} files, "
              f"{rep.objects} objects ({rep.bytes / 1e6:.1f} MB) verified, {rep.tags} tags")
        for p in rep.problems:
            print(f"warning: {p}", file=sys.stderr)
    return 0


def _fmt(e, display: str, long: bool) -> str:
    from cernvm_build.cvmfs.reader import mode_string

    name = display + ("/" if e.is_dir and e.name else "")
    if e.is_symlink:
        name += f" -> {e.symlink}"
    if not long:
        return name
    when = _dt.datetime.fromtimestamp(e.mtime, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"{mode_string(e.mode)} {e.linkcount:3d} {e.uid:5d} {e.gid:5d} {e.file_size:12d} {when} {name}"


def _ls(args: argparse.Namespace) -> int:
    with _open(args) as repo:
        target = repo.lookup(args.path)
        if args.recursive:
            entries = [(e, e.path) for e in list(repo.walk(target.path))[1:]]
        elif target.is_dir:
            entries = [(e, e.name) for e in repo.listdir(target.path)]
        else:
            entries = [(target, target.path)]
        for e, display in entries:
            sys.stdout.write(_fmt(e, display, args.long) + "\n")
    return 0


def _cat(args: argparse.Namespace) -> int:
    with _open(args) as repo:
        entry = repo.resolve(args.path)
        for piece in repo.iter_content(entry):
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
    return 0


def _tags(args: argparse.Namespace) -> int:
    with _open(args) as repo:
        for t in repo.tags():
            when = _dt.datetime.fromtimestamp(t.timestamp, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{t.name}\t{t.revision}\t{t.hash}\t{when}\t{t.description}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.gc import collect_garbage

    keep = [k for arg in args.keep for k in arg.split(",") if k]
    r = collect_garbage(args.dir, args.keys, keep, wait=args.wait, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"kept tags {', '.join(r.kept_tags)}; {verb} tags {', '.join(r.removed_tags) or 'none'}; {verb} "
          f"{r.objects_removed} objects ({r.bytes_removed / 1e6:.1f} MB), {r.objects_kept} kept")
    return 0


def _resign(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.publish import resign_whitelist

    wl = resign_whitelist(args.dir, args.keys, args.days)
    print(f"whitelist of {wl.fqrn} renewed; expires {wl.expires_text}")
    return 0


def _serve_config(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.manifest import Manifest
    from cernvm_build.cvmfs.serve import nginx_site
    from cernvm_build.errors import CvmfsError
    from cernvm_build.util.files import atomic_write

    try:
        raw = (args.dir / ".cvmfspublished").read_bytes()
    except OSError as exc:
        raise CvmfsError(f"{args.dir}: not a repository (.cvmfspublished: {exc.strerror})") from exc
    fqrn = Manifest.parse(raw, f"{args.dir}/.cvmfspublished")[0].fqrn   # for naming only: nothing trusted
    text = nginx_site(args.dir, fqrn, args.listen, args.location)
    if args.output:
        atomic_write(args.output, text)
        print(f"wrote {args.output}: {fqrn} at {args.location or f'/cvmfs/{fqrn}/'} on {args.listen} "
              "(needs libnginx-mod-http-headers-more-filter)")
    else:
        print(text, end="")
    return 0


def _replicate(args: argparse.Namespace) -> int:
    from cernvm_build.cvmfs.keys import load_public_key
    from cernvm_build.cvmfs.replicate import replicate

    r = replicate(args.source, args.dest, [load_public_key(p) for p in args.pubkey],
                  allow_expired_whitelist=args.allow_expired_whitelist, workers=args.jobs, wait_lock=args.wait,
                  timeout=args.timeout, object_deadline=args.object_deadline, deadline=args.deadline)
    if r.up_to_date:
        print(f"{r.fqrn} revision {r.revision} root {r.root_hash}: replica already up to date in {args.dest}")
        return 0
    before = f"revision {r.previous_revision}" if r.previous_revision is not None else "empty"
    print(f"{r.fqrn} revision {r.revision} root {r.root_hash} replicated to {args.dest} (was {before}): "
          f"fetched {r.objects_fetched} objects ({r.bytes_fetched / 1e6:.1f} MB), {r.objects_present} already "
          f"present, {r.objects_reverified} re-verified, {r.catalogs_walked} catalogs walked, {r.tags} tags, "
          f"{r.seconds:.1f}s")
    return 0
