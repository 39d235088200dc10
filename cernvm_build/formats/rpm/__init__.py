"""rpm-md: repomd.xml + primary/filelists (gpgv), dnf's obsoleters rule, rpm's version order, .rpm
payloads (rpm2archive, one `rpm --install` transaction, file capabilities from the header).

Modules: repomd (signed metadata), universe (into libsolv), dnf_choices, tree (unpack, rpmdb,
scriptlets), filecaps. They are imported when first needed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from urllib.parse import quote

from cernvm_build.errors import BootError, RecipeError
from cernvm_build.formats import PackageFormat, lazy
from cernvm_build.lock.recipe import Repository
from cernvm_build.util.tools import run_tool


class Rpm(PackageFormat):
    name = "rpm"
    native_choices = "dnf"
    solv_disttype = "DISTTYPE_RPM"
    file_dependencies = True

    def parse_repository(self, t, where, name, url, keyring):
        gpgcheck = t.bool("gpgcheck", default=True)
        if gpgcheck and not keyring:
            raise RecipeError(f"{where}: missing required key 'keyring' (the key that signs repomd.xml); "
                              "set gpgcheck = false only for repositories you trust by other means")
        return Repository(name, url, keyring=keyring, gpgcheck=gpgcheck)

    load_repository = lazy("cernvm_build.formats.rpm.repomd", "load_rpmmd_repository")
    add_to_universe = lazy("cernvm_build.formats.rpm.universe", "add_to_universe")
    alternatives = lazy("cernvm_build.formats.rpm.dnf_choices", "alternatives")
    build_tree = lazy("cernvm_build.formats.rpm.tree", "build")

    def download_size(self, part, s):
        import solv

        return s.lookup_num(solv.SOLVABLE_DOWNLOADSIZE)

    def compare_versions(self, a, b):
        import rpm

        from cernvm_build.lock.lockfile import split_evr

        ea, va, ra = split_evr(a)
        eb, vb, rb = split_evr(b)
        return rpm.labelCompare((str(ea), va, ra), (str(eb), vb, rb))

    def purl(self, closure, pkg):
        version = quote(pkg.version + ("-" + pkg.release if pkg.release else ""), safe="")
        return (f"pkg:rpm/{quote(pkg.repository)}/{quote(pkg.name)}@{version}?arch={pkg.arch}"
                + (f"&epoch={pkg.epoch}" if pkg.epoch else ""))

    def extract(self, package, dest):
        """The payload (rpm2archive: a tar on stdout) unpacked by tar; no scriptlet runs."""
        dest.mkdir(parents=True, exist_ok=True)
        with open(package, "rb") as src:
            archive = run_tool(["rpm2archive", "-n"], stdin=src, error=BootError)
        r = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, capture_output=True)
        if r.returncode:
            raise BootError(f"tar -x of {Path(package).name} failed: {r.stderr.decode(errors='replace').strip()}")

    def index_bundle(self, repo_dir: Path, record, arch: str) -> None:
        """repodata/ by createrepo_c over exactly the bundled files, dated by the locked revision."""
        run_tool(["createrepo_c", "--quiet", "--no-database", "--set-timestamp-to-revision",
                  "--revision", record.revision or "0", "."], repo_dir)


FORMAT = Rpm()
