#!/usr/bin/env bash
# The quota proxy against nginx's proxy_pass, side by side in the same run, both in front of
# the same fast upstream (nginx answering a fixed Anthropic Messages JSON with usage):
#   direct     wrk -> upstream
#   nginx      wrk -> nginx proxy_pass (keep-alive upstream pool) -> upstream
#   berth      wrk -> berthd quota (key check, reservation, forward, metering, settlement)
#              -> upstream
# One worker each (berthd's loop is one thread; nginx gets worker_processes 1). The three run
# interleaved, `runs` times; the ratio berth/nginx is the median of the per-run ratios.
#   bench/quota_bench.sh [build-dir] [seconds] [connections] [runs]
# QUOTA_ONLY=berth runs berth's case alone (the WAL's size under a long load: no ratio then).
# QUOTA_CALLGRIND=FILE runs berthd under valgrind's callgrind for the load (instructions per
# call, deterministic where CPU time swings with the load; the dump goes to FILE for
# callgrind_annotate). Slow: use a few seconds and connections, and QUOTA_ONLY=berth.
# QUOTA_CONN_CAP sets max_connections_per_tenant (default twice the connections, so the
# claim runs on every call without refusing wrk's; 0: off).
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light). The state dir is made under
# $TMPDIR (default /tmp): each call commits to the ledger, so the disk under it matters.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
secs=${2:-5}
conns=${3:-50}
runs=${4:-3}
tmp=$(mktemp -d)
cleanup() {
    [ -n "${bpid:-}" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null
    for p in "$tmp"/nginx-*.pid; do [ -f "$p" ] && kill "$(cat "$p")"; done
    rm -rf "$tmp"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
uport=$(port); nport=$(port); qport=$(port)
body='{"id":"msg_bench","type":"message","role":"assistant","model":"claude-bench","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":3}}'
nginx_conf() {   # name port server-body
    mkdir -p "$tmp/$1"
    cat > "$tmp/$1.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx-$1.pid;
error_log $tmp/$1/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/$1; proxy_temp_path $tmp/$1;
    fastcgi_temp_path $tmp/$1; uwsgi_temp_path $tmp/$1; scgi_temp_path $tmp/$1;
    keepalive_requests 1000000;
    upstream llm { server 127.0.0.1:$uport; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        $3
    }
}
NGINX
    nginx -c "$tmp/$1.conf" -e "$tmp/$1/error.log"
}
nginx_conf upstream "$uport" "location / { default_type application/json; return 200 '$body'; }"
nginx_conf proxy "$nport" "location / { proxy_pass http://llm; proxy_http_version 1.1;
        proxy_set_header Connection \"\"; proxy_set_header x-api-key real-upstream-key; }"

mkdir -p "$tmp/conf" "$tmp/plugins"
cp "$build/plugins/quota.so" "$build/plugins/exec.so" "$tmp/plugins/"
echo real-upstream-key > "$tmp/ant"
cat > "$tmp/conf/00.yaml" <<YAML
berth:
  plugin_dir: $tmp/plugins
  log: {level: warn}
plugins:
  exec: {ports: 30000-30010}
  quota:
    listen: 127.0.0.1:$qport
    max_connections_per_tenant: ${QUOTA_CONN_CAP:-$((conns * 2))}
    upstreams:
      anthropic: {url: "http://127.0.0.1:$uport", key: {file: $tmp/ant}}
    prices:
      claude-bench: {input: 3, output: 15}
templates:
  default:
    driver: exec
    command: [sh, -c, "env > $tmp/env; exec sleep 3600"]
    quota: {budget: 1000000000, concurrency: 100000, requests_per_minute: 10000000}
YAML
"$build/core/berthd" --config "$tmp/conf" --state "$tmp/state" 2>"$tmp/berthd.log" &
bpid=$!
sock="$tmp/state/berth.sock"
for _ in $(seq 200); do
    "$build/berthctl/berthctl" --socket "$sock" health >/dev/null 2>&1 && break; sleep 0.05
done
"$build/berthctl/berthctl" --socket "$sock" tenant add bench >/dev/null
for _ in $(seq 100); do [ -s "$tmp/env" ] && break; sleep 0.05; done
key=$(sed -n 's/^ANTHROPIC_API_KEY=//p' "$tmp/env")
if [ -n "${QUOTA_CALLGRIND:-}" ]; then
    # again under callgrind, on the same state: the key stays (the exec tenant cannot start
    # there, valgrind has no pidfd_open, and the proxy does not need it running)
    kill "$bpid"; wait "$bpid" || true
    valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" "$build/core/berthd" \
        --config "$tmp/conf" --state "$tmp/state" 2>"$tmp/berthd.log" &
    bpid=$!
    for _ in $(seq 1200); do
        "$build/berthctl/berthctl" --socket "$sock" health >/dev/null 2>&1 && break; sleep 0.05
    done
fi
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"model":"claude-bench","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["anthropic-version"] = "2023-06-01"
wrk.headers["x-api-key"] = "$key"
LUA
curl -sf "http://127.0.0.1:$qport/v1/messages" -H "x-api-key: $key" -H "anthropic-version: 2023-06-01" \
    -d '{"model":"claude-bench","max_tokens":16,"messages":[]}' >/dev/null

run() {     # name url: prints "rps p50_us p99_us requests"
    local out
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$tmp/post.lua" "$2")
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: non-2xx answers" >&2; echo "$out" >&2; exit 1; fi
    awk -v name="$1" '
        function us(v) { if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0;
                         if (v ~ /s$/) return v * 1000000; return v }
        /Requests\/sec/ {rps = $2} $1 == "50%" {p50 = us($2)} $1 == "99%" {p99 = us($2)}
        / requests in / {n = $1}
        END {printf "%s %.0f %.0f %.0f %d\n", name, rps, p50, p99, n}' <<<"$out"
}
if [ -n "${QUOTA_PERF:-}" ]; then perf record -g -o "$QUOTA_PERF" -p "$bpid" -- sleep $((secs * 3 + 1)) & fi
if [ -n "${QUOTA_STRACE:-}" ]; then timeout $((secs * 3 + 1)) strace -c -f -o "$QUOTA_STRACE" -p "$bpid" & fi
# the WAL's size, sampled every 0.1 s while the cases run: its largest, and its last
walmax="$tmp/walmax"
( m=0; while :; do
      w=$(stat -c %s "$tmp/state/"*-wal 2>/dev/null | head -1); w=${w:-0}
      [ "$w" -gt "$m" ] && m=$w; echo "$m $w" > "$walmax"; sleep 0.1
  done ) &
wpid=$!
cpu() { awk '{print $14 + $15}' "/proc/${1:-$bpid}/stat"; }   # CPU time, in ticks
nworker=$(pgrep -P "$(cat "$tmp/nginx-proxy.pid")" | head -1)     # nginx proxy's one worker
calls0=$(curl -s --unix-socket "$sock" http://x/v1/tenants/bench/usage | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])')
cpu0=$(cpu)
[ -n "${QUOTA_CALLGRIND:-}" ] && callgrind_control -z "$bpid" >/dev/null
ncpu0=$(cpu "$nworker")
results=()
for i in $(seq "$runs"); do
    for case in direct:$uport nginx:$nport berth:$qport; do
        [ -n "${QUOTA_ONLY:-}" ] && [ "${case%%:*}" != "$QUOTA_ONLY" ] && continue
        r=$(run "${case%%:*}" "http://127.0.0.1:${case##*:}/v1/messages")
        echo "run $i: $r" >&2
        results+=("$i $r")
    done
done
printf '%s\n' "${results[@]}" | python3 -c '
import sys, statistics as st
rows = [l.split() for l in sys.stdin if l.strip()]
by = {}
for run, name, rps, p50, p99, n in rows:
    by.setdefault(name, []).append((float(rps), float(p50), float(p99)))
for name, v in by.items():
    r = [x[0] for x in v]
    print(f"{name:7s} req/s median {st.median(r):9.0f} (min {min(r):.0f} max {max(r):.0f})"
          f"  p50 {st.median(x[1] for x in v):6.0f} us  p99 {st.median(x[2] for x in v):6.0f} us")
if "nginx" not in by: sys.exit(0)
ratios = [b[0] / n[0] for b, n in zip(by["berth"], by["nginx"])]
added50 = [b[1] - n[1] for b, n in zip(by["berth"], by["nginx"])]
added99 = [b[2] - n[2] for b, n in zip(by["berth"], by["nginx"])]
print(f"ratio berth/nginx req/s: median {st.median(ratios):.2f} (min {min(ratios):.2f} max {max(ratios):.2f})")
print(f"added latency over nginx: p50 {st.median(added50):.0f} us, p99 {st.median(added99):.0f} us")
'
calls=$(curl -s --unix-socket "$sock" http://x/v1/tenants/bench/usage | python3 -c 'import json,sys; print(json.load(sys.stdin)["calls"])')
echo "berth calls metered: $calls"
breqs=$(printf '%s\n' "${results[@]}" | awk '$2 == "berth" {n += $6} END {printf "%d", n}')
# calls metered; wrk's count of answers only for a build told to keep no ledger
# (bench/quota_breakdown.sh): anywhere else a ledger that metered nothing is a failure
if [ "$calls" -le "$calls0" ] && [ -n "$breqs" ] && [ "$breqs" -gt 0 ]; then
    case "${BERTH_BENCH_LEDGER:-}" in
        noledger|relay) calls0=0; calls=$breqs ;;
        *) echo "berth answered $breqs calls but metered none" >&2; exit 1 ;;
    esac
fi
if [ -n "${QUOTA_CALLGRIND:-}" ]; then
    callgrind_control -d "$bpid" >/dev/null
    cp "$tmp"/cg.out.1 "$QUOTA_CALLGRIND"
    ir=$(awk '/^totals:/ {print $2}' "$QUOTA_CALLGRIND")
    echo "instructions per call, berthd: $((ir / (calls - calls0))) (callgrind; $QUOTA_CALLGRIND)"
fi
kill "$wpid" 2>/dev/null; wait "$wpid" 2>/dev/null || true
read -r wmax wlast < "$walmax"
echo "WAL size: largest $((wmax / 1024)) KiB, at the end $((wlast / 1024)) KiB"
nreqs=$(printf '%s\n' "${results[@]}" | awk '$2 == "nginx" {n += $6} END {printf "%d", n}')  # 0 with QUOTA_ONLY
python3 -c "import os; t = os.sysconf('SC_CLK_TCK'); print(f'CPU per call: berthd {($(cpu) - $cpu0) / t / max($calls - $calls0, 1) * 1e6:.1f} us, nginx worker {($(cpu "$nworker") - $ncpu0) / t / max($nreqs, 1) * 1e6:.1f} us (user+system, one thread each)')"
