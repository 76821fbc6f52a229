#!/usr/bin/env bash
# `make test-dax`: runs the redis-nvm module in dax mode on a real fsdax file system, in
# qemu guests (TCG) whose emulated persistent memory (memmap=1G!4G) carries an ext4
# mounted with -o dax. Builds the guest root once (scripts/dax/build-guest.sh, cached in
# target/dax-guest/), makes a fresh disk image from it with the module
# (target/release/libredis_nvm.so) and the check scripts, and boots it three times, once
# per cache-line flush instruction the module can pick (-cpu models):
#   clwb        -cpu max                     every check, redis-server and valkey-server
#   clflushopt  -cpu max,-clwb               mode + SIGKILL rounds, redis-server
#   clflush     -cpu max,-clwb,-clflushopt   mode + SIGKILL rounds, redis-server
# Prints one line per check (PASS name / FAIL name: why), then "N passed, N failed";
# exits 1 on any failure. Guest consoles: target/dax-guest/run/console-<boot>.log.
# Variables: DAX_BOOTS="clwb clflushopt clflush" (a subset runs only those boots),
# DAX_BOOT_TIMEOUT=600 (seconds per boot), DAX_SMP=2.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
here="$repo/scripts/dax"
cache="$repo/target/dax-guest"
run="$cache/run"
module="$repo/target/release/libredis_nvm.so"
boots=${DAX_BOOTS:-clwb clflushopt clflush}
timeout_s=${DAX_BOOT_TIMEOUT:-600}
smp=${DAX_SMP:-2}

say() { echo "test-dax: $*"; }
die() { echo "test-dax: error: $*" >&2; exit 2; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap, chroot)"
[ -f "$module" ] || die "$module is missing (run: make build)"
for cmd in qemu-system-x86_64 mke2fs debugfs debootstrap; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (run: make deps)"
done

mkdir -p "$cache"
exec 8>"$cache/.run.lock"
flock -n 8 || die "another test-dax run holds $cache/.run.lock"

t0=$(date +%s)
root=$(bash "$here/build-guest.sh")
t_root=$(date +%s)

kernel=$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)
initrd=$(ls "$root"/boot/initrd.img-* | sort -V | tail -1)

# A fresh disk image: the cached root, then the module and the check scripts written in
# with debugfs (the cached root is never modified).
rm -rf "$run"
mkdir -p "$run"
img="$run/guest.img"
size_mb=$(( $(du -sm "$root" | cut -f1) + 512 ))
truncate -s "${size_mb}M" "$img"
mke2fs -q -t ext4 -E lazy_itable_init=1,lazy_journal_init=1 -d "$root" -F "$img"
{
    echo "write $module /dax/libredis_nvm.so"
    for f in guest-init.sh guest-checks.py resp.py; do
        echo "write $here/$f /dax/$f"
    done
    echo "sif /dax/guest-init.sh mode 0100755"
    echo "sif /dax/libredis_nvm.so mode 0100755"
} >"$run/debugfs.cmds"
debugfs -w -f "$run/debugfs.cmds" "$img" >"$run/debugfs.log" 2>&1
for f in libredis_nvm.so guest-init.sh guest-checks.py resp.py; do
    debugfs -R "stat /dax/$f" "$img" 2>/dev/null | grep -q '^Inode:' ||
        { cat "$run/debugfs.log" >&2; die "could not write /dax/$f into $img"; }
done
t_img=$(date +%s)
say "guest root ready in $((t_root - t0)) s, disk image in $((t_img - t_root)) s"

cpu_for() {
    case $1 in
        clwb) echo "max" ;;
        clflushopt) echo "max,-clwb" ;;
        clflush) echo "max,-clwb,-clflushopt" ;;
        *) die "unknown boot '$1' (DAX_BOOTS: clwb clflushopt clflush)" ;;
    esac
}

all="$run/results.txt"
: >"$all"
failed_boots=()
for boot in $boots; do
    cpu=$(cpu_for "$boot")
    console="$run/console-$boot.log"
    say "boot $boot (-cpu $cpu), console: $console"
    tb=$(date +%s)
    rc=0
    timeout --foreground -k 10 "$timeout_s" \
        qemu-system-x86_64 -accel tcg -cpu "$cpu" -smp "$smp" -m 4G \
        -kernel "$kernel" -initrd "$initrd" \
        -append "root=/dev/vda rw console=ttyS0 memmap=1G!4G init=/dax/guest-init.sh daxboot=$boot quiet loglevel=3 panic=-1" \
        -drive "file=$img,if=virtio,format=raw" \
        -display none -monitor none -no-reboot -nodefaults -serial stdio \
        </dev/null >"$console" 2>&1 || rc=$?
    res="$run/results-$boot.txt"
    debugfs -R "cat /results/$boot.txt" "$img" >"$res" 2>/dev/null || true
    # The guest's server logs, dmesg and extra output, for a look after a failure.
    mkdir -p "$run/guest-$boot"
    debugfs -R "rdump /results/$boot $run/guest-$boot" "$img" >/dev/null 2>&1 || true
    grep -E '^(PASS|FAIL|INFO) ' "$res" | tee -a "$all" || true
    if [ "$rc" -ne 0 ] || ! grep -qE '^[0-9]+ passed, [0-9]+ failed$' "$res"; then
        why="qemu exit status $rc"
        [ "$rc" -eq 124 ] && why="timed out after ${timeout_s} s"
        echo "FAIL $boot/boot: the guest's checks did not finish ($why)" | tee -a "$all"
        failed_boots+=("$boot")
    fi
    say "boot $boot took $(( $(date +%s) - tb )) s"
done

passed=$(grep -c '^PASS ' "$all" || true)
failed=$(grep -c '^FAIL ' "$all" || true)
for boot in $(grep '^FAIL ' "$all" | sed 's|^FAIL \([^/]*\)/.*|\1|' | sort -u); do
    echo "---- tail of the guest console of boot $boot ($run/console-$boot.log):"
    tail -n 40 "$run/console-$boot.log" || true
    echo "---- guest files (server logs, dmesg): $run/guest-$boot/"
done
say "total $(( $(date +%s) - t0 )) s"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
