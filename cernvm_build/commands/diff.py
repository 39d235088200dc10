"""`diff`: what changed between two locks (text, JSON, Markdown)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("diff", help="what changed between two locks")
    p.add_argument("old")
    p.add_argument("new")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the closures differ")
    p.set_defaults(func=_diff)


def _diff(args: argparse.Namespace) -> int:
    from cernvm_build.lock.diff import diff, to_json, to_markdown, to_text
    from cernvm_build.lock.lockfile import digest, read_lock

    a, b = read_lock(args.old), read_lock(args.new)
    d = diff(a, b, digest(Path(args.old).read_bytes()), digest(Path(args.new).read_bytes()))
    render = {"text": to_text, "json": to_json, "markdown": to_markdown}[args.format]
    print(render(d))
    return 1 if args.exit_code and not d.empty else 0
