#!/bin/sh
# cernvm-build initramfs /init (busybox sh): network up, CernVM-FS snapshot mounted read-only by
# cvmfs-mini, a writable overlay on top (scratch disk or tmpfs), then switch_root into the snapshot.
#
# Kernel command line (overrides the defaults built into /etc/cernvm/boot.conf):
#   cvmfs.url=URL[;URL2]  cvmfs.tag=TAG  cvmfs.root_hash=HASH  cvmfs.rebase=1
#   cvmfs.scratch=LABEL   cvmfs.cache_size=MB  cvmfs.error_timeout=SECONDS  cvmfs.debug=1  init=PATH
#   cvmfs.proxy=SPEC      HTTP proxies (CVMFS_HTTP_PROXY syntax: "http://p1:3128|http://p2:3128;DIRECT");
#                         ';' and '|' need no quoting here: the words of /proc/cmdline are never evaluated
#   cvmfs.prefetch=N      N processes prefetch the snapshot's boot working set if the repository lists one
#                         (.cvmfsprefetch-<root hash>); 0: none. Default: the client's (4)
#   cvmfs.min_revision=N  refuse a repository whose manifest is older than revision N (a stale server or
#                         a replay; with a scratch disk the client also remembers the newest revision seen)
# stay/rebase: with a scratch disk the root hash mounted on first boot is recorded there and booted
# from then on; cvmfs.rebase=1 or a cvmfs.tag= different from the recorded one moves to the tag.
# An ISO built for one snapshot (boot.conf names its root hash; the tag is then a label) boots that
# root hash; cvmfs.rebase=1 moves on to the newest revision, cvmfs.tag= to a tag. A boot-menu entry
# names its tag and root hash on the command line: cvmfs.rebase=1 added there follows the entry's tag
# instead of its pinned hash (delete cvmfs.tag= too for the newest revision).
export PATH=/bin:/sbin
umask 022
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs -o mode=0755 tmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "cernvm-boot: $*"; }
fail() {
    # on every console (kernel log), then the same on this one
    echo "<2>cernvm-boot: ERROR: $*" > /dev/kmsg 2>/dev/null
    echo "cernvm-boot: ERROR: $*"
    if [ "${ERROR_TIMEOUT:-0}" -gt 0 ]; then
        echo "cernvm-boot: press Enter within $ERROR_TIMEOUT s for a rescue shell, else the machine powers off"
        if read -t "$ERROR_TIMEOUT" _answer; then setsid cttyhack sh; fi
    fi
    echo "cernvm-boot: powering off"
    sync
    poweroff -f
    sleep 5
    exit 1
}

. /etc/cernvm/boot.conf
INIT=/sbin/init
REBASE=0
TAG_FROM_CMDLINE=
ROOT_HASH_FROM_CMDLINE=
DEBUG=
MIN_REVISION=${CVMFS_MIN_REVISION:-}
PROXY=${CVMFS_HTTP_PROXY:-}
PREFETCH=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        cvmfs.url=*) CVMFS_URL="${arg#cvmfs.url=}" ;;
        cvmfs.tag=*) CVMFS_TAG="${arg#cvmfs.tag=}"; TAG_FROM_CMDLINE=1 ;;
        cvmfs.root_hash=*) CVMFS_ROOT_HASH="${arg#cvmfs.root_hash=}"; ROOT_HASH_FROM_CMDLINE=1 ;;
        cvmfs.rebase=*) REBASE="${arg#cvmfs.rebase=}" ;;
        cvmfs.scratch=*) SCRATCH_LABEL="${arg#cvmfs.scratch=}" ;;
        cvmfs.cache_size=*) CACHE_MB="${arg#cvmfs.cache_size=}" ;;
        cvmfs.error_timeout=*) ERROR_TIMEOUT="${arg#cvmfs.error_timeout=}" ;;
        cvmfs.debug=*) DEBUG="${arg#cvmfs.debug=}" ;;
        cvmfs.min_revision=*) MIN_REVISION="${arg#cvmfs.min_revision=}" ;;
        cvmfs.proxy=*) PROXY="${arg#cvmfs.proxy=}" ;;
        cvmfs.prefetch=*) PREFETCH="${arg#cvmfs.prefetch=}" ;;
        init=*) INIT="${arg#init=}" ;;
    esac
