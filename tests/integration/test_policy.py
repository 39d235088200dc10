"""stay / diverge / rebase on two generations of a real, signed fixture archive."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import read_lock
from tests.support.debrepo import DebPkg, build_deb_repo, make_key, write_recipe

CLI = [sys.executable, "-m", "cernvm_build.cli"]

V1 = [DebPkg("libfoo", "1.0"), DebPkg("app", "1.0", depends="libfoo"),
      DebPkg("plugin", "1.0", depends="libfoo (<< 2.0)"), DebPkg("extra", "1.0"),
      DebPkg("tool", "1.0"), DebPkg("helper", "1.0"), DebPkg("gone", "1.0", depends="app")]
V2 = [DebPkg("libfoo", "2.0"), DebPkg("app", "1.1", depends="libfoo (>= 2.0)"),
      DebPkg("plugin", "1.0", depends="libfoo (<< 2.0)"), DebPkg("extra", "1.0"),
      DebPkg("tool", "1.0"), DebPkg("helper", "1.1")]
SECURITY = [DebPkg("libfoo", "1.0+sec1")]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("policy")
    key = make_key(root / "gnupg")
    v1 = build_deb_repo(root / "v1", V1, key=key, gnupghome=root / "gnupg")
    v2 = build_deb_repo(root / "v2", V2, key=key, gnupghome=root / "gnupg")
    sec = build_deb_repo(root / "sec", SECURITY, suite="stable-security", key=key, gnupghome=root / "gnupg")
    cache = root / "cache"
    r1 = write_recipe(root / "base-v1.toml", v1, ["app"], name="base")
    r2 = write_recipe(root / "base-v2.toml", v2, ["app", "tool"], name="base")
    for r, out in ((r1, root / "base-v1.lock"), (r2, root / "base-v2.lock")):
        res = cli("lock", r, "-o", out, "--cache", cache)
        assert res.returncode == 0, res.stderr
    text = r1.read_text() + (f'\n[[repositories]]\nname = "security"\nurl = "{sec.url}"\n'
                             f'suite = "stable-security"\ncomponents = ["main"]\nkeyring = "{sec.keyring}"\n')
    (root / "base-sec.toml").write_text(text.replace('name = "base"', 'name = "base-sec"'))
    local_recipe = write_recipe(root / "local-v1.toml", v1, ["plugin", "extra"], name="local")
    local_recipe_v2 = write_recipe(root / "local-v2.toml", v2, ["ignored-by-rebase"], name="local")
    return dict(root=root, cache=cache, v1=v1, v2=v2, r1=r1, r2=r2, local_recipe=local_recipe,
                local_recipe_v2=local_recipe_v2)


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


def diverged(world, tmp_path, *adds) -> Path:
    out = tmp_path / "local.lock"
    args = ["policy", "diverge", world["root"] / "base-v1.lock", "--recipe", world["local_recipe"],
            "-o", out, "--cache", world["cache"]]
    for a in adds:
        args += ["--add", a]
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    return out


def test_diverge_keeps_the_base_and_records_the_delta(world, tmp_path):
    out = diverged(world, tmp_path, "tool", "helper")
    local, base = read_lock(out), read_lock(world["root"] / "base-v1.lock")
    for p in base.packages:                                   # the base is kept exactly
        assert local.package(p.name).sha256 == p.sha256
    assert local.delta.base_digest.startswith("sha256:")
    assert local.delta.add == ("plugin", "extra", "tool", "helper")
    assert local.delta.local == ("extra", "helper", "plugin", "tool")
    assert set(local.roots) == {"app", "plugin", "extra", "tool", "helper"}
    shown = cli("show", out).stdout
    assert "local delta:  on base sha256:" in shown and "4 local package(s)" in shown
    # removal of a base package others need is refused with libsolv's explanation
    res = cli("policy", "diverge", world["root"] / "base-v1.lock", "--recipe", world["local_recipe"],
              "--remove", "libfoo", "-o", tmp_path / "x.lock", "--cache", world["cache"])
    assert res.returncode == 2 and "problem 1:" in res.stderr and not (tmp_path / "x.lock").exists()


def test_rebase_reports_conflicts_and_writes_nothing(world, tmp_path):
    local = diverged(world, tmp_path, "tool", "helper")
    out = tmp_path / "rebased.lock"
    res = cli("policy", "rebase", local, "--onto", world["root"] / "base-v2.lock", "--recipe",
              world["local_recipe_v2"], "-o", out, "--cache", world["cache"])
    assert res.returncode == 3, res.stderr
    assert "conflict with the new base (plugin)" in res.stderr
    assert "conflict     plugin 1.0" in res.stderr and "libfoo" in res.stderr
    assert "upgraded     helper 1.0 -> 1.1" in res.stderr and "kept         extra 1.0" in res.stderr
    assert not out.exists()


def test_rebase_drop_conflicts_classifies_every_local_package(world, tmp_path):
    local = diverged(world, tmp_path, "tool", "helper")
    out = tmp_path / "rebased.lock"
    res = cli("policy", "rebase", local, "--onto", world["root"] / "base-v2.lock", "--recipe",
              world["local_recipe_v2"], "-o", out, "--cache", world["cache"], "--drop-conflicts")
    assert res.returncode == 0, res.stderr
    status = {line.split()[1]: line.split()[0] for line in res.stdout.splitlines() if line and line[0] != " "
              and not line.startswith("wrote")}
    assert status == {"extra": "kept", "helper": "upgraded", "plugin": "conflict", "tool": "now-in-base"}
    new = read_lock(out)
    assert new.package("plugin") is None and new.package("helper").version == "1.1"
    assert new.package("libfoo").version == "2.0"
    assert new.delta.add == ("extra", "tool", "helper")
    assert new.delta.local == ("extra", "helper")


def test_stay_reports_pending_security_updates(world, tmp_path):
    res = cli("policy", "stay", world["root"] / "base-v1.lock", "--recipe", world["root"] / "base-sec.toml",
              "--cache", world["cache"], "--exit-code")
    assert res.returncode == 1, res.stderr
    assert "security updates not applied: libfoo" in res.stdout
    assert "~ libfoo 1.0 -> 1.0+sec1" in res.stdout
    res = cli("policy", "stay", world["root"] / "base-v1.lock", "--newest", world["root"] / "base-v1.lock",
              "--exit-code")
    assert res.returncode == 0 and "0 change(s) pending" in res.stdout
