"""`trusted-root`: archive Sigstore's trusted root beside keylessly signed locks."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("trusted-root", help="write Sigstore's trusted_root.json (via TUF) to archive beside "
                                            "keylessly signed locks")
    p.add_argument("--out", required=True, help="file to write")
    p.add_argument("--staging", action="store_true", help="Sigstore's staging instance")
    p.add_argument("--offline", action="store_true", help="no TUF refresh: the local or bundled copy")
    p.set_defaults(func=_trusted_root)


def _trusted_root(args: argparse.Namespace) -> int:
    from cernvm_build.trust.keyless import export_trusted_root

    out = export_trusted_root(Path(args.out), args.staging, args.offline)
    print(f"wrote {out}")
    return 0
