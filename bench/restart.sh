#!/bin/bash
# Restart time, side by side on the same data: the module (pool on /dev/shm, emulation
# mode) loading DRAM from its key space vs stock Redis loading an uncompressed dump.rdb
# of that data. N = SET operations (random keys, 200-byte values). Usage: N=2000000 bench/restart.sh
set -u
M="$(cd "$(dirname "$0")/.." && pwd)/target/release/libredis_nvm.so"
D=/dev/shm/rs; rm -rf $D; mkdir -p $D/mod $D/rdb
N=${N:-2000000}
redis-server --port 7801 --dir $D/mod --save "" --rdbcompression no --loadmodule $M path $D/mod/p.nvm size 8gb mode emulate --logfile $D/mod/log &
P1=$!
sleep 1
redis-benchmark -p 7801 -t set -n $N -r $N -d 200 -P 16 -c 50 -q >/dev/null
redis-cli -p 7801 rpush biglist $(seq 1 1000) >/dev/null
redis-cli -p 7801 dbsize
while [ "$(redis-cli -p 7801 nvm.info | grep '^log_records' | tr -d '\r' | cut -d: -f2)" != "0" ]; do sleep 0.2; done
redis-cli -p 7801 info memory | grep -E "^used_memory:" 
redis-cli -p 7801 nvm.info | grep -E "keyspace_heap_used|keyspace_keys|log_capacity"
redis-cli -p 7801 save >/dev/null; cp $D/mod/dump.rdb $D/rdb/dump.rdb; ls -la $D/rdb/dump.rdb
kill -9 $P1; sleep 0.5
rm -f $D/mod/dump.rdb
t0=$(date +%s%N)
redis-server --port 7801 --dir $D/mod --save "" --loadmodule $M path $D/mod/p.nvm size 8gb mode emulate --logfile $D/mod/log2 &
until [ "$(redis-cli -p 7801 ping 2>/dev/null)" = "PONG" ]; do sleep 0.01; done
t1=$(date +%s%N); echo "module: first read answered after $(( (t1-t0)/1000000 )) ms"; redis-cli -p 7801 dbsize; grep "loaded" $D/mod/log2 | tail -1
redis-cli -p 7801 shutdown nosave >/dev/null 2>&1
t0=$(date +%s%N)
redis-server --port 7802 --dir $D/rdb --save "" --logfile $D/rdb/log &
until [ "$(redis-cli -p 7802 ping 2>/dev/null)" = "PONG" ]; do sleep 0.01; done
t1=$(date +%s%N); echo "stock RDB: first read answered after $(( (t1-t0)/1000000 )) ms"; redis-cli -p 7802 dbsize; grep "DB loaded" $D/rdb/log
redis-cli -p 7802 shutdown nosave >/dev/null 2>&1
