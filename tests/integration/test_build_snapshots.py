"""`cernvm-build build` with [[snapshots]]: several recipes as tags of one repository, one ISO."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.cvmfs.reader import Repository
from cernvm_build.errors import CvmfsError, PipelineConfigError
from cernvm_build.pipeline.definition import load_pipeline
from cernvm_build.pipeline.releases import run_snapshots
from cernvm_build.pipeline.stages import IsoStage, default_stages
from tests.integration.test_build_pipeline import build, ran

PIPELINE = """\
name = "releases"
lock = "reuse"
state-dir = "../state"
cache-dir = "../cache"

[signing]
generate = true

[cvmfs]
fqrn = "releases.example.org"

[[snapshots]]
name = "old"
recipe = "../recipes/old.toml"
description = "the old release"

[[snapshots]]
recipe = "../recipes/new.toml"
"""

ISO = '\n[iso]\nboot-lock = "../closures/new.lock.toml"\nrepo-url = "http://10.0.2.2:8000/"\n'


def project(tmp: Path, repo, extra: str = "") -> Path:
    (tmp / "recipes").mkdir(parents=True, exist_ok=True)
    (tmp / "pipeline").mkdir(exist_ok=True)
    (tmp / "recipes" / "old.toml").write_text(repo.recipe("old", ["beta"]))
    (tmp / "recipes" / "new.toml").write_text(repo.recipe("new", ["delta"]))
    p = tmp / "pipeline" / "releases.toml"
    p.write_text(PIPELINE + extra)
    return p


def test_two_snapshots_one_repository_deduplicated(debrepo, tmp_path, capsys):
    p = project(tmp_path, debrepo)
    rc, res, err = build([str(p)], capsys)
    assert rc == 0, err
    old, new = res["snapshots"]["old"], res["snapshots"]["new"]
    assert ran(old) == ran(new) == ["lock", "sign", "fetch", "rootfs", "publish"]
    assert res["iso"]["stages"][0]["status"] == "skipped"        # no [iso] section
    repo = tmp_path / "state" / "cvmfs" / "repo"
    assert old["values"]["repository"] == new["values"]["repository"] == str(repo)
    assert old["values"]["revision"] == 2 and new["values"]["revision"] == 3
    assert old["values"]["tag"].startswith("old-") and new["values"]["tag"].startswith("new-")
    # each lock lives beside its recipe's closures/, each signature in its snapshot's state
    for name in ("old", "new"):
        lock = tmp_path / "closures" / f"{name}.lock.toml"
        sig = tmp_path / "state" / "snapshots" / name / f"{name}.lock.toml.sigstore.json"
        assert res["snapshots"][name]["values"]["lock_file"] == str(lock) and sig.exists()
        assert main(["verify", str(lock), "--key", str(tmp_path / "state/signing/lock.pub"),
                     "--bundle", str(sig)]) == 0
    with Repository(str(repo), check_whitelist=False) as r:
        tags = {t.name: t for t in r.tags() if not t.name.startswith("trunk")}
        assert set(tags) == {old["values"]["tag"], new["values"]["tag"]}
        assert tags[old["values"]["tag"]].description.startswith("the old release [closure-lock sha256:")
    with Repository(str(repo), tag=new["values"]["tag"], check_whitelist=False) as r:
        assert r.lookup("/opt/delta").file_size == 2
    with Repository(str(repo), tag=old["values"]["tag"], check_whitelist=False) as r:
        with pytest.raises(CvmfsError, match="/opt/delta: no such file"):
            r.lookup("/opt/delta")
    # "new" shares alpha, beta and the shell with "old": it adds only gamma's and delta's files
    # (and its catalogs), not its whole tree
    assert 0 < new["values"]["data_objects_written"] < old["values"]["data_objects_written"]
    assert new["values"]["bytes_written"] < new["values"]["tree_bytes"]

    # a second run: nothing changed, nothing runs, nothing is published
    published = (repo / ".cvmfspublished").read_bytes()
    rc, again, err = build([str(p)], capsys)
    assert rc == 0, err
    assert ran(again["snapshots"]["old"]) == ran(again["snapshots"]["new"]) == []
    assert (repo / ".cvmfspublished").read_bytes() == published

    # the summary names what each snapshot added
    capsys.readouterr()
    assert main(["build", str(p)]) == 0
    out = capsys.readouterr().out
    assert "2 snapshots into" in out and "added nothing (unchanged)" in out


def test_one_iso_for_all_snapshots_boots_the_newest(debrepo, tmp_path):
    p = project(tmp_path, debrepo, ISO)
    calls = []

    def build_iso(out: Path, opts):
        calls.append(opts)
        out.write_bytes(b"ISO" * 100)

    def stages():
        return [IsoStage(builder=build_iso) if s.name == "iso" else s for s in default_stages()]

    d = load_pipeline(p)
    res = run_snapshots(d, stages=stages)
    newest = res.newest
    assert newest.tag.startswith("new-") and len(calls) == 1
    opts = calls[0]
    assert opts.tag == newest.tag and opts.root_hash == newest.root_hash and opts.min_revision == 3
    # the menu: every tag of the repository, the newest (the default) first, each pinned
    old = next(r.outputs["publish"] for r in res.snapshots if r.definition.name == "old")
    assert [(e.tag, e.root_hash) for e in opts.menu] == [(newest.tag, newest.root_hash), (old.tag, old.root_hash)]
    assert opts.menu[1].description.startswith("revision 2, ")
    assert res.iso.values["iso"] == str(tmp_path / "state/iso/releases.iso")
    # unchanged snapshots: the ISO is not rebuilt
    res = run_snapshots(d, stages=stages)
    assert len(calls) == 1 and res.iso.ran == []


def test_snapshot_definition_errors(debrepo, tmp_path, capsys):
    p = project(tmp_path, debrepo)
    text = p.read_text()
    p.write_text(text.replace('name = "old"', 'name = "new"'))
    with pytest.raises(PipelineConfigError, match=r"\[\[snapshots\]\] #2: name 'new' is already used"):
        load_pipeline(p)
    p.write_text('recipe = "../recipes/old.toml"\n' + text)
    with pytest.raises(PipelineConfigError, match="either 'recipe' .* or \\[\\[snapshots\\]\\]"):
        load_pipeline(p)
    p.write_text(text.replace('description = "the old release"', 'descripton = "typo"'))
    with pytest.raises(PipelineConfigError, match=r"\[\[snapshots\]\] #1: unknown key 'descripton'"):
        load_pipeline(p)
    p.write_text(text.replace('recipe = "../recipes/new.toml"', 'recipe = "../recipes/missing.toml"'))
    with pytest.raises(PipelineConfigError, match=r"#2: key 'recipe': cannot read .*missing.toml"):
        load_pipeline(p)
    p.write_text("snapshots = []\n" + text.split("[[snapshots]]")[0])
    with pytest.raises(PipelineConfigError, match="one or more \\[\\[snapshots\\]\\] tables"):
        load_pipeline(p)
    p.write_text(text)
    rc, _, err = build([str(p), "--lock-file", str(tmp_path / "x.toml")], capsys)
    assert rc != 0 and "--lock-file names one lock, but the definition has 2 snapshots" in err
