"""The signed manifest (`.cvmfspublished`) and certificate whitelist (`.cvmfswhitelist`).

Both are "letters": payload lines, `--`, the hex SHA-1 of the payload, then a binary signature over
that hex text. The manifest is signed PKCS#1 v1.5 + SHA-1 with the repository key; the whitelist is
signed with *raw* PKCS#1 type-1 padding of the hex text (no DigestInfo) by the master key, which is
what the client's RSA_public_decrypt check expects.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cernvm_build.errors import CvmfsError, CvmfsIntegrityError, CvmfsSignatureError, CvmfsWhitelistExpired

ROOT_PATH_MD5 = hashlib.md5(b"").hexdigest()
DEFAULT_TTL = 240


# ---------------------------------------------------------------------------------------------- letters
def split_letter(data: bytes, what: str) -> tuple[bytes, str, bytes]:
    """(payload incl. its last newline, printed hex digest, signature bytes)."""
    if data.startswith(b"--\n"):
        pos = 0
    else:
        pos = data.find(b"\n--\n")
        if pos < 0:
            raise CvmfsIntegrityError(f"{what} has no '--' signature separator")
        pos += 1
    payload = data[:pos]
    rest = data[pos + 3:]
    nl = rest.find(b"\n")
    if nl < 0:
        raise CvmfsIntegrityError(f"{what} is truncated after the '--' separator")
    digest = rest[:nl].decode("ascii", "replace").strip()
    return payload, digest, rest[nl + 1:]


def _check_digest(payload: bytes, digest: str, what: str) -> None:
    if hashlib.sha1(payload).hexdigest() != digest:
        raise CvmfsSignatureError(f"{what} was modified: its content does not match its signed digest")


def sign_manifest_letter(payload: bytes, key: rsa.RSAPrivateKey) -> bytes:
    digest = hashlib.sha1(payload).hexdigest()
    sig = key.sign(digest.encode(), padding.PKCS1v15(), hashes.SHA1())
    return payload + b"--\n" + digest.encode() + b"\n" + sig


def raw_rsa_sign(message: bytes, key: rsa.RSAPrivateKey) -> bytes:
    """PKCS#1 v1.5 type-1 padding of MESSAGE itself (no DigestInfo), then the RSA private operation."""
    priv = key.private_numbers()
    n = priv.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise CvmfsError("message too long for the master key")
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    return pow(int.from_bytes(em, "big"), priv.d, n).to_bytes(k, "big")


def sign_whitelist_letter(payload: bytes, master: rsa.RSAPrivateKey) -> bytes:
    digest = hashlib.sha1(payload).hexdigest()
    return payload + b"--\n" + digest.encode() + b"\n" + raw_rsa_sign(digest.encode(), master)


# --------------------------------------------------------------------------------------------- manifest
@dataclass
class Manifest:
    """Fields of .cvmfspublished (letters in brackets)."""

    root_catalog: str  # C
    revision: int  # S
    fqrn: str  # N
    root_catalog_size: int | None = None  # B
    ttl: int = DEFAULT_TTL  # D
    root_path_md5: str = ROOT_PATH_MD5  # R
    garbage_collectable: bool = False  # G
    alt_catalogs: bool = False  # A
    certificate: str | None = None  # X
    history: str | None = None  # H
    timestamp: int = 0  # T
    metainfo: str | None = None  # M
    reflog: str | None = None  # Y
    extra: dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        """Lines in the reference server's order: C B R D S G A, then N X H T M Y."""
        yn = {True: "yes", False: "no"}
        lines = [f"C{self.root_catalog}"]
        if self.root_catalog_size is not None:
            lines.append(f"B{self.root_catalog_size}")
        lines += [f"R{self.root_path_md5}", f"D{self.ttl}", f"S{self.revision}",
                  f"G{yn[self.garbage_collectable]}", f"A{yn[self.alt_catalogs]}", f"N{self.fqrn}"]
        for letter, value in (("X", self.certificate), ("H", self.history), ("T", self.timestamp),
                              ("M", self.metainfo), ("Y", self.reflog)):
            if value is not None:
                lines.append(f"{letter}{value}")
        return ("\n".join(lines) + "\n").encode()

    def sign(self, key: rsa.RSAPrivateKey) -> bytes:
        return sign_manifest_letter(self.payload(), key)

    @classmethod
    def parse(cls, data: bytes, what: str = ".cvmfspublished") -> tuple["Manifest", bytes, str, bytes]:
        """Parse a signed manifest: (manifest, payload, digest, signature)."""
        payload, digest, sig = split_letter(data, what)
        fields: dict[str, str] = {}
        for raw in payload.decode("utf-8", "replace").split("\n"):
            if raw:
                fields[raw[0]] = raw[1:]
        missing = [k for k in "CRDS" if k not in fields]
        if missing:
            raise CvmfsIntegrityError(f"{what} lacks the required field(s) {', '.join(missing)}")
        try:
            m = cls(root_catalog=fields.pop("C"), revision=int(fields.pop("S")), fqrn=fields.pop("N", ""),
                    root_catalog_size=int(fields.pop("B")) if "B" in fields else None,
                    ttl=int(fields.pop("D")), root_path_md5=fields.pop("R"),
                    garbage_collectable=fields.pop("G", "no") == "yes",
                    alt_catalogs=fields.pop("A", "no") == "yes",
                    certificate=fields.pop("X", None), history=fields.pop("H", None),
                    timestamp=int(fields.pop("T", "0")), metainfo=fields.pop("M", None),
                    reflog=fields.pop("Y", None), extra=fields)
        except ValueError as exc:
            raise CvmfsIntegrityError(f"{what} has a malformed numeric field: {exc}") from exc
        if m.root_path_md5 != ROOT_PATH_MD5:
            raise CvmfsIntegrityError(f"{what} has root path hash {m.root_path_md5}, expected {ROOT_PATH_MD5}")
        return m, payload, digest, sig


