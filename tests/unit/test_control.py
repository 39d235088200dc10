"""The deb822 parser of Release files and control files (formats/deb/control.py)."""

from __future__ import annotations

import pytest

from cernvm_build.errors import MetadataError
from cernvm_build.formats.deb.control import parse_stanza, parse_stanzas

RELEASE = """Origin: Debian
Suite: stable
SHA256:
 0123 10 main/binary-amd64/Packages
 4567 20 main/binary-amd64/Packages.xz
Description: one
  two
Suite: bookworm

Package: second
"""


def test_fields_continuations_and_stanzas():
    first, second = parse_stanzas(RELEASE, "Release")
    assert first == {"origin": "Debian", "suite": "bookworm", "description": "one\ntwo",
                     "sha256": "\n0123 10 main/binary-amd64/Packages\n4567 20 main/binary-amd64/Packages.xz"}
    assert second == {"package": "second"}
    assert parse_stanza(RELEASE, "Release") == first


@pytest.mark.parametrize("text, message", [
    (" orphan\nKey: v\n", "Release: continuation line before any field: ' orphan'"),
    ("Key: v\n\n continued\n", "Release: continuation line before any field: ' continued'"),
    ("Key: v\nno colon here\n", "Release: malformed line (no ':'): 'no colon here'"),
])
def test_bad_lines_name_the_file(text, message):
    with pytest.raises(MetadataError) as exc:
        parse_stanzas(text, "Release")
    assert str(exc.value) == message
