"""A local HTTP server on 127.0.0.1 that honours Range requests and can misbehave on purpose.

http.server's SimpleHTTPRequestHandler ignores Range, so resuming cannot be tested with it. This one
serves a directory, answers `Range: bytes=N-` with 206, records every request (path, Range header),
and can cut chosen responses short (the connection closes mid-body) to exercise retry + resume.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class ServerState:
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    truncate: dict[str, int] = field(default_factory=dict)     # path suffix -> responses left to cut short
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(state: ServerState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:   # quiet
            pass

        def do_GET(self) -> None:
            rng = self.headers.get("Range")
            with state.lock:
                state.requests.append((self.path, rng))
            path = (state.root / self.path.lstrip("/").split("?")[0]).resolve()
            if state.root.resolve() not in path.parents or not path.is_file():
                self.send_error(404)
                return
            data = path.read_bytes()
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            cut = False
            with state.lock:
                for suffix, left in state.truncate.items():
                    if left > 0 and self.path.endswith(suffix):
                        state.truncate[suffix] = left - 1
                        cut = True
            if cut:
                self.send_header("Connection", "close")
            self.end_headers()
            if cut:
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


class RangeServer:
    """with RangeServer(dir) as srv: srv.url ... srv.state.requests"""

    def __init__(self, root: Path):
        self.state = ServerState(Path(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "RangeServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
