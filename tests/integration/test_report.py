"""`cernvm-build report`: the release page of a real repository made here from fixture Debian archives.

Two snapshots of one release (the second adds an updates repository: an upgrade, an addition and a
removal) and one of another release are published with their locks (the first two signed), then the
page is checked: facts, diff rows, downloads, SVG, determinism, errors, and in headless Chromium.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from cernvm_build.cli import main
from cernvm_build.cvmfs.reader import Repository
from tests.support.debrepo import DebPkg, build_deb_repo

FQRN = "releases.example.org"
OLD_DATE = "Mon, 15 Jan 2024 08:00:00 UTC"
NEW_DATE = "Thu, 01 Feb 2024 12:30:00 UTC"
KERNEL = "linux-image-6.1.0-9-amd64"


def _pkg(name: str, version: str, kib: int, **kw) -> DebPkg:
    files = kw.pop("files", None) or {f"/usr/share/{name}/data": name * (kib * 64)}
    return DebPkg(name, version, files=files, extra_fields={"Installed-Size": str(kib)}, **kw)


def _recipe(name: str, packages: list[str], repos) -> str:
    head = [f'name = "{name}"', 'flavour = "deb"', 'arch = "amd64"', f"packages = {json.dumps(packages)}"]
    for repo_name, info in repos:
        head += ["", "[[repositories]]", f'name = "{repo_name}"', f'url = "{info.url}"', f'suite = "{info.suite}"',
                 f"components = {json.dumps(list(info.components))}", f'keyring = "{info.keyring}"']
    return "\n".join(head) + "\n"


def cli(*args) -> None:
    assert main([str(a) for a in args]) == 0, args


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cernvm_build.cli", *map(str, args)], capture_output=True,
                          text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """A repository with tags rel-1 (signed), other-1 (unsigned, another release) and rel-2 (signed)."""
    tmp = tmp_path_factory.mktemp("releases")
    base = [_pkg("base-files", "12.4", 300), _pkg("alpha", "1.0-1", 40, depends=["base-files"]),
            _pkg("beta", "2.0-3", 120, depends=["base-files"]),
            _pkg(KERNEL, "6.1.27-1", 900, arch="amd64", files={"/boot/vmlinuz-6.1.0-9-amd64": b"K" * 20000})]
    main_repo = build_deb_repo(tmp / "archive", base, suite="fixture", date=OLD_DATE)
    updates = build_deb_repo(tmp / "updates", [_pkg("alpha", "1.1-1", 44, depends=["base-files"]),
                                               _pkg("gamma", "0.5", 60, depends=["alpha"])],
                             suite="fixture-updates", date=NEW_DATE)
    cache = tmp / "cache"
    keys, sig_keys = tmp / "keys", tmp / "signing"
    repo = tmp / "repo"
    cli("cvmfs", "init", repo, "--name", FQRN, "--keys", keys)
    cli("key", "generate", "--out", sig_keys, "--name", "release")
    plan = [("rel-1", "fixture-rel", ["alpha", "beta", KERNEL], [("fixture", main_repo)], True),
            ("other-1", "other-rel", ["alpha"], [("fixture", main_repo)], False),
            ("rel-2", "fixture-rel", ["alpha", "gamma", KERNEL],
             [("fixture", main_repo), ("fixture-updates", updates)], True)]
    locks = {}
    for tag, name, packages, repos, signed in plan:
        d = tmp / tag
        d.mkdir()
        (d / f"{name}.toml").write_text(_recipe(name, packages, repos))
        lock = d / f"{name}.lock.toml"
        cli("lock", d / f"{name}.toml", "-o", lock, "--cache", cache, "-q")
        cli("rootfs", lock, d / "tree", "--mode", "unpack", "--cache", cache, "-q")
        extra = []
        if signed:
            cli("sign", lock, "--key", sig_keys / "release.key")
            extra = ["--signature", f"{lock}.sigstore.json"]
        cli("publish", d / "tree", "--repo", repo, "--keys", keys, "--tag", tag, "--lock", lock, "--no-sync", *extra)
        locks[tag] = lock
    return SimpleNamespace(repo=repo, keys=keys, pub=sig_keys / "release.pub", key=sig_keys / "release.key",
                           master=keys / f"{FQRN}.pub", locks=locks, tmp=tmp, cache=cache)


@pytest.fixture(scope="module")
def page(releases, tmp_path_factory):
    out = tmp_path_factory.mktemp("page") / "site"
    res = run("report", releases.repo, "-o", out, "--key", releases.pub, "--pubkey", releases.master)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    return SimpleNamespace(dir=out, html=(out / "index.html").read_text(), stdout=res.stdout,
                           data=json.loads((out / "report.json").read_text()))


def section(html: str, tag: str) -> str:
    m = re.search(rf'<section class="tag" id="tag-{re.escape(tag)}".*?</section>', html, re.DOTALL)
    assert m, tag
    return m.group(0)


def test_publish_stores_the_signature_beside_the_lock(releases):
    for tag, signed in (("rel-1", True), ("other-1", False)):
        lock = releases.locks[tag]
        with Repository(str(releases.repo), tag=tag) as r:
            assert r.read("/.cernvm/closure.lock.toml") == lock.read_bytes()
            if signed:
                assert r.read("/.cernvm/closure.lock.toml.sigstore.json") == Path(f"{lock}.sigstore.json").read_bytes()
            else:
                names = [e.name for e in r.listdir("/.cernvm")]
                assert names == ["closure.lock.toml"]


def test_publish_refuses_a_signature_of_another_lock(releases, tmp_path):
    res = run("publish", releases.tmp / "rel-1" / "tree", "--repo", releases.repo, "--keys", releases.keys,
              "--tag", "mismatch", "--lock", releases.locks["rel-1"],
              "--signature", f"{releases.locks['rel-2']}.sigstore.json")
    assert res.returncode == 1
    assert len(res.stderr.splitlines()) == 1 and "not the lock being published" in res.stderr
    res = run("publish", releases.tmp / "rel-1" / "tree", "--repo", releases.repo, "--keys", releases.keys,
              "--tag", "mismatch", "--signature", f"{releases.locks['rel-2']}.sigstore.json")
    assert res.returncode == 1 and "without the lock it signs" in res.stderr
    garbage = tmp_path / "x.sigstore.json"
    garbage.write_text("{not json")
    res = run("publish", releases.tmp / "rel-1" / "tree", "--repo", releases.repo, "--keys", releases.keys,
              "--tag", "mismatch", "--lock", releases.locks["rel-1"], "--signature", garbage)
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and "not valid JSON" in res.stderr
    with Repository(str(releases.repo)) as r:
        assert "mismatch" not in {t.name for t in r.tags()}


def test_page_lists_every_tag_newest_first_with_its_facts(page, releases):
    html, data = page.html, page.data
    assert "wrote" in page.stdout and "3 tag(s)" in page.stdout
    rows = re.findall(r'<tr class="tag-row" data-tag="([^"]+)"', html)
    assert rows == ["rel-2", "other-1", "rel-1"]
    assert [t["name"] for t in data["tags"]] == rows
    by = {t["name"]: t for t in data["tags"]}
    for tag, lock in releases.locks.items():
        digest = "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()
        assert by[tag]["lock_digest"] == digest
        assert digest in section(html, tag)
    # signatures: verified with the key given; the unsigned tag says so
    from cernvm_build.trust.signing import _load_public, key_id

    kid = key_id(_load_public(releases.pub))
    assert by["rel-1"]["signature"] == {"state": "key", "signer": kid, "issuer": "", "verified": True}
    assert by["other-1"]["signature"]["state"] == "unsigned"
    assert "sig-verified" in section(html, "rel-2") or "verified" in section(html, "rel-2")
    assert "unsigned" in section(html, "other-1")
    # packages, sizes (dpkg's Installed-Size), kernel
    assert by["rel-1"]["packages"] == 4 and by["rel-2"]["packages"] == 4 and by["other-1"]["packages"] == 2
    assert by["rel-1"]["installed_bytes"] == (300 + 40 + 120 + 900) * 1024
    assert by["rel-1"]["tree_bytes"] > 20000 and by["rel-1"]["tree_files"] > 4
    assert by["rel-2"]["kernel"] == {"package": KERNEL, "version": "6.1.27-1"}
    assert by["other-1"]["kernel"] is None
    assert "6.1.0-9-amd64" in html
    # repositories and the archive's date
    rel2 = section(html, "rel-2")
    assert "the archive as of 2024-02-01 12:30 UTC" in rel2
    assert "2024-01-15 08:00 UTC" in rel2 and "fixture-updates" in rel2
    assert {r["name"] for r in by["rel-2"]["repositories"]} == {"fixture", "fixture-updates"}
    # boot and respawn commands
    assert "cvmfs.tag=rel-2" in rel2 and f"cvmfs.root_hash={by['rel-2']['root_hash']}" in rel2
    assert "cernvm-build build --from-bundle fixture-rel-bundle --verify-key release.pub" in rel2
    assert "cernvm-build verify fixture-rel.lock.toml --key release.pub" in rel2
    # the whitelist, checked with the master key
    assert 'id="whitelist"' in html and "signature checked with the master key" in html
    assert f'data-expires="{data["whitelist_expires"]}"' in html


def test_diff_against_the_previous_tag_of_the_same_release(page):
    html, data = page.html, page.data
    by = {t["name"]: t for t in data["tags"]}
    assert by["rel-2"]["previous"] == "rel-1"           # other-1 is another release
    assert by["rel-1"]["previous"] is None and by["other-1"]["previous"] is None
    changes = by["rel-2"]["changes"]
    assert changes["upgraded"] == [{"name": "alpha", "arch": "all", "old": "1.0-1", "new": "1.1-1",
                                    "repository": "fixture-updates"}]
    assert [c["name"] for c in changes["added"]] == ["gamma"]
    assert [c["name"] for c in changes["removed"]] == ["beta"]
    rel2 = section(html, "rel-2")
    rows = re.findall(r'<tr class="diff-row diff-(\w+)" data-package="([^"]+)">(.*?)</tr>', rel2, re.DOTALL)
    assert [(k, n) for k, n, _ in rows] == [("added", "gamma"), ("removed", "beta"), ("upgraded", "alpha")]
    upgraded = rows[2][2]
    assert "1.0-1" in upgraded and "1.1-1" in upgraded and "fixture → fixture-updates" in upgraded
    assert "1 added, 1 removed, 1 upgraded" in rel2
    assert "nothing to compare with" in section(html, "rel-1")


def test_downloads_are_there_and_sboms_are_valid_json(page, releases):
    html = page.html
    links = re.findall(r'<a class="download download-(\w+)" href="([^"]+)"', html)
    kinds = {(Path(href).parent.name, kind) for kind, href in links}
    assert {("rel-1", "lock"), ("rel-1", "signature"), ("rel-1", "spdx"), ("rel-1", "cyclonedx"),
            ("other-1", "lock"), ("other-1", "spdx"), ("other-1", "cyclonedx")} <= kinds
    assert ("other-1", "signature") not in kinds
    for kind, href in links:
        f = page.dir / href
        assert f.is_file(), href
        if kind == "spdx":
            doc = json.loads(f.read_text())
            assert doc["spdxVersion"] == "SPDX-2.3" and len(doc["packages"]) >= 2
        elif kind == "cyclonedx":
            doc = json.loads(f.read_text())
            assert doc["bomFormat"] == "CycloneDX" and doc["components"]
    assert (page.dir / "tags/rel-2/closure.lock.toml").read_bytes() == releases.locks["rel-2"].read_bytes()
    # the downloaded lock and signature verify with the release key, as the page says
    assert main(["verify", str(page.dir / "tags/rel-2/closure.lock.toml"), "--key", str(releases.pub)]) == 0


def test_charts_are_well_formed_svg(page):
    files = sorted(page.dir.rglob("*.svg"))
    assert {f.relative_to(page.dir).as_posix() for f in files} == {
        "charts/tags.svg", "tags/rel-1/packages.svg", "tags/rel-2/packages.svg", "tags/other-1/packages.svg"}
    for f in files:
        root = ET.fromstring(f.read_bytes())
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
        assert root.findall(".//{http://www.w3.org/2000/svg}rect")
    inline = re.findall(r"<svg .*?</svg>", page.html, re.DOTALL)
    assert len(inline) == 4
    for svg in inline:
        ET.fromstring(svg)
    tags_svg = (page.dir / "charts/tags.svg").read_text()
    assert "fixture-rel" in tags_svg and "other-rel" in tags_svg
    packages = (page.dir / "tags/rel-1/packages.svg").read_text()
    assert "Installed size by package" in packages and KERNEL in packages


def test_same_repository_same_bytes_and_atomic_replacement(releases, page, tmp_path):
    second = tmp_path / "again"
    assert run("report", releases.repo, "-o", second, "--key", releases.pub, "--pubkey",
               releases.master).returncode == 0

    def files(d: Path) -> dict[str, bytes]:
        return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}

    assert files(second) == files(page.dir)
    # the environment's SOURCE_DATE_EPOCH (a CI job's commit time) does not date the SBOMs: only the locks do
    third = tmp_path / "sde"
    res = subprocess.run([sys.executable, "-m", "cernvm_build.cli", "report", str(releases.repo), "-o", str(third),
                          "--key", str(releases.pub), "--pubkey", str(releases.master)], capture_output=True,
                         text=True, check=False, env={**os.environ, "SOURCE_DATE_EPOCH": "1234567890"})
    assert res.returncode == 0, res.stderr
    assert files(third) == files(page.dir)
    shutil.rmtree(third)
    # writing over an earlier page replaces it whole and leaves nothing beside it
    (second / "tags" / "stale.txt").write_text("from an older page")
    assert run("report", releases.repo, "-o", second, "--tag", "rel-1").returncode == 0
    assert not (second / "tags" / "stale.txt").exists()
    assert sorted(p.name for p in (second / "tags").iterdir()) == ["rel-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]


def test_tag_option_limits_the_page_but_keeps_the_diff(releases, tmp_path):
    res = run("report", releases.repo, "-o", tmp_path / "one", "--tag", "rel-2")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "one" / "report.json").read_text())
    assert [t["name"] for t in data["tags"]] == ["rel-2"] and data["tags"][0]["previous"] == "rel-1"
    html = (tmp_path / "one" / "index.html").read_text()
    assert "1 snapshot shown of 3" in html
    # without --key the signer is named but not claimed to be verified
    assert data["tags"][0]["signature"]["verified"] is None and "not verified here" in html


def test_a_wrong_key_is_shown_and_warned_about(releases, tmp_path):
    cli("key", "generate", "--out", tmp_path / "other", "--name", "other")
    res = run("report", releases.repo, "-o", tmp_path / "p", "--key", tmp_path / "other" / "other.pub")
    assert res.returncode == 0
    warnings = res.stderr.splitlines()
    assert len(warnings) == 2 and all(w.startswith("warning: tag rel-") for w in warnings)
    assert "does not verify" in warnings[0]
    html = (tmp_path / "p" / "index.html").read_text()
    assert html.count('class="badge bad sig-failed"') == 2


def test_bad_input_is_one_line(releases, tmp_path):
    res = run("report", releases.repo, "-o", tmp_path / "x", "--tag", "rel-1", "--tag", "nope")
    assert res.returncode == 1
    assert res.stderr.splitlines() == [f"error: repository {FQRN} has no tag 'nope' (known: other-1, rel-1, rel-2)"]
    assert not (tmp_path / "x").exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    res = run("report", plain, "-o", tmp_path / "x")
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith(f"error: {plain}: not a CernVM-FS repository")
    res = run("report", tmp_path / "missing", "-o", tmp_path / "x")
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and "not a CernVM-FS repository" in res.stderr
    # a directory that is not an earlier page is never replaced
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    res = run("report", releases.repo, "-o", other)
    assert res.returncode == 1 and len(res.stderr.splitlines()) == 1 and "refusing to replace" in res.stderr
    assert (other / "thesis.tex").read_text() == "precious" and sorted(os.listdir(other)) == ["thesis.tex"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents", "plain"]


def test_a_served_repository_gives_the_same_facts(releases, page, tmp_path):
    from cernvm_build.cvmfs.serve import serve_in_thread

    server, url = serve_in_thread(releases.repo)
    try:
        out = tmp_path / "http"
        assert main(["report", url + "/", "-o", str(out), "--key", str(releases.pub), "--pubkey", str(releases.master),
                     "-q"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert (out / "report.json").read_bytes() == (page.dir / "report.json").read_bytes()
    assert (out / "tags/rel-2/sbom.spdx.json").read_bytes() == (page.dir / "tags/rel-2/sbom.spdx.json").read_bytes()
    # the commands on the page name the address it was made from
    html = (out / "index.html").read_text()
    assert f"cvmfs.url={url}/ cvmfs.tag=rel-2" in html and f"cernvm-build cvmfs cat {url}/ " in html


def test_a_whitelist_near_its_expiry_is_warned_about(releases, tmp_path):
    near = tmp_path / "repo"
    shutil.copytree(releases.repo, near)
    cli("cvmfs", "resign", near, "--keys", releases.keys, "--days", "3")
    res = run("report", near, "-o", tmp_path / "page", "-q")
    assert res.returncode == 0 and res.stdout == ""
    assert re.match(r"warning: the repository.s whitelist expires in (2.9|3.0) day", res.stderr) and "resign" in res.stderr
    html = (tmp_path / "page" / "index.html").read_text()
    assert "(3 days)" in html and 'id="whitelist-status"' in html


def test_a_snapshot_without_a_lock_is_described_from_its_catalog(tmp_path):
    cli("cvmfs", "init", tmp_path / "repo", "--name", "bare.example.org", "--keys", tmp_path / "keys")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("hello <world> & co\n")
    cli("publish", tree, "--repo", tmp_path / "repo", "--keys", tmp_path / "keys", "--tag", "plain<&>",
        "--no-sync")
    res = run("report", tmp_path / "repo", "-o", tmp_path / "page")
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "page" / "report.json").read_text())
    (t,) = data["tags"]
    assert t["name"] == "plain<&>" and t["lock_digest"] is None and t["packages"] is None
    assert t["tree_files"] == 1 and t["tree_bytes"] == len("hello <world> & co\n")
    html = (tmp_path / "page" / "index.html").read_text()
    assert "none stored in this snapshot" in html and "plain&lt;&amp;&gt;" in html and "plain<&>" not in html
    assert t["files"] == {} and not (tmp_path / "page" / "tags").exists()      # nothing to download for it
    ET.fromstring((tmp_path / "page" / "charts" / "tags.svg").read_bytes())


def test_pipeline_publishes_the_sign_stage_signature(debrepo, tmp_path, capsys):
    from tests.integration.test_build_pipeline import build, project

    p = project(tmp_path, debrepo, ["delta"])
    rc, result, err = build([str(p)], capsys)
    assert rc == 0, err
    tag = result["values"]["tag"]
    sig = tmp_path / "closures" / "fixture.lock.toml.sigstore.json"
    repo = tmp_path / "state" / "cvmfs" / "repo"
    with Repository(str(repo), tag=tag) as r:
        assert r.read("/.cernvm/closure.lock.toml.sigstore.json") == sig.read_bytes()
    out = tmp_path / "page"
    assert main(["report", str(repo), "-o", str(out), "--key", str(tmp_path / "state/signing/lock.pub"), "-q"]) == 0
    data = json.loads((out / "report.json").read_text())
    assert data["tags"][0]["signature"]["verified"] is True


# ------------------------------------------------------------------------------------------- in a browser
CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


def _selenium():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None
    from selenium import webdriver

    return webdriver


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER and _selenium()),
                    reason="needs Debian's chromium, chromium-driver and python3-selenium (tools/setup.sh)")
def test_page_in_headless_chromium(page, releases, tmp_path):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    webdriver = _selenium()
    # a copy of the repository whose whitelist expires in 3 days: the page must warn
    near = tmp_path / "repo"
    shutil.copytree(releases.repo, near)
    cli("cvmfs", "resign", near, "--keys", releases.keys, "--days", "3")
    near_page = tmp_path / "near"
    cli("report", near, "-o", near_page, "-q")

    opts = Options()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        driver.set_page_load_timeout(30)
        driver.get((page.dir / "index.html").as_uri())
        assert driver.title == f"Release page: {FQRN}"
        assert driver.execute_script("return document.readyState") == "complete"
        table = driver.find_element(By.ID, "tags-table")
        assert [r.get_attribute("data-tag") for r in table.find_elements(By.CSS_SELECTOR, "tr.tag-row")] == \
            ["rel-2", "other-1", "rel-1"]
        assert len(driver.find_elements(By.CSS_SELECTOR, "section.tag")) == 3
        rows = driver.find_elements(By.CSS_SELECTOR, "#tag-rel-2 tr.diff-row")
        assert [r.get_attribute("data-package") for r in rows] == ["gamma", "beta", "alpha"]
        assert len(driver.find_elements(By.CSS_SELECTOR, ".sig-verified")) == 2
        assert len(driver.find_elements(By.CSS_SELECTOR, "a.download-spdx")) == 3
        # the charts are drawn (laid out with a size), not just present
        charts = driver.find_elements(By.CSS_SELECTOR, "figure.chart svg")
        assert len(charts) == 4
        for svg in charts:
            assert svg.size["width"] > 200 and svg.size["height"] > 40
        # the script judged the whitelist (30 days: fine)
        wl = driver.find_element(By.ID, "whitelist")
        assert wl.get_attribute("data-state") == "ok" and "more day" in wl.text
        shot = tmp_path / "release-page.png"
        assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
        # a download link leads to a real file
        href = driver.find_element(By.CSS_SELECTOR, "#tag-rel-1 a.download-cyclonedx").get_attribute("href")
        assert json.loads(Path(href.removeprefix("file://")).read_text())["bomFormat"] == "CycloneDX"

        driver.get((near_page / "index.html").as_uri())
        wl = driver.find_element(By.ID, "whitelist")
        assert wl.get_attribute("data-state") == "warn" and "Expires in " in wl.text
        assert "warn" in wl.get_attribute("class").split()
        driver.save_screenshot(str(tmp_path / "release-page-near-expiry.png"))

        problems = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "WARNING")]
        assert problems == []
    finally:
        driver.quit()


def test_keyless_signatures_name_identity_and_issuer(tmp_path):
    """A keyless bundle (private Sigstore instance on loopback) is described by its certificate's identity
    and issuer, and verified offline when the page is given them."""
    from cernvm_build.report.collect import Trust, describe_signature
    from tests.integration.fakesigstore import FakeSigstore
    from tests.integration.test_keyless import LOCK, WORKFLOW, clean_env

    fs = FakeSigstore().start()
    try:
        root, config = fs.write(tmp_path / "sigstore")
        lock = tmp_path / LOCK.name
        shutil.copy(LOCK, lock)
        res = subprocess.run([sys.executable, "-m", "cernvm_build.cli", "sign", str(lock), "--keyless",
                              "--trust-config", str(config), "--identity-token", fs.token(WORKFLOW)],
                             capture_output=True, text=True, env=clean_env(), check=False)
        assert res.returncode == 0, res.stderr
        bundle = Path(f"{lock}.sigstore.json").read_bytes()
        data = lock.read_bytes()
        info = describe_signature(bundle, data, "t", Trust())
        assert (info.state, info.signer, info.issuer, info.verified) == ("keyless", WORKFLOW, fs.issuer, None)
        assert describe_signature(bundle, data, "t", Trust(identity=WORKFLOW, issuer=fs.issuer,
                                                           trusted_root=root)).verified is True
        wrong = describe_signature(bundle, data, "t", Trust(identity="someone@example.org", issuer=fs.issuer,
                                                            trusted_root=root))
        assert wrong.verified is False and "does not verify" in wrong.note and "\n" not in wrong.note
        other = describe_signature(bundle, data + b"\n", "t", Trust())
        assert other.state == "invalid" and "not the stored lock" in other.note
    finally:
        fs.stop()
