#!/usr/bin/env bash
# Idempotent setup on Debian 12 (as root): the OS packages cernvm-build uses, and .venv/ made from
# Debian's own Python with --system-site-packages so the libsolv/apt/rpm/dnf bindings are visible.
set -euo pipefail
cd "$(dirname "$0")/.."

OS_PACKAGES=(
  python3 python3-venv python3-pip
  python3-solv python3-apt python3-dnf python3-rpm python3-createrepo-c
  gpgv gnupg debian-archive-keyring dpkg-dev apt-utils fakeroot xz-utils zstd
  rpm createrepo-c dose-distcheck cpio
  ca-certificates curl
  squashfs-tools ostree
  qemu-utils
  # boot ISO (issue 6): C client build deps, FUSE, initramfs/ISO tools, qemu for boot tests
  gcc libc6-dev pkg-config libfuse3-dev fuse3 libsqlite3-dev zlib1g-dev libssl-dev
  busybox-static xorriso isolinux syslinux-common e2fsprogs qemu-system-x86
  # UEFI boot: GRUB EFI image on a FAT El Torito image; OVMF firmware for the UEFI boot test
  grub-efi-amd64-bin mtools dosfstools ovmf
  # file capabilities: setcap/getcap check our security.capability bytes against libcap
  libcap2-bin
  # serving as stratum-1s do: the nginx site `cvmfs serve-config --nginx` writes (Last-Modified removed
  # by the headers-more module), exercised by the tests on loopback
  nginx libnginx-mod-http-headers-more-filter
  # tests/benchmarks/bench_replicate.py compares with a `wget --mirror` copy
  wget
  # fuzzing the boot client's parsers (libFuzzer + ASan/UBSan runtimes ship with Debian's clang 14)
  clang libclang-rt-14-dev
  # proxies (issue 13): the boot client's proxy tests start their own squid (squid -N -f CONFIG)
  squid
  # the release page (`cernvm-build report`) is checked in a real headless browser: Debian's Chromium,
  # its WebDriver and selenium (seen by .venv through --system-site-packages)
  chromium chromium-driver python3-selenium
  # bootable disk images through diskimage-builder (issue 16; the pip group `dib` brings disk-image-create):
  # kpartx maps the partitions, DIB's scripts call sudo even as root; GRUB comes from the lock, not the host
  kpartx sudo
)

missing=()
for p in "${OS_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq -o DPkg::Lock::Timeout=300
  # no service may start while installing (squid's package would start a system squid on port 3128;
  # the tests start their own): policy-rc.d says "denied" for the length of this install only
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && made_policy=1
  fi
  apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >/dev/null || { [ -z "$made_policy" ] || rm -f "$policy"; exit 1; }
  [ -z "$made_policy" ] || rm -f "$policy"
fi
# a system squid (started earlier, or by hand) is not used by anything here: keep it stopped and off
if [ -x /etc/init.d/squid ] && [ "$(id -u)" = 0 ]; then
  update-rc.d squid disable >/dev/null 2>&1 || true
  if [ -s /run/squid.pid ] && kill -0 "$(cat /run/squid.pid)" 2>/dev/null; then
    /etc/init.d/squid stop >/dev/null 2>&1 || true
  fi
fi

stamp=.venv/.cernvm-build-setup
want="$(cat pyproject.toml bin/cernvm-build | sha256sum | cut -d' ' -f1)"   # the launcher is copied, not linked
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  /usr/bin/python3 -m venv --system-site-packages .venv
  # compat mode: a plain .pth path entry instead of an import-hook finder (cheaper start-up)
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,dib]' --config-settings editable_mode=compat
  echo "$want" > "$stamp"
fi
