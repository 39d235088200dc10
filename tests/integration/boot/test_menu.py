"""The ISO's boot menu: isolinux (BIOS) and GRUB (UEFI) list the tags known at build time, newest first
and the default; the kernel command line can be edited there.

The config tests are fast. The boot tests (marker boot) build one ISO with `iso --menu-from-repo` for
a repository holding two snapshots, v1 and v2, and drive its menus over the serial console (~20 s each
under TCG): no key (the newest boots after the timeout), the older entry chosen and its command line
edited, and the same under UEFI through GRUB.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from boot_helpers import BOOT_LOCK, FQRN, MARKER, make_boot_tree
from cvmfs_helpers import run_cli

from cernvm_build.boot.iso import (
    CONSOLE_ARGS,
    IsoOptions,
    MenuEntry,
    boot_entries,
    effective_menu,
    grub_cfg,
    isolinux_cfg,
    menu_from_repository,
    parse_menu_tag,
)
from cernvm_build.errors import BootError

H1, H2, H3 = "1" * 40, "2" * 40, "3" * 40
MENU = [MenuEntry("Debian 13 (trixie)", "trixie-20250601", H3, "security updates of 2025-06-01"),
        MenuEntry("", "bookworm-20250601", H2),
        MenuEntry("Debian 11", "bullseye-20240801", None, "frozen")]
BOOT_TIMEOUT = 240
CTRL_N, CTRL_E, CTRL_X = b"\x0e", b"\x05", b"\x18"   # next entry/line, end of line, boot (GRUB's editor)


def _opts(**kw) -> IsoOptions:
    return IsoOptions(boot_lock=BOOT_LOCK, repo_url="http://h", pubkeys=[], **kw)


# ------------------------------------------------------------------------------------------ configs
def test_both_menus_list_every_entry_newest_first_as_the_default_with_a_short_timeout(tmp_path):
    entries = boot_entries(CONSOLE_ARGS + " quiet", MENU)
    iso, grub = isolinux_cfg(entries), grub_cfg(entries)
    common = "console=tty0 console=ttyS0,115200 quiet"
    want = [common,                                    # the default: what the initramfs names
            f"{common} cvmfs.tag=bookworm-20250601 cvmfs.root_hash={H2}",
            f"{common} cvmfs.tag=bullseye-20240801"]
    assert [e.cmdline for e in entries] == want
    # isolinux: menu.c32 on the serial console, 3 s, the first entry the default, Tab not forbidden
    head = iso.split("\nLABEL ")[0]
    for line in ("SERIAL 0 115200", "UI menu.c32", "TIMEOUT 30", "ALLOWOPTIONS 1", "DEFAULT entry0"):
        assert line in head.splitlines()
    assert "NOESCAPE" not in iso and "MENU TITLE " in head and "Tab edits" in head
    labels = [ln.strip() for ln in iso.splitlines() if ln.strip().startswith("MENU LABEL")]
    assert labels == ["MENU LABEL Debian 13 (trixie)", "MENU LABEL bookworm-20250601", "MENU LABEL Debian 11"]
    assert [ln.strip()[len("APPEND "):] for ln in iso.splitlines() if ln.strip().startswith("APPEND")] == want
    assert iso.count("MENU DEFAULT") == 1 and iso.index("MENU DEFAULT") < iso.index("LABEL entry1")
    assert "tag trixie-20250601, root hash 333333333333 (newest, the default): security updates" in iso
    # GRUB: same entries in the same order, default 0 after 3 s
    assert "set timeout=3\n" in grub and "set default=0\n" in grub
    titles = [ln for ln in grub.splitlines() if ln.startswith("menuentry ")]
    assert titles == ["menuentry 'Debian 13 (trixie)' --id entry0 {", "menuentry 'bookworm-20250601' --id entry1 {",
                      "menuentry 'Debian 11' --id entry2 {"]
    assert [ln.strip()[len("linux /boot/vmlinuz "):] for ln in grub.splitlines()
            if ln.strip().startswith("linux ")] == want
    assert grub.count("initrd /boot/initrd.img") == 3
    _grub_script_check(grub, tmp_path)


def test_without_a_menu_one_entry_boots_what_the_initramfs_names_as_before():
    [entry] = boot_entries(CONSOLE_ARGS, [], "v1", None)
    assert entry.cmdline == CONSOLE_ARGS and entry.title == "v1"          # no cvmfs.tag=: boot.conf decides
    [newest] = boot_entries(CONSOLE_ARGS + " \n quiet", [])
    assert newest.cmdline == CONSOLE_ARGS + " quiet" and newest.title == "newest revision"
    # a tag that a menu cannot show (never checked before menus existed) is shown, not refused
    [odd] = boot_entries(CONSOLE_ARGS, [], "a^b\u00e9", None)
    assert odd.title == "a?b?"
    cfg = isolinux_cfg([entry])
    assert "LABEL entry0" in cfg and "LABEL entry1" not in cfg and f"APPEND {CONSOLE_ARGS}\n" in cfg


@pytest.mark.parametrize("entry, message", [
    (MenuEntry("x", "a b"), "tag 'a b' is not a tag name"),
    (MenuEntry("x", "v1;reboot"), "is not a tag name"),
    (MenuEntry("x", ""), "is not a tag name"),
    (MenuEntry("x", "v1", "ABC"), "root hash 'ABC' is not a catalog hash"),
    (MenuEntry("x", "v1", "1" * 40 + " init=/bin/sh"), "is not a catalog hash"),
    (MenuEntry("two\nlines", "v1"), "label 'two\\nlines': use at most 60 printable ASCII"),
    (MenuEntry("^hotkey", "v1"), "other than ^"),
    (MenuEntry("caf\u00e9", "v1"), "printable ASCII"),
    (MenuEntry("x" * 61, "v1"), "at most 60"),
    (MenuEntry("x", "v1", None, "ok\n  ENDTEXT\nLABEL evil"), "description"),
    (MenuEntry("x", "v1", None, "tab\there"), "description"),
])
def test_menu_input_that_could_break_a_loader_config_is_refused_in_one_line(entry, message):
    with pytest.raises(BootError, match=None) as err:
        effective_menu(_opts(menu=[MenuEntry("ok", "v0"), entry]))
    assert message in str(err.value) and "\n" not in str(err.value) and str(err.value).startswith("menu entry 2")


def test_quotes_and_dollars_in_labels_and_arguments_stay_literal(tmp_path):
    entry = MenuEntry("it's $HOME {x}; echo", "v1", None, "a 'quoted' \\ description")
    first, e = boot_entries("console=ttyS0 cvmfs.url=http://h:1/x;reboot it's $x",
                            effective_menu(_opts(menu=[MenuEntry("", "v2"), entry])))
    grub = grub_cfg([first, e])
    assert "menuentry 'it'\\''s $HOME {x}; echo' --id entry1 {" in grub
    assert "echo 'tag v1: a '\\''quoted'\\'' \\ description'" in grub
    assert "linux /boot/vmlinuz console=ttyS0 'cvmfs.url=http://h:1/x;reboot' 'it'\\''s' '$x' cvmfs.tag=v1\n" in grub
    assert "linux /boot/vmlinuz console=ttyS0 'cvmfs.url=http://h:1/x;reboot' 'it'\\''s' '$x'\n" in grub
    iso = isolinux_cfg([first, e])
    assert "  MENU LABEL it's $HOME {x}; echo\n" in iso   # isolinux takes the rest of the line verbatim
    _grub_script_check(grub, tmp_path)


def _grub_script_check(cfg: str, tmp_path) -> None:
    """GRUB's own parser (grub-common's grub-script-check) accepts CFG."""
    if shutil.which("grub-script-check"):
        (tmp_path / "grub.cfg").write_text(cfg)
        proc = subprocess.run(["grub-script-check", str(tmp_path / "grub.cfg")], capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, proc.stderr + proc.stdout


def test_the_menu_default_is_the_snapshot_the_initramfs_names():
    with pytest.raises(BootError, match="default \\(first\\) entry boots tag 'v2', but the ISO's tag is 'v1'"):
        effective_menu(_opts(tag="v1", menu=[MenuEntry("", "v2"), MenuEntry("", "v1")]))
    with pytest.raises(BootError, match=f"boots root hash {H2}, but the ISO is pinned to {H1}"):
        effective_menu(_opts(tag="v1", root_hash=H1, menu=[MenuEntry("", "v1", H2)]))
    with pytest.raises(BootError, match="tag 'v1' is listed twice"):
        effective_menu(_opts(menu=[MenuEntry("", "v1"), MenuEntry("", "v1", H1)]))
    # the pipeline's way: tag + root hash of the snapshot just published, menu from the repository
    menu = effective_menu(_opts(tag="v2", root_hash=H2, menu=[MenuEntry("", "v2"), MenuEntry("", "v1", H1)]))
    assert menu[0] == MenuEntry("", "v2", H2) and menu[1].root_hash == H1


def test_menu_tag_option_syntax():
    assert parse_menu_tag("v1") == MenuEntry("", "v1")
    assert parse_menu_tag(f"v1={H1}") == MenuEntry("", "v1", H1)
    with pytest.raises(BootError, match="^--menu-tag 'v 1': tag 'v 1' is not a tag name"):
        parse_menu_tag("v 1")
    with pytest.raises(BootError, match="^--menu-tag 'v1=xyz': root hash 'xyz' is not a catalog hash"):
        parse_menu_tag("v1=xyz")


def test_menu_from_repository_lists_its_tags_newest_first_pinned(repo, keys, tmp_path):
    from cernvm_build.cvmfs.publish import PublishOptions, publish

    tree = make_boot_tree(tmp_path / "tree")
    r1 = publish(tree, repo, keys, PublishOptions(tag="v1", durable=False))
    (tree / "etc" / "os-release").write_text('PRETTY_NAME="two"\n')
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", description="second 'one'\n", durable=False))
    menu = menu_from_repository(repo, [keys / f"{FQRN}.pub"])
    assert [(e.tag, e.root_hash) for e in menu] == [("v2", r2.root_hash), ("v1", r1.root_hash)]   # no trunk
    assert menu[0].description.startswith(f"revision {r2.revision}, 20") and menu[0].description.endswith(
        ", second 'one'?")
    assert menu_from_repository(repo, [keys / f"{FQRN}.pub"], limit=1) == menu[:1]


def test_iso_cli_refuses_bad_menus_before_building(tmp_path, session_keys):
    pub = session_keys / f"{FQRN}.pub"
    base = ["iso", "--boot-lock", BOOT_LOCK, "--repo-url", "http://x", "--pubkey", pub, "-o", tmp_path / "x.iso"]
    for extra, message in [
        (["--menu-tag", "v1;reboot"], b"error: --menu-tag 'v1;reboot': tag 'v1;reboot' is not a tag name"),
        (["--menu-tag", "v2", "--menu-tag", "v1", "--tag", "v1"], b"the menu's default (first) entry boots tag 'v2'"),
        (["--menu-limit", "2"], b"error: --menu-limit N needs --menu-from-repo"),
        (["--menu-from-repo", tmp_path / "nothing"], b"error: "),
        (["--menu-tag", "v1", "--menu-from-repo", tmp_path], b"not allowed with argument"),
    ]:
        proc = run_cli(*base, *extra, check=False)
        assert proc.returncode != 0 and message in proc.stderr, (extra, proc.stderr)
        assert not (tmp_path / "x.iso").exists()


# -------------------------------------------------------------------------------------------- boots
@pytest.fixture(scope="module")
def menu_iso(tmp_path_factory, session_keys, boot_kernel):
    """Snapshots v1 ("fixture one") and v2 ("fixture two") in one served repository and an ISO built by
    `iso --menu-from-repo` offering both, v2 first."""
    if not shutil.which("qemu-system-x86_64"):
        pytest.skip("no qemu")
    from cernvm_build.boot.qemu import HOST_FROM_GUEST
    from cernvm_build.cvmfs.publish import PublishOptions, init_repository, publish
    from cernvm_build.cvmfs.serve import serve_in_thread

    d = tmp_path_factory.mktemp("menu")
    keys = d / "keys"
    shutil.copytree(session_keys, keys)
    repo = d / "repo"
    init_repository(repo, FQRN, keys)
    tree = make_boot_tree(d / "tree", 'PRETTY_NAME="fixture one"\n')
    r1 = publish(tree, repo, keys, PublishOptions(tag="v1", durable=False))
    (tree / "etc" / "os-release").write_text('PRETTY_NAME="fixture two"\n')
    r2 = publish(tree, repo, keys, PublishOptions(tag="v2", durable=False))
    server, _ = serve_in_thread(repo)
    url = f"http://{HOST_FROM_GUEST}:{server.server_address[1]}"
    iso = d / "menu.iso"
    proc = run_cli("iso", "--boot-lock", BOOT_LOCK, "--repo-url", url, "--pubkey", keys / f"{FQRN}.pub",
                   "--menu-from-repo", repo, "-o", iso)
    assert b"menu 1: v2 (default)\n" in proc.stdout
    assert b"menu 2: v1: cvmfs.tag=v1 cvmfs.root_hash=" + r1.root_hash.encode() in proc.stdout
    yield iso, r1, r2
    server.shutdown()


def _booted(run, r, pretty: str, default: bool = False) -> None:
    """R booted: from the menu entry's command line, or (DEFAULT) from what the initramfs names."""
    out = run.console
    if default:
        assert f"snapshot: root hash {r.root_hash} (tag " in out and "the one this ISO was built for" in out, run.tail()
    else:
        assert f"snapshot: root hash {r.root_hash} (kernel command line)" in out, run.tail()
    assert f"root catalog {r.root_hash}" in out and f'PRETTY_NAME="{pretty}"' in out and MARKER in out


