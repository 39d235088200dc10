"""Repository keys laid out as cvmfs_server does: FQRN.masterkey/.pub (whitelist) and FQRN.key/.crt.

The master key signs only the whitelist and may stay offline; the repository key signs every
manifest and reaches clients as a PEM certificate stored as an `X` object. Private keys are 0600.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cernvm_build.errors import CvmfsError
from cernvm_build.util.files import atomic_write

FQRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$")
KEY_BITS = 2048


def check_fqrn(fqrn: str) -> str:
    if not FQRN_RE.match(fqrn) or "." not in fqrn:
        raise CvmfsError(f"invalid repository name {fqrn!r}: expected a fully qualified name such as "
                         "sw.example.org (letters, digits, '.', '-', '_'; at most 60 characters)")
    return fqrn


def check_outside(keydir: Path, repo: Path) -> None:
    """Refuse a key directory inside the served directory: private keys must never be published."""
    k, r = Path(keydir).resolve(), Path(repo).resolve()
    if k == r or r in k.parents:
        raise CvmfsError(f"key directory {keydir} is inside the served repository {repo}; keep keys outside it")


@dataclass
class RepoKeys:
    """The four key files of one repository; master_key is None when kept offline.

    The master key is loaded only when used (whitelist signing): loading validates the RSA key,
    which costs tens of milliseconds that a republish should not pay.
    """

    fqrn: str
    repo_key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    master_public: rsa.RSAPublicKey
    _master_key: rsa.RSAPrivateKey | None = None
    master_key_path: Path | None = None

    @property
    def master_key(self) -> rsa.RSAPrivateKey | None:
        if self._master_key is None and self.master_key_path is not None:
            self._master_key = load_private_key(self.master_key_path)
        return self._master_key

    @property
    def has_master_key(self) -> bool:
        return self._master_key is not None or self.master_key_path is not None

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def key_paths(keydir: Path, fqrn: str) -> dict[str, Path]:
    keydir = Path(keydir)
    return {ext: keydir / f"{fqrn}.{ext}" for ext in ("masterkey", "pub", "key", "crt")}


def _private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _self_signed(key: rsa.RSAPrivateKey, fqrn: str, not_before: int) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{fqrn} CernVM-FS Release Managers")])
    start = _dt.datetime.fromtimestamp(not_before, _dt.timezone.utc).replace(tzinfo=None)
    # The serial derives from the public key so a certificate is a function of (key, name, start).
    serial = int.from_bytes(key.public_key().public_numbers().n.to_bytes(KEY_BITS // 8, "big")[:16], "big") >> 1
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(serial or 1)
            .not_valid_before(start).not_valid_after(start + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))


def create_keys(keydir: Path, fqrn: str, now: int) -> RepoKeys:
    """Generate master key, repository key and certificate; reuse a complete existing set."""
    check_fqrn(fqrn)
    paths = key_paths(keydir, fqrn)
    present = [p for p in paths.values() if p.exists()]
    if len(present) == len(paths):
        return load_keys(keydir, fqrn, need_master=True)
    if present:
        raise CvmfsError(f"{keydir} holds an incomplete key set for {fqrn} ({', '.join(p.name for p in present)}); "
                         "remove it or complete it")
    Path(keydir).mkdir(parents=True, exist_ok=True)
    master = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    repo_key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    cert = _self_signed(repo_key, fqrn, now)
    atomic_write(paths["masterkey"], _private_pem(master), mode=0o600)
    atomic_write(paths["key"], _private_pem(repo_key), mode=0o600)
    atomic_write(paths["pub"], master.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), mode=0o644)
    atomic_write(paths["crt"], cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return RepoKeys(fqrn, repo_key, cert, master.public_key(), master, paths["masterkey"])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise CvmfsError(f"key file {path} is missing") from exc
    except OSError as exc:
        raise CvmfsError(f"cannot read key file {path}: {exc.strerror}") from exc


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        # the RSA consistency check (p*q = n, ...) costs ~40 ms on every publish; the key is our own file, the
        # certificate must still match it (load_keys), and a damaged key's signatures are refused by every client
        key = serialization.load_pem_private_key(_read(path), password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as exc:
        raise CvmfsError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CvmfsError(f"{path} is not an RSA key (CernVM-FS signs with RSA)")
    return key


def load_public_key(path: Path) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(_read(Path(path)))
    except ValueError as exc:
        raise CvmfsError(f"{path} is not a PEM public key") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CvmfsError(f"{path} is not an RSA public key")
    return key


def load_keys(keydir: Path, fqrn: str, need_master: bool = False) -> RepoKeys:
    paths = key_paths(keydir, fqrn)
    if not paths["key"].exists() and not paths["crt"].exists():
        raise CvmfsError(f"no keys for {fqrn} in {keydir} (expected {fqrn}.key and {fqrn}.crt)")
    repo_key = load_private_key(paths["key"])
    try:
        cert = x509.load_pem_x509_certificate(_read(paths["crt"]))
    except ValueError as exc:
        raise CvmfsError(f"{paths['crt']} is not a PEM certificate") from exc
    if cert.public_key().public_numbers() != repo_key.public_key().public_numbers():
        raise CvmfsError(f"{paths['crt']} does not belong to {paths['key']}")
    master_path = paths["masterkey"] if paths["masterkey"].exists() else None
    if master_path is None and need_master:
        raise CvmfsError(f"master key {paths['masterkey']} is missing (needed to sign the whitelist)")
    if paths["pub"].exists():
        master_pub = load_public_key(paths["pub"])
    elif master_path is not None:
        master_pub = load_private_key(master_path).public_key()
    else:
        raise CvmfsError(f"neither {paths['pub']} nor {paths['masterkey']} exists in {keydir}")
    for p in (paths["key"], paths["masterkey"]):
        if p.exists() and os.stat(p).st_mode & 0o077:
            os.chmod(p, 0o600)
    return RepoKeys(fqrn, repo_key, cert, master_pub, None, master_path)


def find_fqrn(keydir: Path) -> str | None:
    """The repository name when KEYDIR holds keys for exactly one repository."""
    names = sorted(p.name[:-4] for p in Path(keydir).glob("*.crt"))
    return names[0] if len(names) == 1 else None
