"""Boot an ISO (or kernel + initrd) under qemu with the serial console in a file: for tests, benchmarks
and trying an image by hand. User-mode networking lets the guest reach the host's loopback at 10.0.2.2.
boot(..., keys=[(text, bytes)]) also types on the serial console (a boot menu) once TEXT appears.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cernvm_build.errors import BootError

HOST_FROM_GUEST = "10.0.2.2"
OVMF = (Path("/usr/share/ovmf/OVMF.fd"), Path("/usr/share/OVMF/OVMF.fd"))
FIRMWARES = ("bios", "uefi")
KEY_INTERVAL = 0.1               # seconds between two keys typed on the serial console
_KEY_RE = re.compile(rb"\x1b\[[0-9;]*[A-Za-z~]|\x1b.|.", re.DOTALL)    # ANSI escape sequences stay whole


def accelerator() -> str:
    """TCG unless CERNVM_BUILD_QEMU_ACCEL says otherwise (nested KVM is often unusable; CI has none)."""
    return os.environ.get("CERNVM_BUILD_QEMU_ACCEL", "tcg")


@dataclass
class BootRun:
    """Result of one boot: the console text, whether qemu stopped by itself, how long it took."""

    console: str
    exited: bool
    returncode: int | None
    seconds: float
    marker_seconds: float | None = None
    keys_sent: int = 0               # how many of boot()'s KEYS steps were typed


    def tail(self, n: int = 60) -> str:
        return "\n".join(self.console.splitlines()[-n:])


@dataclass
class QemuOptions:
    iso: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    disk: Path | None = None
    disk_format: str = "raw"         # or "qcow2" (a bootable disk image: `image --bootable`)
    memory_mb: int = 1024
    cpus: int = 2
    nic: str = "virtio-net-pci"
    firmware: str = "bios"           # or "uefi": OVMF (package ovmf), Secure Boot off
    extra: list[str] = field(default_factory=list)

    def argv(self, serial: Path, monitor: Path | None = None, serial_socket: Path | None = None) -> list[str]:
        """SERIAL receives the console; with SERIAL_SOCKET the serial port is also a unix socket that a
        client can type on (its output is still logged to SERIAL)."""
        qemu = shutil.which("qemu-system-x86_64")
        if not qemu:
            raise BootError("qemu-system-x86_64 is not installed (run tools/setup.sh)")
        mon = f"unix:{monitor},server=on,wait=off" if monitor else "none"
        if serial_socket:
            port = ["-chardev", f"socket,id=ser0,path={serial_socket},server=on,wait=off,logfile={serial}",
                    "-serial", "chardev:ser0"]
        else:
            port = ["-serial", f"file:{serial}"]
        cmd = [qemu, "-accel", accelerator(), "-m", str(self.memory_mb), "-smp", str(self.cpus),
               "-display", "none", "-monitor", mon, *port, "-no-reboot",
               "-netdev", "user,id=n0", "-device", f"{self.nic},netdev=n0"]
        if self.firmware not in FIRMWARES:
            raise BootError(f"firmware {self.firmware!r}: expected one of {', '.join(FIRMWARES)}")
        if self.firmware == "uefi":
            ovmf = next((f for f in OVMF if f.is_file()), None)
            if ovmf is None:
                raise BootError(f"UEFI firmware not found at {OVMF[0]} (install ovmf; run tools/setup.sh)")
            cmd += ["-bios", str(ovmf)]
        if self.iso:
            cmd += ["-cdrom", str(self.iso), "-boot", "d"]
        if self.kernel:
            cmd += ["-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", self.append]
        if self.disk:
            cmd += ["-drive", f"file={self.disk},format={self.disk_format},if=virtio"]
        return cmd + self.extra


def _powerdown(monitor: Path) -> None:
    """ACPI power button through the qemu monitor: the guest shuts down cleanly (disks synced)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(monitor))
        s.sendall(b"system_powerdown\n")
        time.sleep(0.5)


