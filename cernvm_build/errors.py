"""Typed errors. Each carries the one-line, user-facing message the CLI prints before exiting non-zero."""

from __future__ import annotations


class CernVMBuildError(Exception):
    """Base class: str(error) is the complete message for the user (file, package or field named)."""

    exit_code = 1


class RecipeError(CernVMBuildError):
    """A shopping list is malformed: names the file, the key and what was expected."""


class LockError(CernVMBuildError):
    """A closure lock is malformed, inconsistent or differs from what was expected."""


class MetadataError(CernVMBuildError):
    """Repository metadata could not be fetched, parsed or trusted (signature, checksum, expiry)."""


class SignatureError(MetadataError):
    """A signature did not verify against the configured keys."""


class ChecksumError(MetadataError):
    """A file's digest differs from the digest a signed document lists for it."""


class FetchError(CernVMBuildError):
    """A download failed after retries."""


class ResolveError(CernVMBuildError):
    """The solver found no closure: carries libsolv's problems and proposed solutions."""

    exit_code = 2

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or []

    def details(self) -> str:
        return "\n".join(self.problems)


class UnknownPackageError(ResolveError):
    """A shopping-list entry names no package in the repositories."""


class RebaseConflict(ResolveError):
    """Local packages are no longer installable on the new base (update policy rebase)."""

    exit_code = 3


class LockSignatureError(CernVMBuildError):
    """A lock's signature bundle or signing key is missing, malformed or does not verify."""


class PackageChecksumError(FetchError):
    """A package file's sha256 or size differs from the lock: names the package; the file was refused."""


class MissingPackagesError(FetchError):
    """--offline and some packages are neither in the cache nor in a mirror: lists them."""

    def __init__(self, message: str, missing: list[str] | None = None):
        super().__init__(message)
        self.missing = missing or []

    def details(self) -> str:
        return "\n".join(f"  missing: {m}" for m in self.missing)


class RootfsError(CernVMBuildError):
    """A root tree could not be built safely (unsafe payload member, failed maintainer script, ...)."""


class CvmfsError(CernVMBuildError):
    """A CernVM-FS repository could not be written or read (names the repository and the object)."""


class CvmfsIntegrityError(CvmfsError, ChecksumError):
    """An object, catalog or manifest is missing, corrupted or inconsistent."""


class CvmfsSignatureError(CvmfsError, SignatureError):
    """The manifest or whitelist signature does not verify, or the certificate is not whitelisted."""


class CvmfsWhitelistExpired(CvmfsSignatureError):
    """The repository whitelist has expired (readers accept it only when explicitly asked to)."""


class CvmfsBusyError(CvmfsError):
    """Another publisher holds the repository's transaction lock."""

    exit_code = 3


class PipelineConfigError(CernVMBuildError):
    """A pipeline definition (`pipeline/*.toml`) is malformed: names the file and the key."""


class PipelineStageError(CernVMBuildError):
    """A pipeline stage failed: `stage NAME: <the stage's own one-line error>`; earlier outputs stay."""

    def __init__(self, stage: str, cause: BaseException):
        super().__init__(f"stage {stage}: {cause}")
        self.stage, self.cause = stage, cause
        self.exit_code = getattr(cause, "exit_code", 1)

    def details(self) -> str:
        details = getattr(self.cause, "details", None)
        return details() if callable(details) else ""


class PipelineBusyError(CernVMBuildError):
    """Another `build` holds the state directory."""

    exit_code = 3


class ImageError(CernVMBuildError):
    """A classic disk image could not be made (mkfs.ext4, debugfs or qemu-img failed or is missing)."""


class BootError(CernVMBuildError):
    """The boot client, kernel, initramfs or ISO could not be built (names the tool or file)."""


class ClientBuildError(BootError):
    """The C CernVM-FS client did not compile (compiler output attached as details)."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output

    def details(self) -> str:
        return self.output


class MountError(BootError):
    """The client refused to mount or failed: carries its one-line reason (bad key, expired whitelist...)."""


class ReportError(CernVMBuildError):
    """The release page could not be made: not a repository, an unknown tag, an unusable output directory."""
