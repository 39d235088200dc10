"""A real rpm-md repository built at test time: rpmbuild'd packages, createrepo_c, a signed repomd.xml.

The packages cover what a resolver must get right (versioned requires, virtual provides with two
providers, rich deps, conflicts, obsoletes, weak deps both ways, a file dependency, two versions of
one package, noarch, an epoch) and are tiny: one text file each, nothing compiled. Specs sharing an
(epoch, version, release) are built as sub-packages of one spec to keep rpmbuild calls few, and the
specs are built in parallel. Everything is pinned (SOURCE_DATE_EPOCH, createrepo_c --revision) so
two builds give the same repodata apart from the signatures.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ARCH = "x86_64"
REVISION = "1700000000"


@dataclass(frozen=True)
class Pkg:
    """One binary package of the fixture (its spec fragment)."""

    name: str
    version: str = "1.0"
    release: str = "1"
    epoch: int = 0
    arch: str = ARCH                     # "x86_64" or "noarch"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    obsoletes: tuple[str, ...] = ()
    recommends: tuple[str, ...] = ()
    supplements: tuple[str, ...] = ()
    files: tuple[str, ...] = ()          # absolute paths; default /usr/share/NAME/NAME.txt
    spec: str = ""                       # packages with the same (epoch, version, release, spec) share a spec
    symlinks: tuple[tuple[str, str], ...] = ()   # (absolute path, target) shipped as symlinks
    post_lua: str = ""                   # a %post scriptlet in rpm's built-in Lua (needs no /bin/sh)
    caps: tuple[tuple[str, str], ...] = ()       # (file among `files`, libcap text) as %caps(TEXT) FILE

    @property
    def nevra(self) -> str:
        e = f"{self.epoch}:" if self.epoch else ""
        return f"{self.name}-{e}{self.version}-{self.release}.{self.arch}"

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


# The fixture universe. Comments say what each package exercises.
PACKAGES: tuple[Pkg, ...] = (
    Pkg("app", requires=("libfoo >= 2.0", "mta", "(gzip-lite or bzip-lite)", "/usr/bin/foo"),
        recommends=("app-doc",)),                                       # versioned, virtual, rich, file
    Pkg("app-doc", arch="noarch"),                                      # pulled only by Recommends
    Pkg("app-extras", arch="noarch", supplements=("app",)),             # pulled only by Supplements
    Pkg("libfoo", version="1.0"),                                       # two versions of one package
    Pkg("libfoo", version="2.0"),
    Pkg("postfix-lite", provides=("mta",), conflicts=("sendmail-lite",)),   # two providers of mta
    Pkg("sendmail-lite", provides=("mta",), conflicts=("postfix-lite",)),
    Pkg("gzip-lite", arch="noarch"),                                    # alternatives of a rich dep
    Pkg("bzip-lite", arch="noarch"),
    Pkg("foo-tools", epoch=1, version="3.1", files=("/usr/bin/foo",)),  # provides a file; has an epoch
    Pkg("oldtool", arch="noarch"),                                      # obsoleted by newtool
    Pkg("newtool", version="2.0", arch="noarch", obsoletes=("oldtool < 2.0",), provides=("oldtool = 2.0",)),
    Pkg("legacy", requires=("libfoo < 2.0",)),                          # forces the older libfoo
    Pkg("badpkg", arch="noarch", conflicts=("libfoo",)),                # unresolvable with app
    Pkg("mailer", arch="noarch", requires=("mta",), recommends=("sendmail-lite",)),  # weak dep picks provider
    Pkg("uses-bzip", arch="noarch", requires=("bzip-lite",)),           # rich dep met by a chosen package
    Pkg("toolbox", arch="noarch", requires=("/usr/bin/foo", "oldtool")),
    Pkg("optdata", arch="noarch", files=("/opt/optdata/data.txt",)),   # a file primary.xml does not list
    Pkg("optuser", arch="noarch", requires=("/opt/optdata/data.txt",)),  # ... needed: filelists
)


def _spec(group: list[Pkg]) -> str:
    main = group[0]
    lines = ["%global debug_package %{nil}", "%global _build_id_links none",
             "%global __os_install_post %{nil}", "%global __brp_mangle_shebangs %{nil}"]

    def preamble(p: Pkg) -> None:
        if p.arch == "noarch":
            lines.append("BuildArch: noarch")
        for tag, values in (("Requires", p.requires), ("Provides", p.provides), ("Conflicts", p.conflicts),
                            ("Obsoletes", p.obsoletes), ("Recommends", p.recommends),
                            ("Supplements", p.supplements)):
            lines.extend(f"{tag}: {v}" for v in values)
        lines.append("AutoReqProv: no")

    lines += [f"Name: {main.name}", f"Version: {main.version}", f"Release: {main.release}",
              "Summary: cernvm-build test package", "License: MIT"]
    if main.epoch:
        lines.append(f"Epoch: {main.epoch}")
    preamble(main)
    lines += ["%description", f"{main.name}: cernvm-build rpm-md fixture."]
    for p in group[1:]:
        lines += [f"%package -n {p.name}", f"Summary: {p.name} test package"]
        preamble(p)
        lines += [f"%description -n {p.name}", f"{p.name}: cernvm-build rpm-md fixture."]
    lines += ["%install"]
    for p in group:
        for f in p.files or (f"/usr/share/{p.name}/{p.name}.txt",):
            lines += [f"mkdir -p %{{buildroot}}{os.path.dirname(f)}",
                      f"printf '#!/bin/sh\\necho {p.name}\\n' > %{{buildroot}}{f}",
                      f"chmod 0755 %{{buildroot}}{f}"]
        for link, target in p.symlinks:
            lines += [f"mkdir -p %{{buildroot}}{os.path.dirname(link)}", f"ln -s {target} %{{buildroot}}{link}"]
    for i, p in enumerate(group):
        if p.post_lua:
            lines += ["%post -p <lua>" if i == 0 else f"%post -n {p.name} -p <lua>", p.post_lua]
        lines.append("%files" if i == 0 else f"%files -n {p.name}")
        caps = dict(p.caps)
        lines.extend(f"%caps({caps[f]}) {f}" if f in caps else f for f in p.files or (f"/usr/share/{p.name}/{p.name}.txt",))
        lines.extend(link for link, _ in p.symlinks)
    return "\n".join(lines) + "\n"


def _groups(packages: tuple[Pkg, ...]) -> list[list[Pkg]]:
    """Packages sharing (epoch, version, release) become one spec; an arch package leads (rpm's rule)."""
    by: dict[tuple, list[Pkg]] = {}
    for p in packages:
        by.setdefault((p.epoch, p.version, p.release, p.spec), []).append(p)
    return [sorted(g, key=lambda p: (p.arch == "noarch", p.name)) for _, g in sorted(by.items())]


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def build_rpms(workdir: Path, out: Path, packages: tuple[Pkg, ...] = PACKAGES) -> dict[str, Path]:
    """rpmbuild every package into OUT; returns NEVRA -> .rpm path."""
    env = {**os.environ, "SOURCE_DATE_EPOCH": REVISION, "LC_ALL": "C"}
    out.mkdir(parents=True, exist_ok=True)

    def one(i: int, group: list[Pkg]) -> None:
        top = workdir / f"top{i}"
        (top / "SPECS").mkdir(parents=True)
        spec = top / "SPECS" / f"{group[0].name}.spec"
        spec.write_text(_spec(group))
        _run(["rpmbuild", "-bb", "--quiet", "--nodeps", "--define", f"_topdir {top}",
              "--define", "_buildhost cernvm-build.test", "--define", "use_source_date_epoch_as_buildtime 1",
              "--define", "clamp_mtime_to_source_date_epoch 1", "--define", "_binary_payload w2.xzdio",
              "--define", f"_rpmdir {out}", "--define", "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
              str(spec)], env=env)

    groups = _groups(packages)
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as ex:
        list(ex.map(lambda a: one(*a), enumerate(groups)))
    result = {}
    for p in packages:
        path = out / p.filename
        if not path.exists():
            raise RuntimeError(f"rpmbuild did not produce {path}")
        os.utime(path, (int(REVISION), int(REVISION)))   # primary.xml records the file mtime
        result[p.nevra] = path
    return result


@dataclass
class GpgHome:
    """A throw-away GNUPGHOME with signing keys made on the spot (no passphrase)."""

    home: Path
    fingerprints: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return _run(["gpg", "--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", "", *args],
                    env=self.env(), **kw)

    def new_key(self, label: str) -> str:
        self.gpg("--quick-gen-key", f"cernvm-build test {label} <{label}@cernvm-build.test>",
                 "ed25519", "sign", "never")
        out = self.gpg("--with-colons", "--list-secret-keys", f"{label}@cernvm-build.test").stdout
        fpr = next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
        self.fingerprints[label] = fpr
        return fpr

    def export(self, label: str, dest: Path) -> Path:
        dest.write_text(self.gpg("--armor", "--export", self.fingerprints[label]).stdout)
        return dest

    def sign_detached(self, label: str, path: Path) -> Path:
        sig = path.with_name(path.name + ".asc")
        sig.unlink(missing_ok=True)
        self.gpg("--local-user", self.fingerprints[label], "--armor", "--detach-sign", "-o", str(sig), str(path))
        return sig

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env(), capture_output=True)
        shutil.rmtree(self.home, ignore_errors=True)