def verify_manifest_signature(payload: bytes, digest: str, sig: bytes, cert: x509.Certificate,
                              what: str = ".cvmfspublished") -> None:
    _check_digest(payload, digest, what)
    try:
        cert.public_key().verify(sig, digest.encode(), padding.PKCS1v15(), hashes.SHA1())
    except InvalidSignature as exc:
        raise CvmfsSignatureError(f"{what}: signature does not verify with the repository certificate") from exc


def certificate_fingerprint(cert: x509.Certificate) -> str:
    """SHA-1 of the DER certificate, uppercase hex bytes joined by ':' (the whitelist form)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA1()))


def load_certificate(pem: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise CvmfsIntegrityError(f"{what} is not a PEM certificate") from exc


# -------------------------------------------------------------------------------------------- whitelist
def _ts(t: int) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y%m%d%H%M%S")


def _parse_ts(text: str, what: str) -> int:
    try:
        d = _dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=_dt.timezone.utc)
    except ValueError as exc:
        raise CvmfsIntegrityError(f"{what} has a malformed timestamp {text!r}") from exc
    return int(d.timestamp())


@dataclass
class Whitelist:
    created: int
    expires: int
    fqrn: str
    fingerprints: list[str]

    def payload(self) -> bytes:
        lines = [_ts(self.created), "E" + _ts(self.expires), "N" + self.fqrn, *self.fingerprints]
        return ("\n".join(lines) + "\n").encode()

    def sign(self, master: rsa.RSAPrivateKey) -> bytes:
        return sign_whitelist_letter(self.payload(), master)

    @property
    def expires_text(self) -> str:
        return _dt.datetime.fromtimestamp(self.expires, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")

    def expired(self, now: int) -> bool:
        """The client compares at hour granularity: minutes and seconds of the expiry are ignored."""
        return now // 3600 >= self.expires // 3600

    @classmethod
    def parse(cls, data: bytes, what: str = ".cvmfswhitelist") -> tuple["Whitelist", bytes, str, bytes]:
        payload, digest, sig = split_letter(data, what)
        lines = payload.decode("ascii", "replace").split("\n")
        if len(lines) < 4 or len(lines[0]) != 14 or not lines[1].startswith("E") or not lines[2].startswith("N"):
            raise CvmfsIntegrityError(f"{what} is malformed (expected timestamp, E<expiry>, N<name> lines)")
        fps = []
        for line in lines[3:]:
            token = line.split("#", 1)[0].split()
            if token and token[0] not in ("Vpkcs7", "Wcachain"):
                fps.append(token[0])
        wl = cls(_parse_ts(lines[0], what), _parse_ts(lines[1][1:], what), lines[2][1:], fps)
        return wl, payload, digest, sig


def verify_whitelist(data: bytes, fqrn: str, cert: x509.Certificate, master_keys: list[rsa.RSAPublicKey],
                     now: int, allow_expired: bool = False) -> Whitelist:
    """Client checks: digest, name, expiry, master-key signature, certificate fingerprint listed."""
    wl, payload, digest, sig = Whitelist.parse(data)
    _check_digest(payload, digest, ".cvmfswhitelist")
    if wl.fqrn != fqrn:
        raise CvmfsSignatureError(f".cvmfswhitelist is for repository {wl.fqrn!r}, not {fqrn!r}")
    if wl.expired(now) and not allow_expired:
        raise CvmfsWhitelistExpired(f".cvmfswhitelist of {fqrn} expired on {wl.expires_text}; re-sign it "
                                    "(cvmfs resign) or pass --allow-expired-whitelist")
    if master_keys:
        for pub in master_keys:
            try:
                if pub.recover_data_from_signature(sig, padding.PKCS1v15(), None) == digest.encode():
                    break
            except (InvalidSignature, ValueError):
                continue
        else:
            raise CvmfsSignatureError(f".cvmfswhitelist of {fqrn} is not signed by the given master key")
    fp = certificate_fingerprint(cert)
    if fp not in wl.fingerprints:
        raise CvmfsSignatureError(f"the repository certificate {fp} is not on the whitelist of {fqrn}")
    return wl


def public_key_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
