"""The stages of `cernvm-build build`: lock -> sign -> fetch -> rootfs -> publish -> iso -> image.

Each stage is a thin adapter over the library function its stand-alone command also calls
(`lock.resolve.resolve`, `trust.signing.sign_lock`, `store.fetch.fetch_closure`, `rootfs.build_rootfs`,
`cvmfs.publish.publish`, `boot.iso.build_iso`, `image.ext4.make_image`): it states its options and the
earlier outputs it needs, and returns its outputs as a dataclass (see engine.py for the skipping rule).
A stage that is not configured reports why it is skipped instead of failing, so optional stages are
simply entries here.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from cernvm_build import __version__
from cernvm_build.errors import CernVMBuildError, LockError
from cernvm_build.lock.lockfile import digest as lock_digest_of
from cernvm_build.pipeline.engine import Context, Stage, StageOutput
from cernvm_build.util.files import sha256_file, source_date_epoch


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


def _digest_file(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return lock_digest_of(path.read_bytes())
    except OSError:
        return None


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
@dataclass(frozen=True)
class LockOutput(StageOutput):
    key_field = "lock_digest"

    lock_file: str
    lock_digest: str
    lock_name: str
    packages: int
    download_bytes: int
    lock_action: str
    sde: int                         # SOURCE_DATE_EPOCH of everything built from the lock


class LockStage(Stage):
    """recipe -> closures/NAME.lock.toml. `reuse` keeps a lock made from this very recipe (its
    recipe-digest matches); `refresh` re-resolves every run and rewrites the file only if it changed;
    from a bundle, the bundle's lock is used as it is (its inventory digest must match)."""

    name = "lock"
    output = LockOutput

    def volatile(self, ctx: Context) -> bool:
        return ctx.definition.lock_mode == "refresh"

    def _recipe(self, ctx: Context):
        from cernvm_build.lock.recipe import load_recipe

        return load_recipe(ctx.definition.recipe)

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        d = ctx.definition
        if d.lock_mode == "bundle":
            return {"mode": "bundle", "lock_file": str(d.lock_file), "lock": _digest_file(d.lock_file)}
        return {"mode": d.lock_mode, "recipe": self._recipe(ctx).digest(), "lock_file": str(d.lock_file),
                "offline": ctx.offline}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> LockOutput:
        from cernvm_build.lock.lockfile import dumps, loads, read_lock
        from cernvm_build.lock.resolve import LockOptions, resolve
        from cernvm_build.util.files import atomic_write

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
    def _outputs(path: Path, data: bytes, action: str) -> LockOutput:
        from cernvm_build.lock.lockfile import loads, lock_epoch

        closure = loads(data.decode("utf-8"), str(path))
        return LockOutput(lock_file=str(path), lock_digest=lock_digest_of(data), lock_name=closure.name,
                          packages=len(closure.packages), download_bytes=sum(p.size for p in closure.packages),
                          lock_action=action, sde=source_date_epoch(lock_epoch(closure)))

    def outputs_valid(self, ctx: Context, outputs: LockOutput) -> bool:
        return _digest_file(Path(outputs.lock_file)) == outputs.lock_digest

    def describe(self, outputs: LockOutput, fresh: bool) -> str:
        return (f"{outputs.packages} packages, {outputs.lock_digest[:19]}…"
                + (f", {outputs.lock_action}" if fresh else ""))


# ------------------------------------------------------------------------------------------------ sign
@dataclass(frozen=True)
class SignOutput(StageOutput):
    key_field = "signature_sha256"

    signature: str
    signature_sha256: str
    signer: str
    signed: bool
    keyless: bool
    public_key_sha256: str | None = None     # the key verified with (keys are generated by run())


