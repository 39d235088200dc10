"""`diff`, `why`, `graph`: reading closures."""

from __future__ import annotations

import argparse
from pathlib import Path


def _diff(args: argparse.Namespace) -> int:
    from ..closure import digest, read_lock
    from ..diff import diff, to_json, to_markdown, to_text

    a, b = read_lock(args.old), read_lock(args.new)
    d = diff(a, b, digest(Path(args.old).read_bytes()), digest(Path(args.new).read_bytes()))
    render = {"text": to_text, "json": to_json, "markdown": to_markdown}[args.format]
    print(render(d))
    return 1 if args.exit_code and not d.empty else 0


def _why(args: argparse.Namespace) -> int:
    from ..closure import read_lock
    from ..graph import why

    c = read_lock(args.lock)
    paths = why(c, args.package)
    if not paths:
        print(f"{args.package} is in the closure but no requested package leads to it")
        return 0
    for path in paths:
        print(" -> ".join(path))
    return 0


def _graph(args: argparse.Namespace) -> int:
    from ..closure import read_lock
    from ..graph import to_dot

    print(to_dot(read_lock(args.lock)), end="")
    return 0


def _sbom(args: argparse.Namespace) -> int:
    from ..closure import digest, read_lock
    from ..fsutil import atomic_write
    from ..sbom import to_cyclonedx, to_spdx

    c = read_lock(args.lock)
    d = digest(Path(args.lock).read_bytes())
    text = to_spdx(c, d) if args.format == "spdx" else to_cyclonedx(c, d)
    if args.output:
        atomic_write(args.output, text)
    else:
        print(text, end="")
    return 0


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("diff", help="what changed between two locks")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the closures differ")
    p.set_defaults(func=_diff)

    p = sub.add_parser("why", help="dependency paths from the shopping list to a package, from the lock alone")
    p.add_argument("lock")
    p.add_argument("package")
    p.set_defaults(func=_why)

    p = sub.add_parser("graph", help="the closure's dependency graph")
    p.add_argument("lock")
    p.add_argument("--format", choices=["dot"], default="dot")
    p.set_defaults(func=_graph)

    p = sub.add_parser("sbom", help="software bill of materials of a closure (SPDX 2.3 or CycloneDX 1.5 JSON)")
    p.add_argument("lock")
    p.add_argument("--format", choices=["spdx", "cyclonedx"], default="spdx")
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p.set_defaults(func=_sbom)
