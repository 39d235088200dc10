"""Downloads over http(s) and file:// with retries; the only place that talks to the network.

One retry loop (`_retrying`) serves metadata (fetch_to, fetch_bytes) and packages
(download_resumable, which resumes a partial file with an HTTP Range request), so "not found" is
final everywhere and every other failure is retried with the same back-off.

Nothing here trusts what it fetched: callers verify digests and signatures before use.
"""

from __future__ import annotations

import shutil
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from pathlib import Path
from typing import Callable, TypeVar

from cernvm_build.errors import FetchError
from cernvm_build.util.files import atomic_path
from cernvm_build.util.log import getLogger

log = getLogger(__name__)

USER_AGENT = "cernvm-build/0.1"
TIMEOUT = 60
CHUNK = 1 << 20

T = TypeVar("T")


class NotFound(FetchError):
    """The server answered that the file does not exist (HTTP 404/410, missing file://)."""


class _Retry(Exception):
    """An attempt failed in a way worth repeating (short transfer, stale partial file)."""


def _open(url: str, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **(headers or {})})
    return urllib.request.urlopen(req, timeout=TIMEOUT)


def _retrying(url: str, attempt: Callable[[], T], retries: int, delay: float) -> T:
    """Run ATTEMPT up to RETRIES times with exponential back-off from DELAY seconds.

    NotFound (404/410, a missing file://) is final; network, HTTP and short-transfer errors retry."""
    last: Exception | None = None
    for n in range(retries):
        try:
            return attempt()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(f"{url}: not found (HTTP {exc.code})") from exc
            last = exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError) or "No such file" in str(exc.reason):
                raise NotFound(f"{url}: not found") from exc
            last = exc
        except _Retry as exc:
            last = exc.__cause__ if isinstance(exc.__cause__, Exception) else exc
        except (OSError, TimeoutError, HTTPException) as exc:
            last = exc
        if n + 1 < retries:
            wait = delay * 2 ** n
            log.info("retrying %s in %.1fs after: %s", url, wait, last)
            time.sleep(wait)
    raise FetchError(f"{url}: download failed after {retries} attempts: {last}")


def _check_length(url: str, resp, got: int) -> None:
    """A body cut short reads as a clean EOF in chunked reads: compare with Content-Length."""
    want = resp.headers.get("Content-Length")
    if want is not None and want.isdigit() and int(want) != got:
        raise _Retry() from FetchError(f"{url}: transfer ended at {got} of {want} bytes")


def fetch_to(url: str, dest: str | Path, retries: int = 3) -> Path:
    """Download URL into DEST atomically. Raises NotFound for a missing file, FetchError otherwise."""
    dest = Path(dest)

    def attempt() -> Path:
        with _open(url) as resp, atomic_path(dest) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, CHUNK)
            _check_length(url, resp, tmp.stat().st_size)
        return dest

    return _retrying(url, attempt, retries, 0.5)


def fetch_bytes(url: str, retries: int = 3) -> bytes:
    """Small documents (InRelease, repomd.xml) straight into memory."""
    def attempt() -> bytes:
        with _open(url) as resp:
            return resp.read()

    return _retrying(url, attempt, retries, 0.5)


def download_resumable(url: str, partial: Path, expected_size: int, retries: int = 4,
                       on_bytes: Callable[[int], None] | None = None) -> bool:
    """Bring PARTIAL up to EXPECTED_SIZE bytes from URL, resuming with Range; True if it resumed.

    The file is not trusted here (the caller hashes it): a server that ignores Range and answers
    200 simply makes us start over, and a partial the server rejects (416) is discarded.
    """
    partial.parent.mkdir(parents=True, exist_ok=True)
    resumed = False

    def attempt() -> bool:
        nonlocal resumed
        have = partial.stat().st_size if partial.exists() else 0
        if have > expected_size:
            partial.unlink()
            have = 0
        if have == expected_size and expected_size > 0:
            return resumed
        try:
            with _open(url, {"Range": f"bytes={have}-"} if have else None) as resp:
                if have and getattr(resp, "status", 200) == 206:
                    resumed, mode = True, "ab"
                else:
                    mode = "wb"
                with open(partial, mode) as out:
                    while block := resp.read(CHUNK):
                        out.write(block)
                        if on_bytes:
                            on_bytes(len(block))
        except urllib.error.HTTPError as exc:
            if exc.code != 416:
                raise
            partial.unlink(missing_ok=True)   # our partial is not a prefix the server knows: start over
            raise _Retry() from exc
        size = partial.stat().st_size
        if size != expected_size:
            raise _Retry() from FetchError(f"{url}: transfer ended at {size} of {expected_size} bytes")
        return resumed

    return _retrying(url, attempt, retries, 0.2)
