"""Keyless (Sigstore) signing and offline verification of locks, through the `sigstore` package.

Keyless signing is for CI: the job's ambient OIDC identity (GitHub Actions, GitLab, Buildkite, ...)
is exchanged at Fulcio for a short-lived certificate, the DSSE envelope is signed with an ephemeral
key, and the signature is logged in Rekor. The bundle then carries everything a verifier needs
except the roots of trust, so verification is offline given a trusted root (archive that file with
the lock: it is what makes a years-old bundle checkable without TUF or network).

Unlike key-based bundles these are not byte-reproducible: the certificate and log entry are new
on every signing. The statement inside is the same one `trust.signing.statement` builds.

The `sigstore` package is an optional extra (`pip install cernvm-build[keyless]`); importing this
module does not import it, so the key-based path stays light.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cernvm_build.errors import LockSignatureError

IDENTITY_TOKEN_ENV = "SIGSTORE_IDENTITY_TOKEN"


@dataclass(frozen=True)
class KeylessSigner:
    """Who signs (an identity token, or None for ambient detection) and against which Sigstore instance."""

    identity_token: str | None = None
    trust_config: Path | None = None     # ClientTrustConfig JSON (private Sigstore deployments)
    staging: bool = False


def _sigstore():
    try:
        import sigstore  # noqa: F401
    except ImportError as exc:
        raise LockSignatureError("keyless signing needs the sigstore package: "
                          "pip install 'cernvm-build[keyless]'") from exc
    import sigstore.dsse
    import sigstore.errors
    import sigstore.models
    import sigstore.oidc
    import sigstore.sign
    import sigstore.verify
    import sigstore.verify.policy
    return sigstore


def _trust_config(sg, signer: KeylessSigner):
    models = sg.models
    try:
        if signer.trust_config is not None:
            return models.ClientTrustConfig.from_json(Path(signer.trust_config).read_text())
        return models.ClientTrustConfig.staging() if signer.staging else models.ClientTrustConfig.production()
    except OSError as exc:
        raise LockSignatureError(f"{signer.trust_config}: cannot read trust config: {exc.strerror}") from exc
    except (ValueError, sg.errors.Error) as exc:
        where = signer.trust_config or ("Sigstore staging" if signer.staging else "Sigstore public good")
        raise LockSignatureError(f"{where}: unusable Sigstore trust config: {_one_line(exc)}") from exc


def _one_line(exc: BaseException) -> str:
    """The exception as one line; with the service's own answer when an HTTP error lies beneath.

    sigstore's Fulcio client drops the body of 4xx answers (a failed requests.Response is falsy),
    so the chain is walked to recover what the server said.
    """
    text = str(exc).strip() or type(exc).__name__
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        response = getattr(cause, "response", None)
        if response is not None and getattr(response, "status_code", None):
            try:
                said = response.json().get("message") or response.text
            except ValueError:
                said = response.text
            text = f"{text}: HTTP {response.status_code} from {response.url}: {said[:300]}"
            break
        cause = cause.__cause__ or cause.__context__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:400] + " ..."


def identity_token(sg, explicit: str | None):
    """The OIDC token: given, from $SIGSTORE_IDENTITY_TOKEN, or detected from the CI environment."""
    raw = explicit or os.environ.get(IDENTITY_TOKEN_ENV)
    if not raw:
        try:
            raw = sg.oidc.detect_credential()
        except sg.oidc.IdentityError as exc:
            raise LockSignatureError(f"ambient OIDC credential detection failed: {_one_line(exc)}") from exc
    if not raw:
        raise LockSignatureError("no OIDC identity for keyless signing: pass --identity-token, set "
                          f"{IDENTITY_TOKEN_ENV}, or run in CI with an ambient identity "
                          "(GitHub Actions 'id-token: write', GitLab SIGSTORE_ID_TOKEN)")
    try:
        return sg.oidc.IdentityToken(raw.strip())
    except sg.oidc.IdentityError as exc:
        raise LockSignatureError(f"identity token refused: {_one_line(exc)}") from exc


def sign_statement(payload: bytes, signer: KeylessSigner) -> str:
    """Sign the in-toto statement bytes keylessly; return the Sigstore bundle as JSON text."""
    sg = _sigstore()
    config = _trust_config(sg, signer)
    token = identity_token(sg, signer.identity_token)
    try:
        statement = sg.dsse.Statement(payload)
        context = sg.sign.SigningContext.from_trust_config(config)
        with context.signer(token, cache=True) as s:
            bundle = s.sign_dsse(statement)
    except Exception as exc:  # sigstore raises many kinds (HTTP, Fulcio, Rekor, SCT): all one message
        raise LockSignatureError(f"keyless signing failed: {_one_line(exc)}") from exc
    return bundle.to_json()


def trusted_root(sg, path: Path | None, staging: bool = False):
    """The roots of trust: an archived trusted_root.json, or the sigstore package's offline copy."""
    models = sg.models
    try:
        if path is not None:
            return models.TrustedRoot.from_file(str(path))
        return instance_trust_config(sg, staging, offline=True).trusted_root
    except OSError as exc:
        raise LockSignatureError(f"{path}: cannot read trusted root: {exc.strerror}") from exc
    except (ValueError, sg.errors.Error) as exc:
        raise LockSignatureError(f"{path or 'offline Sigstore trusted root'}: unusable trusted root: "
                          f"{_one_line(exc)}") from exc


