"""Pipeline definitions (`pipeline/*.toml`): what `cernvm-build build` does, validated strictly.

Like recipes, a definition is a preservation artefact: a misspelt key (`fqnr`) must be an error naming
the file and the key, never a silently used default. Relative paths are relative to the definition's
own directory, so a definition means the same thing from any working directory.

    recipe = "../recipes/debian-bookworm-minimal.toml"
    lock = "refresh"                     # or "reuse": keep the committed lock while it matches the recipe
    lock-file = "../closures/debian-bookworm-minimal.lock.toml"   # default: closures/ beside recipes/
    state-dir = "../build/debian-bookworm"                        # stage records, tree, keys, outputs
    cache-dir = "..."                    # package + metadata cache (default: the user cache)

    [signing]                            # optional
    key = "keys/lock.key"                # private key; public-key defaults to the same stem + .pub
    generate = true                      # make the key pair (in the state dir unless `key` says where)
    # or keyless (Sigstore): the identity and issuer the signature's certificate must name
    # identity = "https://github.com/org/repo/.github/workflows/build.yml@refs/heads/main"
    # issuer = "https://token.actions.githubusercontent.com"
    # keyless = true                     # sign in this run (OIDC token from the CI environment)
    # trusted-root = "trusted_root.json" # archived Sigstore roots (default: sigstore's offline copy)

    [rootfs]
    mode = "unpack"                      # or "install" (maintainer scripts in a chroot; root)

    [cvmfs]
    repository = "repo"                  # stratum-0 directory (default STATE/cvmfs/repo)
    fqrn = "debian.cernvm-build.local"
    keys = "keys"                        # default STATE/cvmfs/keys
    tag = "{name}-{lock_digest12}"

    [image]                              # optional: classic disk image for comparison
    format = "qcow2"                     # or "raw"

    [iso]                                # optional: boot ISO (when the boot stage is available)
    boot-lock = "../closures/boot.lock.toml"
    repo-url = "http://localhost:8000/"
    output = "debian.iso"

Several snapshots in one repository (e.g. Debian 11, 12 and 13 side by side, deduplicated against each
other): instead of `recipe`, one `[[snapshots]]` table per recipe. Each is locked, signed, fetched,
built and published as the single-recipe pipeline does (state in STATE/snapshots/NAME), sharing the
signing key, the rootfs mode and the repository; then one ISO boots any of them (its menu lists the
repository's tags, newest first).

    [[snapshots]]
    recipe = "../recipes/debian-bullseye-minimal.toml"
    name = "debian-bullseye"             # default: the recipe's name; {name} in the tag template
    lock = "reuse"                       # default: the top-level `lock`
    lock-file = "..."                    # default: closures/ beside recipes/
    description = "Debian 11"            # default: [cvmfs] description
"""

from __future__ import annotations

import os
import re
import string
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cernvm_build.errors import PipelineConfigError
from cernvm_build.util.strict_toml import StrictTable

LOCK_MODES = ("reuse", "refresh")
ROOTFS_MODES = ("unpack", "install")
IMAGE_FORMATS = ("raw", "qcow2")
TAG_FIELDS = ("name", "lock_digest", "lock_digest12", "mode", "recipe")
DEFAULT_TAG = "{name}-{lock_digest12}"


@dataclass(frozen=True)
class Signing:
    key: Path | None = None          # private key (PEM); None with generate: STATE/signing/lock.key
    public_key: Path | None = None   # default: key with .pub
    generate: bool = False           # create the pair when it does not exist yet
    signature: Path | None = None    # default: LOCK.sigstore.json
    identity: str | None = None      # keyless: certificate identity (SAN) the signature must carry
    issuer: str | None = None        # keyless: OIDC issuer of that identity
    keyless: bool = False            # keyless: sign in this run (token from $SIGSTORE_IDENTITY_TOKEN/CI)
    trusted_root: Path | None = None  # keyless: archived trusted_root.json (default: sigstore's copy)
    trust_config: Path | None = None  # keyless: private Sigstore instance to sign against


@dataclass(frozen=True)
class CvmfsTarget:
    repository: Path
    fqrn: str
    keys: Path
    tag: str = DEFAULT_TAG
    description: str = ""


@dataclass(frozen=True)
class ImageTarget:
    format: str = "qcow2"
    output: Path | None = None       # default STATE/image/NAME.FORMAT
    size_mib: int = 0                # 0: computed from the tree


@dataclass(frozen=True)
class IsoTarget:
    boot_lock: Path
    repo_url: str
    output: Path
    client_lock: Path | None = None      # busybox, client libraries and compiler from a lock (root)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SnapshotSpec:
    """One `[[snapshots]]` entry of a multi-snapshot pipeline (see `PipelineDef.for_snapshot`)."""

    name: str
    recipe: Path
    lock_mode: str
    lock_file: Path
    description: str = ""


