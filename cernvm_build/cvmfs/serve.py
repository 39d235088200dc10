"""A loopback HTTP server for a stratum-0 directory (tests and demos; production uses Apache/nginx).

Files are served byte for byte (no Content-Encoding), the scratch area data/txn is hidden.
"""

from __future__ import annotations

import functools
import logging
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cernvm_build.errors import CvmfsError

log = logging.getLogger(__name__)


class _Handler(SimpleHTTPRequestHandler):
    def guess_type(self, path) -> str:
        return "application/x-cvmfs" if Path(str(path)).name.startswith(".cvmfs") else "application/octet-stream"

    def send_head(self):
        if "/data/txn" in self.path.split("?", 1)[0]:
            self.send_error(404, "not served")
            return None
        return super().send_head()

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_server(repo: str | Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    repo = Path(repo)
    if not (repo / ".cvmfspublished").is_file():
        raise CvmfsError(f"{repo} is not a repository (no .cvmfspublished)")
    try:
        server = ThreadingHTTPServer((host, port), functools.partial(_Handler, directory=str(repo)))
    except OSError as exc:
        raise CvmfsError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    server.daemon_threads = True
    return server


def serve_in_thread(repo: str | Path, port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """Start serving in a daemon thread; returns the server (call shutdown()) and its base URL."""
    server = make_server(repo, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"
