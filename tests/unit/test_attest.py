"""Signed locks: in-toto statement in DSSE in a Sigstore bundle, verified offline with a P-256 key."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.lock.lockfile import dumps
from cernvm_build.trust.signing import PAYLOAD_TYPE, pae
from tests.unit.test_closure import sample

CLI = [sys.executable, "-m", "cernvm_build.cli"]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True)


@pytest.fixture
def signed(tmp_path):
    lock = tmp_path / "t.lock.toml"
    lock.write_text(dumps(sample()))
    assert run("key", "generate", "--out", tmp_path / "keys").returncode == 0
    res = run("sign", lock, "--key", tmp_path / "keys" / "cernvm-build.key")
    assert res.returncode == 0, res.stderr
    return lock, tmp_path / "keys" / "cernvm-build.pub", Path(str(lock) + ".sigstore.json")


def test_key_generate_modes_and_no_overwrite(tmp_path):
    assert run("key", "generate", "--out", tmp_path).returncode == 0
    assert stat.S_IMODE(os.stat(tmp_path / "cernvm-build.key").st_mode) == 0o600
    res = run("key", "generate", "--out", tmp_path)
    assert res.returncode != 0 and "refusing to overwrite" in res.stderr


def test_bundle_structure_and_statement(signed):
    lock, pub, bundle = signed
    b = json.loads(bundle.read_text())
    assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    env = b["dsseEnvelope"]
    assert env["payloadType"] == PAYLOAD_TYPE
    st = json.loads(base64.b64decode(env["payload"]))
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    import hashlib

    assert st["subject"][0]["digest"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    pred = st["predicate"]
    assert pred["recipe"]["digest"] == sample().recipe_digest
    assert pred["repositories"][0]["metadataSha256"] == "c" * 64
    assert pred["repositories"][0]["keyFingerprints"] == ["F1", "F2"]
    assert b["verificationMaterial"]["publicKey"]["hint"] == env["signatures"][0]["keyid"]
    # the signature is over DSSE's pre-authentication encoding, checked here independently
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = serialization.load_pem_public_key(pub.read_bytes())
    key.verify(base64.b64decode(env["signatures"][0]["sig"]), pae(PAYLOAD_TYPE, base64.b64decode(env["payload"])),
               ec.ECDSA(hashes.SHA256()))


def test_verify_ok_and_signing_is_deterministic(signed, tmp_path):
    lock, pub, bundle = signed
    res = run("verify", lock, "--key", pub)
    assert res.returncode == 0 and "OK" in res.stdout
    first = bundle.read_bytes()
    assert run("sign", lock, "--key", tmp_path / "keys" / "cernvm-build.key").returncode == 0
    assert bundle.read_bytes() == first


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,reason", [
    (lambda lock, b, tmp: _flip(lock, 200), "changed after signing"),
    (lambda lock, b, tmp: b.write_text(b.read_text().replace('"sig": "M', '"sig": "N', 1)
                                       if '"sig": "M' in b.read_text() else
                                       b.read_text().replace('"sig": "', '"sig": "AA', 1)),
     "does not verify"),
    (lambda lock, b, tmp: b.write_text(b.read_text()[: len(b.read_text()) // 2]), "truncated"),
    (lambda lock, b, tmp: b.unlink(), "cannot read signature bundle"),
])
def test_any_damage_is_refused_with_one_line(signed, tmp_path, damage, reason):
    lock, pub, bundle = signed
    damage(lock, bundle, tmp_path)
    res = run("verify", lock, "--key", pub)
    assert res.returncode != 0
    assert reason in res.stderr and res.stderr.count("\n") == 1


def test_payload_swap_is_refused(signed, tmp_path):
    """Re-encoding a different statement into the envelope breaks the signature."""
    lock, pub, bundle = signed
    b = json.loads(bundle.read_text())
    st = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    st["predicate"]["packages"] = 999
    b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    bundle.write_text(json.dumps(b))
    res = run("verify", lock, "--key", pub)
    assert res.returncode != 0 and "does not verify" in res.stderr


def test_wrong_key_is_refused(signed, tmp_path):
    lock, pub, bundle = signed
    assert run("key", "generate", "--out", tmp_path / "other").returncode == 0
    res = run("verify", lock, "--key", tmp_path / "other" / "cernvm-build.pub")
    assert res.returncode != 0 and "wrong key" in res.stderr
