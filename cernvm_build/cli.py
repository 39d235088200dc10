"""Command line: a thin layer over the library. Each command is one module, commands/NAME.py
(`tree-digest` -> commands/tree_digest.py), exposing register(subparsers).

argparse (not click/typer) keeps start-up cheap: a warm `lock` must finish in well under 0.1 s, so a
command line that names a command imports only that command's module, and a plain `lock` command
line (commands/lock.py, simple_args) is read without argparse and logging, which it does not need.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from cernvm_build.errors import CernVMBuildError
from cernvm_build.util.timing import mark

if TYPE_CHECKING:
    import argparse
    from typing import NoReturn

# In the order `--help` lists them.
COMMANDS = ("lock", "show", "key", "sign", "verify", "trusted-root", "diff", "why", "graph", "sbom", "policy",
            "fetch", "rootfs", "bundle", "tree-digest", "publish", "serve", "cvmfs", "build", "image",
            "mount", "iso", "report")


def command_module(command: str) -> str:
    return "cernvm_build.commands." + command.replace("-", "_")


def _command_word(argv: list[str]) -> str | None:
    """The subcommand named on the command line (after global options), if any."""
    for arg in argv:
        if arg in ("-v", "-vv", "-vvv", "--verbose"):
            continue
        return arg
    return None


def _formatter() -> type:
    import argparse

    class _Formatter(argparse.HelpFormatter):
        """argparse's help formatter, with the terminal width found as shutil.get_terminal_size finds
        it but without importing shutil (which loads zlib, bz2 and lzma): argparse makes a formatter
        for every option it is given, in every run, help asked for or not."""

        def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                     width: int | None = None):
            super().__init__(prog, indent_increment, max_help_position, width or _columns() - 2)

    return _Formatter


def _columns() -> int:
    import os

    try:
        columns = int(os.environ["COLUMNS"])
        if columns > 0:
            return columns
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ARGV naming a known command, only that command's module is imported."""
    import argparse
    import importlib
    from functools import partial

    _Formatter = _formatter()
    parser = argparse.ArgumentParser(
        prog="cernvm-build",
        description="Reproducible OS snapshots: shopping list -> closure lock -> CernVM-FS -> boot ISO.",
        formatter_class=_Formatter,
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=partial(argparse.ArgumentParser, formatter_class=_Formatter))
    word = _command_word(argv) if argv is not None else None
    for command in ((word,) if word in COMMANDS else COMMANDS):
        importlib.import_module(command_module(command)).register(sub)
    return parser


_quick_exit = False          # set by main() for a command that asks for it (run() reads it)


def main(argv: list[str] | None = None) -> int:
    global _quick_exit
    mark("start: interpreter, site, cli")
    argv = sys.argv[1:] if argv is None else argv
    args = None
    if _command_word(argv) == "lock":
        from cernvm_build.commands.lock import simple_args

        args = simple_args(argv)
    if args is None:
        args = build_parser(argv).parse_args(argv)
    _quick_exit = getattr(args, "quick_exit", False)
    mark("command line")
    level = 30 - 10 * min(args.verbose, 2)          # WARNING, INFO with -v, DEBUG with -vv
    if _quick_exit:     # (lock: its modules log through cernvm_build.util.log, which imports logging on demand)
        from cernvm_build.util import log

        log.configure(level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    else:
        import logging

        logging.basicConfig(level=level, format="%(levelname)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args) or 0)
    except CernVMBuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        details = getattr(exc, "details", None)
        if callable(details) and details():
            print(details(), file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:         # `cernvm-build diff A B | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:          # disk full, permission denied, ...: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def run() -> NoReturn:
    """The program (bin/cernvm-build, `python -m cernvm_build.cli`): main(), then exit.

    A command that sets `quick_exit` (lock) skips the interpreter's teardown, which frees every
    object and module one by one (a libsolv pool among them): 15-25 ms of a warm lock, after its
    output is written and closed. Exit handlers (logging, timings) still run, and stdout and stderr
    are flushed first, so nothing observable changes but the time. main() itself always returns,
    for callers in the same process (tests).
    """
    if _command_word(sys.argv[1:]) == "lock":
        import gc

        gc.disable()        # as bin/cernvm-build does: a lock makes no garbage worth collecting
    code = main()
    if not _quick_exit:
        sys.exit(code)
    import atexit
    import os

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):       # closed pipe: what was wanted has been read
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
