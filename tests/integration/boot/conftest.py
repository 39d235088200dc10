"""Boot tests share the CernVM-FS fixtures from tests/cvmfs_helpers.py and tests/boot_helpers.py."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from boot_helpers import boot_kernel  # noqa: E402,F401
from cvmfs_helpers import keys, repo, session_keys  # noqa: E402,F401


@pytest.fixture(scope="session")
def binary() -> Path:
    """cvmfs-mini built once for the session (the mount, prefetch, proxy and hostile-server tests)."""
    from cernvm_build.boot import client
    return client.build_client()
