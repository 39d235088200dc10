"""The CLI builds only the named command's part of the parser: its command table must be exact."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from cernvm_build import cli


def test_command_table_matches_what_modules_register():
    for module, names in cli.COMMANDS.items():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        importlib.import_module(module).register(sub)
        assert tuple(sorted(sub.choices)) == tuple(sorted(names)), module
    every = [n for names in cli.COMMANDS.values() for n in names]
    assert len(every) == len(set(every))


@pytest.mark.parametrize("argv, modules", [
    (["lock", "x.toml"], {"cernvm_build.commands.lock"}),
    (["-v", "verify", "x"], {"cernvm_build.commands.attest"}),
    (["no-such-command"], set(cli.COMMANDS)),
    ([], set(cli.COMMANDS)),
])
def test_only_the_named_command_module_is_imported(argv, modules):
    code = ("import sys; from cernvm_build import cli; cli.build_parser(sys.argv[1:]); "
            "print(sorted(m for m in sys.modules if m.startswith('cernvm_build.commands.')))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) - {"cernvm_build.commands"} == modules


def test_help_and_unknown_commands_list_every_command():
    res = subprocess.run([sys.executable, "-m", "cernvm_build.cli", "no-such-command"], capture_output=True,
                         text=True)
    assert res.returncode == 2
    for names in cli.COMMANDS.values():
        for n in names:
            assert n in res.stderr
