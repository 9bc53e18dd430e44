#!/usr/bin/env bash
# bus_bench several times: per case the median events/s with min-max over runs, and the
# median of the per-run ratios to the direct call (the baseline, measured in the same run).
# usage: bench/bus_runs.sh BUILD_DIR [RUNS] [EVENTS]
set -euo pipefail
build=${1:-build} runs=${2:-7} events=${3:-200000}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
for _ in $(seq "$runs"); do "$build/bench/bus_bench" "$events"; done | python3 -c '
import re, statistics as st, sys
rows = {}
order = []
for line in sys.stdin:
    m = re.match(r"^(\S.*?)\s{2,}(\d+)\s", line)
    if not m:
        continue
    rows.setdefault(m.group(1), []).append(int(m.group(2)))
    if m.group(1) not in order:
        order.append(m.group(1))
base = rows[order[0]]
print("| case | events/s median | min-max | vs direct, median (min-max) |")
print("|---|---:|---:|---:|")
for name in order:
    v = rows[name]
    ratios = [b / x for b, x in zip(base, v)]
    print(f"| {name} | {st.median(v):,.0f} | {min(v):,}-{max(v):,} | "
          f"{st.median(ratios):.0f}x ({min(ratios):.0f}-{max(ratios):.0f}) |")
'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
