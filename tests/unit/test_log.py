"""cernvm_build.util.log: loggers that import logging only to emit a record."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
from cernvm_build.util import log
log.configure({level}, format="%(levelname)s: %(message)s", stream=sys.stderr)
l = log.getLogger("cernvm_build.x")
l.debug("debug %s", 1)
l.info("info %s", 2)
print("imported" if "logging" in sys.modules else "not imported")
l.warning("warning %s", 3)
l.info("info %s", 4)
"""


def run(level: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-S", "-c", SCRIPT.format(level=level)], capture_output=True,
                          text=True, check=True, env={"PYTHONPATH": ":".join(sys.path)})


def test_records_below_the_level_cost_no_import():
    res = run(30)
    assert res.stdout == "not imported\n"
    assert res.stderr == "WARNING: warning 3\n"


def test_a_lower_level_emits_as_logging_does():
    res = run(10)
    assert res.stdout == "imported\n"
    assert res.stderr == "DEBUG: debug 1\nINFO: info 2\nWARNING: warning 3\nINFO: info 4\n"


def test_once_logging_is_imported_its_configuration_decides(caplog):
    from cernvm_build.util.log import getLogger

    with caplog.at_level(20, logger="cernvm_build.y"):
        getLogger("cernvm_build.y").info("seen %d", 5)
    assert [r.getMessage() for r in caplog.records] == ["seen 5"]
