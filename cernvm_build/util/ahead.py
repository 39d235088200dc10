"""Strictly ordered work with its slow, independent part run ahead in threads.

Extraction must follow the install order (a later package may replace an earlier file), but payload
decompression (dpkg-deb, rpm2archive: subprocesses, outside the GIL) does not depend on it and is
the serial cost of building a tree; so it runs up to LOOKAHEAD packages ahead.
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_order_ahead(items: Sequence[T], prepare: Callable[[int, T], R], consume: Callable[[int, T, R], None],
                   jobs: int | None = None, lookahead: int = 8) -> None:
    """CONSUME(i, item, PREPARE(i, item)) for each item in order; PREPAREs run ahead in threads."""
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures: dict[int, Future] = {}
        try:
            for i, item in enumerate(items):
                for j in range(i, min(len(items), i + lookahead)):
                    if j not in futures:
                        futures[j] = pool.submit(prepare, j, items[j])
                consume(i, item, futures.pop(i).result())
        finally:
            for f in futures.values():
                f.cancel()
