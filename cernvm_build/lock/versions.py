"""Version ordering of a lock's flavour (dpkg's rules for Debian, rpm's for rpm-md: see formats/)."""

from __future__ import annotations

from cernvm_build import formats
from cernvm_build.errors import LockError


def compare(flavour: str, a: str, b: str) -> int:
    """<0, 0, >0 as version A is older than, equal to, newer than B ([epoch:]version[-release])."""
    return formats.get(flavour, LockError).compare_versions(a, b)
