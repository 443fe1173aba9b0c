#!/bin/bash
# How one broker's produce throughput scales with its shard count.
#
#   benches/scripts/core-scaling.sh [SLUICE_BINARY]
#
# For each shard count in SHARDS (default "1 2 4 8"), starts `sluice serve` on CPUs
# 0..N-1 with a fresh data dir in DATA (default /tmp/sluice-scaling; it is removed after
# each run), runs `sluice bench produce` pinned to BENCH_CORES (default 8-15: keep them
# apart from the broker's), and prints the bench's total line and count check. Also
# measures the raw direct-write rate of the data disk with dd, the baseline for
# byte-heavy runs. Needs 4×N partitions' worth of disk for DURATION seconds at full rate.
set -u
S=${1:-target/release/sluice}
DATA=${DATA:-/tmp/sluice-scaling}
SHARDS=${SHARDS:-1 2 4 8}
SIZES=${SIZES:-100 1024}
BENCH_CORES=${BENCH_CORES:-8-15}
PRODUCERS=${PRODUCERS:-8}
DURATION=${DURATION:-5}
PORT=${PORT:-19092}

mkdir -p "$DATA"
echo "raw direct write of $DATA:"
dd if=/dev/zero of="$DATA/dd.bin" bs=1M count=2048 oflag=direct 2>&1 | tail -1
rm -f "$DATA/dd.bin"

for size in $SIZES; do
  for n in $SHARDS; do
    rm -rf "$DATA/log" && mkdir -p "$DATA/log"
    "$S" serve --data-dir "$DATA/log" --listen 127.0.0.1:$PORT \
      --admin-listen 127.0.0.1:$((PORT + 1)) --cores "0-$((n - 1))" > "$DATA/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
      (echo > /dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
      sleep 0.1
    done
    echo "== shards=$n message=${size}B producers=$PRODUCERS bench cores $BENCH_CORES"
    "$S" bench produce --bootstrap 127.0.0.1:$PORT --topic scaling --partitions $((n * 4)) \
      --producers "$PRODUCERS" --message-size "$size" --duration "$DURATION" --warmup 1 \
      --cores "$BENCH_CORES" --quiet | grep -E "^total|count check"
    kill -TERM $pid
    wait $pid
  done
done
rm -rf "$DATA/log"
