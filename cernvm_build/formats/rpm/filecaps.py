"""File capabilities: rpm's textual `%caps(...)` -> the `security.capability` bytes the kernel reads.

rpm payloads carry capabilities only in the header (RPMTAG_FILECAPS, libcap's text form such as
`cap_net_raw=ep`); the cpio/tar payload has none. `rpm --install` applies them with libcap's
cap_from_text + cap_set_file; unpack mode must write the same bytes itself, or `ping` and friends
lose their privileges in an unpacked tree. The encoding is VFS_CAP_REVISION_2 (what libcap writes
outside user namespaces): le32 magic|effective-flag, then permitted/inheritable, low then high word.
"""

from __future__ import annotations

import struct

from cernvm_build.errors import RootfsError

XATTR = "security.capability"

# linux/capability.h, in order (0 .. 40)
CAP_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid", "setpcap",
    "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw", "ipc_lock", "ipc_owner",
    "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
    "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write", "audit_control", "setfcap",
    "mac_override", "mac_admin", "syslog", "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf",
    "checkpoint_restore",
)
_NUMBER = {name: i for i, name in enumerate(CAP_NAMES)}
ALL = (1 << len(CAP_NAMES)) - 1
VFS_CAP_REVISION_2 = 0x02000000
VFS_CAP_FLAGS_EFFECTIVE = 0x000001


def _caps(names: str, text: str) -> int:
    """Bit mask of a comma-separated capability list ('' or 'all' = every capability)."""
    if names in ("", "all"):
        return ALL
    mask = 0
    for name in names.lower().split(","):
        bare = name[4:] if name.startswith("cap_") else name
        if bare.isdigit() and int(bare) < len(CAP_NAMES):
            mask |= 1 << int(bare)
        elif bare in _NUMBER:
            mask |= 1 << _NUMBER[bare]
        else:
            raise RootfsError(f"file capabilities {text!r}: unknown capability {name!r}")
    return mask


def parse(text: str) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) masks of libcap's text form ('cap_a,cap_b+ep cap_c=i')."""
    sets = {"e": 0, "p": 0, "i": 0}
    for clause in text.split():
        ops = [k for k, ch in enumerate(clause) if ch in "=+-"]
        if not ops:
            raise RootfsError(f"file capabilities {text!r}: clause {clause!r} has no =, + or -")
        mask = _caps(clause[:ops[0]], text)
        for start, end in zip(ops, ops[1:] + [len(clause)]):
            op, flags = clause[start], clause[start + 1:end]
            if set(flags) - set("eip"):
                raise RootfsError(f"file capabilities {text!r}: flags {flags!r} are not e, i, p")
            if op == "=":
                for k in sets:
                    sets[k] &= ~mask
            for f in flags:
                sets[f] = sets[f] | mask if op in "=+" else sets[f] & ~mask
    return sets["e"], sets["p"], sets["i"]


def encode(text: str) -> bytes:
    """The security.capability value for TEXT (empty bytes: nothing to set)."""
    effective, permitted, inheritable = parse(text)
    if not (permitted | inheritable):
        return b""
    if effective and effective != permitted | inheritable:
        # a file has one effective *bit*: libcap refuses this too ("Invalid file for capability operation")
        raise RootfsError(f"file capabilities {text!r}: the effective set must be empty or equal to "
                          "permitted | inheritable")
    magic = VFS_CAP_REVISION_2 | (VFS_CAP_FLAGS_EFFECTIVE if effective else 0)
    return struct.pack("<5I", magic, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF,
                       permitted >> 32, inheritable >> 32)


def rpm_file_caps(path: str, what: str) -> list[tuple[str, str]]:
    """(file name, capability text) for each file of the rpm at PATH that carries capabilities.

    Signatures and digests are not checked here: the file was admitted to the store only after its
    sha256 matched the lock, and rpm checks the package again when it records the database."""
    import rpm

    ts = rpm.TransactionSet()
    ts.setVSFlags(rpm._RPMVSF_NOSIGNATURES | rpm._RPMVSF_NODIGESTS)
    try:
        with open(path, "rb") as f:
            header = ts.hdrFromFdno(f.fileno())
    except (OSError, rpm.error) as exc:
        raise RootfsError(f"{what}: cannot read the rpm header: {exc}") from exc
    caps = header[rpm.RPMTAG_FILECAPS] or []
    names = header[rpm.RPMTAG_FILENAMES] or []
    return [(n, c) for n, c in zip(names, caps) if c]
