"""CernVM-FS test fixtures live in tests/cvmfs_helpers.py (shared by unit and integration tests)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cvmfs_helpers import keys, repo, session_keys  # noqa: E402,F401
