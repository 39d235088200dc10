"""Keyless signing (OIDC -> Fulcio -> Rekor) and offline verification against an archived trusted root.

The Sigstore services are a private instance on loopback (fakesigstore.py) with real keys, SCTs,
Merkle proofs and signed checkpoints; the client and verifier are the `sigstore` package's own.
Every damaged case must be refused with a one-line reason.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cernvm_build.errors import LockSignatureError
from cernvm_build.trust.keyless import KeylessIdentity, KeylessSigner
from cernvm_build.trust.signing import sign_lock, verify_lock
from tests.integration.fakesigstore import FakeSigstore

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "closures" / "debian-bookworm-minimal.lock.toml"
CLI = [sys.executable, "-m", "cernvm_build.cli"]
WORKFLOW = "https://github.com/cernvm/cernvm-build/.github/workflows/closures.yml@refs/heads/main"
# environment variables through which `id` detects ambient CI credentials: cleared for determinism
AMBIENT = ("GITHUB_ACTIONS", "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "GITLAB_CI",
           "SIGSTORE_ID_TOKEN", "BUILDKITE", "CIRCLECI", "GOOGLE_SERVICE_ACCOUNT_NAME",
           "SIGSTORE_IDENTITY_TOKEN")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in AMBIENT}
    env.update(extra)
    return env


def run(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, env=env or clean_env(),
                          cwd=REPO)


@pytest.fixture(scope="module")
def instance(tmp_path_factory):
    fs = FakeSigstore().start()
    root, config = fs.write(tmp_path_factory.mktemp("sigstore"))
    yield fs, root, config
    fs.stop()


@pytest.fixture(scope="module")
def signed(instance, tmp_path_factory):
    """One lock signed keylessly through the CLI, as a CI job would."""
    fs, root, config = instance
    d = tmp_path_factory.mktemp("signed")
    lock = d / LOCK.name
    shutil.copy(LOCK, lock)
    res = run("sign", lock, "--keyless", "--trust-config", config, "--identity-token", fs.token(WORKFLOW))
    assert res.returncode == 0, res.stderr
    assert fs.requests[-2:] == ["/api/v2/signingCert", "/api/v1/log/entries"]
    return lock, Path(str(lock) + ".sigstore.json")


@pytest.fixture
def copy(signed, tmp_path):
    """A private copy of the signed lock and its bundle, to damage."""
    lock, bundle = signed
    shutil.copy(lock, tmp_path / lock.name)
    shutil.copy(bundle, tmp_path / bundle.name)
    return tmp_path / lock.name, tmp_path / bundle.name


def expect(instance, identity=WORKFLOW, issuer=None, root=None) -> KeylessIdentity:
    fs, trusted_root, _ = instance
    return KeylessIdentity(identity, issuer or fs.issuer, root or trusted_root)


def refused(lock, instance, bundle=None, **kw) -> str:
    with pytest.raises(LockSignatureError) as err:
        verify_lock(lock, bundle=bundle, identity=expect(instance, **kw))
    message = str(err.value)
    assert "\n" not in message
    return message


def test_keyless_bundle_carries_certificate_and_log_entry(signed, instance):
    fs, _, _ = instance
    lock, bundle = signed
    b = json.loads(bundle.read_text())
    assert b["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    vm = b["verificationMaterial"]
    assert "certificate" in vm and "publicKey" not in vm
    entry = vm["tlogEntries"][0]
    assert entry["kindVersion"] == {"kind": "dsse", "version": "0.0.1"}
    assert int(entry["logIndex"]) == 11                      # after the instance's 11 earlier entries
    assert len(entry["inclusionProof"]["hashes"]) >= 3
    statement = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
    import hashlib

    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert statement["predicateType"] == "https://cernvm-build.dev/attestation/closure-lock/v1"


def test_verify_cli_offline_in_a_network_namespace(signed, instance):
    """Verification needs only the lock, the bundle and the archived trusted root: no network at all."""
    fs, root, _ = instance
    lock, bundle = signed
    cmd = ["unshare", "--net", *CLI, "verify", str(lock), "--identity", WORKFLOW, "--issuer", fs.issuer,
           "--trusted-root", str(root)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert "OK, sha256:" in res.stdout and WORKFLOW in res.stdout


def test_wrong_identity_or_issuer_refused(signed, instance):
    lock, _ = signed
    assert "SANs do not match" in refused(lock, instance, identity="https://github.com/evil/fork/x.yml@main")
    assert "OIDCIssuer does not match" in refused(lock, instance, issuer="https://accounts.google.com")
    res = run("verify", lock, "--identity", "someone@example.org", "--issuer", instance[0].issuer,
              "--trusted-root", instance[1])
    assert res.returncode == 1 and res.stderr.count("\n") == 1 and "keyless signature does not verify" in res.stderr


def test_other_instance_trusted_root_refused(signed, instance, tmp_path):
    """A bundle from one Sigstore instance proves nothing under another instance's roots."""
    other_root, _ = FakeSigstore().write(tmp_path / "other")
    lock, _ = signed
    assert "does not verify" in refused(lock, instance, root=other_root)


