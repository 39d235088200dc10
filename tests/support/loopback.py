"""One base for the tests' own HTTP servers on 127.0.0.1 (lying, counting, origin stand-ins).

Each test server subclasses LoopbackServer with its own handler. Subclasses set their attributes first
and call `super().__init__(Handler)` last: the serving thread starts there, so no request can see a
half-built server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        super().__init__(("127.0.0.1", 0), handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
