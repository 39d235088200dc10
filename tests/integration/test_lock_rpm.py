"""`cernvm-build lock` on a real rpm-md repository (rpmbuild, createrepo_c, gpg; nothing mocked).

The closure must equal dnf's own resolution of the same list against the same repository.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.errors import CernVMBuildError, ChecksumError, MetadataError, SignatureError
from cernvm_build.formats.rpm.repomd import load_rpmmd_repository
from cernvm_build.lock.lockfile import read_lock
from cernvm_build.lock.recipe import load_recipe
from cernvm_build.lock.resolve import LockOptions, resolve
from cernvm_build.lock.resolve.repository import MetadataOptions
from cernvm_build.util.content_store import ContentStore
from tests.integration.conftest_rpm import rpm_repo  # noqa: F401  (the session fixture)
from tests.support.dnfref import DnfCase, dnf_resolutions
from tests.support.rpmrepo import RpmRepo, createrepo, recompress_index

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    """The real command line, as a user runs it (a fresh process each time)."""
    return subprocess.run([sys.executable, "-m", "cernvm_build.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def lock(fixture: RpmRepo, tmp: Path, packages: list[str], cache: Path | None = None, name: str = "r",
         extra: tuple[str, ...] = (), **kw) -> tuple[subprocess.CompletedProcess, Path]:
    recipe = fixture.recipe(tmp / f"{name}.toml", packages, **kw)
    out = tmp / f"{name}.lock.toml"
    proc = cli("lock", recipe, "-o", out, "--cache", cache or tmp / "cache", *extra)
    return proc, out


def nevras(lock_path: Path) -> set[str]:
    return {f"{p.name}-{p.evr}.{p.arch}" for p in read_lock(lock_path).packages}


def sha256sum(path: Path) -> str:
    """The coreutils tool, deliberately not our own hashing code."""
    return subprocess.run(["sha256sum", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]


# ---- the lock itself -----------------------------------------------------------------------------

def test_lock_pins_exact_versions_checksums_and_graph(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    proc, out = lock(rpm_repo, tmp_path, ["app"])
    assert proc.returncode == 0, proc.stderr
    closure = read_lock(out)
    assert nevras(out) == {"app-1.0-1.x86_64", "bzip-lite-1.0-1.noarch", "foo-tools-1:3.1-1.x86_64",
                           "libfoo-2.0-1.x86_64", "postfix-lite-1.0-1.x86_64"}
    for p in closure.packages:
        rpm = rpm_repo.repo / p.location
        assert rpm.is_file(), p.location
        assert p.sha256 == sha256sum(rpm), p.name
        assert p.size == rpm.stat().st_size, p.name
        assert p.repository == "fixture"
    foo = closure.package("foo-tools")
    assert (foo.epoch, foo.version, foo.release, foo.arch) == (1, "3.1", "1", "x86_64")
    # versioned, virtual, rich and file dependencies all land in the in-closure graph
    assert closure.package("app").depends == ("bzip-lite", "foo-tools", "libfoo", "postfix-lite")
    assert closure.roots == ("app",)
    [r] = closure.repositories
    assert r.metadata == "repodata/repomd.xml"
    assert r.metadata_sha256 == sha256sum(rpm_repo.repo / "repodata/repomd.xml")
    assert r.revision == "1700000000" and r.date == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert r.key_fingerprints == (rpm_repo.gpg.fingerprints["main"],)
    # filelists too: the fixture's optuser has a file dependency primary.xml cannot answer
    assert sorted(re.fullmatch(r"repodata/[0-9a-f]{64}-(\w+)\.xml\.gz", i.path).group(1)
                  for i in r.indexes) == ["filelists", "primary"]
    for idx in r.indexes:
        assert idx.sha256 == sha256sum(rpm_repo.repo / idx.path)
        assert idx.size == (rpm_repo.repo / idx.path).stat().st_size


def test_lock_is_byte_identical_across_runs_and_caches(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    p1, out1 = lock(rpm_repo, tmp_path, ["app", "mailer", "toolbox"], cache=tmp_path / "c1", name="a")
    p2, out2 = lock(rpm_repo, tmp_path, ["app", "mailer", "toolbox"], cache=tmp_path / "c1", name="b")
    p3, out3 = lock(rpm_repo, tmp_path, ["app", "mailer", "toolbox"], cache=tmp_path / "c2", name="c")
    assert p1.returncode == p2.returncode == p3.returncode == 0, p1.stderr + p2.stderr + p3.stderr
    # recipe files differ only in location, which the digest does not cover
    assert out1.read_bytes() == out2.read_bytes() == out3.read_bytes()


def test_weak_dependencies_follow_the_recipe(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    _, off = lock(rpm_repo, tmp_path, ["app"], name="off", weak=False)
    _, on = lock(rpm_repo, tmp_path, ["app"], name="on", weak=True)
    assert nevras(on) - nevras(off) == {"app-doc-1.0-1.noarch", "app-extras-1.0-1.noarch"}  # Recommends, Supplements
    assert read_lock(on).solver.weak and not read_lock(off).solver.weak
    assert "app-doc" in read_lock(on).package("app").depends


def test_exclude_and_pin(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    _, out = lock(rpm_repo, tmp_path, ["app"], name="ex", exclude=("postfix-lite", "bzip-lite"))
    got = nevras(out)
    assert {"sendmail-lite-1.0-1.x86_64", "gzip-lite-1.0-1.noarch"} <= got
    assert not any(n.startswith(("postfix-lite-", "bzip-lite-")) for n in got)

    _, out = lock(rpm_repo, tmp_path, ["libfoo"], name="pin", pin={"libfoo": "1.0-1"})
    assert nevras(out) == {"libfoo-1.0-1.x86_64"}

    proc, out = lock(rpm_repo, tmp_path, ["app"], name="pinbad", pin={"libfoo": "1.0-1"})
    assert proc.returncode != 0 and not out.exists()
    assert "libfoo" in proc.stderr

    proc, out = lock(rpm_repo, tmp_path, ["app"], name="pinnone", pin={"libfoo": "9-9"})
    assert proc.returncode != 0 and "pin.libfoo" in proc.stderr and "1.0-1" in proc.stderr


def test_unknown_package_names_it_with_a_close_match(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    proc, out = lock(rpm_repo, tmp_path, ["app", "app-docs"])
    assert proc.returncode != 0 and not out.exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "app-docs" in lines[0] and "'app-doc'" in lines[0]


def test_conflict_fails_with_libsolv_problem_and_writes_nothing(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    proc, out = lock(rpm_repo, tmp_path, ["app", "badpkg"])
    assert proc.returncode == 2
    assert not out.exists()
    assert "no closure satisfies the request" in proc.stderr
    assert "problem 1: package app-1.0-1.x86_64 requires libfoo >= 2.0, but none of the providers can be " \
           "installed" in proc.stderr, proc.stderr
    assert re.search(r"solution 1\.\d: do not ask to install badpkg", proc.stderr), proc.stderr


def test_file_path_request_loads_filelists(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    proc, out = lock(rpm_repo, tmp_path, ["/usr/bin/foo"])
    assert proc.returncode == 0, proc.stderr
    assert nevras(out) == {"foo-tools-1:3.1-1.x86_64"}
    paths = [i.path for i in read_lock(out).repositories[0].indexes]
    assert sorted(p.rsplit("-", 1)[-1] for p in paths) == ["filelists.xml.gz", "primary.xml.gz"]


def test_lock_over_http_equals_file_url(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    """The same repository served over HTTP: same packages, same checksums; only the URL differs."""
    import functools
    import http.server
    import threading

    handler = functools.partial(_QuietHandler, directory=str(rpm_repo.repo))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        recipe = rpm_repo.recipe(tmp_path / "http.toml", ["app", "mailer"])
        recipe.write_text(recipe.read_text().replace(f'"{rpm_repo.url}"', f'"{url}"'))
        proc = cli("lock", recipe, "-o", tmp_path / "http.lock", "--cache", tmp_path / "cache")
        assert proc.returncode == 0, proc.stderr
        _, local = lock(rpm_repo, tmp_path, ["app", "mailer"], name="file")
        over_http, over_file = read_lock(tmp_path / "http.lock"), read_lock(local)
        assert over_http.repositories[0].url == url
        assert [(p.name, p.evr, p.sha256) for p in over_http.packages] == \
               [(p.name, p.evr, p.sha256) for p in over_file.packages]
        assert over_http.repositories[0].indexes == over_file.repositories[0].indexes
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_file_dependency_outside_primary_loads_filelists(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    """primary.xml lists only */bin/* and /etc/* files; dnf reads filelists for the rest, and so do we."""
    proc, out = lock(rpm_repo, tmp_path, ["optuser"])
    assert proc.returncode == 0, proc.stderr
    closure = read_lock(out)
    assert nevras(out) == {"optuser-1.0-1.noarch", "optdata-1.0-1.noarch"}
    assert closure.package("optuser").depends == ("optdata",)
    assert sorted(i.path.rsplit("-", 1)[1] for i in closure.repositories[0].indexes) == [
        "filelists.xml.gz", "primary.xml.gz"]
    # without such a dependency anywhere in the repository, primary.xml alone is read
    repo = rpm_repo.copy(tmp_path / "repo")
    (repo / "Packages/optuser-1.0-1.noarch.rpm").unlink()
    shutil.rmtree(repo / "repodata")
    createrepo(repo)
    rpm_repo.resign(repo)
    proc, plain = lock(rpm_repo, tmp_path, ["app"], name="plain", repo=repo)
    assert proc.returncode == 0, proc.stderr
    [idx] = read_lock(plain).repositories[0].indexes
    assert idx.path.endswith("-primary.xml.gz")


# ---- metadata trust --------------------------------------------------------------------------------

def _primary(repo: Path) -> Path:
    return next((repo / "repodata").glob("*-primary.xml.gz"))


def test_tampered_primary_is_refused_naming_the_file(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    primary = _primary(repo)
    data = bytearray(primary.read_bytes())
    data[len(data) // 2] ^= 0x01
    primary.write_bytes(bytes(data))
    proc, out = lock(rpm_repo, tmp_path, ["app"], repo=repo)
    assert proc.returncode != 0 and not out.exists()
    assert primary.name in proc.stderr and "checksum mismatch" in proc.stderr, proc.stderr


def test_open_checksum_is_checked_after_decompression(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    """A re-signed repomd.xml whose primary matches its checksum but not its open-checksum."""
    repo = rpm_repo.copy(tmp_path / "repo")
    primary = _primary(repo)
    xml = gzip.decompress(primary.read_bytes()).replace(b"<name>legacy</name>", b"<name>legacz</name>")
    primary.write_bytes(gzip.compress(xml, mtime=0))
    repomd = repo / "repodata/repomd.xml"
    text = repomd.read_text()
    old = primary.name.split("-", 1)[0]
    new = hashlib.sha256(primary.read_bytes()).hexdigest()
    text = text.replace(f">{old}<", f">{new}<", 1)
    text = re.sub(r'(<data type="primary">.*?<size>)\d+', rf"\g<1>{primary.stat().st_size}", text, flags=re.S)
    repomd.write_text(text)
    rpm_repo.resign(repo)
    with pytest.raises(ChecksumError, match=r"primary\.xml\.gz: checksum mismatch after decompression"):
        load_rpmmd_repository(_recipe_repo(rpm_repo, tmp_path, repo), "x86_64", ContentStore(tmp_path / "c"),
                              MetadataOptions())


def _recipe_repo(rpm_repo: RpmRepo, tmp: Path, repo: Path, **kw):
    return load_recipe(rpm_repo.recipe(tmp / "direct.toml", ["app"], repo=repo, **kw)).repositories[0]


@pytest.mark.parametrize("damage", ["edit-after-signing", "other-key", "unsigned"])
def test_bad_repomd_signature_is_refused(rpm_repo: RpmRepo, tmp_path: Path, damage: str) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    repomd = repo / "repodata/repomd.xml"
    if damage == "edit-after-signing":
        repomd.write_text(repomd.read_text().replace("<revision>1700000000", "<revision>1700000001"))
    elif damage == "other-key":
        rpm_repo.resign(repo, "other")
    else:
        (repo / "repodata/repomd.xml.asc").unlink()
    proc, out = lock(rpm_repo, tmp_path, ["app"], repo=repo)
    assert proc.returncode != 0 and not out.exists()
    assert "repodata/repomd.xml" in proc.stderr
    expect = {"edit-after-signing": "BAD signature", "other-key": "signature verification failed",
              "unsigned": "not signed"}[damage]
    assert expect in proc.stderr, proc.stderr
    # and through the library: the typed error
    with pytest.raises(SignatureError if damage != "unsigned" else MetadataError):
        load_rpmmd_repository(_recipe_repo(rpm_repo, tmp_path, repo), "x86_64", ContentStore(tmp_path / "c"),
                              MetadataOptions())


def test_gpgcheck_off_needs_no_signature(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    (repo / "repodata/repomd.xml.asc").unlink()
    proc, out = lock(rpm_repo, tmp_path, ["app"], repo=repo, gpgcheck=False)
    assert proc.returncode == 0, proc.stderr
    assert read_lock(out).repositories[0].key_fingerprints == ()


def test_sha1_repository_is_refused(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    shutil.rmtree(repo / "repodata")
    createrepo(repo, "--checksum", "sha1")
    rpm_repo.resign(repo)
    proc, out = lock(rpm_repo, tmp_path, ["app"], repo=repo)
    assert proc.returncode != 0 and not out.exists()
    assert "sha1" in proc.stderr and "sha256" in proc.stderr and "primary.xml" in proc.stderr, proc.stderr


@pytest.mark.parametrize("ext", [".xz", ".bz2", ".zst"])
def test_other_compressions(rpm_repo: RpmRepo, tmp_path: Path, ext: str) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    for kind in ("primary", "filelists"):
        recompress_index(repo, kind, ext)
    rpm_repo.resign(repo)
    _, reference = lock(rpm_repo, tmp_path, ["toolbox", "/usr/bin/foo"], name="ref")
    proc, out = lock(rpm_repo, tmp_path, ["toolbox", "/usr/bin/foo"], repo=repo, name="other")
    assert proc.returncode == 0, proc.stderr
    assert nevras(out) == nevras(reference)
    assert sorted(i.path.rsplit("-", 1)[1] for i in read_lock(out).repositories[0].indexes) == [
        f"filelists.xml{ext}", f"primary.xml{ext}"]


def test_offline_relock_from_cache_and_empty_cache_fails(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    repo = rpm_repo.copy(tmp_path / "repo")
    cache = tmp_path / "cache"
    proc, online = lock(rpm_repo, tmp_path, ["app", "mailer"], cache=cache, repo=repo, name="online")
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(repo)                                  # the repository is gone: only the cache remains
    proc, offline = lock(rpm_repo, tmp_path, ["app", "mailer"], cache=cache, repo=repo, name="offline",
                         extra=("--offline",))
    assert proc.returncode == 0, proc.stderr
    assert offline.read_bytes() == online.read_bytes()

    proc, out = lock(rpm_repo, tmp_path, ["app"], cache=tmp_path / "empty", name="empty", extra=("--offline",))
    assert proc.returncode != 0 and not out.exists()
    assert proc.stderr.strip() == (f"error: {rpm_repo.url}/repodata/repomd.xml: not in the cache and "
                                   "--offline was given")


# ---- the closure is dnf's ------------------------------------------------------------------------

DNF_CASES = [
    (["app"], {}),
    (["app", "mailer"], {}),
    (["mailer"], {}),                       # a Recommends picks the provider even with weak deps off
    (["app", "uses-bzip"], {}),             # the rich dep is met by a package already chosen
    (["app", "sendmail-lite"], {}),         # the virtual mta is met by the requested provider
    (["oldtool"], {}),                      # dnf installs the obsoleting package instead
    (["toolbox"], {}),                      # file dep + a dep on an obsoleted name
    (["newtool", "oldtool"], {}),
    (["legacy"], {}),                       # forces the older of two versions
    (["libfoo"], {}),
    (["/usr/bin/foo", "mta"], {}),          # a file path and a virtual name as requests
    (["optuser"], {}),                      # a file dependency only filelists.xml can satisfy
    (["app-extras", "app"], {}),
    (["app"], {"exclude": ("postfix-lite", "bzip-lite")}),
    (["app", "legacy"], {}),                # unresolvable for both
    (["app", "badpkg"], {}),                # unresolvable for both
    (["libfoo", "legacy"], {"pin": {"libfoo": "1.0-1"}}),
]


def test_closure_equals_dnf(rpm_repo: RpmRepo, tmp_path: Path) -> None:
    """Every case, weak deps off and on: the same NEVRA set as dnf, or both refuse. Prints each difference."""
    cases = [DnfCase(tuple(names), weak, opts.get("exclude", ()), tuple(sorted(opts.get("pin", {}).items())))
             for weak in (False, True) for names, opts in DNF_CASES]
    refs = dnf_resolutions(rpm_repo.url, cases)               # a fresh dnf cache per case
    failures = []
    for i, (case, ref) in enumerate(zip(cases, refs)):
        recipe = load_recipe(rpm_repo.recipe(tmp_path / f"case{i}.toml", list(case.names), weak=case.weak,
                                             exclude=case.exclude, pin=dict(case.pin)))
        try:
            ours, err = {f"{p.name}-{p.evr}.{p.arch}" for p in
                         resolve(recipe, LockOptions(cache_dir=tmp_path / "cache")).packages}, ""
        except CernVMBuildError as exc:
            ours, err = set(), str(exc)
        label = f"{' '.join(case.names)} weak={case.weak} exclude={list(case.exclude)} pin={dict(case.pin)}"
        if bool(ref.error) != bool(err):
            failures.append(f"{label}: dnf {'fails: ' + ref.error.strip() if ref.error else 'succeeds'}; "
                            f"cernvm-build {'fails: ' + err if err else 'succeeds'}")
        elif ours != ref.nevras:
            failures.append(f"{label}: only cernvm-build: {sorted(ours - ref.nevras)}; "
                            f"only dnf: {sorted(ref.nevras - ours)}")
    for f in failures:
        print("DIFFERENCE", f)
    assert not failures, "\n".join(failures)