done
set +f
[ "$DEBUG" = 1 ] && set -x
say "initramfs $BUILD_ID, kernel $(uname -r)"

# ---------------------------------------------------------------------------------------- modules
while read -r mod; do
    [ -n "$mod" ] && insmod "/lib/modules/$KERNEL_VERSION/$mod" 2>/dev/null
done < /etc/cernvm/modules

# ------------------------------------------------- scratch disk, looked for while DHCP runs
# block drivers probe asynchronously: waiting up to 2 s for a disk that is not there would otherwise
# come before the network (a diskless machine's whole wait)
SCRATCH_FOUND=/run/cernvm-scratch
SCRATCH_PID=
if [ -n "$SCRATCH_LABEL" ]; then
    (
        i=0
        while [ $i -lt 20 ]; do
            if d=$(findfs "LABEL=$SCRATCH_LABEL" 2>/dev/null); then echo "$d" > "$SCRATCH_FOUND"; break; fi
            sleep 0.1
            i=$((i + 1))
        done
    ) &
    SCRATCH_PID=$!
fi

# ---------------------------------------------------------------------------------------- network
ip link set lo up
ifaces=
i=0
while [ $i -lt 50 ]; do   # NIC drivers probe asynchronously
    ifaces=$(ls /sys/class/net | grep -v '^lo$')
    [ -n "$ifaces" ] && break
    sleep 0.1
    i=$((i + 1))
done
[ -n "$ifaces" ] || fail "no network interface found (drivers: virtio_net, e1000, e1000e)"
NET_OK=
for ifc in $ifaces; do
    ip link set "$ifc" up
    if udhcpc -i "$ifc" -s /etc/cernvm/udhcpc.script -f -q -n -t 6 -T 2 >/dev/null 2>&1; then
        NET_OK=$ifc
        break
    fi
done
[ -n "$NET_OK" ] || fail "no DHCP lease on $(echo $ifaces)"
say "network: $NET_OK $(cat /run/cernvm-ip 2>/dev/null)"

# ------------------------------------------------------------------------ scratch disk or tmpfs
RW=/mnt/.rw
RO=/mnt/.ro
SCRATCH=
if [ -n "$SCRATCH_PID" ]; then
    wait "$SCRATCH_PID"
    dev=$(cat "$SCRATCH_FOUND" 2>/dev/null)
    if [ -n "$dev" ]; then
        mount -t ext4 "$dev" "$RW" || fail "cannot mount scratch disk $dev (LABEL=$SCRATCH_LABEL, ext4)"
        SCRATCH=$dev
        say "scratch disk $dev (LABEL=$SCRATCH_LABEL): cache and writable layer persist"
    fi
fi
if [ -z "$SCRATCH" ]; then
    mount -t tmpfs -o mode=0755 tmpfs "$RW" || fail "cannot mount a tmpfs for the writable layer"
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    [ "$CACHE_MB" -gt $((mem_mb / 4)) ] && CACHE_MB=$((mem_mb / 4))
    [ "$CACHE_MB" -lt 16 ] && CACHE_MB=16
fi
mkdir -p "$RW/cache" "$RW/upper" "$RW/work" "$RW/cernvm"

# -------------------------------------------------------------- which snapshot: stay or rebase
SELECT=
RECORD=
if [ -n "$ROOT_HASH_FROM_CMDLINE" ] && [ "$REBASE" != 1 ]; then
    SELECT="--root-hash $CVMFS_ROOT_HASH"
    say "snapshot: root hash $CVMFS_ROOT_HASH (kernel command line)"
