"""stay and rebase on the live archive: bookworm vs bookworm + bookworm-updates + bookworm-security."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import read_lock

pytestmark = pytest.mark.network

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "cernvm_build.cli"]
UPDATES = '''
[[repositories]]
name = "bookworm-updates"
url = "http://deb.debian.org/debian"
suite = "bookworm-updates"
components = ["main"]
keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

[[repositories]]
name = "bookworm-security"
url = "http://deb.debian.org/debian-security"
suite = "bookworm-security"
components = ["main"]
keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
'''


def main_only(recipe: str) -> str:
    """The demo recipe without its security and updates suites: the base that is *not* getting them."""
    import re

    out = re.sub(r"\[\[repositories\]\][^\[]*?name = \"bookworm-(security|updates)\".*?(?=\n\[)", "", recipe,
                 flags=re.S)
    assert "bookworm-security" not in out and 'name = "bookworm"' in out
    return out


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def locks(tmp_path_factory):
    root = tmp_path_factory.mktemp("live-policy")
    cache = root / "cache"
    base_recipe = main_only((ROOT / "recipes" / "debian-bookworm-minimal.toml").read_text())
    (root / "base.toml").write_text(base_recipe)
    (root / "updated.toml").write_text(base_recipe + UPDATES)
    local = base_recipe.replace('name = "debian-bookworm-minimal"', 'name = "minimal-local"')
    local = local[:local.index("essential = true")] + 'packages = ["openssh-server", "curl"]\n' + \
        local[local.index("[[repositories]]"):].replace("[boot]", "[boot-unused]").split("[boot-unused]")[0]
    (root / "local.toml").write_text(local)
    (root / "local-updated.toml").write_text(local + UPDATES)
    for recipe, out in (("base.toml", "base.lock"), ("updated.toml", "updated.lock")):
        res = cli("lock", root / recipe, "-o", root / out, "--cache", cache)
        assert res.returncode == 0, res.stderr
    return root, cache


def test_stay_lists_pending_security_updates(locks):
    root, cache = locks
    res = cli("policy", "stay", root / "base.lock", "--newest", root / "updated.lock", "--format", "json")
    assert res.returncode == 0, res.stderr
    import json

    report = json.loads(res.stdout)
    print(f"pending: {report['summary']}, security: {report['security']}")
    updated = read_lock(root / "updated.lock")
    from_security = sorted(p.name for p in updated.packages if p.repository == "bookworm-security")
    changed = {c["name"] for kind in ("upgraded", "added", "rebuilt") for c in report[kind]}
    assert report["security"] == sorted(set(from_security) & changed)
    assert len(report["security"]) > 0          # bookworm always has some pending by now


def test_real_rebase_onto_updated_base(locks):
    root, cache = locks
    local = root / "minimal-local.lock"
    res = cli("policy", "diverge", root / "base.lock", "--recipe", root / "local.toml", "-o", local,
              "--cache", cache)
    assert res.returncode == 0, res.stderr
    out = root / "rebased.lock"
    res = cli("policy", "rebase", local, "--onto", root / "updated.lock", "--recipe", root / "local-updated.toml",
              "-o", out, "--cache", cache)
    print(res.stdout[-2000:])
    assert res.returncode == 0, res.stderr
    statuses = {line.split()[0] for line in res.stdout.splitlines() if line and not line.startswith(("wrote", " "))}
    assert statuses <= {"kept", "upgraded", "now-in-base", "dropped"}
    rebased, updated = read_lock(out), read_lock(root / "updated.lock")
    for p in updated.packages:                                        # the new base, exactly
        assert rebased.package(p.name).sha256 == p.sha256
    assert rebased.package("openssh-server") is not None and rebased.package("curl") is not None
    assert rebased.delta.base_digest.startswith("sha256:")
