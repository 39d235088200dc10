"""Real Debian fixture repositories, built at test time: dpkg-deb, apt-ftparchive, gpg-signed Release.

Used by the lock, fetch and rootfs tests. Packages are tiny but real .deb files; the Release is
signed (InRelease and Release.gpg) with a throw-away key whose public half is exported as keyring.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class DebPkg:
    name: str
    version: str = "1.0"
    arch: str = "amd64"
    depends: str = ""
    pre_depends: str = ""
    recommends: str = ""
    provides: str = ""
    conflicts: str = ""
    breaks: str = ""
    priority: str = "optional"
    essential: bool = False
    files: dict[str, str] = field(default_factory=dict)       # path in the tree -> content
    scripts: dict[str, str] = field(default_factory=dict)     # postinst/preinst/... -> script text
    component: str = "main"


@dataclass
class RepoInfo:
    root: Path
    url: str
    suite: str
    keyring: Path
    gnupghome: Path
    key_fingerprint: str


def make_key(home: Path, name: str = "cernvm-build test key") -> tuple[Path, str]:
    """A throw-away signing key in HOME; returns (exported public keyring, fingerprint)."""
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    subprocess.run(["gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <test@example.org>",
                    "ed25519", "sign", "never"], check=True, env=env, capture_output=True)
    out = subprocess.run(["gpg", "--batch", "--with-colons", "--list-keys"], check=True, env=env,
                         capture_output=True, text=True).stdout
    fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
    keyring = home / "public.gpg"
    keyring.write_bytes(subprocess.run(["gpg", "--batch", "--export", fpr], check=True, env=env,
                                       capture_output=True).stdout)
    return keyring, fpr


def build_deb(pkg: DebPkg, outdir: Path) -> Path:
    """One real .deb built by dpkg-deb (root-owned files, deterministic timestamps)."""
    tree = outdir / f"build-{pkg.name}-{pkg.version}"
    (tree / "DEBIAN").mkdir(parents=True)
    files = pkg.files or {f"usr/share/doc/{pkg.name}/README": f"{pkg.name} {pkg.version}\n"}
    for rel, content in files.items():
        p = tree / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
        if rel.startswith(("usr/bin/", "bin/", "usr/sbin/")):
            p.chmod(0o755)
    fields = [f"Package: {pkg.name}", f"Version: {pkg.version}", f"Architecture: {pkg.arch}",
              "Maintainer: Test <test@example.org>", f"Priority: {pkg.priority}", "Section: misc"]
    if pkg.essential:
        fields.append("Essential: yes")
    for key, value in (("Pre-Depends", pkg.pre_depends), ("Depends", pkg.depends),
                       ("Recommends", pkg.recommends), ("Provides", pkg.provides),
                       ("Conflicts", pkg.conflicts), ("Breaks", pkg.breaks)):
        if value:
            fields.append(f"{key}: {value}")
    fields.append(f"Description: test package {pkg.name}\n fixture for cernvm-build tests")
    (tree / "DEBIAN" / "control").write_text("\n".join(fields) + "\n")
    for script, text in pkg.scripts.items():
        sp = tree / "DEBIAN" / script
        sp.write_text(textwrap.dedent(text))
        sp.chmod(0o755)
    deb = outdir / f"{pkg.name}_{pkg.version.split(':')[-1]}_{pkg.arch}.deb"
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)],
                   check=True, capture_output=True, env=env)
    return deb


def build_deb_repo(dest: Path, packages: list[DebPkg], suite: str = "stable", sign: bool = True,
                   arch: str = "amd64", key: tuple[Path, str] | None = None,
                   gnupghome: Path | None = None, date: str = "Tue, 14 Nov 2023 22:13:20 UTC",
                   valid_until: str | None = None) -> RepoInfo:
    """A signed archive at DEST: pool/, dists/SUITE/{InRelease,Release,Release.gpg}, Packages(.gz|.xz)."""
    dest.mkdir(parents=True, exist_ok=True)
    home = gnupghome or dest.parent / f"{dest.name}-gnupg"
    keyring, fpr = key or make_key(home)
    components = sorted({p.component for p in packages}) or ["main"]
    for p in packages:
        pool = dest / "pool" / p.component / p.name[0] / p.name
        pool.mkdir(parents=True, exist_ok=True)
        build_deb(p, pool)
    for comp in components:
        bindir = dest / "dists" / suite / comp / f"binary-{arch}"
        bindir.mkdir(parents=True, exist_ok=True)
        out = subprocess.run(["apt-ftparchive", "packages", f"pool/{comp}"], cwd=dest, check=True,
                             capture_output=True).stdout
        (bindir / "Packages").write_bytes(out)
        subprocess.run(["gzip", "-9n", "-k", "-f", str(bindir / "Packages")], check=True)
        subprocess.run(["xz", "-k", "-f", str(bindir / "Packages")], check=True)
    conf = [f'APT::FTPArchive::Release::{k} "{v}";' for k, v in (
        ("Suite", suite), ("Codename", suite), ("Architectures", arch),
        ("Components", " ".join(components)), ("Date", date))]
    conf_file = dest.parent / f"{dest.name}-release.conf"
    conf_file.write_text("\n".join(conf) + "\n")
    release = subprocess.run(["apt-ftparchive", "-c", str(conf_file), "release", f"dists/{suite}"],
                             cwd=dest, check=True, capture_output=True).stdout
    if valid_until:   # apt-ftparchive has no literal Valid-Until: add it after Date, before signing
        release = release.replace(b"\nSuite:", f"\nValid-Until: {valid_until}\nSuite:".encode(), 1)
    rel_path = dest / "dists" / suite / "Release"
    rel_path.write_bytes(release)
    if sign:
        sign_release(dest / "dists" / suite, home, fpr)
    return RepoInfo(dest, f"file://{dest}", suite, keyring, home, fpr)


def sign_release(dists: Path, gnupghome: Path, fpr: str) -> None:
    env = {**os.environ, "GNUPGHOME": str(gnupghome)}
    for args, out in ((["--clearsign"], "InRelease"), (["--detach-sign", "--armor"], "Release.gpg")):
        (dists / out).unlink(missing_ok=True)
        subprocess.run(["gpg", "--batch", "--yes", "--local-user", fpr, "--digest-algo", "SHA256", *args,
                        "--output", str(dists / out), str(dists / "Release")],
                       check=True, env=env, capture_output=True)


def write_recipe(path: Path, repo: RepoInfo, packages: list[str], name: str = "fixture", **extra) -> Path:
    """A recipe TOML for REPO; EXTRA keys (weak, exclude, pin, essential, ...) are written verbatim."""
    lines = [f'name = "{name}"', 'flavour = "deb"', 'arch = "amd64"',
             "packages = [" + ", ".join(f'"{p}"' for p in packages) + "]"]
    for k, v in extra.items():
        key = k.replace("_", "-") if k not in ("pin",) else k
        if isinstance(v, bool):
            lines.append(f"{key} = {'true' if v else 'false'}")
        elif isinstance(v, list):
            lines.append(f"{key} = [" + ", ".join(f'"{x}"' for x in v) + "]")
        elif isinstance(v, dict):
            lines.append(f"{key} = {{ " + ", ".join(f'"{a}" = "{b}"' for a, b in v.items()) + " }")
        else:
            lines.append(f'{key} = "{v}"')
    lines += ["", "[[repositories]]", 'name = "fixture"', f'url = "{repo.url}"', f'suite = "{repo.suite}"',
              'components = ["main"]', f'keyring = "{repo.keyring}"']
    path.write_text("\n".join(lines) + "\n")
    return path
