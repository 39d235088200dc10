#!/usr/bin/env python3
"""`cernvm-build ARGS` (a lock) with its phases timed from outside, for code without timing marks.

bench_lock.py runs an older revision (--baseline) through this file: it imports the lock command's
modules, wraps the functions each phase is made of (the same names in every revision so far; one
that a revision lacks is skipped), runs cernvm_build.cli.main and prints `timing PHASE MS` lines like
cernvm_build/util/timing.py does, so both profiles line up. The modules a real run imports lazily are imported here up front, in
"imports"; what no wrapped function covers is "other".
"""

from __future__ import annotations

import os
import sys
import time

T0 = int(os.environ.get("CERNVM_BUILD_TIMINGS", "t0=0").removeprefix("t0=") or 0) or time.monotonic_ns()
START = time.monotonic_ns()
os.environ.pop("CERNVM_BUILD_TIMINGS", None)      # the code under test must not report twice

import importlib  # noqa: E402

import solv  # noqa: E402

import cernvm_build.cli  # noqa: E402

WRAPPED = [  # (module, attribute, phase)
    ("cernvm_build.lock.recipe", "load_recipe", "recipe"),
    ("cernvm_build.formats.deb.archive", "load_deb_repository", "signed metadata: Release, gpgv, index seals"),
    ("cernvm_build.formats.deb.universe", "add_to_universe", "load .solv and side tables"),
    ("cernvm_build.formats.deb.universe", "add_needed", "load .solv and side tables"),   # (narrowed: since 45a3587)
    (solv.Pool, "addfileprovides_queue", "whatprovides"),
    (solv.Pool, "createwhatprovides", "whatprovides"),
    ("cernvm_build.lock.resolve.solver", "_select", "select"),
    ("cernvm_build.formats.deb.apt_choices", "apt_choices", "apt's choices"),
    (solv.Solver, "solve", "libsolv solve"),
    ("cernvm_build.lock.resolve", "to_closure", "closure records"),
    ("cernvm_build.lock.resolve", "write_lock", "write"),
]
spent: dict[str, int] = {}


def wrap(owner: object, attr: str, phase: str) -> None:
    original = getattr(owner, attr, None)
    if original is None:        # a function this revision does not have yet
        return

    def timed(*args, **kwargs):
        t = time.monotonic_ns()
        try:
            return original(*args, **kwargs)
        finally:
            spent[phase] = spent.get(phase, 0) + time.monotonic_ns() - t

    setattr(owner, attr, timed)


def main() -> int:
    for owner, attr, phase in WRAPPED:
        wrap(importlib.import_module(owner) if isinstance(owner, str) else owner, attr, phase)
    ready = time.monotonic_ns()
    rc = cernvm_build.cli.main(sys.argv[1:])
    end = time.monotonic_ns()
    phases = {"start: interpreter, site, cli": START - T0, "imports": ready - START}
    for _, _, phase in WRAPPED:
        phases[phase] = spent.get(phase, 0)
    phases["other"] = end - ready - sum(spent.values())
    for phase, ns in phases.items():
        print(f"timing {phase} {ns / 1e6:.2f}", file=sys.stderr)
    if getattr(cernvm_build.cli, "_quick_exit", False):      # as its cli.run() ends such a command:
        sys.stdout.flush()                                  # without the interpreter's teardown
        sys.stderr.flush()
        os._exit(rc)
    return rc


if __name__ == "__main__":
    sys.exit(main())
