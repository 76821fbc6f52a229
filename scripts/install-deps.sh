#!/usr/bin/env bash
# Installs what redis-nvm needs to build, test, run and benchmark, and only what is missing.
# Idempotent and non-interactive; Debian 12 (bookworm). Prints one line per thing it
# installs, or "all dependencies present".
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

say() { echo "install-deps: $*"; }
die() { echo "install-deps: error: $*" >&2; exit 1; }

if ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found: install Rust first (https://rustup.rs: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh), then open a new shell"
fi

have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
have_cmd() { command -v "$1" >/dev/null 2>&1; }

# "package:reason" lists, from the bookworm main suite and from bookworm-backports.
main_missing=()
backports_missing=()

need() { # need <list> <package> <why>
    local list=$1 pkg=$2 why=$3
    if [ "$list" = main ]; then main_missing+=("$pkg"); else backports_missing+=("$pkg"); fi
    say "installing $pkg ($why)"
}

have_cmd redis-server  || need main redis-server "Redis 7.0 server for tests, make run, bench"
{ have_cmd redis-cli && have_cmd redis-benchmark; } || need main redis-tools "redis-cli, redis-benchmark"
have_pkg libclang-dev  || need main libclang-dev "libclang + headers for bindgen"
have_cmd cc            || need main gcc "C compiler/linker for cargo builds"
have_pkg libc6-dev     || need main libc6-dev "C library headers for cargo builds"
have_cmd python3       || need main python3 "bench/bench.py"
have_cmd make          || need main make "the Makefile"
have_cmd tclsh         || need main tcl "Redis's own test suite (scripts/redis_suite.py)"
have_cmd ps            || need main procps "ps/pgrep"
have_cmd debootstrap   || need main debootstrap "make test-dax: the qemu guest's root file system"
# From backports: bookworm's qemu-system-x86 conflicts with the backports qemu-utils.
have_cmd qemu-system-x86_64 || need backports qemu-system-x86 "make test-dax: the guest with a real DAX file system"
have_cmd valkey-server || need backports valkey-server "Valkey 8 server for tests"
{ have_cmd valkey-cli && have_cmd valkey-benchmark; } || need backports valkey-tools "valkey-cli, valkey-benchmark"

if [ ${#main_missing[@]} -eq 0 ] && [ ${#backports_missing[@]} -eq 0 ]; then
    echo "all dependencies present"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    have_cmd sudo || die "not root and sudo not found: run as root, or install: ${main_missing[*]} ${backports_missing[*]}"
    SUDO=(sudo -n)
    "${SUDO[@]}" true 2>/dev/null || SUDO=(sudo)
fi
as_root() { "${SUDO[@]}" "$@"; }

if [ ${#backports_missing[@]} -gt 0 ]; then
    if ! grep -rqs --include='*.list' --include='*.sources' 'bookworm-backports' \
            /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null; then
        say "adding bookworm-backports to /etc/apt/sources.list.d/bookworm-backports.list"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' |
            as_root tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
fi

# Keep the packages from starting their services while they are installed (tests and
# `make run` start servers by hand); only if no policy is already in place.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    trap 'as_root rm -f "$policy"' EXIT
fi

apt_opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold --no-install-recommends)
say "apt-get update"
as_root apt-get update -q >/dev/null
if [ ${#main_missing[@]} -gt 0 ]; then
    as_root apt-get install "${apt_opts[@]}" "${main_missing[@]}" >/dev/null
fi
if [ ${#backports_missing[@]} -gt 0 ]; then
    as_root apt-get install "${apt_opts[@]}" -t bookworm-backports "${backports_missing[@]}" >/dev/null
fi
say "done"