class _SerialTyping:
    """Types KEYS on the serial socket: each (text, data) waits for TEXT on the console after the
    previous step's text, then sends DATA. Reads (and drops) what the socket echoes of the console."""

    def __init__(self, path: Path, keys: Sequence[tuple[str, bytes]]):
        self.path, self.keys, self.sent, self.pos = path, list(keys), 0, 0
        self.sock: socket.socket | None = None

    def _connect(self) -> bool:
        if self.sock is None and self.path.exists():
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(str(self.path))
            except OSError:
                s.close()
                return False
            self.sock = s
            threading.Thread(target=self._drain, args=(s,), daemon=True).start()
        return self.sock is not None

    @staticmethod
    def _drain(s: socket.socket) -> None:
        try:
            while s.recv(65536):
                pass
        except OSError:
            pass

    def step(self, console: str) -> None:
        if not self._connect():
            return
        while self.sent < len(self.keys):
            text, data = self.keys[self.sent]
            at = console.find(text, self.pos)
            if at < 0:
                return
            self.pos = at + len(text)
            for key in _KEY_RE.findall(data):     # at a typist's pace: firmware console input is slow
                self.sock.sendall(key)
                time.sleep(KEY_INTERVAL)
            self.sent += 1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def boot(opts: QemuOptions, serial: Path, timeout: float, marker: str | None = None,
         stop_at_marker: bool = False, powerdown_at_marker: bool = False,
         keys: Sequence[tuple[str, bytes]] = ()) -> BootRun:
    """Run qemu until it exits (guest power-off) or TIMEOUT; optionally stop once MARKER is printed,
    by killing qemu (stop_at_marker) or by pressing the ACPI power button (powerdown_at_marker).
    KEYS: (text, data) steps typed on the serial console in order, each once TEXT has appeared (after
    the previous step's TEXT), e.g. [("Booting the default", b"\x1b[B"), ("Booting", b"\r")]."""
    serial.parent.mkdir(parents=True, exist_ok=True)
    serial.write_bytes(b"")
    mondir = Path(tempfile.mkdtemp(prefix="qemu-mon-"))  # short path: unix sockets allow ~107 bytes
    monitor = mondir / "monitor"
    typing = _SerialTyping(mondir / "serial", keys) if keys else None
    start = time.monotonic()
    proc = subprocess.Popen(opts.argv(serial, monitor, typing.path if typing else None), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    marker_at = None
    try:
        while time.monotonic() - start < timeout:
            if proc.poll() is not None:
                break
            if typing is not None:
                typing.step(serial.read_text(errors="replace"))
            if marker and marker_at is None and marker in serial.read_text(errors="replace"):
                marker_at = time.monotonic() - start
                if stop_at_marker:
                    break
                if powerdown_at_marker:
                    _powerdown(monitor)
            time.sleep(0.2)
    finally:
        if typing is not None:
            typing.close()
        exited = proc.poll() is not None
        if not exited:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    shutil.rmtree(mondir, ignore_errors=True)
    console = serial.read_text(errors="replace")
    if marker and marker_at is None and marker in console:
        marker_at = time.monotonic() - start
    if exited and proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        raise BootError(f"qemu failed ({proc.returncode}): {err.splitlines()[-1:] if err else ''}")
    return BootRun(console, exited, proc.returncode if exited else None, time.monotonic() - start, marker_at,
                   typing.sent if typing else 0)


def extract_from_iso(iso: Path, member: str, dest: Path) -> Path:
    """Copy one file out of an ISO (xorriso -osirrox), e.g. /boot/vmlinuz for a direct kernel boot."""
    proc = subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(iso), "-extract", member, str(dest)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BootError(f"cannot extract {member} from {iso}: {proc.stderr.strip().splitlines()[-1:]}")
    dest.chmod(0o644)
    return dest
