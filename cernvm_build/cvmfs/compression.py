"""Deflate implementations for new objects, and the repository's pin of one of them.

CernVM-FS names an object by the SHA-1 of its *compressed* bytes, and two deflate implementations (or two
levels of one) give different bytes for the same input, all of them valid zlib streams that every client
inflates. So the compressor is part of a repository's identity: the same tree published with another one
gets another root hash. A repository therefore records the compressor it was made with ("pin") in its root
catalog's properties, and every publish reads it back and uses exactly that one:

    cernvm_compressor        = "libdeflate:6"
    cernvm_compressor_probe  = SHA-1 of the compressor's output on a fixed built-in sample

The probe catches a different *version* of the same implementation that would compress differently (its
library version is not recorded: a machine whose library gives the same bytes must give the same root hash).

Implementations (all produce standard zlib streams, RFC 1950):
  libdeflate  (PyPI `deflate`, libdeflate) — the default at level 6: on a 524 MB tree of binaries, Python
              and docs it writes ~1 % fewer bytes than zlib level 6 (cvmfs_server's) in about a third of the CPU
  zlib        (Python's own, the system zlib) — level 6 is byte for byte what cvmfs_server writes
zlib-ng (+1.8 % bytes at level 6) and ISA-L (+7 % at its best level) were measured and left out: neither
reaches zlib 6's size at libdeflate's speed.
"""

from __future__ import annotations

import hashlib
import zlib
from functools import cached_property

from cernvm_build.errors import CvmfsError

PROPERTY = "cernvm_compressor"
PROBE_PROPERTY = "cernvm_compressor_probe"
DEFAULT = "libdeflate:6"
LEVELS = {"libdeflate": range(1, 13), "zlib": range(1, 10)}
INSTALL_HINT = {"libdeflate": "the Python package 'deflate' (pip install deflate; tools/setup.sh installs it)"}


def _probe_sample() -> bytes:
    """~192 KiB, the same everywhere: text-like runs (matches at many distances), a little noise, zeros."""
    words = [b"usr", b"lib", b"python3", b"share", b"doc", b"copyright", b"def ", b"return ", b"self.", b"import ",
             b"\x7fELF\x02\x01\x01", b"\x00\x00\x00\x00", b"GNU", b"libc.so.6", b"__init__", b"(", b")", b"\n",
             b"    ", b"=", b", ", b"#", b"0x", b"License", b"the ", b"of ", b"and ", b"Debian", b"-", b"/", b".", b":"]
    out = bytearray()
    counter = 0
    while len(out) < 160 << 10:
        h = hashlib.sha256(counter.to_bytes(8, "little")).digest()
        counter += 1
        for b in h[:28]:
            out += words[b & 31]
        if h[28] < 8:
            out += h  # incompressible bits
    out += bytes(32 << 10)
    return bytes(out)


class Compressor:
    """One deflate implementation at one level. compress() drops the GIL (zlib, libdeflate)."""

    def __init__(self, name: str, level: int):
        if name not in LEVELS:
            raise CvmfsError(f"unknown compressor {name!r} (known: {', '.join(LEVELS)})")
        if level not in LEVELS[name]:
            r = LEVELS[name]
            raise CvmfsError(f"compressor {name}: level {level} is out of range {r.start}-{r.stop - 1}")
        self.name, self.level = name, level
        if name == "zlib":
            self._fn = zlib.compress
            self.version = zlib.ZLIB_RUNTIME_VERSION
        else:
            try:
                import deflate
            except ImportError:
                raise CvmfsError(f"compressor {name} is not available here: install {INSTALL_HINT[name]}") from None
            self._fn = deflate.zlib_compress
            self.version = getattr(deflate, "__version__", "?")

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.level}"

    def __repr__(self) -> str:
        return f"Compressor({self.spec})"

    def compress(self, data: bytes) -> bytes:
        return self._fn(data, self.level)

    @cached_property
    def probe(self) -> str:
        return hashlib.sha1(self.compress(_probe_sample())).hexdigest()

    def pin(self) -> dict[str, str]:
        """The root catalog properties that record this compressor."""
        return {PROPERTY: self.spec, PROBE_PROPERTY: self.probe}


def parse_spec(spec: str) -> tuple[str, int]:
    """'libdeflate:6' -> ('libdeflate', 6); a bare name takes that implementation's default level 6."""
    name, _, level = spec.strip().partition(":")
    try:
        return name, int(level) if level else 6
    except ValueError:
        raise CvmfsError(f"compressor {spec!r}: expected NAME[:LEVEL], e.g. libdeflate:6 or zlib:6") from None


def load(spec: str) -> Compressor:
    return Compressor(*parse_spec(spec))


def pinned(properties: dict[str, str]) -> tuple[str, str] | None:
    """(spec, probe) recorded in a root catalog's properties, or None for a repository from before pins."""
    spec = properties.get(PROPERTY)
    return (spec, properties.get(PROBE_PROPERTY, "")) if spec else None


def resolve(pin: tuple[str, str] | None, requested: str | None, repin: bool, where: str) -> tuple[Compressor, bool]:
    """The compressor a publish into a repository pinned to PIN uses, and whether the previous revision's
    objects may be reused unchanged (False: every file is compressed again, as into a fresh repository).

    Never silently another compressor: asking for a different one than the pin needs REPIN; a pinned one
    that is not installed, or whose installed version gives different bytes (probe), is an error."""
    if pin is None:  # a repository from before pins: its objects' compressor is unknown
        return load(requested or DEFAULT), False
    spec, probe = pin
    if requested is not None and parse_spec(requested) != parse_spec(spec):
        if not repin:
            raise CvmfsError(f"{where} is pinned to compressor {spec} (object bytes, and so root hashes, depend on "
                             f"it); asked for {requested}: pass --repin-compression to re-compress every file with it")
        return load(requested), False
    if repin:
        return load(spec), False
    try:
        comp = load(spec)
    except CvmfsError as exc:
        raise CvmfsError(f"{where} is pinned to compressor {spec}: {exc}") from None
    if probe and comp.probe != probe:
        raise CvmfsError(f"{where} is pinned to compressor {spec}, but the {comp.name} here ({comp.version}) "
                         "compresses differently from the one that pinned it: install that version, or pass "
                         "--repin-compression to re-compress every file")
    return comp, True
