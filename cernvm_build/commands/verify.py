"""`verify`: a lock against its signature bundle (key, or keyless identity; offline)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cernvm_build.errors import CernVMBuildError


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("verify", help="verify a lock against its signature bundle; exit 0 only if all matches")
    p.add_argument("lock")
    p.add_argument("--key", help="public key (PEM) for key-signed bundles")
    p.add_argument("--identity", help="keyless: the signer identity the certificate must name "
                                      "(email, or CI workflow URI)")
    p.add_argument("--issuer", help="keyless: the OIDC issuer the certificate must name "
                                    "(e.g. https://token.actions.githubusercontent.com)")
    p.add_argument("--trusted-root", help="keyless: archived Sigstore trusted_root.json; verification is "
                                          "offline (default: the sigstore package's offline copy)")
    p.add_argument("--staging", action="store_true", help="keyless: Sigstore staging's offline trusted root")
    p.add_argument("--bundle", help="bundle path (default LOCK.sigstore.json)")
    p.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from cernvm_build.trust.signing import verify_lock

    if args.key:
        if args.identity or args.issuer or args.trusted_root or args.staging:
            raise CernVMBuildError("verify: --key cannot be combined with --identity/--issuer/--trusted-root")
        v = verify_lock(args.lock, args.key, args.bundle)
        print(f"{args.lock}: OK, {v.lock_digest} signed by key {v.key_id[:16]}")
        return 0
    if not (args.identity and args.issuer):
        raise CernVMBuildError("verify: give --key PUB, or --identity and --issuer for a keyless bundle")
    from cernvm_build.trust.keyless import KeylessIdentity

    expect = KeylessIdentity(args.identity, args.issuer,
                             Path(args.trusted_root) if args.trusted_root else None, args.staging)
    v = verify_lock(args.lock, bundle=args.bundle, identity=expect)
    print(f"{args.lock}: OK, {v.lock_digest} signed keylessly by {v.key_id} ({args.issuer})")
    return 0
