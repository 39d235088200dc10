"""The CLI builds only the named command's part of the parser: one module per command, named after it."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import subprocess
import sys

import pytest

import cernvm_build.commands
from cernvm_build import cli


def test_every_command_module_registers_exactly_its_command():
    for command in cli.COMMANDS:
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(cli.command_module(command)).register(sub)
        assert tuple(sub.choices) == (command,), command


def test_every_command_module_is_in_the_table():
    modules = {m.name for m in pkgutil.iter_modules(cernvm_build.commands.__path__) if not m.name.startswith("_")}
    assert modules == {c.replace("-", "_") for c in cli.COMMANDS}


@pytest.mark.parametrize("argv, modules", [
    (["lock", "x.toml"], {"cernvm_build.commands.lock"}),
    (["-v", "verify", "x"], {"cernvm_build.commands.verify"}),
    (["tree-digest", "x"], {"cernvm_build.commands.tree_digest"}),
    (["fetch", "x"], {"cernvm_build.commands.fetch", "cernvm_build.commands._shared"}),
    (["no-such-command"], {cli.command_module(c) for c in cli.COMMANDS} | {"cernvm_build.commands._shared"}),
    ([], {cli.command_module(c) for c in cli.COMMANDS} | {"cernvm_build.commands._shared"}),
])
def test_only_the_named_command_module_is_imported(argv, modules):
    code = ("import sys; from cernvm_build import cli; cli.build_parser(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.startswith('cernvm_build.commands.')))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) == modules


def test_help_and_unknown_commands_list_every_command():
    res = subprocess.run([sys.executable, "-m", "cernvm_build.cli", "no-such-command"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    for n in cli.COMMANDS:
        assert n in res.stderr


@pytest.mark.parametrize("argv", [
    ["lock", "r.toml"],
    ["lock", "r.toml", "-o", "x", "--cache", "c", "--offline", "-q"],
    ["-v", "lock", "--output=x", "r.toml", "--policy", "apt", "--check", "L", "--allow-expired", "--quiet"],
    ["-vv", "--verbose", "lock", "r.toml", "--cache=c", "--policy=libsolv"],
])
def test_a_simple_lock_command_line_reads_as_argparse_reads_it(argv):
    from cernvm_build.commands.lock import simple_args

    fast = simple_args(argv)
    assert fast is not None and vars(fast) == vars(cli.build_parser(argv).parse_args(argv))


@pytest.mark.parametrize("argv", [
    ["lock", "r.toml", "--policy", "bogus"], ["lock", "r.toml", "--off"], ["lock", "-h"], ["lock", "r.toml", "-o"],
    ["lock"], ["lock", "a.toml", "b.toml"], ["lock", "r.toml", "--", "x"], ["lock", "r.toml", "-o=x"],
    ["lock", "r.toml", "-v"], ["lock", "r.toml", "--offline=yes"],
])
def test_anything_else_is_left_to_argparse(argv):
    from cernvm_build.commands.lock import simple_args

    assert simple_args(argv) is None
