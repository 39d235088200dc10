"""`sign`: a lock's signature bundle, by key or keyless (Sigstore)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cernvm_build.errors import CernVMBuildError


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("sign", help="sign a lock: LOCK.sigstore.json (in-toto statement, DSSE, Sigstore bundle)")
    p.add_argument("lock")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--key", help="ECDSA P-256 private key (PEM); no network, byte-reproducible bundle")
    how.add_argument("--keyless", action="store_true",
                     help="Sigstore keyless: OIDC identity -> Fulcio certificate, Rekor log entry "
                          "(needs the 'keyless' extra and network)")
    p.add_argument("--identity-token", help="OIDC token for --keyless (default $SIGSTORE_IDENTITY_TOKEN, "
                                            "then the CI environment's ambient credential)")
    p.add_argument("--trust-config", help="Sigstore ClientTrustConfig JSON for a private Sigstore instance "
                                          "(default: the public-good instance via TUF)")
    p.add_argument("--staging", action="store_true", help="use Sigstore's staging instance")
    p.add_argument("-o", "--output", help="bundle path (default LOCK.sigstore.json)")
    p.set_defaults(func=_sign)


def _sign(args: argparse.Namespace) -> int:
    from cernvm_build.trust.signing import sign_lock

    if args.keyless:
        from cernvm_build.trust.keyless import KeylessSigner

        signer = KeylessSigner(args.identity_token, Path(args.trust_config) if args.trust_config else None,
                               args.staging)
        out = sign_lock(args.lock, out=args.output, keyless=signer)
    else:
        if args.identity_token or args.trust_config or args.staging:
            raise CernVMBuildError("sign: --identity-token, --trust-config and --staging need --keyless")
        out = sign_lock(args.lock, args.key, args.output)
    print(f"wrote {out}")
    return 0
