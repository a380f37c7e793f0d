#!/usr/bin/env bash
# Instructions per 1 KiB small put and get through the in-memory tiers, counted with callgrind.
# Runs the bench binary twice per operation with different counts; the difference divided by the
# extra operations cancels setup. Usage: scripts/instructions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary cargo names, not the newest file: an older build with other settings may be newer.
bin=$(cargo bench -p cairn-adapters --bench tiered --no-run 2>&1 \
  | sed -n 's/.*Executable benches\/tiered.rs (\(.*\))/\1/p')
count() { # op n
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" --count "$1" "$2" 2>&1 \
    | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
per_op() { local a b; a=$(count "$1" 10000); b=$(count "$1" 30000); echo $(( (b - a) / 20000 )); }
for op in put get; do
  ours=$(per_op "$op"); raw=$(per_op "raw-$op")
  echo "small $op (1 KiB): $ours instructions per operation; raw hashbrown $op: $raw ($(( ours * 100 / raw ))% of it)"
done
echo "essential get work alone (key check, clock, MemoryHv::read, Object; no machine, no driver): $(per_op essential-get) instructions"
