#!/usr/bin/env bash
# berthd's resident memory when idle: with no plugin (the baseline) and with every plugin the
# build has that starts on an empty configuration, measured side by side, RUNS times
# (baseline first in each run); prints the medians, their min-max and the median ratio.
#   bench/rss.sh [build-dir] [runs]
set -euo pipefail
build=${1:-build}
runs=${2:-7}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/plugins" "$tmp/bare" "$tmp/full" "$tmp/one"
printf 'berth: {plugin_dir: %s, log: {level: warn}}\n' "$tmp/plugins" > "$tmp/bare/00.yaml"
cp "$tmp/bare/00.yaml" "$tmp/full/00.yaml"
cp "$tmp/bare/00.yaml" "$tmp/one/00.yaml"
mods=() skipped=()
for so in "$build"/plugins/*.so "$build"/tests/abi/testdrv.so "$build"/tests/abi/echo.so; do
    [ -f "$so" ] || continue
    m=$(basename "$so" .so)
    install -m 0755 "$so" "$tmp/plugins/"
    # a plugin whose configuration has required keys (caddy, matrix, quota) needs a real
    # setup to start: it is left out, and said so
    printf 'plugins:\n  %s: {}\n' "$m" > "$tmp/one/10.yaml"
    if "$build/core/berthd" --config "$tmp/one" --check >/dev/null 2>&1; then mods+=("$m")
    else skipped+=("$m"); fi
done
{
    echo "plugins:"
    for m in "${mods[@]}"; do echo "  $m: {}"; done
} > "$tmp/full/10.yaml"
rss() {
    rm -rf "$2"
    "$build/core/berthd" --config "$1" --state "$2" 2>"$tmp/log" & local pid=$!
    for _ in $(seq 100); do [ -S "$2/berth.sock" ] && break; sleep 0.05; done
    sleep 1
    if ! awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null; then
        echo "berthd exited: $(cat "$tmp/log")" >&2
        exit 1
    fi
    kill "$pid"; wait "$pid" || true
}
bares=() fulls=() ratios=()
for _ in $(seq "$runs"); do
    b=$(rss "$tmp/bare" "$tmp/s1")
    f=$(rss "$tmp/full" "$tmp/s2")
    bares+=("$b") fulls+=("$f") ratios+=("$(awk "BEGIN {printf \"%.3f\", $f / $b}")")
done
stats() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
    printf "median %s (min-max %s-%s)", v[int((NR + 1) / 2)], v[1], v[NR]}'; }
echo "berthd idle RSS KiB over $runs runs"
echo "  no plugins (baseline): $(stats "${bares[@]}")"
echo "  plugins (${mods[*]}): $(stats "${fulls[@]}")"
echo "  ratio: $(stats "${ratios[@]}")"
[ ${#skipped[@]} -eq 0 ] || echo "  not loaded (need configuration): ${skipped[*]}"