def instance_trust_config(sg, staging: bool, offline: bool):
    """Sigstore public-good (or staging) trust config through TUF; offline uses the local/bundled copy."""
    import logging

    quiet = logging.getLogger("sigstore")
    level = quiet.level
    if offline:                          # "TUF repository is loaded in offline mode" is expected here
        quiet.setLevel(logging.ERROR)
    try:
        models = sg.models
        return models.ClientTrustConfig.staging(offline=offline) if staging else \
            models.ClientTrustConfig.production(offline=offline)
    finally:
        quiet.setLevel(level)


def export_trusted_root(out: Path, staging: bool = False, offline: bool = False) -> Path:
    """Write the instance's current trusted_root.json (TUF-verified) for archiving beside signed locks."""
    from cernvm_build.util.files import atomic_write

    sg = _sigstore()
    try:
        root = instance_trust_config(sg, staging, offline).trusted_root
    except Exception as exc:  # TUF and network errors of many kinds
        raise LockSignatureError(f"cannot obtain the Sigstore trusted root: {_one_line(exc)}") from exc
    atomic_write(out, json.dumps(json.loads(root._inner.to_json()), indent=2, sort_keys=True) + "\n")
    return out


@dataclass(frozen=True)
class KeylessIdentity:
    """What a keyless bundle must prove: the certificate's identity (SAN) and its OIDC issuer."""

    identity: str
    issuer: str
    trusted_root: Path | None = None
    staging: bool = False


def verify_bundle(bundle_text: str, bpath: Path, expect: KeylessIdentity) -> tuple[str, bytes, str]:
    """Verify a keyless bundle offline; return (payload type, payload, signer identity).

    Checks, through sigstore's Verifier: certificate chain to the trusted Fulcio root at the
    logged time, the embedded SCT, identity and issuer, Rekor inclusion proof, signed checkpoint
    and signed entry timestamp, the DSSE signature, and that the log entry matches the envelope.
    """
    sg = _sigstore()
    root = trusted_root(sg, expect.trusted_root, expect.staging)
    try:
        bundle = sg.models.Bundle.from_json(bundle_text)
    except (ValueError, sg.errors.Error) as exc:
        raise LockSignatureError(f"{bpath}: malformed Sigstore bundle: {_one_line(exc)}") from exc
    policy = sg.verify.policy.Identity(identity=expect.identity, issuer=expect.issuer)
    try:
        verifier = sg.verify.Verifier(trusted_root=root)
        payload_type, payload = verifier.verify_dsse(bundle, policy)
    except Exception as exc:  # VerificationError, CertValidationError, InvalidSignature, ...
        raise LockSignatureError(f"{bpath}: keyless signature does not verify: {_one_line(exc)}") from exc
    return payload_type, payload, expect.identity


def is_keyless(bundle: dict) -> bool:
    """A bundle made with a Fulcio certificate (rather than a public-key hint)."""
    vm = bundle.get("verificationMaterial")
    return isinstance(vm, dict) and ("certificate" in vm or "x509CertificateChain" in vm)


def bundle_identity(bundle: dict) -> str | None:
    """Best-effort signer identity (SAN) of a keyless bundle, for messages; None if unreadable."""
    import base64

    from cryptography import x509

    try:
        der = base64.b64decode(bundle["verificationMaterial"]["certificate"]["rawBytes"])
        san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.RFC822Name) + san.get_values_for_type(
            x509.UniformResourceIdentifier)
        return names[0] if names else None
    except (KeyError, TypeError, ValueError, x509.ExtensionNotFound):
        return None


FULCIO_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"     # DER UTF8String
FULCIO_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"     # raw bytes (deprecated, still issued)


def bundle_issuer(bundle: dict) -> str | None:
    """The OIDC issuer Fulcio wrote into a keyless bundle's certificate; None if unreadable."""
    import base64

    from cryptography import x509

    try:
        der = base64.b64decode(bundle["verificationMaterial"]["certificate"]["rawBytes"])
        cert = x509.load_der_x509_certificate(der)
    except (KeyError, TypeError, ValueError):
        return None
    for ext in cert.extensions:
        if ext.oid.dotted_string not in (FULCIO_ISSUER_V2, FULCIO_ISSUER_V1):
            continue
        raw = ext.value.value
        if ext.oid.dotted_string == FULCIO_ISSUER_V2 and len(raw) > 2 and raw[0] == 0x0C:
            raw = raw[2:] if raw[1] < 0x80 else raw[2 + (raw[1] & 0x7F):]
        return raw.decode("utf-8", "replace")
    return None


def dumps_bundle(text: str) -> str:
    """Stable layout for the bundle file (sorted keys, two-space indent, final newline)."""
    return json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