def createrepo(repo: Path, *extra: str) -> None:
    """createrepo_c with a fixed revision and timestamps, so the repodata is reproducible."""
    _run(["createrepo_c", "--quiet", "--no-database", "--revision", REVISION, "--set-timestamp-to-revision",
          "--checksum", "sha256", *extra, str(repo)], env={**os.environ, "SOURCE_DATE_EPOCH": REVISION})


def recompress_index(repo: Path, kind: str, ext: str) -> Path:
    """Re-compress one index (KIND: primary, filelists) as .xz, .bz2 or .zst and update repomd.xml.

    createrepo_c 0.17 (Debian 12) cannot write zstd, which Fedora's repositories use, so the
    fixture does it by hand. repomd.xml must be re-signed afterwards.
    """
    import bz2
    import gzip
    import hashlib
    import lzma
    import re

    repomd = repo / "repodata" / "repomd.xml"
    text = repomd.read_text()
    block = re.search(rf'<data type="{kind}">.*?</data>', text, flags=re.S)
    assert block, kind
    href = re.search(r'href="([^"]+)"', block.group(0)).group(1)
    xml = gzip.decompress((repo / href).read_bytes())
    if ext == ".zst":
        data = subprocess.run(["zstd", "-q", "-c", "-19"], input=xml, capture_output=True, check=True).stdout
    else:
        data = {".xz": lzma.compress, ".bz2": bz2.compress}[ext](xml)
    digest = hashlib.sha256(data).hexdigest()
    new_href = f"repodata/{digest}-{kind}.xml{ext}"
    (repo / href).unlink()
    (repo / new_href).write_bytes(data)
    new = re.sub(r'<checksum type="sha256">[0-9a-f]+</checksum>', f'<checksum type="sha256">{digest}</checksum>',
                 block.group(0))
    new = new.replace(href, new_href)
    new = re.sub(r"<size>\d+</size>", f"<size>{len(data)}</size>", new)
    repomd.write_text(text.replace(block.group(0), new))
    return repo / new_href


