"""A private Sigstore instance on loopback: OIDC issuer, Fulcio CA with a CT log, and a Rekor v1 log.

Keyless signing needs Fulcio and Rekor, which these machines cannot reach; this stands in for them
with real cryptography so that the `sigstore` package's own client and verifier run unmodified:
tokens are ES256 JWTs, certificates carry embedded precertificate SCTs (RFC 6962) over the real
TBS, log entries are RFC 6962 Merkle leaves with audit paths, signed checkpoints (signed-note
format) and signed entry timestamps. Nothing is stubbed on the verifying side: a bundle that
verifies here satisfies every check sigstore makes against the public-good instance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

OIDC_ISSUER_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.1")
OIDC_ISSUER_V2_OID = ObjectIdentifier("1.3.6.1.4.1.57264.1.8")
SCT_LIST_OID = ObjectIdentifier("1.3.6.1.4.1.11129.2.4.2")
PAYLOAD_TYPE = "application/vnd.in-toto+json"
EPOCH = "2020-01-01T00:00:00Z"


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def _der_octets(data: bytes) -> bytes:
    return b"\x04" + _der_length(len(data)) + data


def _der_utf8(text: str) -> bytes:
    data = text.encode()
    return b"\x0c" + _der_length(len(data)) + data


def _sign(key, data: bytes) -> bytes:
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


# -- RFC 6962 Merkle tree ------------------------------------------------------------------------

def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """Largest power of two strictly below n."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def tree_root(leaves: list[bytes]) -> bytes:
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return _node(tree_root(leaves[:k]), tree_root(leaves[k:]))


