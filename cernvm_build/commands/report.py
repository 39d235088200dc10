"""`report`: the release page of a repository (static, self-contained HTML) for release managers and archives."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="release page of a CernVM-FS repository: every tag's lock, signature, "
                                      "packages, kernel, diff, SBOMs (static HTML)")
    p.add_argument("repo", help="stratum-0 or replica directory, or its http:// URL")
    p.add_argument("-o", "--output", required=True, type=Path, help="directory to write (replaced atomically)")
    p.add_argument("--tag", action="append", metavar="NAME", help="only this tag (repeatable; default: every tag)")
    p.add_argument("--pubkey", action="append", type=Path, default=[],
                   help="repository master public key: check the whitelist's signature (repeatable)")
    p.add_argument("--key", action="append", type=Path, default=[],
                   help="public key the locks' signatures are verified with (repeatable)")
    p.add_argument("--identity", help="keyless signatures: the signer identity to verify")
    p.add_argument("--issuer", help="keyless signatures: the OIDC issuer to verify")
    p.add_argument("--trusted-root", type=Path, help="keyless signatures: archived Sigstore trusted_root.json")
    p.add_argument("--repo-url", help="the address clients use, for the boot and respawn commands on the page")
    p.add_argument("--top", type=int, default=15, help="packages named in the size chart (default 15)")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from cernvm_build.report import Trust, build_report

    trust = Trust(tuple(args.key), args.identity, args.issuer, args.trusted_root)
    r = build_report(args.repo, args.output, tags=args.tag, master_keys=args.pubkey, trust=trust,
                     repo_url=args.repo_url, top=args.top)
    for problem in r.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if r.whitelist_expires is not None:
        left = (r.whitelist_expires - time.time()) / 86400
        if left <= 0:
            print(f"warning: the repository's whitelist expired {-left:.0f} day(s) ago; re-sign it "
                  "(cernvm-build cvmfs resign)", file=sys.stderr)
        elif left < 7:
            print(f"warning: the repository's whitelist expires in {left:.1f} day(s); re-sign it soon "
                  "(cernvm-build cvmfs resign)", file=sys.stderr)
    if not args.quiet:
        print(f"wrote {r.out}/index.html: {len(r.tags)} tag(s), {r.files} files, {r.bytes / 1e6:.1f} MB "
              f"in {r.seconds:.1f} s")
    return 0
