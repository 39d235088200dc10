"""Several snapshots, one repository, one ISO: the `[[snapshots]]` form of a pipeline definition.

Each snapshot runs the single-recipe pipeline (lock -> sign -> fetch -> rootfs -> publish [-> image])
in its own state directory, publishing into the shared repository, where the content-addressed objects
deduplicate the releases against each other (what each one adds is its publish's `bytes_written`).
Then one ISO stage, in the top state directory, boots the newest snapshot by default and lists every
tag of the repository in its menu. The engine's skipping rule holds per snapshot: an unchanged release
publishes nothing, and the ISO is rebuilt only when the repository's tags changed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from cernvm_build.errors import PipelineConfigError
from cernvm_build.pipeline.definition import PipelineDef
from cernvm_build.pipeline.engine import (Context, PipelineResult, Reporter, Stage, StageOutcome, _run,
                                          state_lock)
from cernvm_build.pipeline.stages import IsoStage, SnapshotOutput, default_stages


@dataclass
class SnapshotsResult:
    definition: PipelineDef
    snapshots: list[PipelineResult]      # one per [[snapshots]] entry, in definition order
    iso: PipelineResult | None           # None when stopped before publishing (--until)
    seconds: float

    @property
    def outcomes(self) -> list[StageOutcome]:
        return [o for r in self.snapshots for o in r.outcomes] + (self.iso.outcomes if self.iso else [])

    @property
    def newest(self) -> SnapshotOutput | None:
        """The snapshot published last (highest revision): the ISO's default."""
        snaps = [r.outputs["publish"] for r in self.snapshots if "publish" in r.outputs]
        return max(snaps, key=lambda s: s.revision, default=None)


def run_snapshots(definition: PipelineDef, *, offline: bool = False, progress: bool = False,
                  force: tuple[str, ...] = (), reporter: Reporter | None = None,
                  only: Callable[[Stage], bool] | None = None,
                  stages: Callable[[], list[Stage]] = default_stages) -> SnapshotsResult:
    """Run every snapshot's pipeline in order, then the ISO stage once (see the module docstring)."""
    if not definition.snapshots:
        raise PipelineConfigError(f"{definition.path or definition.name}: no [[snapshots]] to build")
    started = time.monotonic()
    results: list[PipelineResult] = []
    with state_lock(definition.state_dir):   # the shared repository: one multi-snapshot build at a time
        for spec in definition.snapshots:
            sub = definition.for_snapshot(spec)
            per = [s for s in stages() if not isinstance(s, IsoStage)]
            if reporter is not None:
                reporter.heading(f"{spec.name} ({spec.recipe.name})")
            with state_lock(sub.state_dir):
                results.append(_run(sub, per, Context(sub, offline=offline, progress=progress), force, reporter,
                                    only, {}))
        out = SnapshotsResult(definition, results, None, 0.0)
        newest = out.newest
        if newest is not None:
            if reporter is not None:
                reporter.heading(f"{definition.name}: one ISO for {len(results)} snapshots")
            iso = [s for s in stages() if isinstance(s, IsoStage)]
            out.iso = _run(definition, iso, Context(definition, offline=offline, progress=progress), force,
                           reporter, only, {"publish": newest})
    out.seconds = time.monotonic() - started
    return out
