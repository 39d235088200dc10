"""The pipeline engine: run registered stages in order, skipping those whose inputs did not change.

Each stage declares its inputs as digests (the lock's sha256, the tree's stat digest, options...).
After a successful run the engine writes a content-addressed record

    STATE/stages/<stage>/<input-digest>.json   {"inputs": ..., "outputs": {...}, "seconds": ...}

and a later run with the same input digest reuses the recorded outputs without running the stage,
provided the stage confirms those outputs are still there and unchanged. Records are written only
after success and every stage writes its outputs atomically, so a failure leaves the earlier
stages' outputs (and their records) intact; the error names the stage and keeps its one-line text.
The stages themselves live in `stages.py`; this module knows nothing about locks or trees.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from .errors import CernVMBuildError, PipelineBusyError, PipelineStageError
from .fsutil import atomic_write
from .pipelinedef import PipelineDef

RECORD_VERSION = 1


@dataclass
class Context:
    """What stages share: the definition, the outputs of earlier stages, run-wide switches."""

    definition: PipelineDef
    values: dict[str, Any] = field(default_factory=dict)
    offline: bool = False
    bundle: Path | None = None
    progress: bool = False           # stages may draw their own progress (fetch) on a terminal

    def need(self, key: str) -> Any:
        if key not in self.values:
            raise CernVMBuildError(f"internal: no '{key}' from an earlier stage")
        return self.values[key]


class Stage(ABC):
    """One step. Subclasses set `name` and implement inputs() and run(); both are plain data."""

    name: str = ""
    version: int = 1                 # bump when the stage's behaviour changes: old records stop matching

    def skip_reason(self, ctx: Context) -> str | None:
        """Why this stage does not apply (not configured, not available in this build), or None."""
        return None

    def volatile(self, ctx: Context) -> bool:
        """True when the inputs cannot be known without running (re-resolving a live archive)."""
        return False

    @abstractmethod
    def inputs(self, ctx: Context) -> dict[str, Any]:
        """JSON-able description of everything the outputs depend on."""

    @abstractmethod
    def run(self, ctx: Context) -> dict[str, Any]:
        """Do the work; return the outputs (JSON-able) later stages and the summary read."""

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        """Are recorded outputs still present and unchanged? (cheap: stat or small digests)"""
        return True

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        """A few words for the progress line (FRESH: the stage just ran, else outputs are recorded ones)."""
        return ""


@dataclass
class StageOutcome:
    name: str
    status: str                      # "ran", "unchanged" (skipped: same inputs), "skipped" (n/a), "failed"
    reason: str = ""
    seconds: float = 0.0
    detail: str = ""


@dataclass
class PipelineResult:
    definition: PipelineDef
    outcomes: list[StageOutcome]
    values: dict[str, Any]
    seconds: float

    @property
    def ran(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "ran"]

    def status(self, stage: str) -> str:
        return next((o.status for o in self.outcomes if o.name == stage), "")


def canonical_digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class Records:
    """STATE/stages/<stage>/<input-digest>.json"""

    root: Path

    def path(self, stage: str, input_digest: str) -> Path:
        return self.root / "stages" / stage / f"{input_digest}.json"

    def load(self, stage: str, input_digest: str) -> dict | None:
        try:
            rec = json.loads(self.path(stage, input_digest).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(rec, dict) or rec.get("record-version") != RECORD_VERSION:
            return None
        return rec

    def save(self, stage: str, input_digest: str, inputs: dict, outputs: dict, seconds: float) -> None:
        rec = {"record-version": RECORD_VERSION, "stage": stage, "input-digest": input_digest,
               "inputs": inputs, "outputs": outputs, "seconds": round(seconds, 3)}
        atomic_write(self.path(stage, input_digest), json.dumps(rec, indent=2, sort_keys=True, default=str) + "\n")


class Reporter:
    """Progress: one line per stage on a terminal (rewritten when it finishes); silent otherwise."""

    def __init__(self, enabled: bool | None = None, stream=None):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.enabled = self.tty if enabled is None else enabled

    def start(self, index: int, total: int, stage: str) -> None:
        if self.enabled and self.tty:
            self.stream.write(f"[{index}/{total}] {stage} ...")
            self.stream.flush()

    def finish(self, index: int, total: int, o: StageOutcome) -> None:
        if not self.enabled:
            return
        status = {"ran": "done", "unchanged": "unchanged, skipped", "skipped": "skipped",
                  "failed": "FAILED"}[o.status]
        text = f"[{index}/{total}] {o.name:<8} {status}"
        if o.status in ("ran", "failed"):
            text += f" in {o.seconds:.1f}s"
        if o.reason:
            text += f": {o.reason}"
        elif o.detail:
            text += f" ({o.detail})"
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """One build per state directory: two would swap the same tree and write the same records."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / ".build.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise PipelineBusyError(f"{state_dir} is in use by another build (pid {holder})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def run_pipeline(definition: PipelineDef, stages: Iterable[Stage], *, ctx: Context | None = None,
                 force: Iterable[str] = (), reporter: Reporter | None = None,
                 only: Callable[[Stage], bool] | None = None) -> PipelineResult:
    """Run STAGES in order. FORCE names stages to run even when unchanged (what follows re-runs only if
    the forced stage's outputs differ)."""
    with state_lock(definition.state_dir):
        return _run(definition, stages, ctx, force, reporter, only)


def _run(definition: PipelineDef, stages: Iterable[Stage], ctx: Context | None, force: Iterable[str],
         reporter: Reporter | None, only: Callable[[Stage], bool] | None) -> PipelineResult:
    ctx = ctx or Context(definition)
    reporter = reporter or Reporter(enabled=False)
    records = Records(definition.state_dir)
    stages = [s for s in stages if only is None or only(s)]
    force = set(force)
    outcomes: list[StageOutcome] = []
    started = time.monotonic()
    for i, stage in enumerate(stages, 1):
        reason = stage.skip_reason(ctx)
        if reason:
            o = StageOutcome(stage.name, "skipped", reason)
            outcomes.append(o)
            reporter.finish(i, len(stages), o)
            continue
        reporter.start(i, len(stages), stage.name)
        t0 = time.monotonic()
        try:
            inputs = stage.inputs(ctx)
            key = canonical_digest({"stage": stage.name, "version": stage.version, "inputs": inputs})
            rec = None if (stage.volatile(ctx) or stage.name in force) else records.load(stage.name, key)
            if rec is not None and stage.outputs_valid(ctx, rec["outputs"]):
                ctx.values.update(rec["outputs"])
                o = StageOutcome(stage.name, "unchanged", detail=stage.describe(rec["outputs"], False))
            else:
                outputs = stage.run(ctx)
                seconds = time.monotonic() - t0
                records.save(stage.name, key, inputs, outputs, seconds)
                ctx.values.update(outputs)
                o = StageOutcome(stage.name, "ran", seconds=seconds, detail=stage.describe(outputs, True))
        except (CernVMBuildError, OSError) as exc:
            o = StageOutcome(stage.name, "failed", seconds=time.monotonic() - t0, reason=str(exc))
            outcomes.append(o)
            reporter.finish(i, len(stages), o)
            raise PipelineStageError(stage.name, exc) from exc
        outcomes.append(o)
        reporter.finish(i, len(stages), o)
    return PipelineResult(definition, outcomes, ctx.values, time.monotonic() - started)
