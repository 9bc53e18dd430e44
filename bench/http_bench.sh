#!/usr/bin/env bash
# berthd's HTTP server against nginx, side by side in the same run: keep-alive GETs of a tiny
# response from one worker each (berthd's loop is one thread; nginx gets worker_processes 1),
# driven by wrk on loopback. berthd answers GET /health on its TCP listener, bearer token and
# all; nginx answers `return 200` from memory.
#   bench/http_bench.sh [build-dir] [seconds] [connections]
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light).
set -euo pipefail
build=${1:-build}
secs=${2:-10}
conns=${3:-50}
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; [ -f "$tmp/nginx.pid" ] && kill "$(cat "$tmp/nginx.pid")"; rm -rf "$tmp"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bport=$(port)
nport=$(port)
mkdir -p "$tmp/conf" "$tmp/plugins"
head -c 24 /dev/urandom | base64 | tr -d '\n' > "$tmp/token"
cat > "$tmp/conf/00.yaml" <<YAML
berth:
  plugin_dir: $tmp/plugins
  log: {level: warn}
  tcp: {listen: "127.0.0.1:$bport", token: {file: $tmp/token}}
YAML
"$build/core/berthd" --config "$tmp/conf" --state "$tmp/state" 2>"$tmp/berthd.log" &
mkdir -p "$tmp/nginx"
cat > "$tmp/nginx.conf" <<NGINX
worker_processes 1;
pid $tmp/nginx.pid;
error_log $tmp/nginx/error.log warn;
daemon on;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $tmp/nginx; proxy_temp_path $tmp/nginx;
    fastcgi_temp_path $tmp/nginx; uwsgi_temp_path $tmp/nginx; scgi_temp_path $tmp/nginx;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nport;
        location /health { default_type application/json; return 200 '{"status":"ok"}\n'; }
    }
}
NGINX
nginx -c "$tmp/nginx.conf" -e "$tmp/nginx/error.log"
for _ in $(seq 100); do
    curl -sf -H "Authorization: Bearer $(cat "$tmp/token")" "http://127.0.0.1:$bport/health" \
        >/dev/null && curl -sf "http://127.0.0.1:$nport/health" >/dev/null && break
    sleep 0.05
done
run() {     # name url [header]: prints requests/s and latency
    local out
    out=$(wrk -t1 -c"$conns" -d"${secs}s" --latency ${3:+-H "$3"} "$2")
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: non-2xx answers" >&2; exit 1; fi
    printf '%-7s %10s req/s   p50 %8s   p99 %8s\n' "$1" "$rps" "$p50" "$p99" >&2
    echo "$rps"
}
n=$(run nginx "http://127.0.0.1:$nport/health")
b=$(run berthd "http://127.0.0.1:$bport/health" "Authorization: Bearer $(cat "$tmp/token")")
echo "ratio berthd/nginx: $(awk "BEGIN {printf \"%.2f\", $b / $n}")" >&2
