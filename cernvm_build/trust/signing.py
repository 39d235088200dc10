"""Signed locks: an in-toto Statement about the lock, in a DSSE envelope, inside a Sigstore bundle.

Offline signing uses a local ECDSA P-256 key (the air-gapped archive case) with deterministic
(RFC 6979) signatures, so signing the same lock with the same key gives the same bundle bytes.
The bundle carries only a public-key hint; verification needs the public key (or, for keyless
bundles made in CI, the sigstore package and a trusted root).
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.errors import LockSignatureError
from cernvm_build.lock.lockfile import Closure, loads
from cernvm_build.util.files import atomic_write

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://cernvm-build.dev/attestation/closure-lock/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def bundle_path_for(lock: str | Path) -> Path:
    return Path(str(lock) + ".sigstore.json")


def _canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what is actually signed."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def generate_key(outdir: str | Path, name: str = "cernvm-build") -> tuple[Path, Path]:
    """ECDSA P-256 key pair: NAME.key (PKCS#8 PEM, mode 0600) and NAME.pub (SubjectPublicKeyInfo PEM)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    outdir = Path(outdir)
    key_path, pub_path = outdir / f"{name}.key", outdir / f"{name}.pub"
    for p in (key_path, pub_path):
        if p.exists():
            raise LockSignatureError(f"{p}: already exists; refusing to overwrite a key")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    outdir.mkdir(parents=True, exist_ok=True)
    atomic_write(key_path, pem, mode=0o600)
    atomic_write(pub_path, pub, mode=0o644)
    return key_path, pub_path


def _load_private(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise LockSignatureError(f"{path}: not a usable unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise LockSignatureError(f"{path}: expected an ECDSA P-256 private key")
    return key


def _load_public(path: str | Path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise LockSignatureError(f"{path}: not a usable PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise LockSignatureError(f"{path}: expected an ECDSA public key")
    return key


def statement(lock_name: str, lock_bytes: bytes, closure: Closure) -> dict:
    """What the signature vouches for: the lock's digest, and what it was resolved from."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": lock_name, "digest": {"sha256": hashlib.sha256(lock_bytes).hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "recipe": {"name": closure.name, "digest": closure.recipe_digest},
            "flavour": closure.flavour,
            "arch": closure.arch,
            "solver": {"name": closure.solver.name, "version": closure.solver.version,
                       "policy": closure.solver.policy, "weak": closure.solver.weak},
            "packages": len(closure.packages),
            "repositories": [
                {"name": r.name, "url": r.url, "metadata": r.metadata, "metadataSha256": r.metadata_sha256,
                 "date": r.date, "revision": r.revision, "keyFingerprints": list(r.key_fingerprints)}
                for r in closure.repositories
            ],
        },
    }


def sign_lock(lock: str | Path, key: str | Path | None = None, out: str | Path | None = None,
              keyless=None) -> Path:
    """Write LOCK.sigstore.json (or OUT): a Sigstore bundle whose DSSE envelope signs the Statement.

    With KEY (ECDSA P-256 PEM) the bundle is deterministic and carries a public-key hint; with
    KEYLESS (a keyless.KeylessSigner) it carries a Fulcio certificate and a Rekor entry instead.
    """
    if (key is None) == (keyless is None):
        raise LockSignatureError("sign: give exactly one of a private key or keyless signing")
    lock = Path(lock)
    data = lock.read_bytes()
    closure = loads(data.decode("utf-8"), str(lock))
    payload = _canonical_json(statement(lock.name, data, closure))
    dest = Path(out) if out else bundle_path_for(lock)
    if keyless is not None:
        from cernvm_build.trust.keyless import dumps_bundle, sign_statement

        atomic_write(dest, dumps_bundle(sign_statement(payload, keyless)))
        return dest
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    private = _load_private(key)
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    except TypeError:          # cryptography < 44: randomised ECDSA, still valid
        algorithm = ec.ECDSA(hashes.SHA256())
    sig = private.sign(pae(PAYLOAD_TYPE, payload), algorithm)
    kid = key_id(private.public_key())
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": kid}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode(), "keyid": kid}],
        },
    }
    atomic_write(dest, json.dumps(bundle, indent=2, sort_keys=True) + "\n")
    return dest


@dataclass(frozen=True)
class Verification:
    key_id: str               # public-key fingerprint, or the certificate identity for keyless bundles
    lock_digest: str
    statement: dict
    keyless: bool = False


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle says about itself, read without verifying it (see verify_lock for that)."""

    keyless: bool
    signer: str               # key-based: the key id (hint); keyless: the certificate identity
    issuer: str               # keyless: the OIDC issuer named in the certificate; else ""
    subject_sha256: str       # what the signed statement claims to be about
    matches_lock: bool        # subject_sha256 is the sha256 of the lock given


def describe_bundle(data: bytes, lock_data: bytes, where: str = "signature bundle") -> BundleInfo:
    """Read a bundle's signer (key id, or keyless identity and issuer) and its signed subject.

    Nothing is verified cryptographically here (that needs the public key or the expected identity);
    a bundle that is not a Sigstore bundle with a closure-lock statement raises LockSignatureError."""
    from cernvm_build.trust.keyless import bundle_identity, bundle_issuer, is_keyless

    try:
        bundle = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise LockSignatureError(f"{where}: signature bundle is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.bundle"):
        raise LockSignatureError(f"{where}: not a Sigstore bundle (mediaType missing or wrong)")
    try:
        env = bundle["dsseEnvelope"]
        st = json.loads(base64.b64decode(env["payload"], validate=True))
        subject = st["subject"][0]["digest"]["sha256"]
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise LockSignatureError(f"{where}: bundle holds no in-toto statement ({exc})") from exc
    if not isinstance(st, dict) or st.get("predicateType") != PREDICATE_TYPE:
        raise LockSignatureError(f"{where}: signed statement is not about a closure lock")
    keyless = is_keyless(bundle)
    if keyless:
        signer, issuer = bundle_identity(bundle) or "", bundle_issuer(bundle) or ""
    else:
        hint = (bundle.get("verificationMaterial") or {}).get("publicKey") or {}
        signer, issuer = str(hint.get("hint", "")) if isinstance(hint, dict) else "", ""
    return BundleInfo(keyless, signer, issuer, str(subject),
                      str(subject) == hashlib.sha256(lock_data).hexdigest())


def _read_bundle(path: Path) -> dict:
    try:
        bundle = json.loads(path.read_text())
    except OSError as exc:
        raise LockSignatureError(f"{path}: cannot read signature bundle: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LockSignatureError(f"{path}: signature bundle is not valid JSON (truncated?): {exc}") from exc
    if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.bundle"):
        raise LockSignatureError(f"{path}: not a Sigstore bundle (mediaType missing or wrong)")
    return bundle


def verify_lock(lock: str | Path, pub: str | Path | None = None, bundle: str | Path | None = None,
                identity=None) -> Verification:
    """Accept LOCK only if the bundle's signature verifies and its subject is exactly LOCK.

    PUB verifies key-based bundles; IDENTITY (a keyless.KeylessIdentity) verifies keyless ones
    offline against a trusted root. A bundle of the other kind is refused, never half-checked.
    """
    from cernvm_build.trust.keyless import bundle_identity, is_keyless

    if (pub is None) == (identity is None):
        raise LockSignatureError("verify: give exactly one of a public key or an expected keyless identity")
    lock = Path(lock)
    bpath = Path(bundle) if bundle else bundle_path_for(lock)
    b = _read_bundle(bpath)
    if is_keyless(b):
        if identity is None:
            who = bundle_identity(b)
            raise LockSignatureError(f"{bpath}: keyless bundle (signed by {who or 'a Fulcio certificate'}); "
                              "verify it with --identity and --issuer, not --key")
        from cernvm_build.trust.keyless import verify_bundle

        payload_type, payload, who = verify_bundle(bpath.read_text(), bpath, identity)
        if payload_type != PAYLOAD_TYPE:
            raise LockSignatureError(f"{bpath}: payload type {payload_type!r} is not {PAYLOAD_TYPE}")
        st, digest = _check_statement(lock, bpath, payload)
        return Verification(who, digest, st, keyless=True)
    if identity is not None:
        raise LockSignatureError(f"{bpath}: bundle is signed with a key, not keylessly; verify it with --key")
    kid, payload = _verify_key_envelope(b, bpath, pub)
    st, digest = _check_statement(lock, bpath, payload)
    return Verification(kid, digest, st)


def _verify_key_envelope(b: dict, bpath: Path, pub: str | Path) -> tuple[str, bytes]:
    """The DSSE envelope's signature under PUB; returns (key id, payload)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    env = b.get("dsseEnvelope")
    if not isinstance(env, dict):
        raise LockSignatureError(f"{bpath}: bundle has no DSSE envelope")
    if env.get("payloadType") != PAYLOAD_TYPE:
        raise LockSignatureError(f"{bpath}: payload type {env.get('payloadType')!r} is not {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(env["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in env["signatures"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise LockSignatureError(f"{bpath}: malformed DSSE envelope ({exc})") from exc
    public = _load_public(pub)
    message = pae(PAYLOAD_TYPE, payload)
    for sig in sigs:
        try:
            public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
            return key_id(public), payload
        except InvalidSignature:
            continue
    raise LockSignatureError(f"{bpath}: signature does not verify with {pub} (wrong key or altered bundle)")


def _check_statement(lock: Path, bpath: Path, payload: bytes) -> tuple[dict, str]:
    """The signed statement must be a closure-lock statement whose subject and predicate are LOCK."""
    try:
        st = json.loads(payload)
        subject = st["subject"][0]["digest"]["sha256"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise LockSignatureError(f"{bpath}: signed payload is not an in-toto Statement ({exc})") from exc
    if st.get("_type") != STATEMENT_TYPE or st.get("predicateType") != PREDICATE_TYPE:
        raise LockSignatureError(f"{bpath}: signed statement has type {st.get('predicateType')!r}, not a closure lock")
    data = lock.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if subject != actual:
        raise LockSignatureError(f"{lock}: sha256 {actual} differs from the signed subject {subject} "
                          "(the lock was changed after signing)")
    closure = loads(data.decode("utf-8"), str(lock))
    if st["predicate"] != statement(lock.name, data, closure)["predicate"]:
        raise LockSignatureError(f"{bpath}: signed predicate does not describe {lock}")
    return st, "sha256:" + actual
