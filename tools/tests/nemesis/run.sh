#!/usr/bin/env bash
# The long nemesis run (issue #25): a seeded schedule of network, process and controller
# faults for MINUTES against a real three-node cluster under the idempotent acks=all
# workload and a consumer group, then the checker over the whole history. Prints the
# report: faults injected per kind, operations, anomalies per kind (goal: none), the
# longest time without acknowledgements per fault kind. Exits non-zero on any anomaly.
#
# Usage: tools/tests/nemesis/run.sh MINUTES [SEED]
# The whole output (broker logs at SLUICE_TEST_LOG, default error) goes to
# target/nemesis-SEED.log; a seed replays a run's schedule (not its timing).
set -euo pipefail
minutes=${1:?usage: run.sh MINUTES [SEED]}
seed=${2:-$(date +%s)}
cd "$(dirname "$0")/../../.."
log=target/nemesis-$seed.log
mkdir -p target
export SLUICE_NEMESIS_SEED=$seed
export SLUICE_NEMESIS_SECONDS=$((minutes * 60))
export SLUICE_TEST_LOG=${SLUICE_TEST_LOG:-error}
echo "nemesis: $minutes min of faults, seed $seed, log $log"
status=0
cargo test -p sluice --test nemesis a_seeded_fault_schedule -- --include-ignored --nocapture >"$log" 2>&1 || status=$?
grep -E '^nemesis seed|^nemesis: the history|^figure: nemesis|^\|' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "nemesis: FAILED (exit $status); the end of $log:"
    tail -n 40 "$log"
fi
echo "faults by kind and target: grep '^nemesis: ' $log"
exit "$status"
