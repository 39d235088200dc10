"""Strict reading of one TOML table, shared by recipes and pipeline definitions.

Every key read is remembered, so finish() can report the first key nobody asked for: a typo such as
`exlude` is an error naming the file and the key, never silently ignored.
"""

from __future__ import annotations

from typing import Any

from cernvm_build.errors import CernVMBuildError


class StrictTable:
    """Typed reads from a TOML table; ERROR is the typed exception its messages are raised as."""

    error: type[CernVMBuildError] = CernVMBuildError

    def __init__(self, data: Any, where: str):
        if not isinstance(data, dict):
            raise self.error(f"{where}: expected a table")
        self.data, self.where, self.seen = data, where, set()

    def read(self, key: str, kind: type | tuple, kind_name: str, default: Any = None,
             required: bool = False) -> Any:
        """The value of KEY, checked to be of KIND (bool is not an int); DEFAULT when absent."""
        self.seen.add(key)
        if key not in self.data:
            if required:
                raise self.error(f"{self.where}: missing required key '{key}' ({kind_name})")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error(f"{self.where}: key '{key}' must be {kind_name}, not {type(value).__name__}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            raise self.error(f"{self.where}: unknown key '{unknown[0]}' (allowed: {', '.join(sorted(self.seen))})")
