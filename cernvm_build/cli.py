"""Command line: a thin layer over the library. Each area registers its own subcommands.

argparse (not click/typer) keeps start-up cheap: a warm `lock` must finish in well under 0.3 s.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import CernVMBuildError

# Modules that define `register(subparsers)`; imported lazily only to build the parser.
COMMAND_MODULES = [
    "cernvm_build.commands.lock",
    "cernvm_build.commands.attest",
    "cernvm_build.commands.inspect",
    "cernvm_build.commands.policy",
    "cernvm_build.commands.build",
    "cernvm_build.commands.cvmfs",
    "cernvm_build.commands.pipeline",
    "cernvm_build.commands.boot",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cernvm-build",
        description="Reproducible OS snapshots: shopping list -> closure lock -> CernVM-FS -> boot ISO.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except CernVMBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        details = getattr(exc, "details", None)
        if callable(details) and details():
            print(details(), file=sys.stderr)
        return exc.exit_code
    except OSError as exc:          # disk full, permission denied, ...: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
