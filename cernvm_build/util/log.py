"""Loggers that import the logging module only when a record is to be emitted.

A warm `lock` logs nothing at its default level, and importing logging (with threading, traceback,
string and weakref) is a noticeable share of its 0.1 s. The modules on its path take their logger
from here; the command line says which level it asked for (configure). Once logging is imported
anyway (another command, a test, a library caller), every call goes straight to it and its own
configuration decides, exactly as with logging.getLogger.
"""

from __future__ import annotations

import sys

_config: dict | None = None     # the command line's basicConfig arguments, applied on first use
_threshold = 0                  # while logging is not imported: records below this level are dropped


def configure(level: int, **basic: object) -> None:
    """logging.basicConfig(level=LEVEL, **BASIC), deferred until a record needs it."""
    global _config, _threshold
    _config, _threshold = {"level": level, **basic}, level
    if "logging" in sys.modules:
        _logging()


def _logging():
    global _config
    import logging

    if _config is not None:
        config, _config = _config, None
        logging.basicConfig(**config)
    return logging


class Logger:
    """The calls the lock's modules make of a logging.Logger."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _log(self, level: int, msg: str, args: tuple, kwargs: dict) -> None:
        if level < _threshold and "logging" not in sys.modules:
            return
        _logging().getLogger(self.name).log(level, msg, *args, stacklevel=3, **kwargs)

    def debug(self, msg: str, *args: object, **kwargs) -> None:
        self._log(10, msg, args, kwargs)

    def info(self, msg: str, *args: object, **kwargs) -> None:
        self._log(20, msg, args, kwargs)

    def warning(self, msg: str, *args: object, **kwargs) -> None:
        self._log(30, msg, args, kwargs)

    def error(self, msg: str, *args: object, **kwargs) -> None:
        self._log(40, msg, args, kwargs)


def getLogger(name: str) -> Logger:    # noqa: N802 (logging's spelling)
    return Logger(name)
