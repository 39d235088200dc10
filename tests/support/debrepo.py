"""A real, signed Debian repository built at test time from package descriptions.

Packages are built with `dpkg-deb --build` (control files, maintainer scripts, conffiles, triggers);
a package may instead carry a hand-made data.tar (for hostile payloads dpkg-deb would never build),
in which case the .deb's ar container is written here. Indexes come from `apt-ftparchive packages`
and `release`; Release is signed (InRelease + Release.gpg) with a throw-away key made by
`gpg --batch --quick-gen-key` in a temporary GNUPGHOME, exported as a binary keyring.

    repo = build_deb_repo(tmp / "repo", [DebPkg("hello", depends=["libfoo"]), DebPkg("libfoo")])
    recipe = repo.recipe("t", ["hello"])      # TOML text for `cernvm-build lock`

Dependency fields take a list or an already-joined string ("a | b (>= 1), c"). Several repositories
can share one key (make_key + key=/gnupghome=), to model two generations of one archive.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

EPOCH = 1700000000           # fixed mtimes: the fixture's own bytes are reproducible


@dataclass
class DebPkg:
    """One binary package. `files` maps absolute paths to content; `scripts` maps preinst/postinst/..."""

    name: str
    version: str = "1.0"
    arch: str = "all"
    depends: list[str] | str = field(default_factory=list)
    pre_depends: list[str] | str = field(default_factory=list)
    recommends: list[str] | str = field(default_factory=list)
    provides: list[str] | str = field(default_factory=list)
    conflicts: list[str] | str = field(default_factory=list)
    breaks: list[str] | str = field(default_factory=list)
    files: dict[str, bytes | str] = field(default_factory=dict)
    modes: dict[str, int] = field(default_factory=dict)
    symlinks: dict[str, str] = field(default_factory=dict)
    hardlinks: dict[str, str] = field(default_factory=dict)     # new path -> existing path in files
    dirs: dict[str, int] = field(default_factory=dict)           # extra (empty) directories -> mode
    scripts: dict[str, str] = field(default_factory=dict)
    conffiles: list[str] = field(default_factory=list)
    triggers: str = ""
    essential: bool = False
    priority: str = "optional"
    section: str = "misc"
    multi_arch: str = ""
    extra_fields: dict[str, str] = field(default_factory=dict)
    data_tar: bytes | None = None        # a hand-made payload: the .deb is assembled without dpkg-deb

    @property
    def filename(self) -> str:
        v = self.version.split(":", 1)[-1]
        return f"{self.name}_{v}_{self.arch}.deb"

    def control(self) -> str:
        lines = [f"Package: {self.name}", f"Version: {self.version}", f"Architecture: {self.arch}",
                 "Maintainer: cernvm-build tests <tests@example.invalid>", f"Priority: {self.priority}",
                 f"Section: {self.section}"]
        if self.essential:
            lines.append("Essential: yes")
        if self.multi_arch:
            lines.append(f"Multi-Arch: {self.multi_arch}")
        for key, value in (("Pre-Depends", self.pre_depends), ("Depends", self.depends),
                           ("Recommends", self.recommends), ("Provides", self.provides),
                           ("Conflicts", self.conflicts), ("Breaks", self.breaks)):
            if value:
                lines.append(f"{key}: " + (value if isinstance(value, str) else ", ".join(value)))
        lines += [f"{k}: {v}" for k, v in self.extra_fields.items()]
        lines += [f"Description: test package {self.name}", " Built by tests/support/debrepo.py."]
        return "\n".join(lines) + "\n"


@dataclass
class RepoInfo:
    root: Path
    url: str
    suite: str
    components: tuple[str, ...]
    arch: str
    keyring: Path | None
    fingerprint: str | None
    debs: dict[str, Path]
    gnupghome: Path | None = None

    @property
    def key_fingerprint(self) -> str | None:
        return self.fingerprint

    def recipe(self, name: str, packages: list[str], repo_name: str = "fixture", **extra: object) -> str:
        """A recipe (TOML text) resolving PACKAGES against this repository."""
        import json

        lines = [f'name = "{name}"', 'flavour = "deb"', f'arch = "{self.arch}"',
                 f"packages = {json.dumps(packages)}"]
        for k, v in extra.items():
            key = k if k == "pin" else k.replace("_", "-")
            if isinstance(v, dict):
                lines.append(f"{key} = {{ " + ", ".join(f"{json.dumps(a)} = {json.dumps(b)}"
                                                       for a, b in v.items()) + " }")
            else:
                lines.append(f"{key} = {json.dumps(v)}")
        lines += ["", "[[repositories]]", f'name = "{repo_name}"', f'url = "{self.url}"',
                  f'suite = "{self.suite}"', f"components = {json.dumps(list(self.components))}"]
        if self.keyring:
            lines.append(f'keyring = "{self.keyring}"')
        return "\n".join(lines) + "\n"


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, **kw)
    if r.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed: {r.stderr.decode(errors='replace')}")
    return r


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    """A System V ar archive as dpkg expects it (debian-binary, control.tar.*, data.tar.*)."""
    out = [b"!<arch>\n"]
    for name, data in members:
        hdr = f"{name:<16}{EPOCH:<12}{0:<6}{0:<6}{0o100644:<8o}{len(data):<10}`\n".encode()
        out.append(hdr + data + (b"\n" if len(data) % 2 else b""))
    return b"".join(out)


def _control_tar(pkg: DebPkg) -> bytes:
    buf = io.BytesIO()
    files = {"control": pkg.control().encode()}
    for s, text in pkg.scripts.items():
        files[s] = text.encode()
    if pkg.conffiles:
        files["conffiles"] = ("\n".join(pkg.conffiles) + "\n").encode()
    if pkg.triggers:
        files["triggers"] = pkg.triggers.encode()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        d = tarfile.TarInfo("./")
        d.type, d.mode, d.mtime = tarfile.DIRTYPE, 0o755, EPOCH
        tf.addfile(d)
        for name, data in sorted(files.items()):
            ti = tarfile.TarInfo("./" + name)
            ti.size, ti.mtime = len(data), EPOCH
            ti.mode = 0o755 if name in pkg.scripts else 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def tar_bytes(entries: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]]) -> bytes:
    """Helper for hostile payloads: an uncompressed tar of the given members, in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for e in entries:
            if isinstance(e, tuple):
                ti, data = e
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(e)
    return buf.getvalue()


