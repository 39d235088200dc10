"""apt's own resolution (python-apt) over exactly the Packages files a lock was resolved against.

The reference the Debian flavour must match: an isolated apt configuration (empty dpkg status, no
host sources, the given index files as its lists), then what `apt-get install LIST` does: mark the
list protected without dependencies, then auto-install each in package-ID order, then the problem
resolver if anything is broken.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def isolated_config(root: Path, packages_files: list[Path], arch: str = "amd64",
                    recommends: bool = False) -> dict[str, str]:
    """Write an apt state directory under ROOT whose only lists are PACKAGES_FILES; return its options."""
    lists = root / "lists"
    (lists / "partial").mkdir(parents=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True)
    for d in ("sources.list.d", "preferences.d", "apt.conf.d", "trusted.gpg.d"):
        (root / "etc" / d).mkdir(parents=True)
    (root / "status").write_text("")
    src = []
    for i, f in enumerate(packages_files):
        host = f"repo{i}"
        (lists / f"{host}_dists_x_main_binary-{arch}_Packages").write_bytes(Path(f).read_bytes())
        src.append(f"deb [trusted=yes arch={arch}] http://{host}/ x main")
    (root / "etc" / "sources.list").write_text("\n".join(src) + "\n")
    return {
        "Dir": str(root), "Dir::State": str(root), "Dir::State::status": str(root / "status"),
        "Dir::State::Lists": str(lists), "Dir::Cache": str(root / "cache"),
        "Dir::Cache::pkgcache": str(root / "cache" / "pkgcache.bin"),
        "Dir::Cache::srcpkgcache": str(root / "cache" / "srcpkgcache.bin"),
        "Dir::Etc": str(root / "etc"), "Dir::Etc::sourcelist": str(root / "etc" / "sources.list"),
        "Dir::Etc::sourceparts": str(root / "etc" / "sources.list.d"),
        "Dir::Etc::preferences": str(root / "etc" / "preferences"),
        "Dir::Etc::preferencesparts": str(root / "etc" / "preferences.d"),
        "Dir::Etc::parts": str(root / "etc" / "apt.conf.d"),
        "Dir::Etc::trustedparts": str(root / "etc" / "trusted.gpg.d"),
        "Dir::Log": str(root / "log"), "Debug::NoLocking": "true",
        "APT::Architecture": arch, "APT::Architectures": arch,
        "APT::Install-Recommends": "true" if recommends else "false", "APT::Install-Suggests": "false",
    }


def apt_resolution(packages_files: list[Path], names: list[str], arch: str = "amd64",
                   recommends: bool = False) -> dict[str, str]:
    """name -> version apt marks for installation."""
    import apt_pkg

    root = Path(tempfile.mkdtemp(prefix="cvb-aptref-"))
    try:
        options = isolated_config(root, packages_files, arch, recommends)
        apt_pkg.init_config()
        cfg = apt_pkg.config
        for key, value in options.items():
            cfg.set(key, value)
        cfg.clear("APT::Architectures")
        cfg.set("APT::Architectures::", arch)
        apt_pkg.init_system()
        cache = apt_pkg.Cache(None)
        depcache = apt_pkg.DepCache(cache)
        fix = apt_pkg.ProblemResolver(depcache)
        pkgs = []
        for n in names:
            pkg = cache[n]
            if not pkg.has_versions and pkg.has_provides and len(pkg.provides_list) == 1:
                pkg = pkg.provides_list[0][2].parent_pkg
            pkgs.append(pkg)
        with apt_pkg.ActionGroup(depcache):
            for pkg in pkgs:
                fix.clear(pkg)
                fix.protect(pkg)
                depcache.mark_install(pkg, False)
            for pkg in sorted(pkgs, key=lambda p: p.id):
                depcache.mark_install(pkg, True)
        if depcache.broken_count:
            fix.resolve(True)
        return {p.name: depcache.get_candidate_ver(p).ver_str
                for p in cache.packages if depcache.marked_install(p)}
    finally:
        shutil.rmtree(root, ignore_errors=True)