@dataclass
class RpmRepo:
    """The built fixture: repository directory, keyring for recipes, the .rpm files, the signing home."""

    root: Path                      # workspace (repo/, keys, recipes)
    repo: Path                      # the rpm-md repository (file:// URL base)
    keyring: Path                   # armoured public key that signs repodata/repomd.xml
    other_keyring: Path             # a key that signs nothing of this repository
    rpms: dict[str, Path]           # NEVRA -> .rpm
    gpg: GpgHome

    @property
    def url(self) -> str:
        return f"file://{self.repo}"

    def packages(self) -> tuple[Pkg, ...]:
        return PACKAGES

    def copy(self, dest: Path) -> Path:
        """A private copy of the repository to damage (tamper tests)."""
        shutil.copytree(self.repo, dest, symlinks=True)
        return dest

    def resign(self, repo: Path, label: str = "main") -> None:
        self.gpg.sign_detached(label, repo / "repodata" / "repomd.xml")

    def recipe(self, path: Path, packages: list[str], *, name: str = "rpmtest", weak: bool = False,
               exclude: tuple[str, ...] = (), pin: dict[str, str] | None = None, repo: Path | None = None,
               keyring: Path | None = None, gpgcheck: bool = True) -> Path:
        """Write a recipe TOML for PACKAGES against this repository (or REPO, a damaged copy)."""
        def q(s: str) -> str:
            return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

        lines = [f"name = {q(name)}", 'flavour = "rpm"', f"arch = {q(ARCH)}",
                 f"packages = [{', '.join(q(p) for p in packages)}]", f"weak = {'true' if weak else 'false'}"]
        if exclude:
            lines.append(f"exclude = [{', '.join(q(e) for e in exclude)}]")
        lines += ["", "[[repositories]]", 'name = "fixture"', f"url = {q('file://' + str(repo or self.repo))}",
                  f"keyring = {q(str(keyring or self.keyring))}"]
        if not gpgcheck:
            lines.append("gpgcheck = false")
        if pin:
            lines += ["", "[pin]"] + [f"{q(k)} = {q(v)}" for k, v in sorted(pin.items())]
        path.write_text("\n".join(lines) + "\n")
        return path


