"""`cernvm-build lock` on a real, signed Debian fixture repository built at test time."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import read_lock
from tests.support.aptref import apt_resolution
from tests.support.debrepo import DebPkg, build_deb_repo, make_key, sign_release, write_recipe

CLI = [sys.executable, "-m", "cernvm_build.cli"]

PACKAGES = [
    DebPkg("base-files", priority="required", essential=True),
    DebPkg("libfoo", "1.0", priority="optional"),
    DebPkg("libfoo", "2.0", priority="optional"),
    DebPkg("mawk", "1.3", priority="required", provides="awk"),
    DebPkg("gawk", "5.2", priority="optional", provides="awk"),
    DebPkg("pinentry-gtk", "1.0", priority="optional", provides="pinentry"),
    DebPkg("pinentry-curses", "1.0", priority="optional", provides="pinentry"),
    DebPkg("data-common", "3.0", arch="all"),
    DebPkg("extra-doc", "1.0", arch="all"),
    DebPkg("app", "1.5", depends="libfoo (>= 2.0), awk, data-common", recommends="extra-doc",
           pre_depends="base-files"),
    DebPkg("agent", "2.2", depends="pinentry-curses | pinentry"),
    DebPkg("tool", "0.9", depends="gawk | mawk"),
    DebPkg("rival", "1.0", conflicts="app"),
    DebPkg("old-user", "1.0", depends="libfoo (<< 2.0)"),
    DebPkg("needs-ghost", "1.0", depends="ghost-package"),
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return build_deb_repo(tmp_path_factory.mktemp("debrepo") / "archive", PACKAGES)


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def lock_cli(recipe: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "lock", str(recipe), "-o", str(out), "--cache", str(cache), *extra],
                          capture_output=True, text=True, cwd=Path(__file__).parents[2])


def packages_file(repo) -> Path:
    return repo.root / "dists" / repo.suite / "main" / "binary-amd64" / "Packages"


def test_lock_pins_every_package_with_real_digests(repo, tmp_path, cache):
    recipe = write_recipe(tmp_path / "r.toml", repo, ["app", "agent", "tool"])
    out = tmp_path / "r.lock.toml"
    res = lock_cli(recipe, out, cache)
    assert res.returncode == 0, res.stderr
    lock = read_lock(out)
    byname = {p.name: p for p in lock.packages}
    assert set(byname) == {"app", "agent", "tool", "libfoo", "mawk", "pinentry-curses",
                           "data-common", "base-files"}
    assert byname["libfoo"].version == "2.0"                      # versioned dependency
    assert byname["data-common"].arch == "all"
    for p in lock.packages:
        deb = repo.root / p.location
        assert hashlib.sha256(deb.read_bytes()).hexdigest() == p.sha256
        assert deb.stat().st_size == p.size
    assert set(byname["app"].depends) == {"libfoo", "mawk", "data-common", "base-files"}
    assert byname["agent"].depends == ("pinentry-curses",)
    assert lock.roots == ("agent", "app", "tool")
    rec = lock.repositories[0]
    assert rec.metadata == f"dists/{repo.suite}/InRelease"
    assert rec.key_fingerprints == (repo.key_fingerprint,)
    inrelease = repo.root / rec.metadata
    assert rec.metadata_sha256 == hashlib.sha256(inrelease.read_bytes()).hexdigest()
    assert rec.indexes[0].path == "main/binary-amd64/Packages"


def test_choices_equal_apts_own_resolution(repo, tmp_path, cache):
    """apt takes the first satisfiable alternative and the higher-Priority provider; so must we."""
    for names in (["app", "agent", "tool"], ["agent"], ["tool", "app"], ["app"]):
        recipe = write_recipe(tmp_path / "r.toml", repo, names)
        out = tmp_path / "r.lock.toml"
        assert lock_cli(recipe, out, cache).returncode == 0
        ours = {p.name: p.evr for p in read_lock(out).packages}
        apt = apt_resolution([packages_file(repo)], names)
        assert ours == apt, f"{names}: ours-only {set(ours) - set(apt)}, apt-only {set(apt) - set(ours)}"
    # and plain libsolv would not have chosen the same (this is what the apt policy is for)
    recipe = write_recipe(tmp_path / "r.toml", repo, ["agent", "app"])
    assert lock_cli(recipe, tmp_path / "l.toml", cache, "--policy", "libsolv").returncode == 0


def test_same_inputs_give_identical_bytes(repo, tmp_path):
    recipe = write_recipe(tmp_path / "r.toml", repo, ["app", "agent"])
    a, b = tmp_path / "a.lock.toml", tmp_path / "b.lock.toml"
    assert lock_cli(recipe, a, tmp_path / "c1").returncode == 0
    assert lock_cli(recipe, b, tmp_path / "c2").returncode == 0          # fresh cache
    assert lock_cli(recipe, tmp_path / "c.lock.toml", tmp_path / "c2").returncode == 0   # warm .solv
    assert a.read_bytes() == b.read_bytes() == (tmp_path / "c.lock.toml").read_bytes()


def test_weak_dependencies_follow_the_recipe(repo, tmp_path, cache):
    off = write_recipe(tmp_path / "off.toml", repo, ["app"])
    on = write_recipe(tmp_path / "on.toml", repo, ["app"], weak=True)
    assert lock_cli(off, tmp_path / "off.lock", cache).returncode == 0
    assert lock_cli(on, tmp_path / "on.lock", cache).returncode == 0
    assert read_lock(tmp_path / "off.lock").package("extra-doc") is None
    weak = read_lock(tmp_path / "on.lock")
    assert weak.package("extra-doc") is not None and weak.solver.weak
    assert "extra-doc" in weak.package("app").depends


def test_exclude_and_pin(repo, tmp_path, cache):
    r = write_recipe(tmp_path / "x.toml", repo, ["app"], exclude=["mawk"])
    assert lock_cli(r, tmp_path / "x.lock", cache).returncode == 0
    lock = read_lock(tmp_path / "x.lock")
    assert lock.package("mawk") is None and lock.package("gawk") is not None
    r = write_recipe(tmp_path / "p.toml", repo, ["libfoo"], pin={"libfoo": "1.0"})
    assert lock_cli(r, tmp_path / "p.lock", cache).returncode == 0
    assert read_lock(tmp_path / "p.lock").package("libfoo").version == "1.0"
    r = write_recipe(tmp_path / "bad.toml", repo, ["libfoo"], pin={"libfoo": "9.9"})
    res = lock_cli(r, tmp_path / "bad.lock", cache)
    assert res.returncode != 0 and "pin.libfoo" in res.stderr and "1.0, 2.0" in res.stderr


def test_unknown_package_is_named_with_close_matches(repo, tmp_path, cache):
    r = write_recipe(tmp_path / "u.toml", repo, ["agentt"])
    out = tmp_path / "u.lock"
    res = lock_cli(r, out, cache)
    assert res.returncode != 0
    assert "unknown package 'agentt'" in res.stderr and "'agent'" in res.stderr
    assert not out.exists()
    r = write_recipe(tmp_path / "v.toml", repo, ["libfoo (>= 3)"])
    res = lock_cli(r, out, cache)
    assert res.returncode != 0 and "no version of 'libfoo' satisfies '>= 3'" in res.stderr


def test_suite_that_does_not_exist_is_named(repo, tmp_path, cache):
    from dataclasses import replace

    r = write_recipe(tmp_path / "s.toml", replace(repo, suite="stabel"), ["agent"])
    out = tmp_path / "s.lock"
    res = lock_cli(r, out, cache)
    assert res.returncode != 0 and not out.exists()
    line, = res.stderr.strip().splitlines()
    assert "suite 'stabel' does not exist at file://" in line and "dists/stabel/InRelease" in line, line


@pytest.mark.parametrize("names,expect", [
    (["app", "rival"], "conflicts"),
    (["needs-ghost"], "ghost-package"),
    (["app", "old-user"], "libfoo"),
])
def test_unresolvable_request_explains_and_writes_nothing(repo, tmp_path, cache, names, expect):
    r = write_recipe(tmp_path / "c.toml", repo, names)
    out = tmp_path / "c.lock"
    res = lock_cli(r, out, cache)
    assert res.returncode == 2, res.stderr
    assert "no closure satisfies the request" in res.stderr
    assert "problem 1:" in res.stderr and "solution 1.1:" in res.stderr and expect in res.stderr
    assert not out.exists() and not list(tmp_path.glob(".c.lock*"))


def _copy(repo, dest: Path):
    shutil.copytree(repo.root, dest)
    from dataclasses import replace

    return replace(repo, root=dest, url=f"file://{dest}")


def test_tampered_packages_index_is_refused(repo, tmp_path, cache):
    bad = _copy(repo, tmp_path / "tampered")
    for f in (bad.root / "dists" / bad.suite / "main" / "binary-amd64").iterdir():
        data = f.read_bytes()
        f.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    r = write_recipe(tmp_path / "t.toml", bad, ["app"])
    res = lock_cli(r, tmp_path / "t.lock", cache)
    assert res.returncode != 0
    assert "checksum mismatch" in res.stderr and "main/binary-amd64/Packages" in res.stderr


def test_bad_signatures_are_refused(repo, tmp_path, cache):
    # signed by a key the recipe does not trust
    other = _copy(repo, tmp_path / "other-key")
    home = tmp_path / "other-gnupg"
    _, fpr = make_key(home, "intruder")
    sign_release(other.root / "dists" / other.suite, home, fpr)
    r = write_recipe(tmp_path / "o.toml", other, ["app"])
    res = lock_cli(r, tmp_path / "o.lock", cache)
    assert res.returncode != 0 and "signature verification failed" in res.stderr
    assert "InRelease" in res.stderr
    # a signed document altered after signing, in place, with a warm cache that verified the original
    edited = _copy(repo, tmp_path / "edited")
    r = write_recipe(tmp_path / "e.toml", edited, ["app"])
    assert lock_cli(r, tmp_path / "e.lock", cache).returncode == 0
    inrel = edited.root / "dists" / edited.suite / "InRelease"
    inrel.write_text(inrel.read_text().replace("Suite: stable", "Suite: stablx"))
    res = lock_cli(r, tmp_path / "e2.lock", cache)
    assert res.returncode != 0 and "BAD signature" in res.stderr


def test_release_gpg_fallback_when_no_inrelease(repo, tmp_path, cache):
    old = _copy(repo, tmp_path / "detached")
    (old.root / "dists" / old.suite / "InRelease").unlink()
    r = write_recipe(tmp_path / "d.toml", old, ["agent"])
    assert lock_cli(r, tmp_path / "d.lock", cache).returncode == 0
    assert read_lock(tmp_path / "d.lock").repositories[0].metadata.endswith("/Release")


def test_valid_until_is_enforced_with_logged_override(tmp_path, cache):
    expired = build_deb_repo(tmp_path / "expired", [DebPkg("solo")],
                             valid_until="Wed, 01 Jan 2020 00:00:00 UTC")
    r = write_recipe(tmp_path / "x.toml", expired, ["solo"])
    res = lock_cli(r, tmp_path / "x.lock", cache)
    assert res.returncode != 0 and "expired" in res.stderr and "Valid-Until" in res.stderr
    res = lock_cli(r, tmp_path / "x.lock", cache, "--allow-expired")
    assert res.returncode == 0 and "WARNING" in res.stderr and "Valid-Until" in res.stderr


def test_offline_uses_only_verified_cache(repo, tmp_path, cache):
    r = write_recipe(tmp_path / "o.toml", repo, ["agent"])
    res = lock_cli(r, tmp_path / "cold.lock", tmp_path / "empty", "--offline")
    assert res.returncode != 0 and "--offline" in res.stderr
    assert lock_cli(r, tmp_path / "online.lock", cache).returncode == 0
    assert lock_cli(r, tmp_path / "offline.lock", cache, "--offline").returncode == 0
    assert (tmp_path / "online.lock").read_bytes() == (tmp_path / "offline.lock").read_bytes()


def test_check_and_show(repo, tmp_path, cache):
    r = write_recipe(tmp_path / "s.toml", repo, ["app"])
    out = tmp_path / "s.lock"
    assert lock_cli(r, out, cache).returncode == 0
    res = subprocess.run([*CLI, "lock", str(r), "--cache", str(cache), "--check", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "up to date" in res.stdout
    r2 = write_recipe(tmp_path / "s.toml", repo, ["app", "agent"])
    res = subprocess.run([*CLI, "lock", str(r2), "--cache", str(cache), "--check", str(out)],
                         capture_output=True, text=True)
    assert res.returncode != 0 and "differs" in res.stderr and "agent" in res.stderr
    res = subprocess.run([*CLI, "show", str(out), "--json"], capture_output=True, text=True)
    data = json.loads(res.stdout)
    assert data["packages"] == len(read_lock(out).packages)
    assert data["repositories"][0]["key_fingerprints"] == [repo.key_fingerprint]
    assert data["lock_digest"] == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    text = subprocess.run([*CLI, "show", str(out)], capture_output=True, text=True).stdout
    assert "packages:" in text and repo.key_fingerprint in text


def _resolve_text(recipe: Path, cache: Path, *, narrow: bool, monkeypatch) -> str:
    """The lock text (or the error) of an in-process resolution, with or without the narrowed universe."""
    from cernvm_build.errors import CernVMBuildError
    from cernvm_build.formats.deb import Deb
    from cernvm_build.lock.lockfile import dumps
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve import LockOptions, resolve

    with monkeypatch.context() as m:
        if not narrow:
            m.setattr(Deb, "add_needed", lambda self, *args: None)     # the whole archive in libsolv
        try:
            return dumps(resolve(load_recipe(recipe), LockOptions(cache_dir=cache)))
        except CernVMBuildError as exc:
            return f"error: {exc}\n" + "\n".join(getattr(exc, "problems", None) or [])


@pytest.mark.parametrize("names,extra", [
    (["app", "agent", "tool"], {}),
    (["app"], {"exclude": ["mawk"]}),
    (["libfoo"], {"pin": {"libfoo": "1.0"}}),
    (["libfoo"], {"pin": {"libfoo": "9.9"}}),          # error: no such version (the list of versions)
    (["app", "rival"], {}),                             # conflict: libsolv's problems, over everything
    (["agentt"], {}),                                   # unknown: close matches from every name
    (["app"], {"weak": True}),                          # weak dependencies: never narrowed
    (["awk"], {}),                                      # a virtual name
])
def test_narrowed_universe_gives_the_whole_archives_answer(repo, tmp_path, cache, monkeypatch, names, extra):
    """libsolv gets only what a request reaches; answers and errors are those of the whole archive."""
    recipe = write_recipe(tmp_path / "n.toml", repo, names, **extra)
    whole = _resolve_text(recipe, cache, narrow=False, monkeypatch=monkeypatch)
    assert _resolve_text(recipe, cache, narrow=True, monkeypatch=monkeypatch) == whole


def test_narrowed_universe_loads_only_what_is_reachable(repo, tmp_path, cache):
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve import LockOptions, _request_names, load_universe

    recipe = load_recipe(write_recipe(tmp_path / "t.toml", repo, ["tool"]))
    u, _ = load_universe(recipe, LockOptions(cache_dir=cache), _request_names(recipe))
    assert u.narrowed
    assert sorted(s.name for s in u.pool.solvables_iter()) == ["gawk", "mawk", "tool"]


@pytest.fixture(scope="module")
def dropped_provides(tmp_path_factory):
    """A package whose newer version no longer provides a virtual name that an older one did."""
    return build_deb_repo(tmp_path_factory.mktemp("dropped") / "archive", [
        DebPkg("base-files", priority="required", essential=True),
        DebPkg("mailer", "1.0", provides="mail-agent"),
        DebPkg("mailer", "2.0"),
        DebPkg("postie", "1.0", provides="mail-agent"),
        DebPkg("wants-mail", "1.0", depends="mail-agent"),
        DebPkg("wants-any-mail", "1.0", depends="mailer | mail-agent"),
    ])


@pytest.mark.parametrize("names", [["wants-mail"], ["wants-any-mail"], ["mail-agent"], ["wants-mail", "mailer"]])
def test_narrowed_universe_holds_every_version_of_a_provider(dropped_provides, tmp_path, cache, monkeypatch,
                                                              names):
    """A stanza reached through a Provides brings its package's other versions too: apt's candidate is
    the package's newest version, which may not provide the name (then apt must not take the older one)."""
    recipe = write_recipe(tmp_path / "p.toml", dropped_provides, names)
    whole = _resolve_text(recipe, cache, narrow=False, monkeypatch=monkeypatch)
    assert _resolve_text(recipe, cache, narrow=True, monkeypatch=monkeypatch) == whole
    if names == ["wants-mail"]:
        apt = apt_resolution([packages_file(dropped_provides)], names)
        assert ("postie", "1.0") in apt.items() and "mailer" not in apt, apt
        assert 'name = "postie"' in whole and 'name = "mailer"' not in whole, whole
