"""rpm's %caps text -> security.capability bytes, checked against libcap's own `setcap`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from cernvm_build.errors import RootfsError
from cernvm_build.formats.rpm.filecaps import ALL, encode, parse

SETCAP = shutil.which("setcap") or "/usr/sbin/setcap"
CASES = ["cap_net_raw=ep", "cap_net_raw+p", "CAP_NET_RAW=ep", "cap_net_admin,cap_sys_ptrace+ep",
         "cap_chown+ei cap_net_admin,cap_sys_ptrace+ep", "cap_bpf,cap_perfmon,cap_checkpoint_restore+ip",
         "all=p", "=ep", "all=ep cap_sys_admin-ep", "cap_setuid,cap_setgid=p cap_setgid-p", "cap_dac_override=eip"]


@pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists(SETCAP), reason="setcap (libcap2-bin) as root")
@pytest.mark.parametrize("text", CASES)
def test_same_bytes_as_libcap(text, tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"")
    subprocess.run([SETCAP, text, str(f)], check=True, capture_output=True)
    assert encode(text) == os.getxattr(f, "security.capability")


def test_parse_sets():
    assert parse("cap_net_raw=ep") == (1 << 13, 1 << 13, 0)
    assert parse("=ep") == (ALL, ALL, 0)
    assert parse("cap_setuid,cap_setgid=p cap_setgid-p") == (0, 1 << 7, 0)
    assert encode("cap_net_raw=p cap_net_raw-p") == b""


@pytest.mark.parametrize("text, message", [
    ("cap_no_such=ep", "unknown capability 'cap_no_such'"),
    ("cap_chown=i cap_net_raw+ep", "effective set must be empty or equal"),
    ("cap_chown", "has no =, + or -"),
    ("cap_chown=x", "are not e, i, p"),
])
def test_refused(text, message):
    with pytest.raises(RootfsError, match=re.escape(message)):
        encode(text)
