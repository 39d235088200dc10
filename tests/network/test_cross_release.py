"""A local delta moves across Debian releases: bookworm + (jq, curl) rebased onto trixie, on the live
archive; a package pinned to a bookworm-only version is named as the conflict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import digest, read_lock

pytestmark = pytest.mark.network

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "cernvm_build.cli"]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=ROOT)


def local_recipe(release: str, path: Path) -> Path:
    """A local shopping list on top of the release's base: jq and curl, the release's repositories."""
    text = (ROOT / "recipes" / f"debian-{release}-minimal.toml").read_text()
    repos = text[text.index("[[repositories]]"):text.index("[boot]")]
    path.write_text('name = "local"\nflavour = "deb"\narch = "amd64"\npackages = ["jq", "curl"]\n\n' + repos)
    return path


def test_bookworm_delta_rebased_onto_trixie(tmp_path):
    cache = tmp_path / "cache"
    base, trixie = ROOT / "closures/debian-bookworm-minimal.lock.toml", ROOT / "closures/debian-trixie-minimal.lock.toml"
    res = cli("policy", "diverge", base, "--recipe", local_recipe("bookworm", tmp_path / "lb.toml"),
              "--add", "libonig5 (= 6.9.8-1)", "-o", tmp_path / "local.lock", "--cache", cache)
    assert res.returncode == 0, res.stderr
    local = read_lock(tmp_path / "local.lock")
    assert local.package("jq").version.startswith("1.6") and local.package("libonig5").version == "6.9.8"

    # the pinned bookworm version does not exist in trixie: named, nothing written
    lt = local_recipe("trixie", tmp_path / "lt.toml")
    res = cli("policy", "rebase", tmp_path / "local.lock", "--onto", trixie, "--recipe", lt,
              "-o", tmp_path / "rebased.lock", "--cache", cache)
    assert res.returncode == 3 and not (tmp_path / "rebased.lock").exists()
    assert "libonig5 (= 6.9.8-1)" in res.stderr.splitlines()[0]
    assert any(line.startswith("conflict") and "libonig5" in line for line in res.stderr.splitlines())

    # dropping it, the delta moves: jq and curl at trixie's versions, on trixie's base
    res = cli("policy", "rebase", tmp_path / "local.lock", "--onto", trixie, "--recipe", lt, "--drop-conflicts",
              "-o", tmp_path / "rebased.lock", "--cache", cache)
    assert res.returncode == 0, res.stderr
    assert "upgraded     jq 1.6" in res.stdout and "upgraded     curl 7.88" in res.stdout
    rebased = read_lock(tmp_path / "rebased.lock")
    assert rebased.delta.base_digest == digest(trixie.read_bytes())
    assert rebased.package("jq").version.startswith("1.7") and rebased.package("curl").version.startswith("8.")
    assert {r.name for r in rebased.repositories} == {"trixie", "trixie-security", "trixie-updates"}
    # the release-notes view of the move
    notes = cli("diff", tmp_path / "local.lock", tmp_path / "rebased.lock", "--format", "markdown").stdout
    jq_row = next(line for line in notes.splitlines() if line.startswith("| upgraded | `jq` |"))
    assert " -> trixie" in jq_row and jq_row.split("|")[-2].strip().startswith("bookworm") \
        and "`1.6" in jq_row and "`1.7" in jq_row