@dataclass(frozen=True)
class PipelineDef:
    """A validated pipeline definition with absolute paths."""

    name: str
    path: Path | None
    recipe: Path | None              # None only when respawning from a bundle
    lock_mode: str
    lock_file: Path
    state_dir: Path
    cache_dir: Path | None
    rootfs_mode: str
    cvmfs: CvmfsTarget
    signing: Signing | None = None
    image: ImageTarget | None = None
    iso: IsoTarget | None = None
    jobs: int = 4
    snapshots: tuple[SnapshotSpec, ...] = ()

    @property
    def rootfs_dir(self) -> Path:
        return self.state_dir / "rootfs"

    def for_snapshot(self, spec: SnapshotSpec) -> "PipelineDef":
        """The single-recipe pipeline of one `[[snapshots]]` entry: its own recipe, lock and state
        (STATE/snapshots/NAME), this definition's signing key, rootfs mode, repository and image; the
        ISO is built once for all of them (`iso` is None here). Signatures go to the snapshot's state
        (a lock may also be signed by another pipeline, with another key, beside the lock)."""
        state = self.state_dir / "snapshots" / spec.name
        signing = self.signing
        if signing is not None and signing.signature is None and (signing.key or signing.keyless):
            signing = replace(signing, signature=state / f"{spec.lock_file.name}.sigstore.json")
        return replace(self, name=spec.name, recipe=spec.recipe, lock_mode=spec.lock_mode,
                       lock_file=spec.lock_file, state_dir=state, signing=signing,
                       cvmfs=replace(self.cvmfs, description=spec.description or self.cvmfs.description),
                       iso=None, snapshots=())


class _Table(StrictTable):
    """A pipeline-definition table: strict reads raising PipelineConfigError; strings never empty."""

    error = PipelineConfigError

    def get(self, key: str, kind: type, kind_name: str, default: Any = None, required: bool = False) -> Any:
        value = self.read(key, kind, kind_name, default, required)
        if kind is str and key in self.data and not value.strip():
            raise PipelineConfigError(f"{self.where}: key '{key}' must not be empty")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, "a string", default)
        if value not in choices:
            raise PipelineConfigError(f"{self.where}: key '{key}' must be one of {', '.join(choices)}, "
                                      f"got {value!r}")
        return value

    def path(self, key: str, base: Path, default: Path | None = None, required: bool = False) -> Path | None:
        value = self.get(key, str, "a path (string)", None, required)
        if value is None:
            return default
        return Path(os.path.normpath(base / Path(value).expanduser()))

    def table(self, key: str) -> "_Table | None":
        self.seen.add(key)
        if key not in self.data:
            return None
        if not isinstance(self.data[key], dict):
            raise PipelineConfigError(f"{self.where}: key '{key}' must be a table ([{key}]), "
                                      f"not {type(self.data[key]).__name__}")
        return _Table(self.data[key], f"{self.where}: [{key}]")


def check_tag_template(template: str, where: str) -> str:
    """Only known {fields}; the rendered tag must be a valid CernVM-FS tag name."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise PipelineConfigError(f"{where}: key 'tag' is not a valid template: {exc}") from exc
    for f in fields:
        if f not in TAG_FIELDS:
            raise PipelineConfigError(f"{where}: key 'tag' uses unknown field {{{f}}} "
                                      f"(known: {', '.join('{' + t + '}' for t in TAG_FIELDS)})")
    if any(ch.isspace() for ch in template):
        raise PipelineConfigError(f"{where}: key 'tag' must not contain spaces")
    return template


def _name_ok(name: str, where: str) -> str:
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise PipelineConfigError(f"{where}: key 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
    return name


def default_lock_file(recipe: Path, name: str) -> Path:
    """closures/NAME.lock.toml beside the recipe's directory (recipes/ and closures/ are siblings)."""
    return recipe.parent.parent / "closures" / f"{name}.lock.toml"


