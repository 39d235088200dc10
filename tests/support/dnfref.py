"""dnf's own resolution of a package list against an rpm-md repository: the reference the rpm flavour
must match.

dnf runs in a subprocess under Debian's /usr/bin/python3 (its libdnf carries its own libsolv; keeping
it out of our process avoids two libsolv builds and dnf's global state in one interpreter). Every run
gets a FRESH cache directory unless the caller passes one (dnf silently reuses stale metadata from a
known cachedir), an empty installroot, no host repositories or configuration, and the options that
matter for the comparison set explicitly: install_weak_deps as the recipe says, best=False as the
dnf.conf distributions ship (Fedora, RHEL and Debian's own), package gpgcheck off (the fixture's
packages are unsigned; repository metadata signatures are our own code's job, tested separately).

Run as a script it reads one JSON request on stdin and prints one JSON answer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class DnfResult:
    nevras: frozenset[str] = field(default_factory=frozenset)   # name-[epoch:]version-release.arch
    error: str = ""
    seconds_load: float = 0.0        # fill_sack (metadata download + parse)
    seconds_resolve: float = 0.0     # marking + depsolve


@dataclass(frozen=True)
class DnfCase:
    """One `dnf install` to reproduce: the package list and the recipe options that matter."""

    names: tuple[str, ...]
    weak: bool = False
    exclude: tuple[str, ...] = ()
    pin: tuple[tuple[str, str], ...] = ()


def dnf_resolutions(url: str, cases: list[DnfCase], *, arch: str = "x86_64", cachedir: Path | None = None,
                    best: bool = False) -> list[DnfResult]:
    """What `dnf install --assumeno NAMES` would install into an empty root, for each case.

    One subprocess for all cases (importing dnf costs a third of a second); each case still gets
    its own dnf.Base, installroot and, unless CACHEDIR is given, its own fresh cache directory.
    """
    work = Path(tempfile.mkdtemp(prefix="cvb-dnfref-"))
    try:
        reqs = [{"url": url, "names": list(c.names), "arch": arch, "weak": c.weak, "exclude": list(c.exclude),
                 "pin": dict(c.pin), "best": best, "root": str(work / f"root{i}"),
                 "cachedir": str(cachedir or (work / f"cache{i}")), "warm": cachedir is not None}
                for i, c in enumerate(cases)]
        proc = subprocess.run([SYSTEM_PYTHON, __file__], input=json.dumps(reqs), capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"dnf reference failed ({proc.returncode}):\n{proc.stderr}")
        answers = json.loads(proc.stdout.strip().splitlines()[-1])
        return [DnfResult(frozenset(a["nevras"]), a["error"], a["load"], a["resolve"]) for a in answers]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def dnf_resolution(url: str, names: list[str], *, arch: str = "x86_64", weak: bool = False,
                   exclude: tuple[str, ...] = (), pin: dict[str, str] | None = None,
                   cachedir: Path | None = None, best: bool = False) -> DnfResult:
    """One case of dnf_resolutions."""
    case = DnfCase(tuple(names), weak, tuple(exclude), tuple(sorted((pin or {}).items())))
    return dnf_resolutions(url, [case], arch=arch, cachedir=cachedir, best=best)[0]


def _one(req: dict) -> dict:
    import dnf
    import dnf.exceptions

    root = Path(req["root"])
    for d in ("var/log", "var/lib/dnf"):
        (root / d).mkdir(parents=True, exist_ok=True)
    base = dnf.Base()
    conf = base.conf
    conf.installroot = str(root)
    conf.cachedir = req["cachedir"]
    conf.persistdir = str(root / "var/lib/dnf")
    conf.logdir = str(root / "var/log")
    conf.reposdir = []
    conf.config_file_path = "/dev/null"
    conf.substitutions["releasever"] = "0"        # unused by the fixture; dnf wants a string
    conf.substitutions["arch"] = req["arch"]
    conf.substitutions["basearch"] = req["arch"]
    conf.install_weak_deps = req["weak"]
    conf.best = req["best"]
    conf.gpgcheck = False
    conf.excludepkgs = req["exclude"]
    conf.metadata_expire = -1 if req.get("warm") else 0
    base.repos.add_new_repo("fixture", conf, baseurl=[req["url"]], gpgcheck=False, repo_gpgcheck=False)
    t0 = time.monotonic()
    base.fill_sack(load_system_repo=False)
    t1 = time.monotonic()
    if req["pin"]:
        q = base.sack.query().filter(name=list(req["pin"]))
        unpinned = [p for p in q if p.evr != req["pin"][p.name]]
        if unpinned:
            base.sack.add_excludes(base.sack.query().filterm(pkg=unpinned))
    error = ""
    nevras: list[str] = []
    try:
        for name in req["names"]:
            base.install(name)
        base.resolve()
        nevras = sorted(str(p) for p in base.transaction.install_set)
    except dnf.exceptions.Error as exc:
        error = f"{type(exc).__name__}: {exc}"
    t2 = time.monotonic()
    base.close()
    return {"nevras": nevras, "error": error, "load": t1 - t0, "resolve": t2 - t1}


if __name__ == "__main__":
    print(json.dumps([_one(r) for r in json.load(sys.stdin)]))
