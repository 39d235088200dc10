"""Command line: a thin layer over the library. Each area registers its own subcommands.

argparse (not click/typer) keeps start-up cheap: a warm `lock` must finish in well under 0.3 s.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import CernVMBuildError

# Modules that define `register(subparsers)`, and the commands each registers: a command line that
# names one of these builds only that module's part of the parser (tests keep the table exact).
COMMANDS = {
    "cernvm_build.commands.lock": ("lock", "show"),
    "cernvm_build.commands.attest": ("key", "sign", "trusted-root", "verify"),
    "cernvm_build.commands.inspect": ("diff", "graph", "sbom", "why"),
    "cernvm_build.commands.policy": ("policy",),
    "cernvm_build.commands.build": ("bundle", "fetch", "rootfs", "tree-digest"),
    "cernvm_build.commands.cvmfs": ("cvmfs", "publish", "serve"),
    "cernvm_build.commands.pipeline": ("build", "image"),
    "cernvm_build.commands.boot": ("iso", "mount"),
}
COMMAND_MODULES = list(COMMANDS)


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named on the command line (after global options), if any."""
    for arg in argv:
        if arg in ("-v", "-vv", "-vvv", "--verbose"):
            continue
        return arg
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ARGV naming a known command, only that command's module is imported."""
    parser = argparse.ArgumentParser(
        prog="cernvm-build",
        description="Reproducible OS snapshots: shopping list -> closure lock -> CernVM-FS -> boot ISO.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    word = _command_word(argv) if argv is not None else None
    modules = [m for m, names in COMMANDS.items() if word in names] or COMMAND_MODULES
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
