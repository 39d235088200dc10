"""`build`: the whole pipeline from a definition, or a respawn from a preservation bundle."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cernvm_build.commands._shared import megabytes


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("build", help="run a pipeline: recipe -> lock -> sign -> fetch -> rootfs -> publish -> ISO, "
                                     "skipping unchanged stages")
    p.add_argument("pipeline", nargs="?", help="pipeline definition (pipeline/NAME.toml)")
    p.add_argument("--from-bundle", metavar="BUNDLE",
                   help="respawn the snapshot from a preservation bundle, with no network")
    p.add_argument("--state-dir", help="where stage records, the tree and default outputs go")
    p.add_argument("--lock-file", help="lock path (overrides the definition's lock-file)")
    p.add_argument("--cache", help="package and metadata cache (overrides cache-dir)")
    p.add_argument("--verify-key", metavar="PUB", help="public key the lock's signature must verify with "
                                                       "(overrides [signing] public-key; e.g. for --from-bundle)")
    p.add_argument("--offline", action="store_true", help="use only cached metadata and packages")
    p.add_argument("--force", action="append", metavar="STAGE", help="run STAGE even if unchanged (repeatable)")
    p.add_argument("--until", metavar="STAGE", help="stop after STAGE")
    p.add_argument("--progress", action="store_true", help="progress lines even when stderr is not a terminal")
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.add_argument("-q", "--quiet", action="store_true")
    p.set_defaults(func=_build)


def load_definition(args: argparse.Namespace):
    """The definition to run: PIPELINE.toml, or for --from-bundle the bundle's lock with the targets of
    PIPELINE.toml (or defaults)."""
    from cernvm_build.errors import PipelineConfigError
    from cernvm_build.pipeline.definition import apply_overrides, bundle_pipeline, load_pipeline
    from cernvm_build.store.bundle import MARKER

    overrides = {"state_dir": args.state_dir, "lock_file": args.lock_file, "cache_dir": args.cache}
    if not args.from_bundle:
        if not args.pipeline:
            raise PipelineConfigError("give a pipeline definition (pipeline/NAME.toml) or --from-bundle BUNDLE")
        return _with_verify_key(load_pipeline(args.pipeline, **overrides), args.verify_key), None
    bundle = Path(args.from_bundle).absolute()
    try:
        inventory = json.loads((bundle / MARKER).read_text())
    except OSError as exc:
        raise PipelineConfigError(f"{bundle}: not a preservation bundle ({MARKER}: {exc.strerror})") from exc
    except ValueError as exc:
        raise PipelineConfigError(f"{bundle}/{MARKER}: not valid JSON: {exc}") from exc
    if not isinstance(inventory, dict) or not isinstance(inventory.get("lock"), str):
        raise PipelineConfigError(f"{bundle}/{MARKER}: no 'lock' in the inventory")
    base = load_pipeline(args.pipeline, require_recipe=False) if args.pipeline else None
    d = apply_overrides(bundle_pipeline(bundle, inventory, base, overrides.pop("state_dir")), cache_dir=args.cache)
    return _with_verify_key(d, args.verify_key), bundle


def _with_verify_key(d, pub: str | None):
    """--verify-key: the public key the lock's signature must verify with (the respawn's trust anchor)."""
    from dataclasses import replace

    from cernvm_build.pipeline.definition import Signing

    if pub is None:
        return d
    pub = Path(pub).absolute()
    return replace(d, signing=replace(d.signing, public_key=pub) if d.signing else Signing(public_key=pub))


def render_summary(result) -> str:
    v = result.values
    lines = [f"pipeline {result.definition.name}: {len(result.ran)} of {len(result.outcomes)} stages ran "
             f"({', '.join(result.ran) or 'none'}) in {result.seconds:.1f}s"]
    for o in result.outcomes:
        status = {"ran": f"ran {o.seconds:.1f}s", "unchanged": "unchanged", "skipped": "skipped",
                  "failed": "failed"}[o.status]
        lines.append(f"  {o.name:<8} {status}" + (f": {o.reason}" if o.reason else f"  {o.detail}" if o.detail else ""))
    if "lock_digest" in v:
        lines.append(f"lock:      {v['lock_file']}")
        lines.append(f"           {v['lock_digest']}, {v['packages']} packages ({megabytes(v.get('download_bytes'))})")
    if "signature" in v:
        lines.append(f"signature: {v['signature']} (key {v['signer'][:16]})")
    if "tree" in v:
        lines.append(f"tree:      {v['tree']}: {v['tree_files']} files, {megabytes(v['tree_bytes'])}")
    if "root_hash" in v:
        lines.append(f"snapshot:  {v['fqrn']} tag {v['tag']} (revision {v['revision']}) in {v['repository']}")
        lines.append(f"           root hash {v['root_hash']}")
        ran = result.status("publish") == "ran"
        lines.append(f"           {v['objects_written'] if ran else 0} objects written"
                     + (f", {megabytes(v['bytes_written'])}" if ran else " (nothing new published)"))
    if "iso" in v:
        lines.append(f"iso:       {v['iso']} ({megabytes(v['iso_bytes'])})")
    else:
        lines.append("iso:       " + next((o.reason for o in result.outcomes if o.name == "iso" and o.reason),
                                          "not built"))
    if "image" in v:
        lines.append(f"image:     {v['image']} ({v['image_format']}, {megabytes(v['image_bytes'])}, "
                     f"virtual {megabytes(v['image_virtual_bytes'])})")
    return "\n".join(lines)


def render_snapshots_summary(result) -> str:
    """Several snapshots: one block each, with what each added to the shared repository."""
    d = result.definition
    lines = [f"pipeline {d.name}: {len(result.snapshots)} snapshots into {d.cvmfs.repository} "
             f"in {result.seconds:.1f}s"]
    for r in result.snapshots:
        v = r.values
        ran = ", ".join(r.ran) or "none"
        line = f"  {r.definition.name:<20} {len(r.ran)} of {len(r.outcomes)} stages ran ({ran})"
        if "root_hash" in v:
            new = r.status("publish") == "ran"
            line += (f"\n  {'':<20} tag {v['tag']} (revision {v['revision']}), {v['packages']} packages, "
                     f"tree {megabytes(v['tree_bytes'])}, added "
                     + (f"{megabytes(v['bytes_written'])} ({v['data_objects_written']} new data objects)"
                        if new else "nothing (unchanged)"))
        lines.append(line)
    if result.iso is not None:
        v = result.iso.values
        if "iso" in v:
            lines.append(f"iso:       {v['iso']} ({megabytes(v['iso_bytes'])}), default tag {v['tag']}")
        else:
            lines.append("iso:       " + next((o.reason for o in result.iso.outcomes if o.reason), "not built"))
    return "\n".join(lines)


def _result_json(result) -> dict:
    return {"stages": [o.__dict__ for o in result.outcomes], "values": result.values,
            "seconds": round(result.seconds, 3)}


def _build(args: argparse.Namespace) -> int:
    from cernvm_build.pipeline.engine import Context, Reporter, run_pipeline
    from cernvm_build.pipeline.stages import default_stages

    definition, bundle = load_definition(args)
    if definition.snapshots:
        return _build_snapshots(args, definition)
    ctx = Context(definition, offline=args.offline or bundle is not None, bundle=bundle,
                  progress=sys.stderr.isatty() and not args.quiet)
    reporter = Reporter(enabled=False if args.quiet else (True if args.progress else None))
    result = run_pipeline(definition, default_stages(), ctx=ctx, force=args.force or (), reporter=reporter,
                          only=_until(args))
    if args.json:
        print(json.dumps(_result_json(result), indent=2, sort_keys=True, default=str))
    elif not args.quiet:
        print(render_summary(result))
    return 0


def _until(args: argparse.Namespace):
    """--until STAGE: a filter keeping STAGE and the stages before it."""
    from cernvm_build.pipeline.stages import default_stages

    if not args.until:
        return None
    names = [s.name for s in default_stages()]
    if args.until not in names:
        raise SystemExit(f"error: --until: no stage {args.until!r} (stages: {', '.join(names)})")
    stop = set(names[names.index(args.until) + 1:])
    return lambda s: s.name not in stop


def _build_snapshots(args: argparse.Namespace, definition) -> int:
    """A [[snapshots]] definition: each snapshot's pipeline into the shared repository, then one ISO."""
    from cernvm_build.errors import PipelineConfigError
    from cernvm_build.pipeline.engine import Reporter
    from cernvm_build.pipeline.releases import run_snapshots

    if args.lock_file:
        raise PipelineConfigError(f"{definition.path}: --lock-file names one lock, but the definition has "
                                  f"{len(definition.snapshots)} snapshots (each names its own lock-file)")
    reporter = Reporter(enabled=False if args.quiet else (True if args.progress else None))
    result = run_snapshots(definition, offline=args.offline, progress=sys.stderr.isatty() and not args.quiet,
                           force=tuple(args.force or ()), reporter=reporter, only=_until(args))
    if args.json:
        print(json.dumps({"snapshots": {r.definition.name: _result_json(r) for r in result.snapshots},
                          "iso": _result_json(result.iso) if result.iso else None,
                          "seconds": round(result.seconds, 3)}, indent=2, sort_keys=True, default=str))
    elif not args.quiet:
        print(render_snapshots_summary(result))
    return 0
