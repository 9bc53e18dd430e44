#!/usr/bin/env bash
# Where the quota proxy's time per call goes, against nginx: bench/quota_bench.sh run against
# builds of the committed tree with parts of the metering switched off.
#   bench/quota_breakdown.sh [seconds] [connections] [rounds]
# The switch, BERTH_BENCH_LEDGER, exists only in a scratch copy (git archive HEAD, then
# bench/quota_breakdown.patch, built in a temp dir): berthd itself never skips its ledger.
#   full       as shipped: key check, body bounds, reservation and settlement in the
#              ledger, quota.call journaled in the same commit, usage parse, relay
#   nojournal  as full, but quota.call is not stored in the event journal
#   noledger   no ledger transaction; quota.call journaled by the bus's own batch
#   relay      no ledger, no quota.call: what is left is the relay and its parsing
# Each case is one quota_bench.sh run (direct, nginx and berth side by side); the cases run
# interleaved, `rounds` times; medians of the per-run ratios and of berthd's CPU per call.
set -euo pipefail
secs=${1:-5}
conns=${2:-50}
rounds=${3:-3}
root=$(git rev-parse --show-toplevel)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git -C "$root" archive HEAD | tar -x -C "$tmp"
patch -s -d "$tmp" -p1 < "$root/bench/quota_breakdown.patch"
meson setup "$tmp/build" "$tmp" --buildtype=debugoptimized >/dev/null
ninja -C "$tmp/build" core/berthd berthctl/berthctl plugins/quota.so plugins/exec.so >/dev/null
out="$tmp/results"
for i in $(seq "$rounds"); do
    for case in full nojournal noledger relay; do
        r=$(BERTH_BENCH_LEDGER=$case "$root/bench/quota_bench.sh" "$tmp/build" "$secs" "$conns" 1 2>/dev/null)
        ratio=$(sed -n 's/^ratio berth\/nginx req\/s: median \([0-9.]*\).*/\1/p' <<<"$r")
        cpu=$(sed -n 's/^CPU per call: berthd \([0-9.]*\) us, nginx worker \([0-9.]*\).*/\1 \2/p' <<<"$r")
        echo "round $i $case: ratio $ratio, CPU per call berthd/nginx ${cpu/ / / } us" >&2
        echo "$case $ratio $cpu" >> "$out"
    done
done
python3 - "$out" <<'PY'
import sys, statistics as st
by = {}
for line in open(sys.argv[1]):
    case, ratio, cpu, ncpu = line.split()
    by.setdefault(case, []).append((float(ratio), float(cpu), float(ncpu)))
full = st.median(x[1] for x in by["full"])
print(f"{'case':10s} {'berth/nginx req/s':>24s} {'CPU per call':>22s} {'less than full':>15s}")
for case, v in by.items():
    r = [x[0] for x in v]; c = [x[1] for x in v]
    print(f"{case:10s} {st.median(r):8.2f} ({min(r):.2f}-{max(r):.2f})"
          f" {st.median(c):9.1f} us ({min(c):.1f}-{max(c):.1f}) {full - st.median(c):12.1f} us")
print(f"nginx worker CPU per call: {st.median(x[2] for v in by.values() for x in v):.1f} us")
PY
