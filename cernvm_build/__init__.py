"""cernvm-build: shopping list -> pinned closure lock -> CernVM-FS snapshot -> tiny boot ISO."""

__version__ = "0.1.0"
