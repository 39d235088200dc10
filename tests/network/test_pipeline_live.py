"""pipeline/debian-bookworm.toml end to end on the live archive (install mode), then again: nothing new."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.cvmfs.keys import load_public_key
from cernvm_build.cvmfs.reader import Repository, verify_repository

PIPELINE = Path(__file__).resolve().parents[2] / "pipeline" / "debian-bookworm.toml"

pytestmark = [pytest.mark.network, pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0, reason="install mode needs root (chroot)")]


def _build(tmp: Path, capsys) -> dict:
    capsys.readouterr()
    rc = main(["build", str(PIPELINE), "--state-dir", str(tmp / "state"), "--lock-file", str(tmp / "lock.toml"),
               "--cache", str(tmp / "cache"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def test_debian_bookworm_pipeline_live(tmp_path, capsys):
    t0 = time.monotonic()
    first = _build(tmp_path, capsys)
    t1 = time.monotonic()
    status = {s["name"]: s["status"] for s in first["stages"]}
    assert status == {"lock": "ran", "sign": "ran", "fetch": "ran", "rootfs": "ran", "publish": "ran",
                      "iso": "ran", "image": "skipped"}
    v = first["values"]
    iso = Path(v["iso"])
    assert iso.is_file() and iso.stat().st_size <= 15 * 2**20 and v["iso_bytes"] == iso.stat().st_size
    assert v["packages"] > 100 and v["revision"] == 2 and v["tag"] == "debian-bookworm-" + v["lock_digest"][7:19]
    repo = tmp_path / "state" / "cvmfs" / "repo"
    published = (repo / ".cvmfspublished").read_bytes()
    master = load_public_key(tmp_path / "state/cvmfs/keys/debian-bookworm.cernvm-build.local.pub")
    with Repository(str(repo), master_keys=[master], tag=v["tag"]) as r:
        assert r.lookup("/usr/bin/apt").file_size > 0 and r.lookup("/boot").is_dir
        lock = b"".join(r.iter_content(r.lookup("/.cernvm/closure.lock.toml")))
        assert lock == (tmp_path / "lock.toml").read_bytes()
        rep = verify_repository(r)
        assert not rep.problems and rep.files > 10000

    second = _build(tmp_path, capsys)
    t2 = time.monotonic()
    ran = [s["name"] for s in second["stages"] if s["status"] == "ran"]
    assert ran == ["lock"]                               # re-resolved (refresh) ...
    assert second["values"]["lock_action"] == "unchanged"  # ... to the same bytes
    assert (repo / ".cvmfspublished").read_bytes() == published   # so nothing new is published
    assert second["values"]["root_hash"] == v["root_hash"]
    assert second["values"]["iso"] == v["iso"] and iso.stat().st_size == v["iso_bytes"]
    # and the ISO boots exactly as README says (serve on port 8000, qemu with user networking)
    page = report_as_readme_says(tmp_path)
    html = page.read_text()
    assert v["tag"] in html and v["lock_digest"] in html and "Debian" in html
    console = boot_as_readme_says(tmp_path)
    assert "login:" in console, console[-3000:]
    assert "Debian GNU/Linux 12" in console and "the one this ISO was built for" in console
    print(f"\nfirst run {t1 - t0:.1f}s ({v['packages']} packages, tree {v['tree_bytes'] / 1e6:.0f} MB, "
          f"{v['objects_written']} objects, {v['bytes_written'] / 1e6:.0f} MB, ISO {v['iso_bytes'] / 2**20:.1f} MiB), second run {t2 - t1:.1f}s")


def readme_boot_commands() -> list[str]:
    """The two commands README's quick start gives for booting the demo ISO, exactly as written."""
    text = (PIPELINE.parents[1] / "README.md").read_text()
    block = text.split("To boot it", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = [ln for ln in block.splitlines() if ln.strip()]
    assert len(lines) == 2 and lines[0].endswith("&") and lines[1].startswith("qemu-system-x86_64 ")
    return lines


def readme_report_command() -> str:
    """README's "Release page" command for the demo repository, exactly as written."""
    text = (PIPELINE.parents[1] / "README.md").read_text()
    block = text.split("## Release page", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    [line] = [ln for ln in block.splitlines() if ln.strip()]
    assert line.startswith(".venv/bin/cernvm-build report build/debian-bookworm/cvmfs/repo -o ")
    return line


def report_as_readme_says(tmp_path: Path) -> Path:
    """README's release-page command, run verbatim in a checkout-like directory (see below)."""
    import subprocess
    import sys

    work = tmp_path / "report-checkout"
    (work / "build").mkdir(parents=True)
    (work / "build" / "debian-bookworm").symlink_to(tmp_path / "state")
    (work / ".venv").mkdir()
    (work / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    line = readme_report_command()
    proc = subprocess.run(["bash", "-c", line], cwd=work, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = work / line.split(" -o ", 1)[1].split()[0]
    assert (out / "index.html").is_file()
    return out / "index.html"


def boot_as_readme_says(tmp_path: Path) -> str:
    """README's "To boot it", run verbatim in a directory laid out like the checkout after the demo
    (build/debian-bookworm is this test's pipeline state, .venv/bin the running interpreter's)."""
    import signal
    import subprocess
    import sys

    work = tmp_path / "checkout"
    (work / "build").mkdir(parents=True)
    (work / "build" / "debian-bookworm").symlink_to(tmp_path / "state")
    (work / ".venv").mkdir()
    (work / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    serve_cmd, qemu_cmd = readme_boot_commands()
    server = subprocess.Popen(["bash", "-c", f"exec {serve_cmd.rstrip('&').strip()}"], cwd=work,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    qemu = subprocess.Popen(["bash", "-c", f"exec {qemu_cmd}"], cwd=work, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen = b""
    try:
        os.set_blocking(qemu.stdout.fileno(), False)
        deadline = time.monotonic() + 600
        while b"login:" not in seen and time.monotonic() < deadline and qemu.poll() is None:
            chunk = qemu.stdout.read(65536) or b""
            seen += chunk
            if not chunk:
                time.sleep(0.2)
    finally:
        for proc in (qemu, server):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return seen.decode(errors="replace")
