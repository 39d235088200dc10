"""OpenPGP signature checks with gpgv, as apt does: only the signed text is ever parsed afterwards."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cernvm_build.errors import SignatureError

if TYPE_CHECKING:
    from cernvm_build.util.content_store import ContentStore


@dataclass(frozen=True)
class Verified:
    """What a good signature covers, and by whom."""

    content: bytes                       # the signed data (for a clearsigned file: without the armour)
    fingerprints: tuple[str, ...]        # primary-key fingerprints of the good signatures


def _keyring_for_gpgv(keyring: str | Path, workdir: Path) -> Path:
    """gpgv wants a binary keyring; dearmor an ASCII-armoured key file into WORKDIR if needed."""
    keyring = Path(keyring)
    try:
        data = keyring.read_bytes()
    except OSError as exc:
        raise SignatureError(f"{keyring}: cannot read keyring: {exc.strerror}") from exc
    if b"-----BEGIN PGP PUBLIC KEY BLOCK-----" not in data:
        return keyring
    import subprocess

    out = workdir / (hashlib.sha256(data).hexdigest() + ".gpg")
    proc = subprocess.run(["gpg", "--batch", "--no-options", "--homedir", str(workdir), "--dearmor"],
                          input=data, capture_output=True)
    if proc.returncode != 0:
        raise SignatureError(f"{keyring}: not a usable OpenPGP key file: {proc.stderr.decode().strip()}")
    out.write_bytes(proc.stdout)
    return out


def _run_gpgv(args: list[str], keyring: str | Path, what: str) -> Verified:
    import subprocess      # here: a warm run finds the verification sealed and never spawns gpgv
    import tempfile

    with tempfile.TemporaryDirectory(prefix="cvb-gpgv-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o700)
        kr = _keyring_for_gpgv(keyring, work)
        outfile = work / "signed-content"
        cmd = ["gpgv", "--status-fd", "1", "--homedir", str(work), "--keyring", str(kr),
               "--output", str(outfile), *args]
        proc = subprocess.run(cmd, capture_output=True)
        status = proc.stdout.decode(errors="replace").splitlines()
        bad = [line for line in status if line.startswith(("[GNUPG:] BADSIG", "[GNUPG:] REVKEYSIG"))]
        valid = [line.split()[-1] for line in status if line.startswith("[GNUPG:] VALIDSIG")]
        if bad:
            raise SignatureError(f"{what}: BAD signature ({bad[0].split(' ', 2)[-1]})")
        if proc.returncode != 0 or not valid:
            reason = "no signature by a key in " + str(keyring)
            if any(line.startswith("[GNUPG:] NODATA") for line in status):
                reason = "not signed (no OpenPGP signature found)"
            elif any(line.startswith("[GNUPG:] EXPKEYSIG") for line in status):
                reason = "signed only by an expired key"
            raise SignatureError(f"{what}: signature verification failed: {reason}")
        content = outfile.read_bytes() if outfile.exists() else b""
        return Verified(content, tuple(sorted(set(valid))))


def verify_clearsigned(path: str | Path, keyring: str | Path, what: str | None = None,
                       memo: "ContentStore | None" = None) -> Verified:
    """Verify an inline-signed file (InRelease); returns the signed text only.

    MEMO, the content store, remembers a successful verification of exactly these bytes against
    exactly this keyring (both by sha256) in a seal, so a warm run skips spawning gpgv; a record
    anyone else wrote (a poisoned cache) does not unseal, and gpgv runs.
    """
    if memo is None:
        return _run_gpgv([str(path)], keyring, what or str(path))
    data = Path(path).read_bytes()
    try:
        ring = Path(keyring).read_bytes()
    except OSError as exc:
        raise SignatureError(f"{keyring}: cannot read keyring: {exc.strerror}") from exc
    name = "gpgv:" + hashlib.sha256(data).hexdigest() + "-" + hashlib.sha256(ring).hexdigest()
    record = memo.unseal(name)
    if record is not None:
        head, _, content = record.partition(b"\n")
        if head.startswith(b"fingerprints "):
            return Verified(content, tuple(head.decode().split()[1:]))
    verified = _run_gpgv([str(path)], keyring, what or str(path))
    memo.seal(name, ("fingerprints " + " ".join(verified.fingerprints) + "\n").encode() + verified.content)
    return verified


def verify_detached(path: str | Path, signature: str | Path, keyring: str | Path,
                    what: str | None = None) -> Verified:
    """Verify PATH against a detached SIGNATURE (Release + Release.gpg, repomd.xml + .asc)."""
    v = _run_gpgv([str(signature), str(path)], keyring, what or str(path))
    return Verified(Path(path).read_bytes(), v.fingerprints)
