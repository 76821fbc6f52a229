#!/bin/sh
# PID 1 of the DAX test guest (kernel command line: init=/dax/guest-init.sh daxboot=NAME).
# Nothing is up: mounts the pseudo file systems, makes an fsdax ext4 on the emulated
# persistent memory (memmap=1G!4G -> /dev/pmem0), runs the checks of boot NAME, writes
# their output to /results/NAME.txt on the root disk (the host reads it with debugfs)
# and powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LC_ALL=C

mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=512m tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -o remount,rw /

boot=$(sed -n 's/.*daxboot=\([^ ]*\).*/\1/p' /proc/cmdline)
boot=${boot:-clwb}
out=/results/$boot
rm -rf "$out" "/results/$boot.txt"
mkdir -p "$out"

say() { echo "guest: $*" >/dev/console; }
finish() {
    sync
    umount /mnt/pmem 2>/dev/null
    # A clean root file system: the host reads the results with debugfs, and the next
    # boot of the same image mounts it without a journal replay.
    mount -o remount,ro / 2>/dev/null
    sync
    say "powering off"
    echo o >/proc/sysrq-trigger
    sleep 60
}

say "boot $boot: kernel $(uname -r), flags: $(grep -m1 -o -w -E 'clwb|clflushopt|clflush' /proc/cpuinfo | sort -u | tr '\n' ' ')"
modprobe nd_e820 && modprobe nd_pmem || { echo "FAIL $boot/setup: modprobe nd_e820 nd_pmem failed" >"/results/$boot.txt"; finish; }
i=0
while [ ! -b /dev/pmem0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! [ -b /dev/pmem0 ]; then
    echo "FAIL $boot/setup: no /dev/pmem0 after modprobe (is memmap=1G!4G on the kernel command line?)" >"/results/$boot.txt"
    dmesg >"$out/dmesg.txt"
    finish
fi
mkdir -p /mnt/pmem
if ! { mkfs.ext4 -q -F -b 4096 -E stride=512,stripe_width=512 /dev/pmem0 >"$out/mkfs.txt" 2>&1 && mount -o dax /dev/pmem0 /mnt/pmem; }; then
    echo "FAIL $boot/setup: mkfs.ext4 (2 MiB stripe) /dev/pmem0 + mount -o dax failed: $(tail -1 "$out/mkfs.txt")" >"/results/$boot.txt"
    dmesg >"$out/dmesg.txt"
    finish
fi
say "$(grep pmem0 /proc/mounts)"

python3 -u /dax/guest-checks.py --boot "$boot" --module /dax/libredis_nvm.so --out "$out" 2>&1 |
    tee "/results/$boot.txt" >/dev/console
dmesg >"$out/dmesg.txt"
finish
