"""Debian control data (deb822): the one parser for Release files and packages' control files."""

from __future__ import annotations

from cernvm_build.errors import CernVMBuildError, MetadataError


def parse_stanzas(text: str, where: str, error: type[CernVMBuildError] = MetadataError,
                  first_only: bool = False) -> list[dict[str, str]]:
    """Every stanza of TEXT: keys lower-cased, values stripped, continuation lines joined by newlines.

    A line that is neither a field nor a continuation raises ERROR naming WHERE."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, list[str]] = {}     # a field's lines, joined when its stanza ends (a Release file's
    key = None                         # SHA256 field has thousands: no quadratic string growth)
    for line in text.splitlines():
        if not line.strip():
            if cur:
                stanzas.append(_joined(cur))
                if first_only:
                    return stanzas
            cur, key = {}, None
        elif line[0] in " \t":
            if key is None:
                raise error(f"{where}: continuation line before any field: {line!r}")
            cur[key].append(line.strip())
        else:
            k, sep, v = line.partition(":")
            if not sep:
                raise error(f"{where}: malformed line (no ':'): {line!r}")
            key = k.strip().lower()
            cur[key] = [v.strip()]
    if cur:
        stanzas.append(_joined(cur))
    return stanzas


def _joined(fields: dict[str, list[str]]) -> dict[str, str]:
    return {k: "\n".join(v) for k, v in fields.items()}


def parse_stanza(text: str, where: str, error: type[CernVMBuildError] = MetadataError) -> dict[str, str]:
    """The first stanza of TEXT (a package's control file has one; anything after a blank line is ignored)."""
    stanzas = parse_stanzas(text, where, error, first_only=True)
    return stanzas[0] if stanzas else {}
