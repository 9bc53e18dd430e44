#!/usr/bin/env python3
"""Streaming through the quota proxy, side by side with nginx (proxy_buffering off) and the
upstream itself, all in one run against tests/quota/fake_upstream.py:
  - time to the first SSE event of a streamed Messages call (sequential calls; median, p99)
  - resident memory per stream held open: RSS of berthd and of nginx's worker before and
    after opening N streams through each (the fake holds them after the first delta).
    bench/quota_stream_bench.py [build-dir] [calls] [streams]
Needs nginx (Debian: nginx-light)."""
import http.client
import json
import os
import shutil
import socket
import statistics as st
import subprocess
import sys
import tempfile
import time

build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
streams = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tmp = tempfile.mkdtemp()
procs = []


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for ln in f:
            if ln.startswith("VmRSS:"):
                return int(ln.split()[1]) * 1024
    return 0


def wait_port(p):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", p), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {p}")


def request(p, key, text):
    body = json.dumps({"model": "claude-bench", "max_tokens": 16, "stream": True,
                       "messages": [{"role": "user", "content": text}]})
    c = http.client.HTTPConnection("127.0.0.1", p, timeout=30)
    t0 = time.perf_counter()
    c.request("POST", "/v1/messages", body, {"x-api-key": key, "anthropic-version": "2023-06-01",
                                             "content-type": "application/json"})
    r = c.getresponse()
    assert r.status == 200, (r.status, r.read())
    r.readline()            # the first line of the first event
    return c, r, time.perf_counter() - t0


try:
    up, nport, qport = port(), port(), port()
    keyfile = os.path.join(tmp, "ant")
    with open(keyfile, "w") as f:
        f.write("real-upstream-key\n")
    fake = subprocess.Popen([sys.executable, os.path.join(src, "tests/quota/fake_upstream.py"),
                             "--port", str(up), "--anthropic-key", "real-upstream-key",
                             "--openai-key", "x"], stdout=subprocess.DEVNULL)
    procs.append(fake)
    os.makedirs(os.path.join(tmp, "ng"))
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(f"""worker_processes 1; pid {tmp}/nginx.pid; daemon off;
error_log {tmp}/ng/error.log warn;
events {{ worker_connections 8192; }}
http {{ access_log off; client_body_temp_path {tmp}/ng; proxy_temp_path {tmp}/ng;
  fastcgi_temp_path {tmp}/ng; uwsgi_temp_path {tmp}/ng; scgi_temp_path {tmp}/ng;
  upstream llm {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{nport};
    location / {{ proxy_pass http://llm; proxy_http_version 1.1; proxy_buffering off;
      proxy_set_header Connection ""; proxy_set_header x-api-key real-upstream-key;
      proxy_read_timeout 600s; }} }} }}
""")
    nginx = subprocess.Popen(["nginx", "-c", os.path.join(tmp, "nginx.conf"), "-e",
                              os.path.join(tmp, "ng/error.log")])
    procs.append(nginx)
    conf = os.path.join(tmp, "conf")
    os.makedirs(conf)
    os.makedirs(os.path.join(tmp, "plugins"))
    for so in ("quota", "exec"):
        shutil.copy(os.path.join(build, "plugins", so + ".so"), os.path.join(tmp, "plugins"))
    with open(os.path.join(conf, "00.yaml"), "w") as f:
        f.write(f"""berth:
  plugin_dir: {tmp}/plugins
  log: {{level: warn}}
plugins:
  exec: {{ports: 30100-30110}}
  quota:
    listen: 127.0.0.1:{qport}
    max_connections: 20000
    max_connections_per_tenant: 0     # one tenant holds all the streams
    upstreams:
      anthropic: {{url: "http://127.0.0.1:{up}", key: {{file: {keyfile}}}}}
    prices:
      claude-bench: {{input: 3, output: 15}}
templates:
  default:
    driver: exec
    command: [sh, -c, "env > {tmp}/env; exec sleep 3600"]
    quota: {{budget: 1000000000, concurrency: 100000, requests_per_minute: 10000000}}
""")
    berthd = subprocess.Popen([os.path.join(build, "core/berthd"), "--config", conf, "--state",
                               os.path.join(tmp, "state")], stderr=subprocess.DEVNULL)
    procs.append(berthd)
    for p in (up, nport, qport):
        wait_port(p)
    sock = os.path.join(tmp, "state", "berth.sock")
    subprocess.run([os.path.join(build, "berthctl/berthctl"), "--socket", sock, "tenant", "add",
                    "bench"], check=True, capture_output=True)
    for _ in range(200):
        if os.path.exists(os.path.join(tmp, "env")) and os.path.getsize(os.path.join(tmp, "env")):
            break
        time.sleep(0.05)
    with open(os.path.join(tmp, "env")) as f:
        key = [ln.split("=", 1)[1].strip() for ln in f if ln.startswith("ANTHROPIC_API_KEY=")][0]

    # time to first byte, interleaved
    ttfb = {"direct": [], "nginx": [], "berth": []}
    ports = {"direct": up, "nginx": nport, "berth": qport}
    for i in range(calls):
        for name, p in ports.items():
            c, r, t = request(p, key if name == "berth" else "real-upstream-key", "hi")
            r.read()
            c.close()
            ttfb[name].append(t * 1e6)
    for name, v in ttfb.items():
        v.sort()
        print(f"ttfb {name:6s} median {st.median(v):7.0f} us  p99 {v[int(len(v) * .99) - 1]:7.0f} us")
    print(f"ttfb added by berth over nginx: median "
          f"{st.median(ttfb['berth']) - st.median(ttfb['nginx']):.0f} us")

    # memory per held stream
    def held(name, p, pid, k):
        before = rss(pid)
        open_ = [request(p, k, f"[park:{name}]")[:2] for _ in range(streams)]
        time.sleep(0.5)
        after = rss(pid)
        c = http.client.HTTPConnection("127.0.0.1", up)
        c.request("POST", f"/_release?name={name}", b"")
        c.getresponse().read()
        for c2, r in open_:
            r.read()
            c2.close()
        return (after - before) / streams
    nginx_worker = int(subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True,
                                      text=True).stdout.split()[0]) \
        if subprocess.run(["pgrep", "-P", str(nginx.pid)], capture_output=True,
                          text=True).stdout.split() else nginx.pid
    print(f"rss per held stream: nginx {held('n', nport, nginx_worker, 'real-upstream-key')/1024:.1f} KiB,"
          f" berth {held('b', qport, berthd.pid, key)/1024:.1f} KiB ({streams} streams)")
finally:
    for p in reversed(procs):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(tmp, ignore_errors=True)