@pytest.mark.boot
def test_bios_menu_times_out_into_the_newest(menu_iso, tmp_path):
    from cernvm_build.boot.qemu import QemuOptions, boot

    iso, _, r2 = menu_iso
    run = boot(QemuOptions(iso=iso), tmp_path / "serial.log", BOOT_TIMEOUT, MARKER)
    assert "CernVM-FS snapshots, newest first" in run.console and "Booting the default in " in run.console
    _booted(run, r2, "fixture two", default=True)
    print(f"menu, default: boot to marker {run.marker_seconds:.1f} s")


@pytest.mark.boot
def test_bios_menu_boots_the_older_entry_with_an_edited_command_line(menu_iso, tmp_path):
    """Over the serial console: Ctrl-N (the arrow keys work too) selects v1, Tab opens its command line,
    an argument is typed, Enter boots."""
    from cernvm_build.boot.qemu import QemuOptions, boot

    iso, r1, _ = menu_iso
    keys = [("Booting the default in", CTRL_N), ("tag v1, root hash", b"\t"),
            (f"cvmfs.tag=v1 cvmfs.root_hash={r1.root_hash}", b" cernvm.menu=edited\r")]
    run = boot(QemuOptions(iso=iso), tmp_path / "serial.log", BOOT_TIMEOUT, MARKER, keys=keys)
    assert run.keys_sent == 3, run.tail()
    _booted(run, r1, "fixture one")
    kernel = run.console.split("Linux version", 1)[-1]
    assert "cernvm.menu=edited" in kernel and "fixture two" not in run.console


