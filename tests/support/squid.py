"""Debian's squid, started on a loopback port with its own configuration, memory cache and access log,
and stopped by its user (tests, benchmarks): the forward proxy every CernVM-FS site runs."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.nginx import free_port

SQUID = shutil.which("squid") or "/usr/sbin/squid"


class Squid:
    """squid -N -f CONFIG on a loopback port. Its files live in a directory owned by the proxy user (squid
    drops root for it and must reach them: pytest's tmp_path is not traversable by other users), linked
    from tmp_path and removed at the end. Memory cache only (no cache_dir): hits are TCP_MEM_HIT."""

    def __init__(self, tmp_path: Path, name: str, host: str = "127.0.0.1", extra: str = ""):
        self.port = free_port()
        self.host = host
        self.dir = Path(tempfile.mkdtemp(prefix=f"cvmfs-test-squid-{name}-"))
        (tmp_path / f"squid-{name}").symlink_to(self.dir)
        user = pwd.getpwnam("proxy")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o755)
        self.config = self.dir / "squid.conf"
        self.config.write_text(f"""\
http_port {host}:{self.port}
pid_filename {self.dir}/squid.pid
access_log stdio:{self.dir}/access.log squid
cache_log {self.dir}/cache.log
cache_store_log none
coredump_dir {self.dir}
netdb_filename none
cache_effective_user proxy
visible_hostname cernvm-test-squid-{name}
cache_mem 128 MB
maximum_object_size_in_memory 16 MB
maximum_object_size 64 MB
memory_cache_mode always
acl localnet src 127.0.0.0/8 10.0.2.0/24
http_access allow localnet
http_access deny all
shutdown_lifetime 0 seconds
logfile_rotate 0
""" + extra)
        self.proc: subprocess.Popen | None = None
        # the service name prefixes squid's shared-memory segments (/dev/shm/NAME-*): one per instance
        self.service = f"cvmfstest{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, wait: float = 30) -> "Squid":
        out = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen([SQUID, "-N", "-n", self.service, "-f", str(self.config)], stdout=out,
                                     stderr=out, start_new_session=True)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"squid exited {self.proc.returncode}:\n{self.tail()}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"squid did not listen on {self.url} within {wait} s:\n{self.tail()}")

    def tail(self) -> str:
        return "".join((self.dir / f).read_text(errors="replace")[-3000:] for f in ("stderr.log", "cache.log")
                       if (self.dir / f).exists())

    def kill(self) -> None:
        """Dies at once (SIGKILL), as a crashed proxy would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def access(self) -> list[tuple[str, str]]:
        """(result code, URL) of each request squid logged (the log is written as requests complete)."""
        f = self.dir / "access.log"
        if not f.exists():
            return []
        rows = []
        for line in f.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 7 and not parts[6].startswith("error:"):  # not the start-up probe's connection
                rows.append((parts[3].split("/")[0], parts[6]))
        return rows

    def codes(self, rel: str, n: int, wait: float = 5) -> list[str]:
        """Result codes of the requests for REL, once at least N are logged (squid logs a request after
        it ends, which can be a moment after the client has its response)."""
        deadline = time.monotonic() + wait
        while True:
            got = [code for code, url in self.access() if url.endswith("/" + rel)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.05)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
        for f in Path("/dev/shm").glob(f"{self.service}-*"):  # left behind by a killed squid
            f.unlink(missing_ok=True)
