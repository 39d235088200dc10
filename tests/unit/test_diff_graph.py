"""Closure diffs and the dependency graph, from locks alone."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

from cernvm_build.lock.diff import diff, to_json, to_markdown, to_text
from cernvm_build.lock.graph import to_dot, why
from cernvm_build.lock.lockfile import LockedPackage, dumps
from tests.unit.test_closure import sample

CLI = [sys.executable, "-m", "cernvm_build.cli"]


def pkg(name, version, sha="a", repo="main", depends=()):
    return LockedPackage(name, 0, version, "1", "amd64", repo, f"pool/{name}.deb", 1, sha * 64, tuple(depends))


def pair():
    old = sample(packages=(pkg("a", "1.0"), pkg("b", "2.0"), pkg("c", "1.0"), pkg("d", "1.0"),
                           pkg("e", "1.0"), pkg("gone", "1.0")))
    new = sample(packages=(pkg("a", "1.1"), pkg("b", "1.9"), pkg("c", "1.0", sha="b"), pkg("d", "1.0", repo="upd"),
                           pkg("e", "1.0"), pkg("fresh", "0.1")))
    new = replace(new, repositories=new.repositories + (replace(new.repositories[0], name="upd"),))
    return old, new


def test_diff_kinds():
    d = diff(*pair())
    assert {k: [c.name for c in v] for k, v in d.changes.items()} == {
        "added": ["fresh"], "removed": ["gone"], "upgraded": ["a"], "downgraded": ["b"],
        "rebuilt": ["c"], "moved": ["d"]}
    assert d.repositories[0]["name"] == "upd" and d.repositories[0]["change"] == "added"


def test_debian_version_order_is_dpkgs():
    old = sample(packages=(pkg("x", "1.0~rc1"),))
    new = sample(packages=(pkg("x", "1.0"),))
    assert [c.name for c in diff(old, new).changes["upgraded"]] == ["x"]


def test_renderings():
    d = diff(*pair())
    data = json.loads(to_json(d))
    assert data["format"] == "cernvm-build/closure-diff/v1"
    assert data["summary"] == {"added": 1, "removed": 1, "upgraded": 1, "downgraded": 1, "rebuilt": 1, "moved": 1}
    assert data["upgraded"][0] == {"name": "a", "arch": "amd64", "old_version": "1.0-1", "new_version": "1.1-1",
                                   "old_repository": "main", "new_repository": "main",
                                   "old_sha256": "a" * 64, "new_sha256": "a" * 64}
    assert "~ a 1.0-1 -> 1.1-1 from main" in to_text(d)
    md = to_markdown(d)
    assert "| upgraded | `a` | amd64 | `1.0-1` | `1.1-1` | main |" in md and md.startswith("### Closure diff")
    moved = next(c for c in d.changes["moved"])
    assert f"| moved | `{moved.name}` |" in md and f"{moved.old.repository} -> {moved.new.repository} |" in md


def test_cli_diff_exit_code(tmp_path):
    old, new = pair()
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    a.write_text(dumps(old))
    b.write_text(dumps(new))
    assert subprocess.run([*CLI, "diff", a, a, "--exit-code"], capture_output=True).returncode == 0
    res = subprocess.run([*CLI, "diff", a, b, "--exit-code", "--format", "json"], capture_output=True, text=True)
    assert res.returncode == 1 and json.loads(res.stdout)["summary"]["added"] == 1


def test_why_and_dot(tmp_path):
    c = sample(packages=(pkg("app", "1", depends=["lib", "tool"]), pkg("tool", "1", depends=["lib"]),
                         pkg("lib", "1", depends=["libc"]), pkg("libc", "1"), pkg("other", "1", depends=["libc"])),
               roots=("app", "other"))
    assert why(c, "libc") == [["other", "libc"], ["app", "lib", "libc"]]
    assert why(c, "app") == [["app"]]
    lock = tmp_path / "c.lock"
    lock.write_text(dumps(c))
    res = subprocess.run([*CLI, "why", lock, "libc"], capture_output=True, text=True)
    assert res.stdout.splitlines() == ["other -> libc", "app -> lib -> libc"]
    res = subprocess.run([*CLI, "why", lock, "libcc"], capture_output=True, text=True)
    assert res.returncode != 0 and "did you mean libc" in res.stderr
    dot = to_dot(c)
    assert dot.startswith('digraph "t"') and '"app" -> "lib";' in dot
