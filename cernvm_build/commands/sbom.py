"""`sbom`: SPDX 2.3 or CycloneDX 1.5 of a lock."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("sbom", help="software bill of materials of a closure (SPDX 2.3 or CycloneDX 1.5 JSON)")
    p.add_argument("lock")
    p.add_argument("--format", choices=["spdx", "cyclonedx"], default="spdx")
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p.set_defaults(func=_sbom)


def _sbom(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import digest, read_lock
    from cernvm_build.lock.sbom import to_cyclonedx, to_spdx
    from cernvm_build.util.files import atomic_write

    c = read_lock(args.lock)
    d = digest(Path(args.lock).read_bytes())
    text = to_spdx(c, d) if args.format == "spdx" else to_cyclonedx(c, d)
    if args.output:
        atomic_write(args.output, text)
    else:
        print(text, end="")
    return 0
