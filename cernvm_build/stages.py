"""The stage registry of `cernvm-build build`: lock -> sign -> fetch -> rootfs -> publish -> iso -> image.

Each stage is a thin adapter over the library function the stand-alone command also calls
(`resolve.lock`, `attest.sign_lock`, `fetch.fetch_closure`, `rootfs.build_rootfs`, `cvmfs.publish`,
`boot.iso.build_iso`, `image.make_image`): it names its inputs as digests and returns its outputs as
data (see pipeline.py for the skipping rule). A stage that is not configured or not part of this
build reports why it is skipped instead of failing, so optional stages are simply entries here.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from . import __version__
from .closure import digest as lock_digest_of
from .errors import CernVMBuildError, LockError
from .fsutil import sha256_file, source_date_epoch
from .pipeline import Context, Stage


def _file_fingerprint(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _same_file(path: str | None, fingerprint: dict | None) -> bool:
    """Outputs too big to re-hash on every run are checked by size and mtime (like a stat cache)."""
    if not path or not fingerprint:
        return False
    try:
        return _file_fingerprint(Path(path)) == fingerprint
    except OSError:
        return False


@contextlib.contextmanager
def _source_date_epoch(value: int) -> Iterator[None]:
    """Publish with the lock's epoch as the clock: the same lock gives the same catalogs and root hash."""
    old = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(value)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = old


# ------------------------------------------------------------------------------------------------ lock
class LockStage(Stage):
    """recipe -> closures/NAME.lock.toml. `reuse` keeps a lock made from this very recipe (its
    recipe-digest matches); `refresh` re-resolves every run and rewrites the file only if it changed;
    from a bundle, the bundle's lock is used as it is (its inventory digest must match)."""

    name = "lock"

    def volatile(self, ctx: Context) -> bool:
        return ctx.definition.lock_mode == "refresh"

    def _recipe(self, ctx: Context):
        from .recipe import load_recipe

        return load_recipe(ctx.definition.recipe)

    def inputs(self, ctx: Context) -> dict[str, Any]:
        d = ctx.definition
        if d.lock_mode == "bundle":
            return {"mode": "bundle", "lock_file": str(d.lock_file), "lock": _digest_file(d.lock_file)}
        return {"mode": d.lock_mode, "recipe": self._recipe(ctx).digest(), "lock_file": str(d.lock_file),
                "offline": ctx.offline}

    def run(self, ctx: Context) -> dict[str, Any]:
        from .closure import dumps, loads, read_lock
        from .fsutil import atomic_write
        from .resolve import LockOptions, resolve

        d = ctx.definition
        path = d.lock_file
        if d.lock_mode == "bundle":
            data = path.read_bytes()
            inv = json.loads((path.parent / "cernvm-bundle.json").read_text())
            if inv.get("lock-digest") != lock_digest_of(data):
                raise LockError(f"{path}: digest {lock_digest_of(data)} differs from the bundle inventory's "
                                f"{inv.get('lock-digest')} (the bundle was altered)")
            return self._outputs(path, data, "from bundle")
        recipe = self._recipe(ctx)
        action = "resolved"
        if d.lock_mode == "reuse" and path.exists():
            closure = read_lock(path)
            if closure.recipe_digest == recipe.digest():
                return self._outputs(path, path.read_bytes(), "reused")
            action = "re-resolved (recipe changed)"
        text = dumps(resolve(recipe, LockOptions(cache_dir=d.cache_dir, offline=ctx.offline)))
        data = text.encode()
        if path.exists() and path.read_bytes() == data:
            action = "unchanged"
        else:
            loads(text, str(path))   # never write what we could not read back
            atomic_write(path, data)
        return self._outputs(path, data, action)

    @staticmethod
    def _outputs(path: Path, data: bytes, action: str) -> dict[str, Any]:
        from .closure import loads
        from .rootfs import lock_epoch

        closure = loads(data.decode("utf-8"), str(path))
        return {"lock_file": str(path), "lock_digest": lock_digest_of(data), "lock_name": closure.name,
                "packages": len(closure.packages), "download_bytes": sum(p.size for p in closure.packages),
                "lock_action": action, "sde": source_date_epoch(lock_epoch(closure))}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        return _digest_file(Path(outputs["lock_file"])) == outputs["lock_digest"]

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return (f"{outputs['packages']} packages, {outputs['lock_digest'][:19]}…"
                + (f", {outputs['lock_action']}" if fresh else ""))