def synthetic_packages(n: int) -> tuple[Pkg, ...]:
    """N extra noarch packages with a deterministic web of requires (benchmarks at some scale)."""
    pkgs = []
    for i in range(n):
        reqs = tuple(f"synth-{j:05d}" for j in {i // 2, i // 3, (i * 7) // 11} if j < i)
        rec = (f"synth-{i // 5:05d}",) if i % 5 == 0 and i // 5 < i else ()
        pkgs.append(Pkg(f"synth-{i:05d}", version="1.0", release="1", arch="noarch", requires=reqs,
                        recommends=rec, spec=f"synth{i // 100}"))
    return tuple(pkgs)


def build_fixture(root: Path, extra: tuple[Pkg, ...] = ()) -> RpmRepo:
    """Build the whole fixture under ROOT (under a second; EXTRA packages join the 1.0-1 spec)."""
    root.mkdir(parents=True, exist_ok=True)
    repo = root / "repo"
    rpms = build_rpms(root / "build", repo / "Packages", PACKAGES + extra)
    shutil.rmtree(root / "build", ignore_errors=True)
    createrepo(repo)
    home = Path(tempfile.mkdtemp(prefix="cvb-gpg-"))   # short path: gpg-agent's socket lives there
    os.chmod(home, 0o700)
    g = GpgHome(home)
    g.new_key("main")
    g.new_key("other")
    g.sign_detached("main", repo / "repodata" / "repomd.xml")
    return RpmRepo(root=root, repo=repo, keyring=g.export("main", root / "fixture-key.asc"),
                   other_keyring=g.export("other", root / "other-key.asc"), rpms=rpms, gpg=g)


if __name__ == "__main__":
    import sys
    import time

    t = time.monotonic()
    r = build_fixture(Path(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="cvb-rpmrepo-")))
    print(f"built {len(r.rpms)} rpms in {r.repo} ({time.monotonic() - t:.2f}s); keyring {r.keyring}")
    r.gpg.close()
