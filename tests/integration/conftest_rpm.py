"""Session fixture: the rpm-md repository of tests/support/rpmrepo.py, built once (well under a second).

Named conftest_rpm.py (not conftest.py) so it cannot collide with a shared conftest; test modules
import the fixture by name.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.support.rpmrepo import RpmRepo, build_fixture


@pytest.fixture(scope="session")
def rpm_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RpmRepo]:
    """A signed rpm-md repository of real rpmbuild'd packages; never modify it (use .copy())."""
    repo = build_fixture(tmp_path_factory.mktemp("rpmrepo"))
    try:
        yield repo
    finally:
        repo.gpg.close()
