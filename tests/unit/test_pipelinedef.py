"""Pipeline definitions are validated like recipes: every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.errors import PipelineConfigError
from cernvm_build.pipeline.definition import apply_overrides, load_pipeline

RECIPE = """name = "demo"
flavour = "deb"
arch = "amd64"
packages = ["bash"]
[[repositories]]
name = "r"
url = "file:///nonexistent"
suite = "stable"
components = ["main"]
keyring = "/dev/null"
"""


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "demo.toml").write_text(RECIPE)
    (tmp_path / "pipeline").mkdir()
    return tmp_path


def write(proj: Path, text: str) -> Path:
    p = proj / "pipeline" / "p.toml"
    p.write_text('recipe = "../recipes/demo.toml"\n' + text)
    return p


def test_defaults_and_relative_paths(proj):
    d = load_pipeline(write(proj, ""))
    assert d.name == "demo" and d.recipe == proj / "recipes/demo.toml"
    assert d.lock_file == proj / "closures/demo.lock.toml"          # closures/ beside recipes/
    assert d.lock_mode == "reuse" and d.rootfs_mode == "unpack"
    assert d.state_dir == proj / "pipeline/build/demo"
    assert d.cvmfs.repository == d.state_dir / "cvmfs/repo" and d.cvmfs.keys == d.state_dir / "cvmfs/keys"
    assert d.cvmfs.fqrn == "demo.cernvm-build.local" and d.cvmfs.tag == "{name}-{lock_digest12}"
    assert d.signing is None and d.image is None and d.iso is None


def test_full_definition(proj):
    d = load_pipeline(write(proj, '''name = "snap"
lock = "refresh"
lock-file = "../closures/x.lock.toml"
state-dir = "../state"
cache-dir = "/var/cache/cb"
jobs = 8
[signing]
generate = true
[rootfs]
mode = "install"
[cvmfs]
repository = "/srv/cvmfs/snap"
fqrn = "snap.example.org"
keys = "/etc/cvmfs/keys"
tag = "{name}-{mode}-{lock_digest12}"
description = "nightly"
[image]
format = "raw"
size-mib = 2048
[iso]
boot-lock = "../closures/boot.lock.toml"
repo-url = "http://cvmfs.example.org/cvmfs/snap.example.org"
'''))
    assert d.lock_mode == "refresh" and d.lock_file == proj / "closures/x.lock.toml" and d.jobs == 8
    assert d.signing.key == proj / "state/signing/lock.key" and d.signing.public_key == proj / "state/signing/lock.pub"
    assert d.cvmfs.repository == Path("/srv/cvmfs/snap") and d.image.size_mib == 2048
    assert d.iso.output == proj / "state/iso/snap.iso"
    moved = apply_overrides(d, state_dir=proj / "elsewhere")
    assert moved.signing.key == proj / "elsewhere/signing/lock.key" and moved.cvmfs.repository == d.cvmfs.repository
    assert moved.iso.output == proj / "elsewhere/iso/snap.iso"


@pytest.mark.parametrize("text, message", [
    ('lokc = "reuse"\n', "unknown key 'lokc'"),
    ('lock = "always"\n', "key 'lock' must be one of reuse, refresh, got 'always'"),
    ('jobs = "4"\n', "key 'jobs' must be an integer, not str"),
    ('jobs = true\n', "key 'jobs' must be an integer, not bool"),
    ('[cvmfs]\nfqnr = "a.b"\n', "[cvmfs]: unknown key 'fqnr'"),
    ('[cvmfs]\nfqrn = "nodots"\n', "key 'fqrn' must be a fully qualified name"),
    ('[cvmfs]\ntag = "{name}-{date}"\n', "key 'tag' uses unknown field {date}"),
    ('[cvmfs]\ntag = "a b"\n', "key 'tag' must not contain spaces"),
    ('[rootfs]\nmode = "chroot"\n', "[rootfs]: key 'mode' must be one of unpack, install"),
    ('[rootfs]\nmode = "unpack"\nextra = 1\n', "[rootfs]: unknown key 'extra'"),
    ('[image]\nformat = "vmdk"\n', "[image]: key 'format' must be one of raw, qcow2"),
    ('[iso]\nrepo-url = "http://x/"\n', "[iso]: missing required key 'boot-lock'"),
    ('[iso]\nboot-lock = "b.toml"\nrepo-url = "ftp://x/"\n', "[iso]: key 'repo-url' must start with http://"),
    ('[signing]\n', "[signing]: give 'key'"),
    ('[signing]\nkey = "k"\ngenrate = true\n', "[signing]: unknown key 'genrate'"),
    ('[signing]\nidentity = "a@b.c"\n', "keyless signing needs both 'identity' and 'issuer'"),
    ('[signing]\nkeyless = true\n', "keyless signing needs both 'identity' and 'issuer'"),
    ('[signing]\nidentity = "a@b.c"\nissuer = "https://i"\ngenerate = true\n', "cannot be combined with 'key'"),
    ('[signing]\nidentity = "a@b.c"\nissuer = "https://i"\ntrust-config = "c.json"\n',
     "'trust-config' is for signing; it needs keyless = true"),
    ('[signing]\nidentity = "a@b.c"\nissuer = "https://i"\nkeyless = "yes"\n', "key 'keyless' must be true or false"),
    ('rootfs = "install"\n', "key 'rootfs' must be a table"),
    ('name = "has space"\n', "key 'name' must be letters"),
])
def test_strict_validation(proj, text, message):
    p = write(proj, text)
    with pytest.raises(PipelineConfigError) as e:
        load_pipeline(p)
    assert message in str(e.value) and str(p) in str(e.value)


def test_missing_recipe_and_bad_toml(proj, tmp_path, capsys):
    p = proj / "pipeline" / "p.toml"
    p.write_text("lock = 'reuse'\n")
    with pytest.raises(PipelineConfigError, match="missing required key 'recipe'"):
        load_pipeline(p)
    p.write_text('recipe = "../recipes/none.toml"\n')
    with pytest.raises(PipelineConfigError, match="key 'recipe': cannot read"):
        load_pipeline(p)
    p.write_text("recipe = \n")
    with pytest.raises(PipelineConfigError, match="not valid TOML"):
        load_pipeline(p)
    # the CLI prints exactly one error line and exits non-zero, before any stage runs
    write(proj, '[cvmfs]\nfqnr = "a.b"\n')
    assert main(["build", str(p), "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and err.startswith(f"error: {p}: [cvmfs]: unknown key 'fqnr'")
    assert not (tmp_path / "s").exists()
