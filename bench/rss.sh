#!/usr/bin/env bash
# berthd's resident memory when idle: with no plugin (the baseline) and with every plugin the
# build has loaded, measured side by side in the same run.
#   bench/rss.sh [build-dir]
set -euo pipefail
build=${1:-build}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/plugins" "$tmp/bare" "$tmp/full"
mods=()
for so in "$build"/plugins/*.so "$build"/tests/abi/testdrv.so "$build"/tests/abi/echo.so; do
    [ -f "$so" ] || continue
    install -m 0755 "$so" "$tmp/plugins/"
    mods+=("$(basename "$so" .so)")
done
printf 'berth: {plugin_dir: %s, log: {level: warn}}\n' "$tmp/plugins" > "$tmp/bare/00.yaml"
cp "$tmp/bare/00.yaml" "$tmp/full/00.yaml"
{
    echo "plugins:"
    for m in "${mods[@]}"; do echo "  $m: {}"; done
} > "$tmp/full/10.yaml"
rss() {
    "$build/core/berthd" --config "$1" --state "$2" 2>/dev/null & local pid=$!
    for _ in $(seq 100); do [ -S "$2/berth.sock" ] && break; sleep 0.05; done
    sleep 1
    awk '/VmRSS/ {print $2}' "/proc/$pid/status"
    kill "$pid"; wait "$pid" || true
}
bare=$(rss "$tmp/bare" "$tmp/s1")
full=$(rss "$tmp/full" "$tmp/s2")
echo "berthd idle RSS, no plugins:            ${bare} KiB"
echo "berthd idle RSS, plugins (${mods[*]}): ${full} KiB"
echo "ratio: $(awk "BEGIN {printf \"%.2f\", $full / $bare}")"
