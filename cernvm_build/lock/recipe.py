"""Shopping lists: the unversioned input of a lock, read from `recipes/*.toml` and validated strictly.

Every problem is reported as one line naming the file, the key and what was expected; unknown keys
are errors (a typo such as `exlude` must never be silently ignored in a preservation artefact).
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cernvm_build import formats
from cernvm_build.errors import RecipeError
from cernvm_build.util.strict_toml import StrictTable

# "name", "name (>= 1.0)", "name >= 1.0", "name=1.0" (deb and rpm operators alike); for rpm also an
# absolute file path ("/usr/bin/foo"), which dnf accepts and which makes the lock load filelists
_SPEC = re.compile(
    r"^\s*(?P<name>/[^\s()<>=]+|[A-Za-z0-9_+][A-Za-z0-9_+.:@~-]*)"
    r"(?:\s*\(?\s*(?P<op><<|>>|<=|>=|==|=|<|>)\s*(?P<version>[^\s()]+)\s*\)?)?\s*$"
)
_OPS = {"<<": "<", ">>": ">", "==": "=", "=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">="}


@dataclass(frozen=True)
class PackageSpec:
    """One shopping-list entry: a name, optionally with one version constraint."""

    name: str
    op: str = ""
    version: str = ""

    @classmethod
    def parse(cls, text: str, where: str) -> "PackageSpec":
        m = _SPEC.match(text)
        if not m:
            raise RecipeError(f"{where}: {text!r} is not a package name with an optional constraint "
                              "like 'python3 (>= 3.11)'")
        op = m.group("op")
        return cls(m.group("name"), _OPS[op] if op else "", m.group("version") or "")

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.version}" if self.op else self.name

    def solv_dep(self) -> str:
        """The dependency string libsolv's parser understands (`name >= evr`)."""
        return str(self)


@dataclass(frozen=True)
class Repository:
    """A package repository as the recipe names it (Debian archive or rpm-md)."""

    name: str
    url: str
    suite: str = ""                     # deb
    components: tuple[str, ...] = ()    # deb
    keyring: str = ""                   # deb: gpgv keyring; rpm: key for repomd.xml.asc
    allow_expired: bool = False         # deb: accept a Release past Valid-Until (historic snapshots)
    gpgcheck: bool = True               # rpm: the repository metadata must be signed


@dataclass(frozen=True)
class Boot:
    """What the recipe says about booting: the kernel package and the boot client."""

    kernel: str = ""
    client: str = ""


