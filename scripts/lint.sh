#!/usr/bin/env bash
# cargo fmt --check and cargo clippy -D warnings. Adds the rustfmt/clippy components with
# rustup if they are missing; without rustup, skips a missing tool with a note.
set -euo pipefail
cd "$(dirname "$0")/.."

have_tool() { # have_tool <cargo subcommand> <rustup component>
    if cargo "$1" --version >/dev/null 2>&1; then return 0; fi
    if command -v rustup >/dev/null 2>&1; then
        echo "lint: rustup component add $2"
        rustup component add "$2" >/dev/null && return 0
    fi
    echo "lint: note: cargo $1 is not available (no rustup to add '$2'): skipping that check"
    return 1
}

status=0
if have_tool fmt rustfmt; then
    echo "lint: cargo fmt --check"
    cargo fmt --check || { echo "lint: FAILED: cargo fmt --check (run: make fmt)"; status=1; }
fi
if have_tool clippy clippy; then
    echo "lint: cargo clippy --release --all-targets -- -D warnings"
    cargo clippy --release --all-targets -- -D warnings || { echo "lint: FAILED: clippy"; status=1; }
fi
exit $status