def build_deb(pkg: DebPkg, outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / pkg.filename
    if pkg.data_tar is not None:
        out.write_bytes(_ar([("debian-binary", b"2.0\n"), ("control.tar.gz", _control_tar(pkg)),
                             ("data.tar.xz", lzma.compress(pkg.data_tar))]))
        return out
    with tempfile.TemporaryDirectory(prefix="cvb-deb-") as t:
        tree = Path(t) / "tree"
        (tree / "DEBIAN").mkdir(parents=True)
        (tree / "DEBIAN" / "control").write_text(pkg.control())
        for s, text in pkg.scripts.items():
            p = tree / "DEBIAN" / s
            p.write_text(text)
            p.chmod(0o755)
        if pkg.conffiles:
            (tree / "DEBIAN" / "conffiles").write_text("\n".join(pkg.conffiles) + "\n")
        if pkg.triggers:
            (tree / "DEBIAN" / "triggers").write_text(pkg.triggers)
        for path, content in pkg.files.items():
            p = tree / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(content.encode() if isinstance(content, str) else content)
            p.chmod(pkg.modes.get(path, 0o644))
        for path, mode in pkg.dirs.items():
            p = tree / path.lstrip("/")
            p.mkdir(parents=True, exist_ok=True)
            p.chmod(mode)
        for path, target in pkg.symlinks.items():
            p = tree / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, p)
        for path, existing in pkg.hardlinks.items():
            p = tree / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            os.link(tree / existing.lstrip("/"), p)
        for dirpath, dirnames, filenames in os.walk(tree):
            for n in dirnames + filenames:
                os.utime(os.path.join(dirpath, n), (EPOCH, EPOCH), follow_symlinks=False)
        env = dict(os.environ, SOURCE_DATE_EPOCH=str(EPOCH))
        _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(out)], env=env)
    return out


def make_key(gnupghome: Path, name: str = "cernvm-build test repository") -> tuple[Path, str]:
    """A throw-away signing key in GNUPGHOME; returns (exported binary public keyring, fingerprint)."""
    gnupghome.mkdir(parents=True, exist_ok=True)
    gnupghome.chmod(0o700)
    env = dict(os.environ, GNUPGHOME=str(gnupghome))
    _run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--quick-gen-key",
          f"{name} <repo@example.invalid>", "ed25519", "sign", "never"], env=env)
    out = _run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env).stdout.decode()
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    keyring = gnupghome / f"{fpr}.gpg"
    keyring.write_bytes(_run(["gpg", "--batch", "--export", fpr], env=env).stdout)
    return keyring, fpr