@dataclass(frozen=True)
class Recipe:
    """A shopping list, validated: what to resolve, from which repositories, for which architecture."""

    name: str
    flavour: str
    arch: str
    repositories: tuple[Repository, ...]
    packages: tuple[PackageSpec, ...]
    exclude: tuple[str, ...] = ()
    weak: bool = False
    essential: bool = False
    priorities: tuple[str, ...] = ()
    pin: tuple[tuple[str, str], ...] = ()
    boot: Boot = field(default_factory=Boot)
    description: str = ""
    path: str = ""

    def canonical(self) -> dict[str, Any]:
        """The recipe's content without its location: what the digest covers."""
        data = asdict(self)
        data.pop("path")
        data["packages"] = [str(p) for p in self.packages]
        data["pin"] = dict(self.pin)
        return data

    def digest(self) -> str:
        """sha256 over the canonical JSON of the recipe: comments and formatting do not change it."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()


class _Table(StrictTable):
    """A recipe table: strict reads raising RecipeError."""

    error = RecipeError
    _get = StrictTable.read

    def str(self, key: str, default: str = "", required: bool = False) -> str:
        value = self._get(key, str, "a string", default, required)
        if required and not value.strip():
            raise RecipeError(f"{self.where}: key '{key}' must not be empty")
        return value

    def bool(self, key: str, default: bool = False) -> bool:
        return self._get(key, bool, "true or false", default, False)

    def strlist(self, key: str, required: bool = False) -> tuple[str, ...]:
        value = self._get(key, list, "a list of strings", [], required)
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise RecipeError(f"{self.where}: {key}[{i}] must be a non-empty string")
        return tuple(value)

    def table(self, key: str) -> dict:
        return self._get(key, dict, "a table", {}, False)

    def tables(self, key: str) -> list:
        value = self._get(key, list, "an array of tables ([[...]])", [], True)
        return value


def _repository(data: dict, flavour: str, where: str, base: Path) -> Repository:
    t = _Table(data, where)
    name = t.str("name", required=True)
    url = t.str("url", required=True).rstrip("/")
    if not re.match(r"^(https?|file)://", url):
        raise RecipeError(f"{where}: key 'url' must start with http://, https:// or file://, got {url!r}")
    keyring = t.str("keyring")
    if keyring and not keyring.startswith("/"):
        keyring = str((base / keyring).resolve())
    if url.startswith("file://") and not url.startswith("file:///"):
        url = "file://" + str((base / url[len("file://"):]).resolve())
    repo = formats.get(flavour, RecipeError, where).parse_repository(t, where, name, url, keyring)
    t.finish()
    return repo


def parse_recipe(data: dict, where: str, base: Path | None = None) -> Recipe:
    """Validate a parsed TOML document as a recipe. WHERE names it in errors."""
    base = base or Path.cwd()
    t = _Table(data, where)
    name = t.str("name", required=True)
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", name):
        raise RecipeError(f"{where}: key 'name' must be letters, digits, '.', '_' or '-', got {name!r}")
    flavour = t.str("flavour", required=True)
    if flavour not in formats.flavours():
        raise RecipeError(f"{where}: key 'flavour' must be one of {', '.join(formats.flavours())}, got {flavour!r}")
    fmt = formats.get(flavour, RecipeError, where)
    arch = t.str("arch", required=True)
    description = t.str("description")
    repos = []
    for i, r in enumerate(t.tables("repositories")):
        repos.append(_repository(r, flavour, f"{where}: repositories[{i}]", base))
    if not repos:
        raise RecipeError(f"{where}: 'repositories' must name at least one repository")
    names = [r.name for r in repos]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise RecipeError(f"{where}: repository name '{dup[0]}' is used twice")
    packages = tuple(PackageSpec.parse(p, f"{where}: packages[{i}]")
                     for i, p in enumerate(t.strlist("packages", required=True)))
    exclude = t.strlist("exclude")
    weak = t.bool("weak")
    essential = t.bool("essential")
    priorities = t.strlist("priorities")
    if not fmt.priorities and (essential or priorities):
        able = [f for f in formats.flavours() if formats.get(f).priorities]
        raise RecipeError(f"{where}: keys 'essential' and 'priorities' apply to flavour "
                          f"{', '.join(repr(f) for f in able)} only")
    for p in priorities:
        if p not in fmt.priorities:
            raise RecipeError(f"{where}: priorities: {p!r} is not one of {', '.join(fmt.priorities)}")
    pins = t.table("pin")
    for k, v in pins.items():
        if not isinstance(v, str) or not v:
            raise RecipeError(f"{where}: pin.{k} must be a version string")
    if not packages and not essential and not priorities:
        raise RecipeError(f"{where}: the shopping list is empty: give 'packages' (or 'essential'/'priorities')")
    bt = _Table(t.table("boot"), f"{where}: boot")
    boot = Boot(kernel=bt.str("kernel"), client=bt.str("client"))
    bt.finish()
    t.finish()
    return Recipe(
        name=name, flavour=flavour, arch=arch, repositories=tuple(repos), packages=packages,
        exclude=tuple(sorted(set(exclude))), weak=weak, essential=essential,
        priorities=tuple(sorted(set(priorities), key=fmt.priorities.index)),
        pin=tuple(sorted(pins.items())), boot=boot, description=description,
    )


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe: {exc.strerror}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from exc
    recipe = parse_recipe(data, str(path), path.parent.resolve())
    return Recipe(**{**recipe.__dict__, "path": str(path)})
