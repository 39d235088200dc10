"""Shared fixture: one signed Debian repository with maintainer scripts, conffiles and triggers."""

from __future__ import annotations

import pytest

from tests.support.debrepo import DebPkg, build_deb_repo, host_shell_package

ALPHA_POSTINST = """#!/bin/sh
set -e
# only shell builtins: the fixture's tree has nothing but /bin/sh
echo "postinst $*" >> /var/lib/alpha/log
if [ "$1" = triggered ]; then for f in /usr/share/alpha-plugins/*; do echo "$f"; done > /var/lib/alpha/plugins; fi
"""
ALPHA_PREINST = """#!/bin/sh
set -e
[ -d /var/lib/alpha ] || exit 1
echo "preinst $*" >> /var/lib/alpha/log
"""


def fixture_packages() -> list[DebPkg]:
    return [
        host_shell_package(),
        DebPkg("alpha", "1.0-1", depends=["fixture-sh"], files={
            "/usr/bin/alpha": "#!/bin/sh\necho alpha\n", "/etc/alpha.conf": "setting = 1\n",
            "/usr/share/doc/alpha/README": "alpha\n"},
            modes={"/usr/bin/alpha": 0o755}, dirs={"/var/lib/alpha": 0o755}, conffiles=["/etc/alpha.conf"],
            scripts={"postinst": ALPHA_POSTINST, "preinst": ALPHA_PREINST},
            triggers="interest-noawait /usr/share/alpha-plugins\n"),
        DebPkg("beta", "2.0-3", depends=["alpha"], files={
            "/usr/share/alpha-plugins/beta.txt": "plugin\n", "/usr/bin/beta-suid": "x" * 100,
            "/usr/lib/beta/data": "data" * 1000},
            modes={"/usr/bin/beta-suid": 0o4755}, symlinks={"/usr/bin/beta": "alpha"},
            hardlinks={"/usr/lib/beta/data-link": "/usr/lib/beta/data"}, dirs={"/var/lib/beta": 0o700}),
        DebPkg("gamma", "1:3.1-2", pre_depends=["alpha"], depends=["beta"], arch="amd64",
               files={"/usr/share/gamma/g": "g\n"}, multi_arch="same"),
        DebPkg("delta", "0.9", depends=["gamma"], files={"/opt/delta": "d\n"}),
    ]


@pytest.fixture(scope="session")
def debrepo(tmp_path_factory):
    return build_deb_repo(tmp_path_factory.mktemp("debrepo") / "repo", fixture_packages())


@pytest.fixture(scope="session")
def fixture_lock(debrepo, tmp_path_factory):
    """The fixture repository locked with the real `cernvm-build lock`."""
    from cernvm_build.cli import main

    d = tmp_path_factory.mktemp("lock")
    (d / "fixture.toml").write_text(debrepo.recipe("fixture", ["delta"]))
    lock = d / "fixture.lock.toml"
    assert main(["lock", str(d / "fixture.toml"), "-o", str(lock), "--cache", str(d / "cache"), "-q"]) == 0
    return lock