def sign_release(dists: Path, gnupghome: Path, fpr: str) -> None:
    """(Re-)sign DISTS/Release as InRelease and Release.gpg with key FPR from GNUPGHOME."""
    env = dict(os.environ, GNUPGHOME=str(gnupghome))
    rel = dists / "Release"
    base = ["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "", "-u", fpr,
            "--digest-algo", "SHA256"]
    _run(base + ["--clearsign", "-o", str(dists / "InRelease"), str(rel)], env=env)
    _run(base + ["--detach-sign", "-o", str(dists / "Release.gpg"), str(rel)], env=env)


def build_deb_repo(dest: str | Path, packages: list[DebPkg], suite: str = "stable", sign: bool = True,
                   component: str = "main", arch: str = "amd64", date: str | None = None,
                   key: tuple[Path, str] | None = None, gnupghome: Path | None = None,
                   valid_until: str | None = None) -> RepoInfo:
    """Build DEST as a Debian archive (pool/ + dists/SUITE) holding PACKAGES; signed unless sign=False.

    KEY/GNUPGHOME (from make_key) sign with an existing key; otherwise a new key is made in
    DEST-gnupg beside DEST and kept there (tests re-sign with it)."""
    dest = Path(dest).absolute()
    pool = dest / "pool" / component
    debs = {p.name: build_deb(p, pool / p.name[0] / p.name) for p in packages}
    bindir = dest / "dists" / suite / component / f"binary-{arch}"
    bindir.mkdir(parents=True, exist_ok=True)
    index = _run(["apt-ftparchive", "packages", f"pool/{component}"], cwd=dest).stdout
    (bindir / "Packages").write_bytes(index)
    (bindir / "Packages.gz").write_bytes(gzip.compress(index, mtime=EPOCH))
    (bindir / "Packages.xz").write_bytes(lzma.compress(index))
    date = date or time.strftime("%a, %d %b %Y %H:%M:%S UTC", time.gmtime(EPOCH))
    opts = []
    for k, v in (("Origin", "cernvm-build-tests"), ("Label", "fixture"), ("Suite", suite), ("Codename", suite),
                 ("Components", component), ("Architectures", arch), ("Date", date)):
        opts += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
    release = _run(["apt-ftparchive", *opts, "release", f"dists/{suite}"], cwd=dest).stdout
    if valid_until:   # apt-ftparchive has no literal Valid-Until: add it after Date, before signing
        release = release.replace(b"\nSuite:", f"\nValid-Until: {valid_until}\nSuite:".encode(), 1)
    (dest / "dists" / suite / "Release").write_bytes(release)
    keyring = fpr = home = None
    if sign:
        home = gnupghome or dest.parent / f"{dest.name}-gnupg"
        keyring, fpr = key or make_key(home)
        sign_release(dest / "dists" / suite, home, fpr)
    return RepoInfo(dest, f"file://{dest}", suite, (component,), arch, keyring, fpr, debs, home)


def write_recipe(path: Path, repo: RepoInfo, packages: list[str], name: str = "fixture", **extra) -> Path:
    """REPO.recipe(...) written to PATH (EXTRA keys such as weak, exclude, pin go in verbatim)."""
    path.write_text(repo.recipe(name, packages, **extra))
    return path


def host_shell_package(name: str = "fixture-sh") -> DebPkg:
    """/bin/sh (the host's dash) with its shared libraries, so maintainer scripts can run in a chroot."""
    dash = Path(shutil.which("dash") or "/bin/dash").resolve()
    files: dict[str, bytes | str] = {"/bin/sh": dash.read_bytes()}
    modes = {"/bin/sh": 0o755}
    out = _run(["ldd", str(dash)]).stdout.decode()
    for line in out.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 and parts[2].startswith("/") else (
            parts[0] if parts and parts[0].startswith("/") else None)
        if lib:
            files[lib] = Path(lib).read_bytes()
            modes[lib] = 0o755
    return DebPkg(name, "1.0", arch="amd64", files=files, modes=modes)
