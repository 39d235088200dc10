"""`key generate`: an ECDSA P-256 key pair for signing locks."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("key", help="manage signing keys")
    ks = p.add_subparsers(dest="key_command", metavar="ACTION", required=True)
    g = ks.add_parser("generate", help="new ECDSA P-256 key pair (NAME.key 0600, NAME.pub)")
    g.add_argument("--out", required=True, help="directory for the key files")
    g.add_argument("--name", default="cernvm-build", help="file name stem (default cernvm-build)")
    g.set_defaults(func=_keygen)


def _keygen(args: argparse.Namespace) -> int:
    from cernvm_build.trust.signing import generate_key

    key, pub = generate_key(args.out, args.name)
    print(f"wrote {key} (private, mode 0600) and {pub}")
    return 0