def parse_pipeline(data: dict, where: str, base: Path, recipe_name: str | None = None,
                   require_recipe: bool = True) -> PipelineDef:
    """Validate a parsed TOML document. RECIPE_NAME (from the recipe file) names defaults."""
    t = _Table(data, where)
    multi = "snapshots" in data
    if multi and "recipe" in data:
        raise PipelineConfigError(f"{where}: give either 'recipe' (one snapshot) or [[snapshots]] "
                                  "(several), not both")
    recipe = t.path("recipe", base, required=require_recipe and not multi)
    name = t.get("name", str, "a string")
    if recipe is not None and recipe_name is None:
        recipe_name = _recipe_name(recipe, where)
    name = _name_ok(name or recipe_name or "snapshot", where)
    lock_mode = t.choice("lock", LOCK_MODES, "reuse")
    lock_file = t.path("lock-file", base)
    if lock_file is None:
        lock_file = default_lock_file(recipe, recipe_name or name) if recipe else base / f"{name}.lock.toml"
    state_dir = t.path("state-dir", base, base / "build" / name)
    cache_dir = t.path("cache-dir", base)
    jobs = t.get("jobs", int, "an integer", 4)
    if jobs < 1:
        raise PipelineConfigError(f"{where}: key 'jobs' must be at least 1")

    signing = None
    if (s := t.table("signing")) is not None:
        key = s.path("key", base)
        pub = s.path("public-key", base)
        generate = s.get("generate", bool, "true or false", False)
        sig = s.path("signature", base)
        identity = s.get("identity", str, "a string")
        issuer = s.get("issuer", str, "a string")
        keyless = s.get("keyless", bool, "true or false", False)
        trusted_root = s.path("trusted-root", base)
        trust_config = s.path("trust-config", base)
        if identity is not None or issuer is not None or keyless or trusted_root or trust_config:
            if key is not None or pub is not None or generate:
                raise PipelineConfigError(f"{s.where}: keyless signing ('identity', 'issuer', 'keyless') "
                                          "cannot be combined with 'key', 'public-key' or 'generate'")
            if identity is None or issuer is None:
                raise PipelineConfigError(f"{s.where}: keyless signing needs both 'identity' and 'issuer' "
                                          "(what the signature's certificate must name)")
            if trust_config is not None and not keyless:
                raise PipelineConfigError(f"{s.where}: 'trust-config' is for signing; it needs keyless = true")
        elif key is None and not generate:
            if pub is None:
                raise PipelineConfigError(f"{s.where}: give 'key' (private key to sign with), 'public-key' "
                                          "(verify only), generate = true, or 'identity' and 'issuer' (keyless)")
        if key is None and generate:
            key = state_dir / "signing" / "lock.key"
        if pub is None and key is not None:
            pub = key.with_suffix(".pub")
        s.finish()
        signing = Signing(key=key, public_key=pub, generate=generate, signature=sig, identity=identity,
                          issuer=issuer, keyless=keyless, trusted_root=trusted_root, trust_config=trust_config)

    rootfs_mode = "unpack"
    if (r := t.table("rootfs")) is not None:
        rootfs_mode = r.choice("mode", ROOTFS_MODES, "unpack")
        r.finish()

    c = t.table("cvmfs") or _Table({}, f"{where}: [cvmfs]")
    fqrn = c.get("fqrn", str, "a string", f"{name.lower().replace('_', '-')}.cernvm-build.local")
    if not re.match(r"^[a-z0-9][a-z0-9-]*(\.[a-z0-9][a-z0-9-]*)+$", fqrn):
        raise PipelineConfigError(f"{c.where}: key 'fqrn' must be a fully qualified name like "
                                  f"os.example.org, got {fqrn!r}")
    cvmfs = CvmfsTarget(
        repository=c.path("repository", base, state_dir / "cvmfs" / "repo"),
        fqrn=fqrn,
        keys=c.path("keys", base, state_dir / "cvmfs" / "keys"),
        tag=check_tag_template(c.get("tag", str, "a string", DEFAULT_TAG), c.where),
        description=c.get("description", str, "a string", ""),
    )
    c.finish()

    image = None
    if (i := t.table("image")) is not None:
        size = i.get("size-mib", int, "an integer", 0)
        if size < 0:
            raise PipelineConfigError(f"{i.where}: key 'size-mib' must not be negative")
        image = ImageTarget(format=i.choice("format", IMAGE_FORMATS, "qcow2"), output=i.path("output", base),
                            size_mib=size)
        i.finish()

    iso = None
    if (b := t.table("iso")) is not None:
        iso = IsoTarget(boot_lock=b.path("boot-lock", base, required=True),
                        repo_url=b.get("repo-url", str, "a URL (string)", required=True),
                        output=b.path("output", base, state_dir / "iso" / f"{name}.iso"),
                        client_lock=b.path("client-lock", base))
        if not re.match(r"^(https?|file)://", iso.repo_url):
            raise PipelineConfigError(f"{b.where}: key 'repo-url' must start with http://, https:// or file://")
        b.finish()
    snapshots = _snapshots(t, base, lock_mode) if multi else ()
    if multi and "lock-file" in data:
        raise PipelineConfigError(f"{where}: key 'lock-file' belongs in each [[snapshots]] entry")
    if multi and image is not None and image.output is not None:
        raise PipelineConfigError(f"{where}: [image] key 'output' names one file, but there are "
                                  f"{len(snapshots)} snapshots (each gets STATE/snapshots/NAME/image/)")
    t.finish()
    return PipelineDef(name=name, path=None, recipe=recipe, lock_mode=lock_mode, lock_file=lock_file,
                       state_dir=state_dir, cache_dir=cache_dir, rootfs_mode=rootfs_mode, cvmfs=cvmfs,
                       signing=signing, image=image, iso=iso, jobs=jobs, snapshots=snapshots)