class SignStage(Stage):
    """Sign the lock (with a key, generated on first use if asked, or keylessly) and verify it."""

    name = "sign"
    output = SignOutput
    needs = {"lock": "lock"}

    def skip_reason(self, ctx: Context) -> str | None:
        s = ctx.definition.signing
        if s is None:
            return "no [signing] section"
        if s.key is None and s.public_key is None and s.identity is None:
            return "no key configured"
        return None

    def _paths(self, ctx: Context, lock: LockOutput) -> tuple[Path | None, Path | None, Path]:
        from cernvm_build.trust.signing import bundle_path_for

        s = ctx.definition.signing
        return s.key, s.public_key, s.signature or bundle_path_for(lock.lock_file)

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        key, pub, sig = self._paths(ctx, inputs["lock"])
        s = ctx.definition.signing
        options = {"public_key_file": str(pub) if pub else None, "private_key": str(key) if key else None,
                   "generate": s.generate, "signature": str(sig)}
        if s.identity is not None:     # keyless: who must have signed, under which roots
            options.update(identity=s.identity, issuer=s.issuer, keyless_sign=s.keyless,
                           trusted_root=_digest_file(s.trusted_root))
        return options

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> SignOutput:
        from cernvm_build.trust.signing import generate_key, sign_lock, verify_lock

        s = ctx.definition.signing
        key, pub, sig = self._paths(ctx, inputs["lock"])
        lock = Path(inputs["lock"].lock_file)
        if key is not None and s.generate and not key.exists():
            if key.with_suffix(".pub") != pub:
                raise CernVMBuildError(f"[signing]: generate = true makes {key.with_suffix('.pub')}, "
                                       f"but public-key is {pub}")
            generate_key(key.parent, key.stem)
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
            from cernvm_build.trust.keyless import KeylessIdentity, KeylessSigner

            if s.keyless:
                sign_lock(lock, out=sig, keyless=KeylessSigner(trust_config=s.trust_config))
            v = verify_lock(lock, bundle=sig, identity=KeylessIdentity(s.identity, s.issuer, s.trusted_root))
        else:
            v = verify_lock(lock, pub, sig)
        return SignOutput(signature=str(sig), signature_sha256=sha256_file(sig), signer=v.key_id, signed=signing,
                          keyless=v.keyless, public_key_sha256=sha256_file(pub) if pub else None)

    def outputs_valid(self, ctx: Context, outputs: SignOutput) -> bool:
        pub = ctx.definition.signing.public_key
        try:
            return (sha256_file(outputs.signature) == outputs.signature_sha256
                    and (sha256_file(pub) if pub else None) == outputs.public_key_sha256)
        except OSError:
            return False

    def describe(self, outputs: SignOutput, fresh: bool) -> str:
        who = f"keyless, {outputs.signer}" if outputs.keyless else f"key {outputs.signer[:16]}"
        return ("signed and verified" if outputs.signed else "verified") + f", {who}"


# ------------------------------------------------------------------------------------------------ fetch
@dataclass(frozen=True)
class FetchOutput(StageOutput):
    fetch_summary: str
    downloaded_bytes: int


class FetchStage(Stage):
    """Every locked package, verified by the lock's sha256, into the content store (from a bundle: only
    from the bundle, offline)."""

    name = "fetch"
    output = FetchOutput
    needs = {"lock": "lock"}

    def _mirrors(self, ctx: Context) -> tuple[Path, ...]:
        return (ctx.bundle,) if ctx.bundle else ()

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        from cernvm_build.util.content_store import ContentStore

        return {"cache": str(ContentStore.at(ctx.definition.cache_dir).root),
                "mirrors": [str(m) for m in self._mirrors(ctx)]}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> FetchOutput:
        from cernvm_build.lock.lockfile import read_lock
        from cernvm_build.store.fetch import FetchOptions, fetch_closure
        from cernvm_build.util.content_store import ContentStore

        closure = read_lock(inputs["lock"].lock_file)
        store = ContentStore.at(ctx.definition.cache_dir)
        opts = FetchOptions(mirrors=self._mirrors(ctx), offline=ctx.offline or ctx.bundle is not None,
                            jobs=ctx.definition.jobs, progress=ctx.progress)
        report = fetch_closure(closure, store, opts)
        return FetchOutput(fetch_summary=report.summary(), downloaded_bytes=report.bytes_transferred)

    def outputs_valid(self, ctx: Context, outputs: FetchOutput) -> bool:
        # every package is still in the store (the lock is this run's: fetch reruns when it changes)
        from cernvm_build.lock.lockfile import read_lock
        from cernvm_build.util.content_store import ContentStore

        store = ContentStore.at(ctx.definition.cache_dir)
        return all(store.has(p) for p in read_lock(ctx.definition.lock_file).packages)

    def describe(self, outputs: FetchOutput, fresh: bool) -> str:
        return outputs.fetch_summary if fresh else "every package verified in the cache"