def _digest_file(path: Path) -> str | None:
    try:
        return lock_digest_of(path.read_bytes())
    except OSError:
        return None


# ------------------------------------------------------------------------------------------------ sign
class SignStage(Stage):
    """Sign the lock (in-toto statement in a Sigstore bundle) and verify it with the public key; from a
    bundle, verify the signature the bundle carries."""

    name = "sign"

    def skip_reason(self, ctx: Context) -> str | None:
        s = ctx.definition.signing
        if s is None:
            return "no [signing] section"
        if s.key is None and s.public_key is None and s.identity is None:
            return "no key configured"
        return None

    def _paths(self, ctx: Context) -> tuple[Path | None, Path, Path]:
        from .attest import bundle_path_for

        s = ctx.definition.signing
        lock = Path(ctx.need("lock_file"))
        return s.key, s.public_key, s.signature or bundle_path_for(lock)

    def inputs(self, ctx: Context) -> dict[str, Any]:
        from .attest import generate_key

        key, pub, sig = self._paths(ctx)
        s = ctx.definition.signing
        if key is not None and s.generate and not key.exists():
            if key.with_suffix(".pub") != pub:
                raise CernVMBuildError(f"[signing]: generate = true makes {key.with_suffix('.pub')}, "
                                       f"but public-key is {pub}")
            generate_key(key.parent, key.stem)
        inputs = {"lock": ctx.need("lock_digest"), "public_key": _digest_file(pub) if pub else None,
                  "private_key": str(key) if key else None, "signature": str(sig)}
        if s.identity is not None:     # keyless: who must have signed, under which roots
            inputs.update(identity=s.identity, issuer=s.issuer, keyless_sign=s.keyless,
                          trusted_root=_digest_file(s.trusted_root) if s.trusted_root else None)
        return inputs

    def run(self, ctx: Context) -> dict[str, Any]:
        from .attest import sign_lock, verify_lock

        s = ctx.definition.signing
        key, pub, sig = self._paths(ctx)
        lock = Path(ctx.need("lock_file"))
        signing = key is not None or s.keyless
        if not signing and not sig.exists():
            trust = f"the public key {pub}" if pub else f"the keyless identity {s.identity}"
            raise CernVMBuildError(f"{sig}: no signature to verify the lock with, but [signing] names {trust} "
                                   "(sign the lock, or remove [signing] to accept it unsigned)")
        if key is not None:
            if not key.exists():
                raise CernVMBuildError(f"signing key {key} does not exist (set generate = true to make one)")
            sign_lock(lock, key, sig)
        if s.identity is not None:
            from .keyless import KeylessIdentity, KeylessSigner

            if s.keyless:
                sign_lock(lock, out=sig, keyless=KeylessSigner(trust_config=s.trust_config))
            v = verify_lock(lock, bundle=sig, identity=KeylessIdentity(s.identity, s.issuer, s.trusted_root))
        else:
            v = verify_lock(lock, pub, sig)
        return {"signature": str(sig), "signature_sha256": sha256_file(sig), "signer": v.key_id,
                "signed": signing, "keyless": v.keyless}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        try:
            return sha256_file(outputs["signature"]) == outputs["signature_sha256"]
        except OSError:
            return False

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        who = f"keyless, {outputs['signer']}" if outputs.get("keyless") else f"key {outputs['signer'][:16]}"
        return ("signed and verified" if outputs["signed"] else "verified") + f", {who}"