@pytest.mark.boot
def test_uefi_grub_menu_on_the_serial_console_boots_the_default(menu_iso, tmp_path):
    from cernvm_build.boot.qemu import QemuOptions, boot

    iso, _, r2 = menu_iso
    run = boot(QemuOptions(iso=iso, firmware="uefi"), tmp_path / "serial.log", BOOT_TIMEOUT, MARKER)
    out = run.console
    assert "GNU GRUB" in out and "*v2 " in out and " v1 " in out, run.tail()
    assert "The highlighted entry will be executed automatically in 3s." in out
    _booted(run, r2, "fixture two", default=True)
    assert "efi: EFI v" in out and "ISOLINUX" not in out


@pytest.mark.boot
def test_uefi_grub_menu_edits_the_older_entry(menu_iso, tmp_path):
    """GRUB: Ctrl-N selects v1, e opens the entry, Ctrl-N x3 reaches its linux line, Ctrl-E its end,
    an argument is typed, Ctrl-X boots."""
    from cernvm_build.boot.qemu import QemuOptions, boot

    iso, r1, _ = menu_iso
    keys = [("executed automatically in", CTRL_N), ("*v1 ", b"e"),
            ("initrd /boot/initrd.img", CTRL_N * 3 + CTRL_E + b" cernvm.menu=grub"), ("cernvm.menu=grub", CTRL_X)]
    run = boot(QemuOptions(iso=iso, firmware="uefi"), tmp_path / "serial.log", BOOT_TIMEOUT, MARKER, keys=keys)
    assert run.keys_sent == 4, run.tail()
    _booted(run, r1, "fixture one")
    assert "cernvm.menu=grub" in run.console.split("Linux version", 1)[-1]
