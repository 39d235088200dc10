"""http: one retry loop for metadata and packages (not found is final, short transfers retry)."""

from __future__ import annotations

import pytest

from cernvm_build.util import http
from tests.support.httpserver import RangeServer


def test_metadata_and_packages_share_retry_and_not_found(tmp_path):
    (tmp_path / "repomd.xml").write_bytes(b"<repomd>" + b"x" * 5000 + b"</repomd>")
    (tmp_path / "pkg.rpm").write_bytes(bytes(range(256)) * 400)
    with RangeServer(tmp_path) as srv:
        srv.state.truncate["repomd.xml"] = 1            # cut short once: retried, then whole
        assert http.fetch_bytes(f"{srv.url}/repomd.xml") == (tmp_path / "repomd.xml").read_bytes()
        assert [p for p, _ in srv.state.requests].count("/repomd.xml") == 2

        srv.state.truncate["repomd.xml"] = 1
        dest = http.fetch_to(f"{srv.url}/repomd.xml", tmp_path / "out" / "repomd.xml")
        assert dest.read_bytes() == (tmp_path / "repomd.xml").read_bytes()
        assert [p.name for p in dest.parent.iterdir()] == ["repomd.xml"]   # no temporary left

        for call in (lambda u: http.fetch_bytes(u), lambda u: http.fetch_to(u, tmp_path / "x"),
                     lambda u: http.download_resumable(u, tmp_path / "x.part", 10)):
            before = len(srv.state.requests)
            with pytest.raises(http.NotFound):
                call(f"{srv.url}/missing")
            assert len(srv.state.requests) == before + 1            # not found is not retried

        part = tmp_path / "partial" / "pkg.part"
        data = (tmp_path / "pkg.rpm").read_bytes()
        part.parent.mkdir()
        part.write_bytes(data[:1000])
        srv.state.truncate["pkg.rpm"] = 1
        assert http.download_resumable(f"{srv.url}/pkg.rpm", part, len(data)) is True
        assert part.read_bytes() == data
        ranges = [r for p, r in srv.state.requests if p == "/pkg.rpm"]
        assert ranges[0] == "bytes=1000-" and len(ranges) == 2 and ranges[1] != "bytes=1000-"


def test_stale_partial_longer_than_the_file_starts_over(tmp_path):
    (tmp_path / "f").write_bytes(b"abc" * 100)
    part = tmp_path / "f.part"
    part.write_bytes(b"z" * 1000)
    with RangeServer(tmp_path) as srv:
        assert http.download_resumable(f"{srv.url}/f", part, 300) is False
        assert part.read_bytes() == b"abc" * 100
        assert srv.state.requests == [("/f", None)]


def test_failure_after_retries_names_the_url(tmp_path):
    with pytest.raises(http.FetchError, match="127.0.0.1:9/x: download failed after 2 attempts"):
        http.fetch_bytes("http://127.0.0.1:9/x", retries=2)
