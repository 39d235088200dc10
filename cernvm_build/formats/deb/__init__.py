"""Debian: InRelease + Packages archives (gpgv), apt's choices, dpkg's version order, .deb payloads.

Modules: archive (signed metadata), index (what libsolv drops: Priority, Essential, Size...), universe
(both into libsolv), apt_choices (apt's resolution replayed), control (deb822), tree (unpack,
dpkg database, maintainer scripts). They, and the standard modules only some commands need
(lzma, subprocess), are imported when first needed: a warm `lock` stays light.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from cernvm_build.errors import BootError, RecipeError
from cernvm_build.formats import PackageFormat, lazy
from cernvm_build.lock.recipe import Repository

PRIORITIES = ("required", "important", "standard", "optional", "extra")


class Deb(PackageFormat):
    name = "deb"
    native_choices = "apt"
    solv_disttype = "DISTTYPE_DEB"
    priorities = PRIORITIES

    def parse_repository(self, t, where, name, url, keyring):
        suite = t.str("suite", required=True)
        components = t.strlist("components", required=True)
        if not components:
            raise RecipeError(f"{where}: key 'components' must list at least one component")
        if not keyring:
            raise RecipeError(f"{where}: missing required key 'keyring' (a gpgv keyring for the Release "
                              "signature, e.g. /usr/share/keyrings/debian-archive-keyring.gpg)")
        return Repository(name, url, suite, components, keyring, allow_expired=t.bool("allow-expired"))

    load_repository = lazy("cernvm_build.formats.deb.archive", "load_deb_repository")
    add_to_universe = lazy("cernvm_build.formats.deb.universe", "add_to_universe")
    add_needed = lazy("cernvm_build.formats.deb.universe", "add_needed")
    preferred = lazy("cernvm_build.formats.deb.apt_choices", "apt_choices")
    build_tree = lazy("cernvm_build.formats.deb.tree", "build")

    def download_size(self, part, s):
        return part.side.size[part.pos(s.id)]

    def base_specs(self, u, recipe):
        """Every Essential: yes / Priority-in-list package (their candidates), like debootstrap."""
        if not (recipe.essential or recipe.priorities):
            return []
        from cernvm_build.formats.deb.index import ESSENTIAL, PRIORITY
        from cernvm_build.lock.recipe import PackageSpec

        wanted = {PRIORITY[p] for p in recipe.priorities}
        names: set[str] = set()
        for part in u.parts:          # every entry of the index, loaded into libsolv or not
            idx = part.side
            for i in range(len(idx.flags)):
                if (recipe.essential and idx.flags[i] & ESSENTIAL) or idx.priority[i] in wanted:
                    names.add(idx.package_name(i))
        return [PackageSpec(n) for n in sorted(names)]

    def compare_versions(self, a, b):
        return _apt().version_compare(a, b)

    def purl(self, closure, pkg):
        return f"pkg:deb/debian/{quote(pkg.name)}@{quote(pkg.evr, safe='')}?arch={pkg.arch}"

    def extract(self, package, dest):
        from cernvm_build.util.tools import run_tool

        dest.mkdir(parents=True, exist_ok=True)
        run_tool(["dpkg-deb", "-x", str(package), str(dest)], error=BootError)

    def index_bundle(self, repo_dir: Path, record, arch: str) -> None:
        """dists/SUITE/COMPONENT/binary-ARCH/Packages(.xz) and an unsigned Release, by apt-ftparchive."""
        import lzma

        from cernvm_build.util.tools import run_tool

        suite = record.suite or "stable"
        comp = record.components[0] if record.components else "main"
        rel = f"dists/{suite}/{comp}/binary-{arch}"
        (repo_dir / rel).mkdir(parents=True, exist_ok=True)
        packages = run_tool(["apt-ftparchive", "packages", "."], repo_dir)
        (repo_dir / rel / "Packages").write_bytes(packages)
        (repo_dir / rel / "Packages.xz").write_bytes(lzma.compress(packages))
        opts = []
        for k, v in (("Suite", suite), ("Codename", suite), ("Components", comp), ("Architectures", arch),
                     ("Label", "cernvm-build bundle")):
            opts += ["-o", f"APT::FTPArchive::Release::{k}={v}"]
        date = ["-o", f"APT::FTPArchive::Release::Date={record.date}"] if record.date else []
        release = run_tool(["apt-ftparchive", *opts, *date, "release", f"dists/{suite}"], repo_dir)
        (repo_dir / f"dists/{suite}/Release").write_bytes(release)


_APT = None


def _apt():
    global _APT
    if _APT is None:
        import apt_pkg

        apt_pkg.init_config()
        apt_pkg.init_system()
        _APT = apt_pkg
    return _APT


FORMAT = Deb()