elif [ -n "$SCRATCH" ] && [ -s "$RW/cernvm/root_hash" ] && [ "$REBASE" != 1 ] &&
     { [ -z "$TAG_FROM_CMDLINE" ] || [ "$CVMFS_TAG" = "$(cat "$RW/cernvm/tag" 2>/dev/null)" ]; }; then
    SELECT="--root-hash $(cat "$RW/cernvm/root_hash")"
    say "snapshot: stay on $(cat "$RW/cernvm/root_hash") (tag $(cat "$RW/cernvm/tag" 2>/dev/null), recorded on first boot)"
elif [ -n "$CVMFS_ROOT_HASH" ] && [ "$REBASE" != 1 ] && [ -z "$TAG_FROM_CMDLINE" ]; then
    SELECT="--root-hash $CVMFS_ROOT_HASH"
    RECORD=1
    say "snapshot: root hash $CVMFS_ROOT_HASH (tag ${CVMFS_TAG:-none}), the one this ISO was built for"
else
    # a pinned ISO's tag is a label: rebasing it moves to the newest revision unless a tag is asked for
    [ -n "$CVMFS_ROOT_HASH" ] && [ -z "$TAG_FROM_CMDLINE" ] && CVMFS_TAG=
    [ -n "$CVMFS_TAG" ] && SELECT="--tag $CVMFS_TAG"
    RECORD=1
    [ -s "$RW/cernvm/root_hash" ] && say "snapshot: rebase from $(cat "$RW/cernvm/root_hash") to tag ${CVMFS_TAG:-newest}"
    [ -s "$RW/cernvm/root_hash" ] || say "snapshot: tag ${CVMFS_TAG:-newest}"
fi

# ------------------------------------------------------------------------------ mount and overlay
keys=
for k in /etc/cvmfs/keys/*.pub; do keys="$keys --pubkey $k"; done
CLIENT_DEBUG=
[ "$DEBUG" = 1 ] && CLIENT_DEBUG=--debug
MIN_REV_ARG=
[ -n "$MIN_REVISION" ] && MIN_REV_ARG="--min-revision $MIN_REVISION"
case "$PREFETCH" in
    ''|*[!0-9]*) ;;
    *) MIN_REV_ARG="$MIN_REV_ARG --prefetch $PREFETCH" ;;
esac
[ -n "$PROXY" ] && say "proxies: $PROXY"
# --proxy and its value as two quoted words only when set ("$@" keeps ';' and '|' literal)
set --
[ -n "$PROXY" ] && set -- --proxy "$PROXY"
# shellcheck disable=SC2086
/sbin/cvmfs-mini --url "$CVMFS_URL" "$@" $keys $SELECT --cache "$RW/cache" --cache-size "$CACHE_MB" \
    --root-hash-file "$RW/cernvm/root_hash.new" --root-daemon --log /dev/console $CLIENT_DEBUG $MIN_REV_ARG "$RO" \
    || fail "cannot mount the snapshot from $CVMFS_URL (see the message above)"
if [ -n "$RECORD" ] && [ -n "$SCRATCH" ]; then
    mv "$RW/cernvm/root_hash.new" "$RW/cernvm/root_hash"
    echo "$CVMFS_TAG" > "$RW/cernvm/tag"
fi
sync
mount -t overlay overlay -o "lowerdir=$RO,upperdir=$RW/upper,workdir=$RW/work" /newroot \
    || fail "cannot mount the overlay (module overlay missing?)"
[ -e "/newroot$INIT" ] || [ -L "/newroot$INIT" ] || fail "the snapshot has no $INIT"
if [ -d /newroot/mnt ]; then
    mkdir -p /newroot/mnt/.ro /newroot/mnt/.rw
    mount --move "$RO" /newroot/mnt/.ro
    mount --move "$RW" /newroot/mnt/.rw
fi
say "switching to the snapshot, init $INIT"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
exec switch_root /newroot "$INIT"
fail "switch_root to $INIT failed"
