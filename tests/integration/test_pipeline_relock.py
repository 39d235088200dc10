"""pipeline/relock-and-diff.sh on fixture repositories: up to date, drift as Markdown, bad signatures."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.debrepo import DebPkg, build_deb_repo, make_key, write_recipe

ROOT = Path(__file__).parents[2]
CLI = [sys.executable, "-m", "cernvm_build.cli"]


def relock_project(tmp_path: Path, packages: list[DebPkg]):
    """A signed fixture repository, recipes/demo.toml for `app`, an empty closures/ and a CLI wrapper."""
    key = make_key(tmp_path / "gnupg")
    repo = build_deb_repo(tmp_path / "v1", packages, key=key, gnupghome=tmp_path / "gnupg")
    recipes, closures = tmp_path / "recipes", tmp_path / "closures"
    recipes.mkdir()
    closures.mkdir()
    write_recipe(recipes / "demo.toml", repo, ["app"], name="demo")
    cvb = tmp_path / "cvb"
    cvb.write_text(f"#!/bin/sh\nexec {sys.executable} -m cernvm_build.cli \"$@\"\n")
    cvb.chmod(0o755)
    return key, repo, recipes, closures, cvb


def test_relock_job(tmp_path):
    key, v1, recipes, closures, cvb = relock_project(
        tmp_path, [DebPkg("app", "1.0", depends="lib"), DebPkg("lib", "1.0")])
    env = {**os.environ, "CERNVM_BUILD": str(cvb), "CERNVM_BUILD_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    run = lambda *a, **kw: subprocess.run(["bash", str(ROOT / "pipeline" / "relock-and-diff.sh"), str(recipes),  # noqa: E731
                                           str(closures), str(tmp_path / "report.md")],
                                          capture_output=True, text=True, env={**env, **kw})
    assert subprocess.run([*CLI, "lock", recipes / "demo.toml", "-o", closures / "demo.lock.toml"],
                          env=env, capture_output=True).returncode == 0
    subprocess.run([*CLI, "key", "generate", "--out", tmp_path / "keys"], check=True, capture_output=True)
    subprocess.run([*CLI, "sign", closures / "demo.lock.toml", "--key", tmp_path / "keys" / "cernvm-build.key"],
                   check=True, capture_output=True)
    pub = str(tmp_path / "keys" / "cernvm-build.pub")
    res = run(CERNVM_BUILD_PUBKEY=pub)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "`demo`: up to date" in (tmp_path / "report.md").read_text()
    # the archive moves on: lib 2.0 appears
    shutil.rmtree(v1.root)
    build_deb_repo(v1.root, [DebPkg("app", "1.0", depends="lib"), DebPkg("lib", "2.0")], key=key,
                   gnupghome=tmp_path / "gnupg")
    res = run(CERNVM_BUILD_PUBKEY=pub)
    assert res.returncode == 0
    report = (tmp_path / "report.md").read_text()
    assert "| upgraded | `lib` | all | `1.0` | `2.0` |" in report
    assert run(CERNVM_BUILD_PUBKEY=pub, STRICT="1").returncode == 2
    # a lock edited after signing fails the job
    lock = closures / "demo.lock.toml"
    lock.write_text(lock.read_text().replace('name = "demo"', 'name = "demo2"', 1))
    res = run(CERNVM_BUILD_PUBKEY=pub)
    assert res.returncode == 1 and "signature check failed" in (tmp_path / "report.md").read_text()
