#!/usr/bin/env bash
# Starts a stock server in the foreground with the redis-nvm module loaded.
# Settings come from the environment (the Makefile passes them):
#   SERVER     redis-server (default) or valkey-server
#   PORT       6379
#   POOL       pool file (default <repo>/data/redis.nvm); relative paths are made absolute
#   POOL_SIZE  1gb
#   MODE       auto | dax | emulate | msync (auto = DAX if MAP_SYNC works, else msync)
#   DATA_DIR   the server's --dir (default <repo>/data)
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

SERVER=${SERVER:-redis-server}
PORT=${PORT:-6379}
POOL_SIZE=${POOL_SIZE:-1gb}
MODE=${MODE:-auto}
DATA_DIR=${DATA_DIR:-data}
POOL=${POOL:-$DATA_DIR/redis.nvm}

die() { echo "run: error: $*" >&2; exit 1; }

# The server chdirs into --dir before it loads modules: every path must be absolute.
DATA_DIR=$(realpath -m -- "$DATA_DIR")
POOL=$(realpath -m -- "$POOL")
module="$repo/target/release/libredis_nvm.so"

command -v "$SERVER" >/dev/null 2>&1 || die "'$SERVER' not found (run: make deps)"
[ -f "$module" ] || die "$module is missing (run: make build)"
case "$PORT" in ''|*[!0-9]*) die "PORT='$PORT' is not a port number" ;; esac
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT is busy (another server is listening there, maybe a packaged redis-server); pick another: make run PORT=6380"
fi

mkdir -p "$DATA_DIR" "$(dirname "$POOL")"

cli=redis-cli
[ "$SERVER" = valkey-server ] && command -v valkey-cli >/dev/null 2>&1 && cli=valkey-cli
cat <<MSG
run: $SERVER on 127.0.0.1:$PORT, pool $POOL ($POOL_SIZE, mode $MODE), dir $DATA_DIR
run: connect with:    $cli -p $PORT
run: pool and mode:   $cli -p $PORT NVM.INFO
run: crash test: kill -9 the server, run 'make run' again (same POOL): every acknowledged write comes back
MSG

exec "$SERVER" \
    --port "$PORT" \
    --bind 127.0.0.1 \
    --dir "$DATA_DIR" \
    --save "" \
    --appendonly no \
    --daemonize no \
    --loadmodule "$module" path "$POOL" size "$POOL_SIZE" mode "$MODE" durability always