def _snapshots(t: _Table, base: Path, lock_mode: str) -> tuple[SnapshotSpec, ...]:
    """The [[snapshots]] array: each a recipe with its own name, lock mode and lock file."""
    t.seen.add("snapshots")
    entries = t.data["snapshots"]
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise PipelineConfigError(f"{t.where}: 'snapshots' must be one or more [[snapshots]] tables")
    specs: list[SnapshotSpec] = []
    for n, entry in enumerate(entries, 1):
        s = _Table(entry, f"{t.where}: [[snapshots]] #{n}")
        recipe = s.path("recipe", base, required=True)
        recipe_name = _recipe_name(recipe, s.where)
        name = _name_ok(s.get("name", str, "a string") or recipe_name, s.where)
        if any(x.name == name for x in specs):
            raise PipelineConfigError(f"{s.where}: name {name!r} is already used by another snapshot "
                                      "(names make the tags and state directories: they must differ)")
        specs.append(SnapshotSpec(name=name, recipe=recipe, lock_mode=s.choice("lock", LOCK_MODES, lock_mode),
                                  lock_file=s.path("lock-file", base, default_lock_file(recipe, recipe_name)),
                                  description=s.get("description", str, "a string", "")))
        s.finish()
    return tuple(specs)


def _recipe_name(recipe: Path, where: str) -> str:
    """The recipe's `name` (for defaults); the recipe itself is validated by the lock stage."""
    try:
        data = tomllib.loads(recipe.read_text())
    except OSError as exc:
        raise PipelineConfigError(f"{where}: key 'recipe': cannot read {recipe}: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PipelineConfigError(f"{where}: key 'recipe': {recipe} is not valid TOML: {exc}") from exc
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineConfigError(f"{where}: key 'recipe': {recipe} has no 'name'")
    return name


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise PipelineConfigError(f"{path}: cannot read pipeline definition: {exc.strerror}") from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PipelineConfigError(f"{path}: not valid TOML: {exc}") from exc


def load_pipeline(path: str | Path, *, require_recipe: bool = True, **overrides: Any) -> PipelineDef:
    """Read and validate PATH; OVERRIDES (state_dir=, lock_file=, cache_dir=, ...) replace fields."""
    path = Path(path).absolute()
    d = parse_pipeline(_read_toml(path), str(path), path.parent, require_recipe=require_recipe)
    d = replace(d, path=path)
    return apply_overrides(d, **overrides)


def apply_overrides(d: PipelineDef, **overrides: Any) -> PipelineDef:
    """Command-line overrides. A new state dir moves the defaults that live under it."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "state_dir" in overrides:
        new = Path(os.path.abspath(overrides["state_dir"]))
        old = d.state_dir

        def move(p: Path | None) -> Path | None:
            if p is not None and (p == old or old in p.parents):
                return new / p.relative_to(old)
            return p

        d = replace(d, state_dir=new,
                    cvmfs=replace(d.cvmfs, repository=move(d.cvmfs.repository), keys=move(d.cvmfs.keys)),
                    signing=replace(d.signing, key=move(d.signing.key), public_key=move(d.signing.public_key),
                                    signature=move(d.signing.signature)) if d.signing else None,
                    image=replace(d.image, output=move(d.image.output)) if d.image else None,
                    iso=replace(d.iso, output=move(d.iso.output)) if d.iso else None)
        overrides.pop("state_dir")
    for key in ("lock_file", "cache_dir"):
        if key in overrides:
            overrides[key] = Path(os.path.abspath(overrides[key]))
    return replace(d, **overrides)


def bundle_pipeline(bundle: Path, inventory: dict, base: PipelineDef | None,
                    state_dir: str | Path | None = None) -> PipelineDef:
    """The definition used to respawn from a bundle: BASE's targets (or defaults), the bundle's lock.

    STATE_DIR moves the outputs; the public key that verifies the bundle's signature stays where BASE
    says (the trust anchor of a respawn is the original key, not anything in the new state)."""
    lock = bundle / inventory["lock"]
    name = inventory.get("name") or "snapshot"
    if base is None:
        base = parse_pipeline({"name": _name_ok(name, str(bundle))}, f"{bundle} (defaults)", Path.cwd(),
                              require_recipe=False)
    signing = base.signing
    if signing is not None:   # a bundle is read-only: verify its signature, never sign into it
        signing = replace(signing, key=None, generate=False, signature=None, keyless=False)
    base = apply_overrides(base, state_dir=state_dir)
    return replace(base, recipe=None, lock_mode="bundle", lock_file=lock, signing=signing, snapshots=())
