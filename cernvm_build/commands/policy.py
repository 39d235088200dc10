"""`policy stay|diverge|rebase`: update policies as closure diffs (library: lock.resolve.update)."""

from __future__ import annotations

import argparse


def register(sub: "argparse._SubParsersAction") -> None:
    p = sub.add_parser("policy", help="update policies: stay, diverge, rebase")
    ps = p.add_subparsers(dest="policy", metavar="POLICY", required=True)

    s = ps.add_parser("stay", help="keep the pinned closure; report what it is not getting")
    s.add_argument("lock")
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--recipe", help="re-resolve this recipe against current metadata")
    g.add_argument("--newest", help="compare against this lock instead")
    s.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    s.add_argument("--exit-code", action="store_true", help="exit 1 when updates are pending")
    _common(s)
    s.set_defaults(func=_stay)

    d = ps.add_parser("diverge", help="local additions/upgrades/removals on top of a base lock")
    d.add_argument("base", help="the base lock (kept exactly)")
    d.add_argument("--recipe", required=True, help="recipe naming the repositories (and name) of the local closure")
    d.add_argument("--add", action="append", default=[], metavar="SPEC", help="package to add (repeatable)")
    d.add_argument("--remove", action="append", default=[], metavar="NAME", help="base package to remove")
    d.add_argument("--upgrade", action="append", default=[], metavar="NAME", help="base package to upgrade")
    d.add_argument("-o", "--output", required=True)
    _common(d)
    d.set_defaults(func=_diverge)

    r = ps.add_parser("rebase", help="move a local lock onto a new base, re-solving its delta")
    r.add_argument("local", help="a lock made by `policy diverge`")
    r.add_argument("--onto", required=True, help="the new base lock")
    r.add_argument("--recipe", required=True, help="recipe naming the repositories of the new base")
    r.add_argument("--drop-conflicts", action="store_true", help="drop local additions that no longer fit")
    r.add_argument("-o", "--output", required=True)
    _common(r)
    r.set_defaults(func=_rebase)


def _options(args):
    from cernvm_build.lock.resolve import LockOptions

    return LockOptions(cache_dir=args.cache, offline=args.offline, allow_expired=args.allow_expired)


def _stay(args: argparse.Namespace) -> int:
    import json

    from cernvm_build.lock.diff import to_json, to_markdown
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve.update import stay

    recipe = load_recipe(args.recipe) if args.recipe else None
    report = stay(args.lock, recipe, args.newest, _options(args))
    if args.format == "json":
        data = json.loads(to_json(report.diff))
        data["security"] = report.security
        print(json.dumps(data, indent=2, sort_keys=True))
    elif args.format == "markdown":
        print(to_markdown(report.diff))
        if report.security:
            print(f"**Security updates not applied:** {', '.join(report.security)}")
    else:
        print(report.text())
    return 1 if args.exit_code and not report.diff.empty else 0


def _diverge(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import write_lock
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve.update import diverge

    closure = diverge(args.base, load_recipe(args.recipe), args.add, args.remove, args.upgrade, _options(args))
    d = write_lock(closure, args.output)
    print(f"wrote {args.output}: {len(closure.packages)} packages ({len(closure.delta.local)} local), {d}")
    return 0


def _rebase(args: argparse.Namespace) -> int:
    from cernvm_build.lock.lockfile import write_lock
    from cernvm_build.lock.recipe import load_recipe
    from cernvm_build.lock.resolve.update import rebase

    report = rebase(args.local, args.onto, load_recipe(args.recipe), _options(args), args.drop_conflicts)
    print(report.text())
    if report.closure is not None:
        d = write_lock(report.closure, args.output)
        print(f"wrote {args.output}: {len(report.closure.packages)} packages, {d}")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="metadata cache directory")
    p.add_argument("--offline", action="store_true", help="use only cached (still verified) metadata")
    p.add_argument("--allow-expired", action="store_true", help="accept Release files past Valid-Until")
