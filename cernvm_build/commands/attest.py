"""`key generate`, `sign`, `verify`: signed locks."""

from __future__ import annotations

import argparse


def _keygen(args: argparse.Namespace) -> int:
    from ..attest import generate_key

    key, pub = generate_key(args.out, args.name)
    print(f"wrote {key} (private, mode 0600) and {pub}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from ..attest import sign_lock

    out = sign_lock(args.lock, args.key, args.output)
    print(f"wrote {out}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..attest import verify_lock

    v = verify_lock(args.lock, args.key, args.bundle)
    print(f"{args.lock}: OK, {v.lock_digest} signed by key {v.key_id[:16]}")
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
    p.add_argument("--key", required=True, help="ECDSA P-256 private key (PEM)")
    p.add_argument("-o", "--output", help="bundle path (default LOCK.sigstore.json)")
    p.set_defaults(func=_sign)

    p = sub.add_parser("verify", help="verify a lock against its signature bundle; exit 0 only if all matches")
    p.add_argument("lock")
    p.add_argument("--key", required=True, help="public key (PEM)")
    p.add_argument("--bundle", help="bundle path (default LOCK.sigstore.json)")
    p.set_defaults(func=_verify)
