"""Where a command's time goes, for the benchmarks (tests/benchmarks/bench_lock.py).

Off unless CERNVM_BUILD_TIMINGS is set; then `mark(phase)` notes that PHASE just ended, and at exit
one line per phase (`timing PHASE MILLISECONDS`) goes to stderr, each phase measured from the mark
before it. A value `t0=NS` gives the time.monotonic_ns() at which the caller started the process
(the clock is system-wide), so the first phase includes the interpreter's start-up and the imports
before the first mark; otherwise phases count from this module's import. Off, a mark costs one
global lookup.
"""

from __future__ import annotations

import os
import time

_marks: list[tuple[str, int]] | None = None


def _start() -> None:
    global _marks
    value = os.environ.get("CERNVM_BUILD_TIMINGS")
    if not value:
        return
    import atexit

    t0 = value.removeprefix("t0=")
    _marks = [("", int(t0) if value.startswith("t0=") and t0.isdigit() else time.monotonic_ns())]
    atexit.register(_report)


def mark(phase: str) -> None:
    """PHASE has just ended (no-op unless timings were asked for)."""
    if _marks is not None:
        _marks.append((phase, time.monotonic_ns()))


def _report() -> None:
    import sys

    assert _marks is not None
    for (_, before), (phase, at) in zip(_marks, _marks[1:]):
        print(f"timing {phase} {(at - before) / 1e6:.2f}", file=sys.stderr)


_start()
