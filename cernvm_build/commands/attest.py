"""`key generate`, `sign`, `verify`: signed locks (local key, or keyless through Sigstore)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import CernVMBuildError


def _keygen(args: argparse.Namespace) -> int:
    from ..attest import generate_key

    key, pub = generate_key(args.out, args.name)
    print(f"wrote {key} (private, mode 0600) and {pub}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..attest import sign_lock

    if args.keyless:
        from ..keyless import KeylessSigner

        signer = KeylessSigner(args.identity_token, Path(args.trust_config) if args.trust_config else None,
                               args.staging)
        out = sign_lock(args.lock, out=args.output, keyless=signer)
    else:
        if args.identity_token or args.trust_config or args.staging:
            raise CernVMBuildError("sign: --identity-token, --trust-config and --staging need --keyless")
        out = sign_lock(args.lock, args.key, args.output)
    print(f"wrote {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..attest import verify_lock

    if args.key:
        if args.identity or args.issuer or args.trusted_root or args.staging:
            raise CernVMBuildError("verify: --key cannot be combined with --identity/--issuer/--trusted-root")
        v = verify_lock(args.lock, args.key, args.bundle)
        print(f"{args.lock}: OK, {v.lock_digest} signed by key {v.key_id[:16]}")
        return 0
    if not (args.identity and args.issuer):
        raise CernVMBuildError("verify: give --key PUB, or --identity and --issuer for a keyless bundle")
    from ..keyless import KeylessIdentity

    expect = KeylessIdentity(args.identity, args.issuer,
                             Path(args.trusted_root) if args.trusted_root else None, args.staging)
    v = verify_lock(args.lock, bundle=args.bundle, identity=expect)
    print(f"{args.lock}: OK, {v.lock_digest} signed keylessly by {v.key_id} ({args.issuer})")
    return 0


def _trusted_root(args: argparse.Namespace) -> int:
    from ..keyless import export_trusted_root

    out = export_trusted_root(Path(args.out), args.staging, args.offline)
    print(f"wrote {out}")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("key", help="manage signing keys")
    ks = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    g = ks.add_parser("generate", help="new ECDSA P-256 key pair (NAME.key 0600, NAME.pub)")
    g.add_argument("--out", required=True, help="directory for the key files")
    g.add_argument("--name", default="cernvm-build", help="file name stem (default cernvm-build)")
    g.set_defaults(func=_keygen)

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

    p = sub.add_parser("trusted-root", help="write Sigstore's trusted_root.json (via TUF) to archive beside "
                                            "keylessly signed locks")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--staging", action="store_true", help="Sigstore's staging instance")
    p.add_argument("--offline", action="store_true", help="no TUF refresh: the local or bundled copy")
    p.set_defaults(func=_trusted_root)
