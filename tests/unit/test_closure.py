"""The lock format: canonical bytes, strict reading, round trips."""

from __future__ import annotations

import pytest

from cernvm_build.errors import LockError
from cernvm_build.lock.lockfile import (
    Closure,
    IndexFile,
    LockedPackage,
    RepositoryRecord,
    Solver,
    dumps,
    loads,
    split_evr,
)

SHA = "a" * 64


def sample(**kw) -> Closure:
    pkgs = (
        LockedPackage("zlib1g", 1, "1.2.13.dfsg", "1", "amd64", "main", "pool/z.deb", 10, SHA, ("libc6",)),
        LockedPackage("libc6", 0, "2.36", "9+deb12u4", "amd64", "main", "pool/l.deb", 20, "b" * 64, ()),
    )
    repo = RepositoryRecord("main", "http://x/debian", "dists/s/InRelease", "c" * 64, "Sat, 1 Jan 2000",
                            suite="s", components=("main",), key_fingerprints=("F2", "F1"),
                            indexes=(IndexFile("main/binary-amd64/Packages", "d" * 64, 5),))
    base = dict(name="t", flavour="deb", arch="amd64", recipe_digest="sha256:" + "e" * 64,
                solver=Solver("libsolv", "0.7.23", "apt", False), requests=("zlib1g",), roots=("zlib1g",),
                repositories=(repo,), packages=pkgs)
    base.update(kw)
    return Closure(**base)


def test_canonical_and_round_trip():
    text = dumps(sample())
    again = dumps(sample(packages=tuple(reversed(sample().packages))))
    assert text == again                                   # input order does not matter
    assert text.index('name = "libc6"') < text.index('name = "zlib1g"')
    assert 'key-fingerprints = ["F1", "F2"]' in text
    assert dumps(loads(text)) == text


def test_evr():
    assert split_evr("1:2.3-4") == (1, "2.3", "4")
    assert split_evr("2.3") == (0, "2.3", "")
    assert split_evr("1.0-1-2") == (0, "1.0-1", "2")
    p = sample().packages[0]
    assert p.evr == "1:1.2.13.dfsg-1"


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace("lock-version = 1", "lock-version = 9"), "lock-version 9 is not supported"),
    (lambda t: t.replace('sha256 = "' + SHA, 'sha256 = "xyz'), "is not a hex sha256"),
    (lambda t: t.replace('depends = ["libc6"]', 'depends = ["ghost"]'), "depends on 'ghost'"),
    (lambda t: t.replace('repository = "main"', 'repository = "other"', 1), "repository 'other' is not listed"),
    (lambda t: t.replace("size = 10", 'size = "10"'), "key 'size' has the wrong type"),
    (lambda t: t + "[[[", "not valid TOML"),
])
def test_strict_reading(edit, message):
    with pytest.raises(LockError, match=message):
        loads(edit(dumps(sample())), "x.lock.toml")


def test_strings_are_escaped():
    c = sample(name='we"ird\\name\x7f')
    assert loads(dumps(c)).name == c.name


def test_cli_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    lock = tmp_path / "l.toml"
    lock.write_text(dumps(sample()))
    for args, expect in ((["show", tmp_path / "missing.lock"], "missing.lock: cannot read lock: No such file"),
                         (["sbom", lock, "-o", "/proc/nope/x.json"], "/proc/nope/x.json:")):
        res = subprocess.run([sys.executable, "-m", "cernvm_build.cli", *map(str, args)], capture_output=True,
                             text=True)
        assert res.returncode == 1 and res.stderr.startswith("error: ") and expect in res.stderr
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
