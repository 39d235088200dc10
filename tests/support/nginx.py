"""Debian's nginx, started by a test on a loopback port with its own configuration, logs and pid file,
and stopped by it: the real web server a stratum-0/1 runs, serving a site from `cvmfs serve-config`."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

MODULE = Path("/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """`with Nginx(workdir, site_text_or_file) as n:` — n.port, n.access_log."""

    def __init__(self, workdir: Path, site: Path, port: int):
        self.dir, self.site, self.port = workdir, site, port
        self.access_log = workdir / "access.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "Nginx":
        d = self.dir
        d.mkdir(parents=True, exist_ok=True)
        (d / "nginx.conf").write_text(f"""\
load_module {MODULE};
user {"root" if os.geteuid() == 0 else "nobody"};   # pytest keeps its files private to us (0700)
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {self.access_log};
    client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
    include {self.site};
}}
""")
        self.proc = subprocess.Popen(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {self.proc.stderr.read().decode()} "
                                   f"{(d / 'error.log').read_text() if (d / 'error.log').exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("nginx did not start listening")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