# ------------------------------------------------------------------------------------------------ rootfs
@dataclass(frozen=True)
class TreeOutput(StageOutput):
    key_field = "tree_stat"

    tree: str
    tree_stat: str
    tree_bytes: int
    tree_files: int
    tree_entries: int
    rootfs_seconds: float


class RootfsStage(Stage):
    """The root tree at STATE/rootfs, rebuilt beside it and swapped in only when complete."""

    name = "rootfs"
    output = TreeOutput
    needs = {"lock": "lock"}

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        return {"mode": ctx.definition.rootfs_mode, "sde": inputs["lock"].sde,
                "dest": str(ctx.definition.rootfs_dir), "builder": __version__}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> TreeOutput:
        from cernvm_build.lock.lockfile import read_lock
        from cernvm_build.rootfs import RootfsOptions, build_rootfs
        from cernvm_build.store.fetch import package_paths
        from cernvm_build.util.content_store import ContentStore
        from cernvm_build.util.treestat import tree_stat

        closure = read_lock(inputs["lock"].lock_file)
        files = package_paths(closure, ContentStore.at(ctx.definition.cache_dir))
        dest = ctx.definition.rootfs_dir
        new = dest.with_name(dest.name + ".new")
        old = dest.with_name(dest.name + ".old")
        for stale in (new, old):
            if os.path.lexists(stale):
                shutil.rmtree(stale)
        result = build_rootfs(closure, new, files, RootfsOptions(mode=ctx.definition.rootfs_mode,
                                                                 sde=inputs["lock"].sde))
        if os.path.lexists(dest):
            os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old, ignore_errors=True)
        st = tree_stat(dest)
        return TreeOutput(tree=str(dest), tree_stat=st.digest, tree_bytes=st.bytes, tree_files=st.files,
                          tree_entries=st.entries, rootfs_seconds=round(result.seconds, 2))

    def outputs_valid(self, ctx: Context, outputs: TreeOutput) -> bool:
        from cernvm_build.util.treestat import tree_stat

        tree = Path(outputs.tree)
        return tree.is_dir() and tree_stat(tree).digest == outputs.tree_stat

    def describe(self, outputs: TreeOutput, fresh: bool) -> str:
        return f"{outputs.tree_files} files, {outputs.tree_bytes / 1e6:.1f} MB"


# ------------------------------------------------------------------------------------------------ publish
@dataclass(frozen=True)
class SnapshotOutput(StageOutput):
    key_field = "root_hash"

    repository: str
    fqrn: str
    tag: str
    revision: int
    root_hash: str
    objects_written: int
    data_objects_written: int
    bytes_written: int
    repository_created: bool
    cvmfs_pubkey: str


def render_tag(ctx: Context, lock: LockOutput) -> str:
    d = ctx.definition
    digest = lock.lock_digest.split(":", 1)[-1]
    return d.cvmfs.tag.format(name=d.name, lock_digest=digest, lock_digest12=digest[:12], mode=d.rootfs_mode,
                              recipe=lock.lock_name or d.name)


def _signature(inputs: Mapping[str, StageOutput]) -> Path | None:
    """The sign stage's bundle, stored in the snapshot beside the lock, when that stage ran. Not part of the
    publish key: it signs the lock, whose digest is in the key (and the tag) already."""
    sign = inputs.get("sign")
    return Path(sign.signature) if isinstance(sign, SignOutput) else None