# ------------------------------------------------------------------------------------------------ fetch
class FetchStage(Stage):
    """Every locked package, verified by the lock's sha256, into the package cache (from a bundle: only
    from the bundle, offline)."""

    name = "fetch"

    def _mirrors(self, ctx: Context) -> tuple[Path, ...]:
        return (ctx.bundle,) if ctx.bundle else ()

    def inputs(self, ctx: Context) -> dict[str, Any]:
        from .fetch import PackageStore

        return {"lock": ctx.need("lock_digest"), "cache": str(PackageStore.at(ctx.definition.cache_dir).root),
                "mirrors": [str(m) for m in self._mirrors(ctx)]}

    def run(self, ctx: Context) -> dict[str, Any]:
        from .closure import read_lock
        from .fetch import FetchOptions, PackageStore, fetch_closure

        closure = read_lock(ctx.need("lock_file"))
        store = PackageStore.at(ctx.definition.cache_dir)
        opts = FetchOptions(mirrors=self._mirrors(ctx), offline=ctx.offline or ctx.bundle is not None,
                            jobs=ctx.definition.jobs, progress=ctx.progress)
        report = fetch_closure(closure, store, opts)
        return {"fetch_summary": report.summary(), "downloaded_bytes": report.bytes_transferred}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        from .closure import read_lock
        from .fetch import PackageStore

        store = PackageStore.at(ctx.definition.cache_dir)
        return all(store.has(p) for p in read_lock(ctx.need("lock_file")).packages)

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return outputs["fetch_summary"] if fresh else "every package verified in the cache"


# ------------------------------------------------------------------------------------------------ rootfs
class RootfsStage(Stage):
    """The root tree at STATE/rootfs, rebuilt beside it and swapped in only when complete."""

    name = "rootfs"

    def inputs(self, ctx: Context) -> dict[str, Any]:
        return {"lock": ctx.need("lock_digest"), "mode": ctx.definition.rootfs_mode, "sde": ctx.need("sde"),
                "dest": str(ctx.definition.rootfs_dir), "builder": __version__}

    def run(self, ctx: Context) -> dict[str, Any]:
        from .closure import read_lock
        from .fetch import PackageStore, package_paths
        from .rootfs import RootfsOptions, build_rootfs
        from .treestat import tree_stat

        closure = read_lock(ctx.need("lock_file"))
        files = package_paths(closure, PackageStore.at(ctx.definition.cache_dir))
        dest = ctx.definition.rootfs_dir
        new = dest.with_name(dest.name + ".new")
        old = dest.with_name(dest.name + ".old")
        for stale in (new, old):
            if os.path.lexists(stale):
                shutil.rmtree(stale)
        result = build_rootfs(closure, new, files, RootfsOptions(mode=ctx.definition.rootfs_mode,
                                                                 sde=ctx.need("sde")))
        if os.path.lexists(dest):
            os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old, ignore_errors=True)
        st = tree_stat(dest)
        return {"tree": str(dest), "tree_stat": st.digest, "tree_bytes": st.bytes, "tree_files": st.files,
                "tree_entries": st.entries, "rootfs_seconds": round(result.seconds, 2)}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        from .treestat import tree_stat

        tree = Path(outputs["tree"])
        return tree.is_dir() and tree_stat(tree).digest == outputs["tree_stat"]

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return f"{outputs['tree_files']} files, {outputs['tree_bytes'] / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------------------ publish
def render_tag(ctx: Context) -> str:
    d = ctx.definition
    lock = ctx.need("lock_digest").split(":", 1)[-1]
    return d.cvmfs.tag.format(name=d.name, lock_digest=lock, lock_digest12=lock[:12], mode=d.rootfs_mode,
                              recipe=ctx.values.get("lock_name", d.name))


