#!/usr/bin/env bash
# Builds (once) the root file system of the qemu guest that `make test-dax` boots: a
# debootstrapped Debian 12 minbase with redis-server (bookworm), valkey-server
# (bookworm-backports), a kernel + initramfs, e2fsprogs, kmod, procps and python3-minimal.
#
# The root is cached in target/dax-guest/root-<key>/, where <key> hashes this script and
# the host's Debian apt sources (the inputs of the build); a changed input builds a new
# root and removes the old ones. Prints the root's path on stdout (progress on stderr).
# Needs root, debootstrap and network access to the Debian mirror.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cache=${DAX_GUEST_DIR:-$repo/target/dax-guest}
say() { echo "dax-guest: $*" >&2; }
die() { echo "dax-guest: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap not found (run: make deps)"

sources=/etc/apt/sources.list.d/debian.sources
# The Debian mirror: the first URIs: of the host's deb822 sources, else deb.debian.org.
mirror=$(awk '/^URIs:/ { print $2; exit }' "$sources" 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}

key=$( { cat "$0"; cat "$sources" 2>/dev/null || true; echo "$mirror"; } | sha256sum | cut -c1-16)
root="$cache/root-$key"
mkdir -p "$cache"

exec 9>"$cache/.build.lock"
flock 9
if [ -f "$root/.dax-guest-complete" ]; then
    say "cached guest root $root"
    echo "$root"
    exit 0
fi

start=$(date +%s)
for old in "$cache"/root-*; do
    [ -e "$old" ] || continue
    [ "$old" = "$root" ] && continue
    say "removing stale guest root $old"
    rm -rf --one-file-system "$old"
done

tmp="$root.tmp"
unmount_all() {
    for m in dev/pts dev sys proc; do
        mountpoint -q "$tmp/$m" 2>/dev/null && umount -l "$tmp/$m" || true
    done
}
trap unmount_all EXIT
unmount_all
rm -rf --one-file-system "$tmp"

say "debootstrap bookworm (minbase) from $mirror"
debootstrap --variant=minbase \
    --include=redis-server,python3-minimal,kmod,procps,e2fsprogs \
    bookworm "$tmp" "$mirror" >"$cache/debootstrap.log" 2>&1 ||
    { tail -20 "$cache/debootstrap.log" >&2; die "debootstrap failed (log: $cache/debootstrap.log)"; }

# The guest's apt sources: the host's bookworm/updates/security sources, plus backports
# (for valkey-server).
rm -f "$tmp/etc/apt/sources.list"
if [ -f "$sources" ]; then
    cp "$sources" "$tmp/etc/apt/sources.list.d/debian.sources"
else
    echo "deb $mirror bookworm main" >"$tmp/etc/apt/sources.list"
fi
echo "deb $mirror bookworm-backports main" >"$tmp/etc/apt/sources.list.d/bookworm-backports.list"

# Never start services in the chroot (there is no init: invoke-rc.d would run the
# sysvinit scripts and start a redis-server on the host's port 6379).
printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
chmod 755 "$tmp/usr/sbin/policy-rc.d"

# A small initramfs: only what mounting /dev/vda (virtio, ext4) needs.
mkdir -p "$tmp/etc/initramfs-tools/conf.d"
printf 'MODULES=list\nRESUME=none\n' >"$tmp/etc/initramfs-tools/conf.d/dax-guest.conf"
printf 'virtio_pci\nvirtio_blk\next4\ncrc32c_generic\n' >>"$tmp/etc/initramfs-tools/modules"

mount -t proc proc "$tmp/proc"
mount --rbind /sys "$tmp/sys"
mount --rbind /dev "$tmp/dev"

in_root() { chroot "$tmp" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends)
say "apt-get install kernel, initramfs-tools, valkey-server (bookworm-backports)"
{
    in_root apt-get update -q &&
        in_root apt-get install "${apt_opts[@]}" linux-image-amd64 initramfs-tools &&
        in_root apt-get install "${apt_opts[@]}" -t bookworm-backports valkey-server
} >"$cache/apt.log" 2>&1 ||
    { tail -20 "$cache/apt.log" >&2; die "apt-get in the guest root failed (log: $cache/apt.log)"; }
in_root apt-get clean
unmount_all

ls "$tmp"/boot/vmlinuz-* "$tmp"/boot/initrd.img-* >/dev/null 2>&1 || die "no kernel/initrd in $tmp/boot"
for bin in redis-server valkey-server redis-cli python3 mkfs.ext4 modprobe; do
    in_root sh -c "command -v $bin" >/dev/null || die "$bin missing in the guest root"
done

# Slim the root (it is copied into a fresh disk image on every run): docs, locales, apt
# lists, and kernel drivers a virtio guest never loads.
rm -rf "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* \
    "$tmp"/usr/share/locale/* "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/*.bin
for kdir in "$tmp"/lib/modules/*/kernel; do
    rm -rf "$kdir"/drivers/{gpu,media,net/wireless,net/ethernet,infiniband,staging,bluetooth,iio,hid,usb,scsi,isdn,input,video} \
        "$kdir"/sound "$kdir"/net/{wireless,mac80211,bluetooth}
done
mkdir -p "$tmp/mnt/pmem" "$tmp/results" "$tmp/dax"

touch "$tmp/.dax-guest-complete"
mv "$tmp" "$root"
trap - EXIT
say "guest root built in $(( $(date +%s) - start )) s: $root ($(du -sm "$root" | cut -f1) MB)"
echo "$root"