class PublishStage(Stage):
    """The tree as a new tagged revision of the CernVM-FS repository (created on first use), with the
    lock inside it; published at the lock's epoch so a respawn gives the same root hash."""

    name = "publish"
    output = SnapshotOutput
    needs = {"tree": "rootfs", "lock": "lock"}

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        c = ctx.definition.cvmfs
        return {"sde": inputs["lock"].sde, "repository": str(c.repository), "fqrn": c.fqrn,
                "tag": render_tag(ctx, inputs["lock"]), "description": c.description, "publisher": __version__}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> SnapshotOutput:
        from cernvm_build.cvmfs.keys import create_keys
        from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
        from cernvm_build.cvmfs.reader import Repository

        c = ctx.definition.cvmfs
        lock: LockOutput = inputs["lock"]
        tag = render_tag(ctx, lock)
        created = False
        if not (c.repository / ".cvmfspublished").exists():
            # keys (certificate validity) use the wall clock; the empty first revision uses the epoch
            create_keys(c.keys, c.fqrn, int(time.time()))
            with _source_date_epoch(lock.sde):
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
        with _source_date_epoch(lock.sde):
            r = publish(inputs["rootfs"].tree, c.repository, c.keys,
                        PublishOptions(tag=tag, description=c.description, lock_file=Path(lock.lock_file),
                                       signature=_signature(inputs), workers=0))
        return SnapshotOutput(repository=str(c.repository), fqrn=r.fqrn, tag=r.tag, revision=r.revision,
                              root_hash=r.root_hash, objects_written=r.objects_written,
                              data_objects_written=r.data_objects_written, bytes_written=r.bytes_written,
                              repository_created=created, cvmfs_pubkey=str(c.keys / f"{c.fqrn}.pub"))

    def outputs_valid(self, ctx: Context, outputs: SnapshotOutput) -> bool:
        from cernvm_build.cvmfs.reader import Repository

        try:
            with Repository(outputs.repository, check_whitelist=False) as r:
                return any(t.name == outputs.tag and t.hash == outputs.root_hash for t in r.tags())
        except (CernVMBuildError, OSError):
            return False

    def describe(self, outputs: SnapshotOutput, fresh: bool) -> str:
        return (f"tag {outputs.tag} revision {outputs.revision}, root {outputs.root_hash[:12]}…"
                + (f", {outputs.data_objects_written} new data objects" if fresh else ""))


# ------------------------------------------------------------------------------------------------ iso
MENU_ENTRIES = 16                    # the boot menu lists this many tags (one screen in either loader)


@dataclass(frozen=True)
class IsoOutput(StageOutput):
    iso: str
    iso_bytes: int
    iso_file: dict


class IsoStage(Stage):
    """The boot ISO for the snapshot just published, pinned to its root hash (the tag is a label;
    cvmfs.rebase=1 moves on) and never mounting an older revision than its own: boot.iso.build_iso with
    the IsoOptions built here.

    BUILDER is the function that writes the ISO (default: boot.iso.build_iso); it receives exactly the
    options the stage's key covers."""

    name = "iso"
    output = IsoOutput
    needs = {"snapshot": "publish"}

    def __init__(self, builder: Callable[..., Any] | None = None):
        self.builder = builder
        self._last: tuple[Context, StageOutput, Any] | None = None   # options() then run(): one request

    def skip_reason(self, ctx: Context) -> str | None:
        return None if ctx.definition.iso is not None else "no [iso] section"

    def request(self, ctx: Context, inputs: Mapping[str, StageOutput]):
        """The IsoOptions of this build: everything build_iso reads, and nothing it does not. The engine
        asks for the key (options) and then runs: the repository is opened and its tags verified once."""
        snap = inputs["publish"]
        if self._last is not None and self._last[0] is ctx and self._last[1] is snap:
            return self._last[2]
        request = self._request(ctx, snap)
        self._last = (ctx, snap, request)
        return request

    def _request(self, ctx: Context, snap: SnapshotOutput):
        from cernvm_build.boot.iso import IsoOptions
        from cernvm_build.store.fetch import FetchOptions

        i = ctx.definition.iso
        return IsoOptions(boot_lock=i.boot_lock, repo_url=i.repo_url, pubkeys=[Path(snap.cvmfs_pubkey)],
                          tag=snap.tag, root_hash=snap.root_hash, min_revision=snap.revision,
                          cache_root=ctx.definition.cache_dir,
                          fetch=FetchOptions(offline=ctx.offline), client_lock=i.client_lock,
                          menu=self.menu(snap))

    @staticmethod
    def menu(snap: SnapshotOutput) -> list:
        """The boot menu: this snapshot first (the default), then the repository's other tags, newest
        revision first, each pinned to its root hash; at most MENU_ENTRIES."""
        from cernvm_build.boot.iso import menu_from_repository

        entries = menu_from_repository(snap.repository, [Path(snap.cvmfs_pubkey)])
        own = [e for e in entries if e.tag == snap.tag and e.root_hash == snap.root_hash]
        if not own:
            raise CernVMBuildError(f"{snap.repository}: tag {snap.tag} (root {snap.root_hash}) is not there "
                                   "to boot (published by this pipeline, removed since?)")
        return (own + [e for e in entries if e is not own[0]])[:MENU_ENTRIES]

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        opts = self.request(ctx, inputs)
        return {"boot_lock": _digest_file(opts.boot_lock), "client_lock": _digest_file(opts.client_lock),
                "repo_url": opts.repo_url, "pubkeys": [_digest_file(p) for p in opts.pubkeys], "tag": opts.tag,
                "root_hash": opts.root_hash, "min_revision": opts.min_revision, "cache_root": str(opts.cache_root),
                "menu": [(e.tag, e.root_hash, e.label, e.description) for e in opts.menu],
                "offline": opts.fetch.offline,
                "output": str(ctx.definition.iso.output), "builder": __version__}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> IsoOutput:
        from cernvm_build.boot.iso import build_iso

        out = ctx.definition.iso.output
        out.parent.mkdir(parents=True, exist_ok=True)
        (self.builder or build_iso)(out, self.request(ctx, inputs))
        return IsoOutput(iso=str(out), iso_bytes=out.stat().st_size, iso_file=_file_fingerprint(out))

    def outputs_valid(self, ctx: Context, outputs: IsoOutput) -> bool:
        return _same_file(outputs.iso, outputs.iso_file)

    def describe(self, outputs: IsoOutput, fresh: bool) -> str:
        return f"{outputs.iso} {outputs.iso_bytes / 2**20:.1f} MiB"