class PublishStage(Stage):
    """The tree as a new tagged revision of the CernVM-FS repository (created on first use), with the
    lock inside it; published at the lock's epoch so a respawn gives the same root hash."""

    name = "publish"

    def inputs(self, ctx: Context) -> dict[str, Any]:
        c = ctx.definition.cvmfs
        return {"tree": ctx.need("tree_stat"), "lock": ctx.need("lock_digest"), "sde": ctx.need("sde"),
                "repository": str(c.repository), "fqrn": c.fqrn, "tag": render_tag(ctx),
                "description": c.description, "publisher": __version__}

    def run(self, ctx: Context) -> dict[str, Any]:
        import time

        from .cvmfs.keys import create_keys
        from .cvmfs.publish import PublishOptions, init_repository, publish
        from .cvmfs.reader import Repository

        c = ctx.definition.cvmfs
        tag = render_tag(ctx)
        created = False
        if not (c.repository / ".cvmfspublished").exists():
            # keys (certificate validity) use the wall clock; the empty first revision uses the epoch
            create_keys(c.keys, c.fqrn, int(time.time()))
            with _source_date_epoch(ctx.need("sde")):
                init_repository(c.repository, c.fqrn, c.keys)
            created = True
        with Repository(str(c.repository), check_whitelist=False) as r:
            if r.fqrn != c.fqrn:
                raise CernVMBuildError(f"{c.repository} holds repository {r.fqrn!r}, the pipeline names {c.fqrn!r}")
            existing = {t.name: t for t in r.tags()}
        if tag in existing:
            raise CernVMBuildError(
                f"tag {tag!r} already exists in {c.repository} (root {existing[tag].hash}) but this state "
                f"directory has no record of publishing it from this tree; change [cvmfs] tag or remove the "
                f"tag with `cernvm-build cvmfs gc`")
        with _source_date_epoch(ctx.need("sde")):
            r = publish(ctx.need("tree"), c.repository, c.keys,
                        PublishOptions(tag=tag, description=c.description, lock_file=Path(ctx.need("lock_file")),
                                       workers=0))
        return {"repository": str(c.repository), "fqrn": r.fqrn, "tag": r.tag, "revision": r.revision,
                "root_hash": r.root_hash, "objects_written": r.objects_written,
                "data_objects_written": r.data_objects_written, "bytes_written": r.bytes_written,
                "repository_created": created, "cvmfs_pubkey": str(c.keys / f"{c.fqrn}.pub")}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        from .cvmfs.reader import Repository

        try:
            with Repository(outputs["repository"], check_whitelist=False) as r:
                return any(t.name == outputs["tag"] and t.hash == outputs["root_hash"] for t in r.tags())
        except (CernVMBuildError, OSError):
            return False

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return (f"tag {outputs['tag']} revision {outputs['revision']}, root {outputs['root_hash'][:12]}…"
                + (f", {outputs['data_objects_written']} new data objects" if fresh else ""))


# ------------------------------------------------------------------------------------------------ iso
@dataclass(frozen=True)
class IsoRequest:
    """Everything the boot ISO needs, as data: the seam between the pipeline and `boot/iso.py`."""

    boot_lock: Path          # closure of the boot system (kernel, busybox, CernVM-FS client)
    repo_url: str            # where clients fetch the repository
    fqrn: str
    tag: str                 # snapshot to boot
    root_hash: str           # ... pinned by its root catalog hash
    public_key: Path         # repository master public key (verifies the whitelist)
    output: Path
    cache_dir: Path | None
    offline: bool
    client_lock: Path | None = None   # the initramfs's user space from this lock instead of the host


BOOT_ISO_MODULE = "cernvm_build.boot.iso"
UNAVAILABLE = "boot ISO stage not available in this build"


def iso_builder() -> Callable[..., Any] | None:
    """`cernvm_build.boot.iso.build_iso` when the boot stage is part of this build, else None."""
    try:
        module = importlib.import_module(BOOT_ISO_MODULE)
    except ImportError:
        return None
    return getattr(module, "build_iso", None)


