#!/usr/bin/env bash
# Runs every fuzz target (or those named) for SECONDS each, one after another on one core,
# and prints the executions of each and in total. Needs the nightly toolchain and
# cargo-fuzz (`cargo install cargo-fuzz`). Exits non-zero if any target found a crash; its
# reproducer is then under fuzz/artifacts/<target>/ (replay: cargo +nightly fuzz run
# <target> <file>). New inputs go to fuzz/corpus/<target>/ (not in git); the seeds in
# fuzz/seeds/<target>/ are read, never written.
#
#   fuzz/run.sh 60                      # every target, 60 s each
#   fuzz/run.sh 30 request_frame        # one target
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi
# No sanitizer: the code under test is safe Rust, and libFuzzer's own checks (crash,
# timeout, rss limit) are what we want; -a keeps debug assertions (overflow checks) on.
flags=(-s none -a)
cargo +nightly fuzz build "${flags[@]}"

total=0
failed=()
mkdir -p logs
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    log="logs/$t.log"
    status=0
    cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=16384 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    execs=${execs:-0}
    total=$((total + execs))
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        printf '%-20s %12s executions  FAILED (see fuzz/%s)\n' "$t" "$execs" "$log"
    else
        printf '%-20s %12s executions  ok\n' "$t" "$execs"
    fi
done
printf '%-20s %12s executions\n' total "$total"
if [ ${#failed[@]} -gt 0 ]; then
    echo "crashes in: ${failed[*]}" >&2
    exit 1
fi
