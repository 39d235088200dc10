"""The pipeline engine: run stages in order, skipping those whose inputs did not change.

Stages pass typed data: each stage's outputs are a dataclass (`StageOutput`), and a stage reads the
outputs of the earlier stages it names in `needs`. A stage's cache key is derived, as osbuild's
Stage.id is, from its name and version, its options, and the keys of the outputs it needs (the
content each output stands for: a lock's digest, a tree's stat digest, a snapshot's root hash), so
nothing is listed by hand and computing a key has no side effects. After a successful run the engine
writes a content-addressed record

    STATE/stages/<stage>/<key>.json   {"inputs": ..., "outputs": {...}, "seconds": ...}

and a later run with the same key reuses the recorded outputs without running the stage, provided
the stage confirms those outputs are still there and unchanged. Records are written only after
success and every stage writes its outputs atomically, so a failure leaves the earlier stages'
outputs (and their records) intact; the error names the stage and keeps its one-line text.
The stages themselves live in `stages.py`; this module knows nothing about locks or trees.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping

from cernvm_build.errors import CernVMBuildError, PipelineBusyError, PipelineStageError
from cernvm_build.pipeline.definition import PipelineDef
from cernvm_build.util.files import atomic_write

RECORD_VERSION = 1


def canonical_digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class StageOutput:
    """Base of every stage's outputs: plain data, recorded as JSON and read back field by field."""

    key_field: ClassVar[str] = ""    # the field that says what the output is (a digest), if one does

    @property
    def key(self) -> str:
        """What this output stands for, for the stages that need it (default: all of its fields)."""
        return getattr(self, self.key_field) if self.key_field else canonical_digest(self.record())

    def record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_record(cls, data: Any) -> "StageOutput | None":
        """The output a record holds, or None when it does not fit this dataclass (older record)."""
        if not isinstance(data, dict):
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        if set(data) - names:
            return None
        try:
            return cls(**data)
        except TypeError:
            return None


@dataclass
class Context:
    """What every stage may read: the definition and run-wide switches (not earlier outputs: `needs`)."""

    definition: PipelineDef
    offline: bool = False
    bundle: Path | None = None
    progress: bool = False           # stages may draw their own progress (fetch) on a terminal


class Stage(ABC):
    """One step: `run` turns the outputs it needs into its own outputs (an `output` dataclass)."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1       # bump when the stage's behaviour changes: old records stop matching
    output: ClassVar[type[StageOutput]] = StageOutput
    # earlier stages whose outputs this one reads, by the name their key has in this stage's key
    needs: ClassVar[Mapping[str, str]] = {}

    def skip_reason(self, ctx: Context) -> str | None:
        """Why this stage does not apply (not configured), or None."""
        return None

    def volatile(self, ctx: Context) -> bool:
        """True when the outputs cannot be known without running (re-resolving a live archive)."""
        return False

    @abstractmethod
    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        """JSON-able settings the outputs depend on besides the needed outputs' keys. Pure: it may read
        files to digest them, never create or change anything."""

    @abstractmethod
    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> StageOutput:
        """Do the work; INPUTS maps each earlier stage's name to its outputs."""

    def outputs_valid(self, ctx: Context, outputs: Any) -> bool:
        """Are recorded outputs still present and unchanged? (cheap: stat or small digests)"""
        return True

    def describe(self, outputs: Any, fresh: bool) -> str:
        """A few words for the progress line (FRESH: the stage just ran, else outputs are recorded ones)."""
        return ""


def stage_inputs(stage: Stage, options: dict[str, Any], inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
    """What the stage's outputs depend on: its options and the keys of the outputs it needs."""
    keys = {label: inputs[source].key for label, source in stage.needs.items()}
    clash = set(keys) & set(options)
    if clash:
        raise CernVMBuildError(f"internal: stage {stage.name}: option and input both named {sorted(clash)[0]!r}")
    return {**options, **keys}


def stage_key(stage: Stage, inputs: dict[str, Any]) -> str:
    """sha256 over the stage's name and version and its inputs (`stage_inputs`)."""
    return canonical_digest({"stage": stage.name, "version": stage.version, "inputs": inputs})


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
    outputs: dict[str, StageOutput]
    seconds: float

    @property
    def values(self) -> dict[str, Any]:
        """Every output field of every stage that ran or was reused, in stage order (summary, --json)."""
        merged: dict[str, Any] = {}
        for out in self.outputs.values():
            merged.update(out.record())
        return merged

    @property
    def ran(self) -> list[str]:
        return [o.name for o in self.outcomes if o.status == "ran"]

    def status(self, stage: str) -> str:
        return next((o.status for o in self.outcomes if o.name == stage), "")


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

    def heading(self, text: str) -> None:
        """A line naming what the following stages belong to (one snapshot of several)."""
        if self.enabled:
            self.stream.write(f"{text}\n")
            self.stream.flush()

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
                 only: Callable[[Stage], bool] | None = None,
                 given: Mapping[str, StageOutput] | None = None) -> PipelineResult:
    """Run STAGES in order. FORCE names stages to run even when unchanged (what follows re-runs only if
    the forced stage's outputs differ). GIVEN: outputs of stages run elsewhere (another pipeline's
    publish, for an ISO over several snapshots), readable by `needs` as if they had run here."""
    with state_lock(definition.state_dir):
        return _run(definition, stages, ctx, force, reporter, only, given or {})


def _run(definition: PipelineDef, stages: Iterable[Stage], ctx: Context | None, force: Iterable[str],
         reporter: Reporter | None, only: Callable[[Stage], bool] | None,
         given: Mapping[str, StageOutput]) -> PipelineResult:
    ctx = ctx or Context(definition)
    reporter = reporter or Reporter(enabled=False)
    records = Records(definition.state_dir)
    stages = [s for s in stages if only is None or only(s)]
    force = set(force)
    outcomes: list[StageOutcome] = []
    outputs: dict[str, StageOutput] = dict(given)
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
            missing = [s for s in stage.needs.values() if s not in outputs]
            if missing:
                raise CernVMBuildError(f"needs the outputs of stage {missing[0]}, which did not run")
            inputs = stage_inputs(stage, stage.options(ctx, outputs), outputs)
            key = stage_key(stage, inputs)
            rec = None if (stage.volatile(ctx) or stage.name in force) else records.load(stage.name, key)
            recorded = stage.output.from_record(rec["outputs"]) if rec is not None else None
            if recorded is not None and stage.outputs_valid(ctx, recorded):
                out = recorded
                o = StageOutcome(stage.name, "unchanged", detail=stage.describe(out, False))
            else:
                out = stage.run(ctx, outputs)
                seconds = time.monotonic() - t0
                records.save(stage.name, key, inputs, out.record(), seconds)
                o = StageOutcome(stage.name, "ran", seconds=seconds, detail=stage.describe(out, True))
            outputs[stage.name] = out
        except (CernVMBuildError, OSError) as exc:
            o = StageOutcome(stage.name, "failed", seconds=time.monotonic() - t0, reason=str(exc))
            outcomes.append(o)
            reporter.finish(i, len(stages), o)
            raise PipelineStageError(stage.name, exc) from exc
        outcomes.append(o)
        reporter.finish(i, len(stages), o)
    return PipelineResult(definition, outcomes, outputs, time.monotonic() - started)