def test_changed_lock_refused(copy, instance):
    lock, _ = copy
    text = lock.read_text()
    lock.write_text(text.replace('name = "bash"', 'name = "bosh"', 1))
    assert "changed after signing" in refused(lock, instance)


@pytest.mark.parametrize("damage, reason", [
    ("payload", "keyless signature does not verify"),
    ("proof", "invalid log entry"),
    ("checkpoint", "invalid log entry"),
    ("set", "invalid log entry"),
    ("integrated-time", "does not verify"),
    ("truncated", "not valid JSON"),
])
def test_damaged_bundle_refused(copy, instance, damage, reason):
    lock, bundle = copy
    b = json.loads(bundle.read_text())
    entry = b["verificationMaterial"]["tlogEntries"][0]
    if damage == "payload":                 # a statement about some other lock, same signature
        st = json.loads(base64.b64decode(b["dsseEnvelope"]["payload"]))
        st["subject"][0]["digest"]["sha256"] = "0" * 64
        b["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    elif damage == "proof":
        h = bytearray(base64.b64decode(entry["inclusionProof"]["hashes"][0]))
        h[0] ^= 1
        entry["inclusionProof"]["hashes"][0] = base64.b64encode(bytes(h)).decode()
    elif damage == "checkpoint":
        env = entry["inclusionProof"]["checkpoint"]["envelope"]
        head, sig = env.rsplit(" ", 1)
        raw = bytearray(base64.b64decode(sig))
        raw[-3] ^= 1
        entry["inclusionProof"]["checkpoint"]["envelope"] = f"{head} {base64.b64encode(bytes(raw)).decode()}\n"
    elif damage == "set":
        raw = bytearray(base64.b64decode(entry["inclusionPromise"]["signedEntryTimestamp"]))
        raw[-2] ^= 1
        entry["inclusionPromise"]["signedEntryTimestamp"] = base64.b64encode(bytes(raw)).decode()
    elif damage == "integrated-time":      # claim it was logged an hour later: SET no longer matches
        entry["integratedTime"] = str(int(entry["integratedTime"]) + 3600)
    text = json.dumps(b)
    if damage == "truncated":
        text = bundle.read_text()[:-200]
    bundle.write_text(text)
    assert reason in refused(lock, instance, bundle=bundle)


def test_log_entry_of_another_signature_refused(copy, instance, tmp_path):
    """Splicing a valid log entry of another signing into the bundle (CVE-2022-36056 class) is caught."""
    fs, _, config = instance
    lock, bundle = copy
    other = tmp_path / "other" / LOCK.name
    other.parent.mkdir()
    shutil.copy(LOCK, other)
    sign_lock(other, keyless=KeylessSigner(fs.token(WORKFLOW), config))
    b = json.loads(bundle.read_text())
    donor = json.loads(Path(str(other) + ".sigstore.json").read_text())
    b["verificationMaterial"]["tlogEntries"] = donor["verificationMaterial"]["tlogEntries"]
    bundle.write_text(json.dumps(b))
    assert "does not verify" in refused(lock, instance, bundle=bundle)


def test_bundle_kind_and_verification_mode_must_agree(copy, instance, tmp_path):
    lock, bundle = copy
    assert run("key", "generate", "--out", tmp_path / "keys").returncode == 0
    res = run("verify", lock, "--key", tmp_path / "keys" / "cernvm-build.pub")
    assert res.returncode == 1 and "keyless bundle (signed by " + WORKFLOW in res.stderr
    assert run("sign", lock, "--key", tmp_path / "keys" / "cernvm-build.key").returncode == 0
    assert "signed with a key, not keylessly" in refused(lock, instance)


def test_signing_refusals_leave_no_bundle(instance, tmp_path):
    fs, _, config = instance
    lock = tmp_path / LOCK.name
    shutil.copy(LOCK, lock)
    bundle = Path(str(lock) + ".sigstore.json")
    from cryptography.hazmat.primitives.asymmetric import ec

    cases = [
        (["--identity-token", fs.token(WORKFLOW, key=ec.generate_private_key(ec.SECP256R1()))],
         "HTTP 401 from http://127.0.0.1"),           # Fulcio checks the token's signature
        (["--identity-token", fs.token(WORKFLOW, lifetime=-60)], "identity token refused"),
        (["--identity-token", "not-a-jwt"], "identity token refused"),
        ([], "no OIDC identity for keyless signing"),
    ]
    for extra, reason in cases:
        res = run("sign", lock, "--keyless", "--trust-config", config, *extra)
        assert res.returncode == 1 and reason in res.stderr and res.stderr.count("\n") == 1, res.stderr
        assert res.stderr.startswith("error: ")
        assert not bundle.exists()
    res = run("sign", lock, "--keyless", "--trust-config", tmp_path / "missing.json", "--identity-token", "x")
    assert res.returncode == 1 and "cannot read trust config" in res.stderr
    res = run("sign", lock, "--key", "k.pem", "--identity-token", "x")
    assert res.returncode == 1 and "need --keyless" in res.stderr


def test_ambient_credentials(instance, tmp_path):
    """Token from $SIGSTORE_IDENTITY_TOKEN, and from GitHub Actions' ID-token endpoint as in a real job."""
    fs, root, config = instance
    lock = tmp_path / LOCK.name
    shutil.copy(LOCK, lock)
    env = clean_env(SIGSTORE_IDENTITY_TOKEN=fs.token("release@cernvm.example"))
    assert run("sign", lock, "--keyless", "--trust-config", config, env=env).returncode == 0
    verify_lock(lock, identity=expect(instance, identity="release@cernvm.example"))

    fs.ambient_token = fs.token(WORKFLOW)
    env = clean_env(GITHUB_ACTIONS="true", ACTIONS_ID_TOKEN_REQUEST_URL=f"{fs.url}/github-oidc?api-version=2.0",
                    ACTIONS_ID_TOKEN_REQUEST_TOKEN=fs.ambient_request_token)
    res = run("sign", lock, "--keyless", "--trust-config", config, env=env)
    assert res.returncode == 0, res.stderr
    assert "/github-oidc" in fs.requests
    v = verify_lock(lock, identity=expect(instance))
    assert v.keyless and v.key_id == WORKFLOW
    env["ACTIONS_ID_TOKEN_REQUEST_TOKEN"] = "wrong"
    res = run("sign", lock, "--keyless", "--trust-config", config, env=env)
    assert res.returncode == 1 and "ambient OIDC credential detection failed" in res.stderr


def test_trusted_root_export_offline_is_the_public_good_root(signed, instance, tmp_path):
    """`trusted-root --offline` archives the public-good roots; our private instance's bundle fails under them."""
    fs, _, _ = instance
    lock, _ = signed
    out = tmp_path / "trusted_root.json"
    res = run("trusted-root", "--out", out, "--offline", env=clean_env(HOME=str(tmp_path)))
    assert res.returncode == 0, res.stderr
    root = json.loads(out.read_text())
    assert root["mediaType"] == "application/vnd.dev.sigstore.trustedroot+json;version=0.1"
    assert any(t["baseUrl"] == "https://rekor.sigstore.dev" for t in root["tlogs"])
    assert "certificate chain" in refused(lock, instance, root=out)


def test_relock_job_verifies_keyless_signatures(instance, tmp_path):
    """pipeline/relock-and-diff.sh with CERNVM_BUILD_SIGNER_IDENTITY/ISSUER/TRUSTED_ROOT."""
    from tests.integration.test_pipeline_relock import relock_project
    from tests.support.debrepo import DebPkg

    fs, root, config = instance
    _, _, recipes, closures, cvb = relock_project(tmp_path, [DebPkg("app", "1.0")])
    env = clean_env(CERNVM_BUILD=str(cvb), CERNVM_BUILD_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    assert run("lock", recipes / "demo.toml", "-o", closures / "demo.lock.toml", env=env).returncode == 0
    assert run("sign", closures / "demo.lock.toml", "--keyless", "--trust-config", config,
               "--identity-token", fs.token(WORKFLOW), env=env).returncode == 0

    def job(identity: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(REPO / "pipeline" / "relock-and-diff.sh"), str(recipes), str(closures),
                               str(tmp_path / "report.md")], capture_output=True, text=True,
                              env={**env, "CERNVM_BUILD_SIGNER_IDENTITY": identity,
                                   "CERNVM_BUILD_SIGNER_ISSUER": fs.issuer, "CERNVM_BUILD_TRUSTED_ROOT": str(root)})

    res = job(WORKFLOW)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "`demo`: up to date" in (tmp_path / "report.md").read_text()
    res = job("https://github.com/evil/fork/.github/workflows/x.yml@refs/heads/main")
    report = (tmp_path / "report.md").read_text()
    assert res.returncode == 1 and "signature check failed" in report and "SANs do not match" in report


def test_pipeline_signs_keylessly_once_and_verifies_the_identity(debrepo, instance, tmp_path, capsys,
                                                                 monkeypatch):
    """[signing] identity/issuer/keyless in a pipeline definition: sign in CI, skip when unchanged."""
    from tests.integration.test_build_pipeline import build, project, ran, status

    fs, root, config = instance
    for var in AMBIENT:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SIGSTORE_IDENTITY_TOKEN", fs.token(WORKFLOW))
    p = project(tmp_path, debrepo, ["delta"])

    template = p.read_text()
    assert "[signing]\ngenerate = true\n" in template

    def signing(identity: str, keyless: bool) -> None:
        section = (f'[signing]\nidentity = "{identity}"\nissuer = "{fs.issuer}"\nkeyless = {str(keyless).lower()}\n'
                   f'trusted-root = "{root}"\n' + (f'trust-config = "{config}"\n' if keyless else ""))
        p.write_text(template.replace("[signing]\ngenerate = true\n", section))

    signing(WORKFLOW, True)
    before = len(fs.requests)
    rc, res, err = build([str(p), "--until", "sign"], capsys)
    assert rc == 0, err
    assert ran(res) == ["lock", "sign"] and len(fs.requests) == before + 2
    sign = next(s for s in res["stages"] if s["name"] == "sign")
    assert f"keyless, {WORKFLOW}" in json.dumps(sign)
    rc, res, err = build([str(p), "--until", "sign"], capsys)
    assert rc == 0 and status(res)["sign"] == "unchanged" and len(fs.requests) == before + 2
    signing("https://github.com/evil/fork/.github/workflows/x.yml@refs/heads/main", False)
    rc, res, err = build([str(p), "--until", "sign"], capsys)
    assert rc != 0 and "SANs do not match" in err and err.strip().count("\n") == 0, err
