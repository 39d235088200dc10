"""repomd.xml parsing and the checksum rules, without building a repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from cernvm_build.errors import MetadataError
from cernvm_build.formats.rpm.repomd import load_rpmmd_repository, parse_repomd
from cernvm_build.lock.recipe import Repository
from cernvm_build.lock.resolve.repository import MetadataOptions
from cernvm_build.util.content_store import ContentStore

REPOMD = b"""<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>42</revision>
  <data type="primary">
    <checksum type="%(type)s">%(sum)s</checksum>
    <location href="repodata/p-primary.xml.gz"/>
    <timestamp>1700000000</timestamp>
    <size>10</size>
  </data>
  <data type="other">
    <checksum type="sha256">%(sum)s</checksum>
    <location href="repodata/o-other.xml.gz"/>
    <timestamp>1600000000</timestamp>
  </data>
</repomd>
"""


def doc(kind: str = "sha256", digest: str = "ab" * 32) -> bytes:
    return REPOMD % {b"type": kind.encode(), b"sum": digest.encode()}


def test_parse_revision_entries_and_date() -> None:
    r = parse_repomd(doc(), "x")
    assert r.revision == "42"
    assert set(r.data) == {"primary", "other"}
    p = r.data["primary"]
    assert (p.href, p.checksum_type, p.checksum, p.size, p.open_checksum) == (
        "repodata/p-primary.xml.gz", "sha256", "ab" * 32, 10, "")
    assert r.date() == "Tue, 14 Nov 2023 22:13:20 GMT"        # the newest timestamp, never the clock


@pytest.mark.parametrize("text", [b"<repomd", b"<other/>"])
def test_not_repomd_is_refused(text: bytes) -> None:
    with pytest.raises(MetadataError, match="^x: not"):
        parse_repomd(text, "x")


@pytest.mark.parametrize("kind,digest", [("sha", "ab" * 20), ("sha1", "ab" * 20), ("md5", "ab" * 16)])
def test_weak_checksums_are_refused(tmp_path: Path, kind: str, digest: str) -> None:
    repo = tmp_path / "repo"
    (repo / "repodata").mkdir(parents=True)
    (repo / "repodata/repomd.xml").write_bytes(doc(kind, digest))
    r = Repository("t", f"file://{repo}", gpgcheck=False)
    with pytest.raises(MetadataError, match=rf"p-primary\.xml\.gz: repomd\.xml lists only a {kind} checksum.*sha256"):
        load_rpmmd_repository(r, "x86_64", ContentStore(tmp_path / "cache"), MetadataOptions())


def test_no_primary_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "repodata").mkdir(parents=True)
    (repo / "repodata/repomd.xml").write_bytes(doc().replace(b'type="primary"', b'type="primary_db"'))
    r = Repository("t", f"file://{repo}", gpgcheck=False)
    with pytest.raises(MetadataError, match="lists no primary metadata"):
        load_rpmmd_repository(r, "x86_64", ContentStore(tmp_path / "cache"), MetadataOptions())