def call_build_iso(build_iso: Callable[..., Any], req: IsoRequest) -> Path:
    """The one place that knows build_iso's signature: boot.iso.build_iso(out, IsoOptions)."""
    import inspect

    if "opts" in inspect.signature(build_iso).parameters:
        from .boot.iso import IsoOptions
        from .fetch import FetchOptions

        opts = IsoOptions(boot_lock=Path(req.boot_lock), repo_url=req.repo_url, pubkeys=[Path(req.public_key)],
                          tag=req.tag, cache_root=Path(req.cache_dir) if req.cache_dir else None,
                          fetch=FetchOptions(offline=req.offline),
                          client_lock=Path(req.client_lock) if req.client_lock else None)
        result = build_iso(req.output, opts)
    else:                      # a stand-in taking the request's fields (tests of the seam)
        result = build_iso(**asdict(req))
    path = getattr(result, "path", result)
    return Path(path) if isinstance(path, (str, os.PathLike)) else req.output


class IsoStage(Stage):
    name = "iso"

    def skip_reason(self, ctx: Context) -> str | None:
        if ctx.definition.iso is None:
            return "no [iso] section"
        if iso_builder() is None:
            return UNAVAILABLE
        return None

    def _request(self, ctx: Context) -> IsoRequest:
        i = ctx.definition.iso
        return IsoRequest(boot_lock=i.boot_lock, repo_url=i.repo_url, fqrn=ctx.need("fqrn"), tag=ctx.need("tag"),
                          root_hash=ctx.need("root_hash"), public_key=Path(ctx.need("cvmfs_pubkey")),
                          output=i.output, cache_dir=ctx.definition.cache_dir, offline=ctx.offline,
                          client_lock=i.client_lock)

    def inputs(self, ctx: Context) -> dict[str, Any]:
        req = self._request(ctx)
        return {**{k: str(v) for k, v in asdict(req).items()}, "boot_lock": _digest_file(req.boot_lock),
                "public_key": _digest_file(req.public_key), "builder": __version__,
                "client_lock": _digest_file(req.client_lock) if req.client_lock else None}

    def run(self, ctx: Context) -> dict[str, Any]:
        path = call_build_iso(iso_builder(), self._request(ctx))
        return {"iso": str(path), "iso_bytes": path.stat().st_size, "iso_file": _file_fingerprint(path)}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        return _same_file(outputs.get("iso"), outputs.get("iso_file"))

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return f"{outputs['iso']} {outputs['iso_bytes'] / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------------ image
class ImageStage(Stage):
    """Optional classic disk image of the same tree, for the size comparison with ISO + objects."""

    name = "image"

    def skip_reason(self, ctx: Context) -> str | None:
        return None if ctx.definition.image else "no [image] section"

    def _output(self, ctx: Context) -> Path:
        i = ctx.definition.image
        return i.output or ctx.definition.state_dir / "image" / f"{ctx.definition.name}.{i.format}"

    def inputs(self, ctx: Context) -> dict[str, Any]:
        i = ctx.definition.image
        return {"tree": ctx.need("tree_stat"), "format": i.format, "size_mib": i.size_mib,
                "output": str(self._output(ctx)), "sde": ctx.need("sde"), "builder": __version__}

    def run(self, ctx: Context) -> dict[str, Any]:
        from .image import ImageOptions, make_image

        i = ctx.definition.image
        r = make_image(ctx.need("tree"), self._output(ctx), ImageOptions(format=i.format, size_mib=i.size_mib,
                                                                          sde=ctx.need("sde")))
        return {"image": str(r.path), "image_format": r.format, "image_bytes": r.bytes,
                "image_allocated_bytes": r.allocated_bytes, "image_virtual_bytes": r.virtual_bytes,
                "image_sha256": r.sha256, "image_file": _file_fingerprint(r.path)}

    def outputs_valid(self, ctx: Context, outputs: dict[str, Any]) -> bool:
        return _same_file(outputs.get("image"), outputs.get("image_file"))

    def describe(self, outputs: dict[str, Any], fresh: bool) -> str:
        return f"{outputs['image_format']} {outputs['image_bytes'] / 2**20:.1f} MiB"


def default_stages() -> list[Stage]:
    """The registry, in order. A new stage is one more entry (optional ones say why they skip)."""
    return [LockStage(), SignStage(), FetchStage(), RootfsStage(), PublishStage(), IsoStage(), ImageStage()]
