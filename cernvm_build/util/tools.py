"""External tools (apt-ftparchive, createrepo_c, dpkg-deb, rpm2archive, ...): run one, and turn its
failure into the caller's typed error with the tool's own last words."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cernvm_build.errors import CernVMBuildError


def run_tool(cmd: list[str], cwd: Path | None = None, error: type[CernVMBuildError] = CernVMBuildError,
             stdin=None, stdout=None) -> bytes:
    """Run CMD; its standard output (unless STDOUT is given), or ERROR naming it and its stderr."""
    try:
        r = subprocess.run(cmd, cwd=cwd, stdin=stdin, stdout=stdout if stdout is not None else subprocess.PIPE,
                           stderr=subprocess.PIPE)
    except FileNotFoundError as exc:
        raise error(f"{cmd[0]} is not installed (run tools/setup.sh)") from exc
    if r.returncode:
        raise error(f"{' '.join(cmd[:2])} failed: {r.stderr.decode(errors='replace').strip()}")
    return r.stdout or b""