def audit_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 PATH(m, D[n]), lowest level first."""
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return audit_path(index, leaves[:k]) + [tree_root(leaves[k:])]
    return audit_path(index - k, leaves[k:]) + [tree_root(leaves[:k])]


# -- the instance ----------------------------------------------------------------------------------

@dataclass
class FakeSigstore:
    """Keys and state of one private Sigstore instance; `start()` serves Fulcio and Rekor."""

    issuer: str = "https://oidc.cernvm-build.test"
    oidc_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    ct_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    rekor_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    url: str = "http://127.0.0.1:9"           # set by start()
    leaves: list[bytes] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    ambient_token: str | None = None          # what the GitHub-style token endpoint hands out
    ambient_request_token: str = "gh-request-token"

    def __post_init__(self) -> None:
        now = datetime.now(timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cernvm-build tests"),
                          x509.NameAttribute(NameOID.COMMON_NAME, "fake fulcio root")])
        pub = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         key_cert_sign=True, crl_sign=True, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ct_log_id = hashlib.sha256(_spki(self.ct_key.public_key())).digest()
        self.rekor_log_id = hashlib.sha256(_spki(self.rekor_key.public_key())).digest()
        # a log that already holds other people's entries, so inclusion proofs are not trivial
        self.leaves = [leaf_hash(b"earlier entry %d" % i) for i in range(11)]

    # OIDC ---------------------------------------------------------------------------------------
    def token(self, subject: str = "https://github.com/cernvm/cernvm-build/.github/workflows/closures.yml"
              "@refs/heads/main", lifetime: int = 600, key=None, issuer: str | None = None) -> str:
        import jwt

        now = int(time.time())
        claims = {"iss": issuer or self.issuer, "sub": subject, "aud": "sigstore",
                  "iat": now - 1, "nbf": now - 1, "exp": now + lifetime}
        return jwt.encode(claims, key or self.oidc_key, algorithm="ES256")

    # Fulcio -------------------------------------------------------------------------------------
    def _sct_list(self, sct: bytes) -> bytes:
        entry = struct.pack("!H", len(sct)) + sct
        return _der_octets(struct.pack("!H", len(entry)) + entry)

    def _sct(self, tbs: bytes, ms: int, signature: bytes | None) -> bytes:
        """RFC 6962 SignedCertificateTimestamp over a precertificate TBS (v1, SHA-256/ECDSA)."""
        issuer_key_hash = hashlib.sha256(_spki(self.ca_key.public_key())).digest()
        signed_entry = issuer_key_hash + len(tbs).to_bytes(3, "big") + tbs
        if signature is None:
            data = struct.pack("!BBQH", 0, 0, ms, 1) + signed_entry + struct.pack("!H", 0)
            signature = _sign(self.ct_key, data)
        return (struct.pack("!B", 0) + self.ct_log_id + struct.pack("!QH", ms, 0)
                + struct.pack("!BBH", 4, 3, len(signature)) + signature)

    def issue(self, public_key, identity: str, issuer: str) -> x509.Certificate:
        """A 10-minute code-signing certificate for IDENTITY with an embedded SCT, as Fulcio issues."""
        now = datetime.now(timezone.utc).replace(microsecond=0)
        ms = int(now.timestamp()) * 1000
        serial = x509.random_serial_number()
        san = x509.RFC822Name(identity) if "@" in identity and "://" not in identity \
            else x509.UniformResourceIdentifier(identity)

        def build(sct_ext: bytes) -> x509.Certificate:
            return (
                x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
                .public_key(public_key).serial_number(serial)
                .not_valid_before(now - timedelta(seconds=5)).not_valid_after(now + timedelta(minutes=10))
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                               critical=False)
                .add_extension(x509.SubjectAlternativeName([san]), critical=True)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_OID, issuer.encode()), critical=False)
                .add_extension(x509.UnrecognizedExtension(OIDC_ISSUER_V2_OID, _der_utf8(issuer)), critical=False)
                .add_extension(x509.UnrecognizedExtension(SCT_LIST_OID, sct_ext), critical=False)
                .sign(self.ca_key, hashes.SHA256())
            )

        # The SCT signs the TBS without the SCT extension; build once with a placeholder to get it.
        draft = build(self._sct_list(self._sct(b"", ms, b"\x00" * 8)))
        tbs = draft.tbs_precertificate_bytes
        return build(self._sct_list(self._sct(tbs, ms, None)))

    def _fulcio(self, headers, body: bytes) -> tuple[int, dict]:
        import jwt

        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return 401, {"code": 401, "message": "missing bearer token"}
        try:
            claims = jwt.decode(auth[7:], self.oidc_key.public_key(), algorithms=["ES256"],
                                audience="sigstore", issuer=self.issuer)
        except jwt.PyJWTError as exc:
            return 401, {"code": 401, "message": f"invalid identity token: {exc}"}
        try:
            pem = base64.b64decode(json.loads(body)["certificateSigningRequest"])
            csr = x509.load_pem_x509_csr(pem)
        except (KeyError, ValueError) as exc:
            return 400, {"code": 400, "message": f"bad certificate request: {exc}"}
        if not csr.is_signature_valid:
            return 400, {"code": 400, "message": "CSR signature does not prove key possession"}
        cert = self.issue(csr.public_key(), claims.get("email") or claims["sub"], claims["iss"])
        chain = [c.public_bytes(serialization.Encoding.PEM).decode() for c in (cert, self.ca_cert)]
        return 201, {"signedCertificateEmbeddedSct": {"chain": {"certificates": chain}}}

    # Rekor v1 -----------------------------------------------------------------------------------
    def _checkpoint(self, size: int, root: bytes) -> str:
        note = f"rekor.cernvm-build.test - 4711\n{size}\n{base64.b64encode(root).decode()}\n"
        sig = base64.b64encode(self.rekor_log_id[:4] + _sign(self.rekor_key, note.encode())).decode()
        return f"{note}\n\u2014 rekor.cernvm-build.test {sig}\n"

    def _rekor(self, body: bytes) -> tuple[int, dict]:
        try:
            proposed = json.loads(body)
            assert proposed["kind"] == "dsse" and proposed["apiVersion"] == "0.0.1"
            content = proposed["spec"]["proposedContent"]
            envelope_text: str = content["envelope"]
            envelope = json.loads(envelope_text)
            verifier_b64: str = content["verifiers"][0]
            cert = x509.load_pem_x509_certificate(base64.b64decode(verifier_b64))
            payload = base64.b64decode(envelope["payload"])
            sigs = [base64.b64decode(s["sig"]) for s in envelope["signatures"]]
        except (AssertionError, KeyError, IndexError, ValueError) as exc:
            return 400, {"code": 400, "message": f"unsupported entry: {exc!r}"}
        for sig in sigs:                      # Rekor refuses entries whose signature does not verify
            try:
                cert.public_key().verify(sig, _pae(envelope["payloadType"], payload), ec.ECDSA(hashes.SHA256()))
            except InvalidSignature:
                return 400, {"code": 400, "message": "DSSE signature does not verify"}
        canonical = {
            "apiVersion": "0.0.1", "kind": "dsse",
            "spec": {
                "envelopeHash": {"algorithm": "sha256",
                                 "value": hashlib.sha256(envelope_text.encode()).hexdigest()},
                "payloadHash": {"algorithm": "sha256", "value": hashlib.sha256(payload).hexdigest()},
                "signatures": [{"signature": base64.b64encode(s).decode(), "verifier": verifier_b64}
                               for s in sigs],
            },
        }
        entry_body = json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()
        self.leaves.append(leaf_hash(entry_body))
        index, size = len(self.leaves) - 1, len(self.leaves)
        root = tree_root(self.leaves)
        integrated = int(time.time())
        body_b64 = base64.b64encode(entry_body).decode()
        set_payload = json.dumps({"body": body_b64, "integratedTime": integrated,
                                  "logID": self.rekor_log_id.hex(), "logIndex": index},
                                 sort_keys=True, separators=(",", ":")).encode()
        entry = {
            "body": body_b64, "integratedTime": integrated, "logID": self.rekor_log_id.hex(), "logIndex": index,
            "verification": {
                "inclusionProof": {"checkpoint": self._checkpoint(size, root),
                                   "hashes": [h.hex() for h in audit_path(index, self.leaves)],
                                   "logIndex": index, "rootHash": root.hex(), "treeSize": size},
                "signedEntryTimestamp": base64.b64encode(_sign(self.rekor_key, set_payload)).decode(),
            },
        }
        return 201, {self.leaves[-1].hex(): entry}

    # serving ------------------------------------------------------------------------------------
    def start(self) -> "FakeSigstore":
        instance = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, reply: dict) -> None:
                data = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                """GitHub Actions' ID-token endpoint (ACTIONS_ID_TOKEN_REQUEST_URL), for ambient detection."""
                instance.requests.append(self.path.split("?")[0])
                ok = (self.path.startswith("/github-oidc?") and "audience=sigstore" in self.path
                      and self.headers.get("Authorization") == f"bearer {instance.ambient_request_token}"
                      and instance.ambient_token)
                self._reply(200, {"value": instance.ambient_token}) if ok else \
                    self._reply(403, {"message": "no ID token for this request"})

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                instance.requests.append(self.path)
                if self.path == "/api/v2/signingCert":
                    status, reply = instance._fulcio(self.headers, body)
                elif self.path == "/api/v1/log/entries":
                    status, reply = instance._rekor(body)
                else:
                    status, reply = 404, {"code": 404, "message": "not found"}
                self._reply(status, reply)

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # trust material -----------------------------------------------------------------------------
    def _key(self, key) -> dict:
        return {"rawBytes": base64.b64encode(_spki(key.public_key())).decode(),
                "keyDetails": "PKIX_ECDSA_P256_SHA_256", "validFor": {"start": EPOCH}}

    def trusted_root(self) -> dict:
        return {
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{"baseUrl": self.url, "hashAlgorithm": "SHA2_256", "publicKey": self._key(self.rekor_key),
                       "logId": {"keyId": base64.b64encode(self.rekor_log_id).decode()}}],
            "certificateAuthorities": [{
                "subject": {"organization": "cernvm-build tests", "commonName": "fake fulcio root"},
                "uri": self.url,
                "certChain": {"certificates": [
                    {"rawBytes": base64.b64encode(self.ca_cert.public_bytes(serialization.Encoding.DER)).decode()}]},
                "validFor": {"start": EPOCH}}],
            "ctlogs": [{"baseUrl": self.url, "hashAlgorithm": "SHA2_256", "publicKey": self._key(self.ct_key),
                        "logId": {"keyId": base64.b64encode(self.ct_log_id).decode()}}],
            "timestampAuthorities": [],
        }

    def trust_config(self) -> dict:
        service = {"url": self.url, "majorApiVersion": 1, "validFor": {"start": EPOCH},
                   "operator": "cernvm-build-tests"}
        return {
            "mediaType": "application/vnd.dev.sigstore.clienttrustconfig.v0.1+json",
            "trustedRoot": self.trusted_root(),
            "signingConfig": {
                "mediaType": "application/vnd.dev.sigstore.signingconfig.v0.2+json",
                "caUrls": [service], "oidcUrls": [], "rekorTlogUrls": [service],
                "rekorTlogConfig": {"selector": "ANY"}, "tsaUrls": [], "tsaConfig": {"selector": "ANY"},
            },
        }

    def write(self, directory: Path) -> tuple[Path, Path]:
        """trusted_root.json (what a verifier archives) and trust_config.json (what a signer uses)."""
        directory.mkdir(parents=True, exist_ok=True)
        root, config = directory / "trusted_root.json", directory / "trust_config.json"
        root.write_text(json.dumps(self.trusted_root(), indent=2))
        config.write_text(json.dumps(self.trust_config(), indent=2))
        return root, config
