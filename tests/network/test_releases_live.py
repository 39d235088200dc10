"""pipeline/debian-releases.toml on the live archive: Debian 11, 12 and 13 as tags of one repository,
deduplicated against each other, and the one ISO (bookworm's kernel) booting each to its own login
prompt, chosen with cvmfs.tag=."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import pytest

from cernvm_build.cli import main
from cernvm_build.cvmfs.keys import load_public_key
from cernvm_build.cvmfs.reader import Repository, verify_repository

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipeline" / "debian-releases.toml"
RELEASES = {"debian-bullseye": "11", "debian-bookworm": "12", "debian-trixie": "13"}

pytestmark = [pytest.mark.network, pytest.mark.slow, pytest.mark.boot,
              pytest.mark.skipif(os.geteuid() != 0, reason="install mode needs root (chroot)")]


def definition(tmp: Path, port: int) -> Path:
    """pipeline/debian-releases.toml as it is, but writing its locks, state and ISO under TMP (the
    checkout's closures/ are left alone) and pointing the ISO at this test's server."""
    text = PIPELINE.read_text()
    text = text.replace('state-dir = "../build/debian-releases"', f'state-dir = "{tmp}/state"')
    text = text.replace('repo-url = "http://10.0.2.2:8000/"', f'repo-url = "http://10.0.2.2:{port}/"')
    for name in RELEASES:
        recipe = f'recipe = "../recipes/{name}-minimal.toml"'
        assert recipe in text
        text = text.replace(recipe, f'recipe = "{ROOT}/recipes/{name}-minimal.toml"\n'
                                    f'lock-file = "{tmp}/closures/{name}-minimal.lock.toml"')
    boot_lock = 'boot-lock = "../closures/debian-bookworm-minimal.lock.toml"'
    assert boot_lock in text
    text = text.replace(boot_lock, f'boot-lock = "{tmp}/closures/debian-bookworm-minimal.lock.toml"')
    text = text.replace('client-lock = "../closures/', f'client-lock = "{ROOT}/closures/')
    p = tmp / "pipeline" / "debian-releases.toml"
    p.parent.mkdir(parents=True)
    p.write_text(text)
    return p


@pytest.mark.timeout(1800)
def test_three_releases_one_repository_one_iso(tmp_path, capsys):
    from cernvm_build.boot.qemu import QemuOptions, boot, extract_from_iso
    from cernvm_build.cvmfs.serve import serve_in_thread

    # a free port for the ISO's URL; the server starts there once the repository exists
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = definition(tmp_path, port)
    server = None
    try:
        capsys.readouterr()
        rc = main(["build", str(p), "--json"])
        out, err = capsys.readouterr()
        assert rc == 0, err
        res = json.loads(out)
        snaps = {name: r["values"] for name, r in res["snapshots"].items()}
        assert set(snaps) == set(RELEASES)
        repo = tmp_path / "state" / "cvmfs" / "repo"
        master = load_public_key(tmp_path / "state/cvmfs/keys/debian.cernvm-build.local.pub")
        figures = []
        for name, v in snaps.items():
            assert v["tag"].startswith(name + "-") and v["packages"] > 100
            with Repository(str(repo), master_keys=[master], tag=v["tag"]) as r:
                os_release = b"".join(r.iter_content(r.lookup("/usr/lib/os-release"))).decode()
                assert f'VERSION_ID="{RELEASES[name]}"' in os_release
                lock = b"".join(r.iter_content(r.lookup("/.cernvm/closure.lock.toml")))
                assert lock == (tmp_path / "closures" / f"{name}-minimal.lock.toml").read_bytes()
            figures.append(f"{name}: tree {v['tree_bytes'] / 1e6:.0f} MB, added {v['bytes_written'] / 1e6:.0f} MB")
        with Repository(str(repo), master_keys=[master]) as r:
            assert not verify_repository(r).problems
        # the later releases share files with the earlier ones: each adds less than its own tree
        # compresses to alone (the first, bullseye, wrote everything it has)
        first = snaps["debian-bullseye"]
        for name in ("debian-bookworm", "debian-trixie"):
            assert snaps[name]["data_objects_written"] < snaps[name]["tree_files"]
        assert first["data_objects_written"] > 0
        print("\n" + "; ".join(figures))

        # one ISO: its menu lists the three tags, newest (trixie, the default) first. Trixie boots
        # from the ISO with no key pressed; bookworm is chosen in the isolinux menu over the serial
        # console; bullseye with cvmfs.tag= on the kernel command line (the ISO's kernel and initrd)
        server, _ = serve_in_thread(repo, port)
        iso = Path(res["iso"]["values"]["iso"])
        assert res["iso"]["values"]["tag"] == snaps["debian-trixie"]["tag"]
        kernel = extract_from_iso(iso, "/boot/vmlinuz", tmp_path / "vmlinuz")
        initrd = extract_from_iso(iso, "/boot/initrd.img", tmp_path / "initrd.img")
        menu = extract_from_iso(iso, "/isolinux/isolinux.cfg", tmp_path / "isolinux.cfg").read_text()
        order = [snaps[n]["tag"] for n in ("debian-trixie", "debian-bookworm", "debian-bullseye")]
        assert [m for m in re.findall(r"MENU LABEL (\S+)", menu)] == order
        ctrl_n = b"\x0e"
        runs = {
            "debian-trixie": QemuOptions(iso=iso),
            "debian-bookworm": QemuOptions(iso=iso),
            "debian-bullseye": QemuOptions(kernel=kernel, initrd=initrd, append="console=ttyS0,115200 "
                                           f"cvmfs.tag={snaps['debian-bullseye']['tag']}"),
        }
        keys = {"debian-bookworm": [("Booting the default in", ctrl_n),
                                    (f"tag {snaps['debian-bookworm']['tag']}, root hash", b"\r")]}
        for name, opts in runs.items():
            run = boot(opts, tmp_path / f"{name}.console", timeout=300, marker="login:", stop_at_marker=True,
                       keys=keys.get(name, ()))
            assert run.marker_seconds is not None, run.tail()
            banner = re.search(r"Debian GNU/Linux (\d+)", run.console)
            assert banner and banner.group(1) == RELEASES[name], run.tail()
            if name == "debian-trixie":     # the default entry: what the initramfs was built to boot
                assert "the one this ISO was built for" in run.console, run.tail()
            else:
                assert f"cvmfs.tag={snaps[name]['tag']}" in run.console.split("Linux version", 1)[-1]
            print(f"{name}: login prompt after {run.marker_seconds:.0f} s")
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