# ------------------------------------------------------------------------------------------------ image
@dataclass(frozen=True)
class ImageOutput(StageOutput):
    key_field = "image_sha256"

    image: str
    image_format: str
    image_bytes: int
    image_allocated_bytes: int
    image_virtual_bytes: int
    image_sha256: str
    image_file: dict


class ImageStage(Stage):
    """Optional classic disk image of the same tree, for the size comparison with ISO + objects."""

    name = "image"
    output = ImageOutput
    needs = {"tree": "rootfs"}

    def skip_reason(self, ctx: Context) -> str | None:
        return None if ctx.definition.image else "no [image] section"

    def _output(self, ctx: Context) -> Path:
        i = ctx.definition.image
        return i.output or ctx.definition.state_dir / "image" / f"{ctx.definition.name}.{i.format}"

    def options(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> dict[str, Any]:
        i = ctx.definition.image
        return {"format": i.format, "size_mib": i.size_mib, "output": str(self._output(ctx)),
                "sde": inputs["lock"].sde, "builder": __version__}

    def run(self, ctx: Context, inputs: Mapping[str, StageOutput]) -> ImageOutput:
        from cernvm_build.image.ext4 import ImageOptions, make_image

        i = ctx.definition.image
        r = make_image(inputs["rootfs"].tree, self._output(ctx),
                       ImageOptions(format=i.format, size_mib=i.size_mib, sde=inputs["lock"].sde))
        return ImageOutput(image=str(r.path), image_format=r.format, image_bytes=r.bytes,
                           image_allocated_bytes=r.allocated_bytes, image_virtual_bytes=r.virtual_bytes,
                           image_sha256=r.sha256, image_file=_file_fingerprint(r.path))

    def outputs_valid(self, ctx: Context, outputs: ImageOutput) -> bool:
        return _same_file(outputs.image, outputs.image_file)

    def describe(self, outputs: ImageOutput, fresh: bool) -> str:
        return f"{outputs.image_format} {outputs.image_bytes / 2**20:.1f} MiB"


def default_stages() -> list[Stage]:
    """The stages, in order. A new stage is one more entry (optional ones say why they skip)."""
    return [LockStage(), SignStage(), FetchStage(), RootfsStage(), PublishStage(), IsoStage(), ImageStage()]
