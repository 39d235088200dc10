"""SBOMs validated with the formats' own tooling (spdx-tools, cyclonedx-python-lib's JSON schema)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

ROOT = Path(__file__).parents[2]
LOCK = ROOT / "closures" / "debian-bookworm-minimal.lock.toml"
CLI = [sys.executable, "-m", "cernvm_build.cli"]


def sbom(fmt: str, out: Path, env=None) -> Path:
    res = subprocess.run([*CLI, "sbom", LOCK, "--format", fmt, "-o", out], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return out


def test_spdx_is_valid_and_complete(tmp_path):
    out = sbom("spdx", tmp_path / "s.spdx.json")
    doc = parse_file(str(out))
    assert validate_full_spdx_document(doc) == []
    data = json.loads(out.read_text())
    n = data["packages"].__len__()
    assert n == LOCK.read_text().count("[[package]]")
    bash = next(p for p in data["packages"] if p["name"] == "bash")
    assert bash["externalRefs"][0]["referenceLocator"].startswith("pkg:deb/debian/bash@")
    assert any(r["relationshipType"] == "DEPENDS_ON" for r in data["relationships"])


def test_cyclonedx_is_valid_against_the_official_schema(tmp_path):
    out = sbom("cyclonedx", tmp_path / "c.cdx.json")
    validator = JsonStrictValidator(SchemaVersion.V1_5)
    assert validator.validate_str(out.read_text()) is None
    broken = json.loads(out.read_text())
    del broken["components"][0]["name"]                     # the validator does catch a broken BOM
    assert validator.validate_str(json.dumps(broken)) is not None


@pytest.mark.parametrize("fmt", ["spdx", "cyclonedx"])
def test_deterministic_and_clamped_to_source_date_epoch(tmp_path, fmt):
    import os

    a = sbom(fmt, tmp_path / "a.json").read_bytes()
    b = sbom(fmt, tmp_path / "b.json").read_bytes()
    assert a == b
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    c = sbom(fmt, tmp_path / "c.json", env).read_text()
    assert "2023-11-14T22:13:20Z" in c
