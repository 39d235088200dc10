"""Downloads over http(s) and file:// with retries; the only place that talks to the network.

Nothing here trusts what it fetched: callers verify digests and signatures before use.
"""

from __future__ import annotations

import logging
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path

from .errors import FetchError
from .fsutil import atomic_path

log = logging.getLogger(__name__)

USER_AGENT = "cernvm-build/0.1"
TIMEOUT = 60


class NotFound(FetchError):
    """The server answered that the file does not exist (HTTP 404/410, missing file://)."""


def _open(url: str):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    return urllib.request.urlopen(req, timeout=TIMEOUT)


def fetch_to(url: str, dest: str | Path, retries: int = 3) -> Path:
    """Download URL into DEST atomically. Raises NotFound for a missing file, FetchError otherwise."""
    dest = Path(dest)
    last: Exception | None = None
    for attempt in range(retries):
        try:
            with _open(url) as resp, atomic_path(dest) as tmp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            return dest
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(f"{url}: not found (HTTP {exc.code})") from exc
            last = exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError) or "No such file" in str(exc.reason):
                raise NotFound(f"{url}: not found") from exc
            last = exc
        except (OSError, TimeoutError) as exc:
            last = exc
        if attempt + 1 < retries:
            delay = 0.5 * 2 ** attempt
            log.info("retrying %s in %.1fs after: %s", url, delay, last)
            time.sleep(delay)
    raise FetchError(f"{url}: download failed after {retries} attempts: {last}")


def fetch_bytes(url: str, retries: int = 3) -> bytes:
    """Small documents (InRelease, repomd.xml) straight into memory."""
    last: Exception | None = None
    for attempt in range(retries):
        try:
            with _open(url) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                raise NotFound(f"{url}: not found (HTTP {exc.code})") from exc
            last = exc
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, FileNotFoundError) or "No such file" in str(exc.reason):
                raise NotFound(f"{url}: not found") from exc
            last = exc
        except (OSError, TimeoutError) as exc:
            last = exc
        if attempt + 1 < retries:
            time.sleep(0.5 * 2 ** attempt)
    raise FetchError(f"{url}: download failed after {retries} attempts: {last}")
