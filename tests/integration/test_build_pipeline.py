"""`cernvm-build build`: the whole chain on fixture repositories, stage skipping, failures, respawn."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.pipeline.engine import Records
from cernvm_build.rootfs.digest import tree_digest
from cernvm_build.util.treestat import tree_stat
from tests.integration.conftest import fixture_packages
from tests.support.debrepo import DebPkg, build_deb_repo, host_shell_package
from tests.support.httpserver import RangeServer

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="install mode chroots into the tree (root only)")
CLI = [str(Path(sys.executable).with_name("cernvm-build"))]

PIPELINE = """\
recipe = "../recipes/{name}.toml"
lock = "reuse"
state-dir = "../state"
cache-dir = "../cache"

[signing]
generate = true

[rootfs]
mode = "{mode}"

[cvmfs]
fqrn = "fixture.example.org"
tag = "{{name}}-{{lock_digest12}}"
"""


def project(tmp: Path, repo, packages: list[str], mode: str = "unpack", name: str = "fixture",
            extra: str = "") -> Path:
    """A project layout: recipes/NAME.toml, pipeline/NAME.toml (closures/ and state/ are outputs)."""
    (tmp / "recipes").mkdir(parents=True, exist_ok=True)
    (tmp / "pipeline").mkdir(exist_ok=True)
    (tmp / "recipes" / f"{name}.toml").write_text(repo.recipe(name, packages))
    p = tmp / "pipeline" / f"{name}.toml"
    p.write_text(PIPELINE.format(name=name, mode=mode) + extra)
    return p


def build(args: list[str], capsys) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    rc = main(["build", *args, "--json"])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if rc == 0 else None), err


def ran(result: dict) -> list[str]:
    return [s["name"] for s in result["stages"] if s["status"] == "ran"]


def status(result: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result["stages"]}


def tags(repo: Path) -> dict[str, str]:
    with Repository(str(repo), check_whitelist=False) as r:
        return {t.name: t.hash for t in r.tags()}


def test_full_pipeline_then_nothing_to_do(debrepo, tmp_path, capsys):
    p = project(tmp_path, debrepo, ["delta"])
    rc, first, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(first) == ["lock", "sign", "fetch", "rootfs", "publish"]
    st = status(first)
    assert st["iso"] == "skipped" and st["image"] == "skipped"
    iso = next(s for s in first["stages"] if s["name"] == "iso")
    assert iso["reason"] in ("no [iso] section",)
    v = first["values"]
    lock = tmp_path / "closures" / "fixture.lock.toml"
    assert v["lock_file"] == str(lock) and v["packages"] == 5 and v["lock_action"] == "resolved"
    assert (tmp_path / "closures" / "fixture.lock.toml.sigstore.json").exists()
    assert (tmp_path / "state" / "signing" / "lock.key").exists()
    assert main(["verify", str(lock), "--key", str(tmp_path / "state/signing/lock.pub")]) == 0
    repo = tmp_path / "state" / "cvmfs" / "repo"
    assert tags(repo)[v["tag"]] == v["root_hash"] and v["tag"] == "fixture-" + v["lock_digest"][7:19]
    with Repository(str(repo), tag=v["tag"]) as r:
        assert b"".join(r.iter_content(r.lookup("/.cernvm/closure.lock.toml"))) == lock.read_bytes()
        assert r.lookup("/opt/delta").file_size == 2
    assert v["tree_files"] > 10 and v["tree_bytes"] > 0
    # a content-addressed record per stage
    records = list((tmp_path / "state" / "stages").glob("*/*.json"))
    assert sorted(r.parent.name for r in records) == ["fetch", "lock", "publish", "rootfs", "sign"]
    objects_before = sorted(str(x) for x in (repo / "data").rglob("*") if x.is_file())
    published_before = (repo / ".cvmfspublished").read_bytes()

    rc, second, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(second) == []
    assert {k: s for k, s in status(second).items() if s != "skipped"} == {
        "lock": "unchanged", "sign": "unchanged", "fetch": "unchanged", "rootfs": "unchanged", "publish": "unchanged"}
    assert second["values"]["root_hash"] == v["root_hash"]
    assert (repo / ".cvmfspublished").read_bytes() == published_before          # nothing new published
    assert sorted(str(x) for x in (repo / "data").rglob("*") if x.is_file()) == objects_before

    # a removed output re-runs exactly its stage (and nothing after it when the result is the same)
    shutil.rmtree(tmp_path / "state" / "rootfs")
    rc, third, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(third) == ["rootfs"] and status(third)["publish"] == "unchanged"

    # the human summary
    capsys.readouterr()
    assert main(["build", str(p)]) == 0
    out = capsys.readouterr().out
    assert "0 of 7 stages ran" in out and v["root_hash"] in out and v["lock_digest"] in out
    assert "nothing new published" in out and "iso:       no [iso] section" in out


def test_recipe_change_reruns_from_lock(debrepo, tmp_path, capsys):
    p = project(tmp_path, debrepo, ["delta"])
    rc, first, err = build([str(p)], capsys)
    assert rc == 0, err
    (tmp_path / "recipes" / "fixture.toml").write_text(debrepo.recipe("fixture", ["beta"]))
    rc, second, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(second) == ["lock", "sign", "fetch", "rootfs", "publish"]
    v1, v2 = first["values"], second["values"]
    assert v2["lock_action"] == "re-resolved (recipe changed)" and v2["packages"] == 3
    assert v2["lock_digest"] != v1["lock_digest"] and v2["revision"] == v1["revision"] + 1
    assert set(tags(tmp_path / "state/cvmfs/repo")) >= {v1["tag"], v2["tag"]}
    assert not (tmp_path / "state/rootfs/opt/delta").exists()
    # comments and formatting are not changes: the recipe digest is over its content
    text = (tmp_path / "recipes" / "fixture.toml").read_text()
    (tmp_path / "recipes" / "fixture.toml").write_text("# a comment\n" + text)
    rc, third, err = build([str(p)], capsys)
    assert rc == 0 and ran(third) == []


@needs_root
def test_failing_stage_keeps_earlier_outputs(tmp_path, capsys):
    repo = build_deb_repo(tmp_path / "repo", [
        host_shell_package(),
        DebPkg("good", depends=["fixture-sh"], files={"/usr/share/good/file": "good\n"}),
        DebPkg("broken", depends=["fixture-sh"], scripts={"postinst": "#!/bin/sh\necho boom >&2\nexit 3\n"}),
    ])
    p = project(tmp_path, repo, ["good"], mode="install")
    rc, first, err = build([str(p)], capsys)
    assert rc == 0, err
    tree = tmp_path / "state" / "rootfs"
    before = tree_digest(tree, mtimes=True)
    repo_dir = tmp_path / "state/cvmfs/repo"
    published = (repo_dir / ".cvmfspublished").read_bytes()

    (tmp_path / "recipes" / "fixture.toml").write_text(repo.recipe("fixture", ["good", "broken"]))
    capsys.readouterr()
    rc = main(["build", str(p)])
    out, err = capsys.readouterr()
    assert rc == 1
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith("error: stage rootfs: ") and "boom" in err
    assert out == ""
    # the earlier tree, repository and records are intact; nothing half-built is left
    assert tree_digest(tree, mtimes=True) == before
    assert (repo_dir / ".cvmfspublished").read_bytes() == published
    assert sorted(x.name for x in (tmp_path / "state").iterdir()) == [
        ".build.lock", "cvmfs", "rootfs", "signing", "stages"]
    assert not list((tmp_path / "state" / "stages" / "rootfs").glob("*.json"))[1:]   # only the first run's

    # back to the working recipe: the old tree and snapshot are still valid, only lock/sign re-run
    (tmp_path / "recipes" / "fixture.toml").write_text(repo.recipe("fixture", ["good"]))
    rc, again, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(again) == ["lock", "sign"] and status(again)["publish"] == "unchanged"
    assert again["values"]["root_hash"] == first["values"]["root_hash"]


@needs_root
def test_bundle_respawn_same_root_hash_without_network(tmp_path, capsys):
    """A pipeline over HTTP; its bundle rebuilds the same snapshot in a process with no network at all."""
    if subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode:
        pytest.skip("unshare -n is not permitted here")
    repo = build_deb_repo(tmp_path / "www" / "debian", fixture_packages())
    with RangeServer(tmp_path / "www") as srv:
        repo.url = f"{srv.url}/debian"
        p = project(tmp_path, repo, ["delta"], mode="install")
        rc, first, err = build([str(p)], capsys)
        assert rc == 0, err
        assert any(path.endswith(".deb") for path, _ in srv.state.requests)     # packages came over HTTP
        lock = Path(first["values"]["lock_file"])
        assert main(["bundle", str(lock), str(tmp_path / "bundle"), "--cache", str(tmp_path / "cache"), "-q"]) == 0
        assert (tmp_path / "bundle" / "fixture.lock.toml.sigstore.json").exists()
        # the server is up, but a process in a new network namespace cannot reach it
        probe = subprocess.run(["unshare", "-n", sys.executable, "-c",
                                f"import urllib.request; urllib.request.urlopen({srv.url + '/debian/'!r}, timeout=5)"],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and ("Network is unreachable" in probe.stderr
                                          or "Connection refused" in probe.stderr), probe.stderr
        n_requests = len(srv.state.requests)
        r = subprocess.run(["unshare", "-n", *CLI, "build", "--from-bundle", str(tmp_path / "bundle"), str(p),
                            "--state-dir", str(tmp_path / "respawn"), "--cache", str(tmp_path / "empty-cache"),
                            "--json"], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert len(srv.state.requests) == n_requests
    respawn = json.loads(r.stdout)
    assert ran(respawn) == ["lock", "sign", "fetch", "rootfs", "publish"]
    v1, v2 = first["values"], respawn["values"]
    assert v2["lock_action"] == "from bundle" and v2["lock_digest"] == v1["lock_digest"]
    assert "5 from mirror" in v2["fetch_summary"]
    assert v2["signed"] is False and v2["signer"] == v1["signer"]          # the bundle's signature verified
    assert v2["tag"] == v1["tag"] and v2["root_hash"] == v1["root_hash"]
    assert tree_digest(tmp_path / "respawn/rootfs", mtimes=True) == tree_digest(tmp_path / "state/rootfs", mtimes=True)
    assert tags(tmp_path / "respawn/cvmfs/repo")[v1["tag"]] == v1["root_hash"]
    # the bundle was not written to
    assert sorted(x.name for x in (tmp_path / "bundle").iterdir()) == [
        "cernvm-bundle.json", "fixture.lock.toml", "fixture.lock.toml.sigstore.json", "repos"]


def test_bundle_respawn_without_definition_uses_defaults(fixture_lock, tmp_path, capsys, monkeypatch):
    assert main(["bundle", str(fixture_lock), str(tmp_path / "b"), "--cache", str(tmp_path / "c"), "-q"]) == 0
    monkeypatch.chdir(tmp_path)
    rc, res, err = build(["--from-bundle", str(tmp_path / "b"), "--cache", str(tmp_path / "c2")], capsys)
    assert rc == 0, err
    assert ran(res) == ["lock", "fetch", "rootfs", "publish"] and status(res)["sign"] == "skipped"
    v = res["values"]
    assert v["repository"] == str(tmp_path / "build/fixture/cvmfs/repo") and v["fqrn"] == "fixture.cernvm-build.local"
    # a tampered bundle lock is refused by the lock stage, before anything is built
    lock = tmp_path / "b" / fixture_lock.name
    lock.write_text(lock.read_text() + "\n")
    capsys.readouterr()
    assert main(["build", "--from-bundle", str(tmp_path / "b"), "--state-dir", str(tmp_path / "s2")]) == 1
    err = capsys.readouterr().err
    assert "error: stage lock:" in err and "bundle was altered" in err


def test_iso_stage_runs_the_real_builder_with_the_snapshot_it_follows(debrepo, tmp_path, capsys):
    extra = '\n[iso]\nboot-lock = "../closures/fixture.lock.toml"\nrepo-url = "http://127.0.0.1:8000/cvmfs/fixture.example.org"\n'
    p = project(tmp_path, debrepo, ["delta"], extra=extra)
    rc, res, err = build([str(p)], capsys)
    # the real boot stage runs, and the fixture closure has no kernel: a clear stage error
    assert rc != 0 and "error: stage iso:" in err and "kernel" in err

    # the stage's builder interface: build_iso(out, IsoOptions), given exactly what the stage's key covers
    from cernvm_build.boot.iso import IsoOptions
    from cernvm_build.pipeline.definition import load_pipeline
    from cernvm_build.pipeline.engine import run_pipeline
    from cernvm_build.pipeline.stages import IsoStage, default_stages

    calls = []

    def build_iso(out: Path, opts: IsoOptions):
        calls.append((out, opts))
        out.write_bytes(b"ISO" * 1000)

    stages = [s for s in default_stages() if s.name != "iso"]
    stages.insert(5, IsoStage(builder=build_iso))
    definition = load_pipeline(p)
    res = run_pipeline(definition, stages)
    assert [o.name for o in res.outcomes if o.status == "ran"] == ["iso"] and len(calls) == 1
    out, opts = calls[0]
    v = res.values
    assert out == tmp_path / "state/iso/fixture.iso" and v["iso"] == str(out) and v["iso_bytes"] == 3000
    assert opts.tag == v["tag"] and opts.root_hash == v["root_hash"] and opts.min_revision == v["revision"]
    assert opts.boot_lock == tmp_path / "closures/fixture.lock.toml"
    assert opts.repo_url.endswith("/cvmfs/fixture.example.org")
    assert [k.name for k in opts.pubkeys] == ["fixture.example.org.pub"] and opts.cache_root == tmp_path / "cache"
    res = run_pipeline(definition, stages)
    assert [o.name for o in res.outcomes if o.status == "ran"] == [] and len(calls) == 1
    # a new snapshot (another tag) makes a new ISO
    definition = load_pipeline(p)
    from dataclasses import replace

    definition = replace(definition, cvmfs=replace(definition.cvmfs, tag="other-{lock_digest12}"))
    res = run_pipeline(definition, stages)
    assert [o.name for o in res.outcomes if o.status == "ran"] == ["publish", "iso"] and calls[-1][1].tag.startswith("other-")


def test_image_stage_is_deterministic(debrepo, tmp_path, capsys):
    p = project(tmp_path, debrepo, ["delta"], extra='\n[image]\nformat = "raw"\n')
    rc, res, err = build([str(p)], capsys)
    assert rc == 0, err
    v = res["values"]
    assert "image" in ran(res) and v["image_format"] == "raw" and v["image_allocated_bytes"] < v["image_bytes"]
    first = v["image_sha256"]
    fsck = subprocess.run(["e2fsck", "-fn", v["image"]], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout
    listing = subprocess.run(["debugfs", "-R", "cat /opt/delta", v["image"]], capture_output=True, text=True)
    assert listing.stdout == "d\n"
    rc, res, err = build([str(p), "--force", "image"], capsys)
    assert rc == 0 and ran(res) == ["image"] and res["values"]["image_sha256"] == first
    # the stand-alone command gives the same bytes
    out = tmp_path / "same.raw"
    assert main(["image", v["tree"], str(out), "--format", "raw", "--source-date-epoch", str(v["sde"])]) == 0
    from cernvm_build.util.files import sha256_file

    assert sha256_file(out) == first
    q1, q2 = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    assert main(["image", v["tree"], str(q1)]) == 0 and main(["image", v["tree"], str(q2)]) == 0
    assert sha256_file(q1) == sha256_file(q2) and q1.stat().st_size < v["image_allocated_bytes"]


def test_tree_stat_sees_edits(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_text("a")
    os.utime(tmp_path / "t" / "f", (1, 1))
    a = tree_stat(tmp_path / "t")
    (tmp_path / "t" / "f").write_text("b")
    os.utime(tmp_path / "t" / "f", (1, 1))
    assert tree_stat(tmp_path / "t").digest == a.digest          # same size and time: a stat cache's limit
    (tmp_path / "t" / "f").write_text("bb")
    assert tree_stat(tmp_path / "t").digest != a.digest
    assert Records(tmp_path).load("x", "0" * 64) is None


def test_image_handles_awkward_names_and_pins_times(tmp_path):
    from cernvm_build.image.ext4 import ImageOptions, make_image
    from cernvm_build.util.files import sha256_file

    tree = tmp_path / "t"
    (tree / "lib/systemd").mkdir(parents=True)
    (tree / "lib/systemd/system-systemd\\x2dcryptsetup.slice").write_text("unit\n")
    (tree / 'q"uote').write_text("q\n")
    os.symlink("q\"uote", tree / "link")
    for p in [*tree.rglob("*"), tree]:
        if not p.is_symlink():
            os.utime(p, (1600000000, 1600000000))
    a = make_image(tree, tmp_path / "a.raw", ImageOptions(format="raw", sde=1700000000))
    os.utime(tree / 'q"uote', (1700001234, 1600000000))   # source atime/ctime are not part of the image
    b = make_image(tree, tmp_path / "b.raw", ImageOptions(format="raw", sde=1700000000))
    assert a.sha256 == b.sha256 == sha256_file(tmp_path / "b.raw")
    st = subprocess.run(["debugfs", "-R", 'stat "/lib/systemd/system-systemd\\x2dcryptsetup.slice"', str(a.path)],
                        capture_output=True, text=True).stdout
    assert "ctime: 0x6553f100" in st and "atime: 0x6553f100" in st


def test_until_and_one_build_per_state_dir(debrepo, tmp_path, capsys):
    import fcntl

    p = project(tmp_path, debrepo, ["delta"])
    rc, res, err = build([str(p), "--until", "rootfs"], capsys)
    assert rc == 0, err
    assert ran(res) == ["lock", "sign", "fetch", "rootfs"] and "publish" not in status(res)
    assert not (tmp_path / "state/cvmfs").exists()
    with open(tmp_path / "state/.build.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        capsys.readouterr()
        assert main(["build", str(p)]) == 3
        assert "is in use by another build" in capsys.readouterr().err
    rc, res, err = build([str(p)], capsys)
    assert rc == 0 and ran(res) == ["publish"]


def test_unsigned_bundle_refused_when_a_key_is_configured(fixture_lock, tmp_path, capsys):
    from cernvm_build.trust.signing import generate_key

    assert main(["bundle", str(fixture_lock), str(tmp_path / "b"), "--cache", str(tmp_path / "c"), "-q"]) == 0
    _, pub = generate_key(tmp_path / "keys", "archive")
    p = tmp_path / "respawn.toml"
    p.write_text(f'name = "fixture"\n[signing]\npublic-key = "{pub}"\n')
    capsys.readouterr()
    assert main(["build", "--from-bundle", str(tmp_path / "b"), str(p), "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: stage sign: ") and "no signature to verify the lock with" in err
    assert not (tmp_path / "s" / "rootfs").exists()
    # the same trust anchor given on the command line
    capsys.readouterr()
    assert main(["build", "--from-bundle", str(tmp_path / "b"), "--verify-key", str(pub),
                 "--state-dir", str(tmp_path / "s")]) == 1
    assert "no signature to verify the lock with" in capsys.readouterr().err
