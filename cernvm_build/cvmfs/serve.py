"""Serving a repository as stratum-0/1 web servers do: a small HTTP server, and an nginx site config.

Both follow the reference server configuration (cvmfs_server_apache.sh; cvmfs-format.md §13.4), one
set of rules in `RULES`: names beginning with `.cvmfs` (manifest, whitelist, reflog...) may be cached
61 s — below 60 s squid's default settings would not cache them at all, above that clients would see
a new revision late — and everything else (content-addressed objects: they never change) 3 days. No
Last-Modified or ETag is sent and If-Modified-Since is ignored: squid's revalidation of such
responses is what the reference setup avoids. Files are served byte for byte (no Content-Encoding);
the publisher's scratch area data/txn is never served.
"""

from __future__ import annotations

import email.utils
import logging
import shutil
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cernvm_build.errors import CvmfsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rule:
    """How one kind of file is served."""

    max_age: int
    content_type: str


LETTERS = Rule(61, "application/x-cvmfs")                # names beginning with .cvmfs
OBJECTS = Rule(3 * 24 * 3600, "application/octet-stream")
HIDDEN = "/data/txn/"                                      # the publisher's scratch area


def rule_for(name: str) -> Rule:
    return LETTERS if name.startswith(".cvmfs") else OBJECTS


class Handler(BaseHTTPRequestHandler):
    """Serves the repository at ROOT (set by `handler_for`); send_file may be overridden (counting)."""

    server_version = "cernvm-build"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True     # keep-alive: headers and body must not wait for delayed ACKs
    root: Path

    def _file(self) -> Path | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        parts = [p for p in path.split("/") if p]
        if (HIDDEN in path + "/" or any(p in (".", "..") for p in parts)
                or any("\0" in p for p in parts)):
            return None
        f = self.root.joinpath(*parts) if parts else self.root
        return f if f.is_file() else None

    def _head(self) -> Path | None:
        f = self._file()
        if f is None:
            self.send_error(404, "not found")
            return None
        rule = rule_for(f.name)
        self.send_response(200)
        self.send_header("Content-Type", rule.content_type)
        self.send_header("Content-Length", str(f.stat().st_size))
        self.send_header("Cache-Control", f"max-age={rule.max_age}")
        self.send_header("Expires", email.utils.formatdate(time.time() + rule.max_age, usegmt=True))
        self.end_headers()
        return f

    def do_HEAD(self) -> None:
        self._head()

    def do_GET(self) -> None:
        f = self._head()
        if f is None:
            return
        try:
            with open(f, "rb") as src:
                self.send_file(src)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def send_file(self, src) -> None:
        shutil.copyfileobj(src, self.wfile, 1 << 20)

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def handler_for(repo: str | Path, base: type[Handler] = Handler) -> type[Handler]:
    """A handler class (BASE or a subclass of Handler) serving REPO."""
    return type(base.__name__, (base,), {"root": Path(repo).resolve()})


def make_server(repo: str | Path, port: int = 0, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    repo = Path(repo)
    if not (repo / ".cvmfspublished").is_file():
        raise CvmfsError(f"{repo} is not a repository (no .cvmfspublished)")
    handler = handler_for(repo)
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise CvmfsError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    server.daemon_threads = True
    return server


def serve_in_thread(repo: str | Path, port: int = 0, host: str = "127.0.0.1") -> tuple[ThreadingHTTPServer, str]:
    """Start serving in a daemon thread; returns the server (call shutdown()) and its base URL."""
    server = make_server(repo, port, host)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def nginx_site(repo: str | Path, fqrn: str, listen: str = "80", prefix: str | None = None) -> str:
    """A `server {}` block for Debian's nginx serving REPO at PREFIX (default /cvmfs/FQRN/) with `RULES`.

    Removing Last-Modified needs the headers-more module (Debian: libnginx-mod-http-headers-more-filter,
    loaded by the packaged nginx.conf); ETag and If-Modified-Since are stock directives."""
    repo = Path(repo).resolve()
    prefix = prefix or f"/cvmfs/{fqrn}/"
    if not prefix.startswith("/") or not prefix.endswith("/") or any(c in prefix for c in ' ;{}"\'\\'):
        raise CvmfsError(f"location {prefix!r} must start and end with '/' and hold no spaces or quotes")
    if any(c in str(repo) for c in ' ;{}"\'\\'):
        raise CvmfsError(f"{repo}: a repository path with spaces, quotes or braces cannot go into an nginx config")
    return f"""\
# CernVM-FS repository {fqrn}, served as stratum-0/1 web servers serve it (cernvm-build cvmfs serve-config)
server {{
    listen {listen};
    server_tokens off;
    etag off;
    if_modified_since off;
    more_clear_headers Last-Modified;

    # content-addressed objects never change
    location ^~ {prefix} {{
        alias {repo}/;
        autoindex off;
        types {{ }}
        default_type {OBJECTS.content_type};
        expires {OBJECTS.max_age}s;
    }}
    # manifest, whitelist, reflog, ...: short-lived ({LETTERS.max_age} s; below 60 s squid would not cache them)
    location ^~ {prefix}.cvmfs {{
        alias {repo}/.cvmfs;
        types {{ }}
        default_type {LETTERS.content_type};
        expires {LETTERS.max_age}s;
    }}
    # the publisher's scratch area
    location ^~ {prefix}data/txn/ {{
        return 404;
    }}
}}
"""
