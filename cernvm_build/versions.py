"""Version ordering per flavour (dpkg's rules for Debian, rpm's for rpm-md)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def _apt():
    import apt_pkg

    apt_pkg.init_config()
    apt_pkg.init_system()
    return apt_pkg


def compare(flavour: str, a: str, b: str) -> int:
    """<0, 0, >0 as version A is older than, equal to, newer than B ([epoch:]version[-release])."""
    if flavour == "deb":
        return _apt().version_compare(a, b)
    import rpm

    from .closure import split_evr

    ea, va, ra = split_evr(a)
    eb, vb, rb = split_evr(b)
    return rpm.labelCompare((str(ea), va, ra), (str(eb), vb, rb))
