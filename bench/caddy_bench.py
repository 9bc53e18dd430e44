#!/usr/bin/env python3
"""plugins/caddy against a real Caddy, each figure beside its baseline in the same run.

  python3 bench/caddy_bench.py [build-dir] [rounds] [wakes]

1. ready -> served: per wake of an exec tenant, from its tenant.ready (berthd's clock) to
   the first answer of the tenant through Caddy (polled every 2 ms), beside the same from
   tenant.ready to the first answer of the tenant's own port (the polling's own resolution).
2. config loads per N wakes (testdrv tenants, all woken within about a second), with the
   default batch (100ms) beside batch 0 (only the one-write-in-flight coalescing), counted
   from Caddy's log.
3. time to first byte through the waking path (mode hold: held, then 307 to the same URL,
   followed) for a sleeping tenant, beside the tenant's own start time in the same wake
   (tenant.wake_requested -> tenant.ready).
The tenant is tests/caddy/tenant.py (an HTTP server that listens after 0.4 s).
4. a websocket (upgraded through Caddy, one message per 0.5 s for 6 s) to a tenant with
   idle_timeout 2s and no other requests: whether the tenant is put to sleep under it, and
   when after it closed, beside the time to sleep after one plain request (the baseline).
Medians of the rounds, with the spread (min-max). CADDY_BENCH_ONLY=ws runs only 4.
"""
import http.client
import os
import statistics
import sys
import socket
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["BERTH_BUILD"] = build
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
WAKES = int(sys.argv[3]) if len(sys.argv) > 3 else 1000

from caddyd import Caddy  # noqa: E402
from harness import Berthd, free_port, wait_until  # noqa: E402

TENANT = os.path.join(HERE, "..", "tests", "caddy", "tenant.py")

CONF = """berth: {log: {level: warn}}
plugins:
  exec: {ports: %(lo)d-%(hi)d}
  testdrv: {delay: 0ms}
  lifecycle: {check_interval: 200ms}
  caddy:
    admin: unix:%(admin)s
    domain: example.test
    listen: 127.0.0.1:%(listen)d
    batch: %(batch)s
    waking: {mode: hold, hold: 30s}
    access_log: 127.0.0.1:%(log)d
    activity_interval: 250ms
templates:
  default:
    driver: exec
    command: [python3, %(tenant)s, "{port}"]
    port: 8080
    lifecycle:
      idle_timeout: %(idle)s
      health: {http: /, interval: 100ms, timeout: 1s, retries: 100, start_period: 0}
    caddy: {}
  fake:
    driver: testdrv
    lifecycle: {idle_timeout: 0}
    caddy: {}
"""


def setup(batch="100ms", idle="0"):
    listen = free_port()
    c = Caddy(ask=f"http://127.0.0.1:{listen}/ask").start()
    tenant = os.path.abspath(TENANT)
    base = 12000 + (os.getpid() % 100) * 40
    b = Berthd({"10.yaml": CONF % {"lo": base, "hi": base + 39, "admin": c.admin,
                                   "listen": listen, "batch": batch, "log": free_port(),
                                   "tenant": tenant, "idle": idle}}, plugins=("testdrv",))
    for m in ("exec", "lifecycle", "caddy"):
        b.install_plugin_from_build(m)
    b.start()
    return b, c


def teardown(b, c):
    for t in b.get("/v1/tenants").json["tenants"]:
        b.req("DELETE", f"/v1/tenants/{t['handle']}")
    wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 120, what="cleanup")
    rc = b.stop()
    b.cleanup()
    c.stop()
    assert rc == 0, rc


def fetch(port, host, path="/", timeout=30):
    """(status, body, seconds to the first byte of the final answer), following 307s"""
    t0 = time.perf_counter()
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        try:
            conn.request("GET", path, headers={"Host": host})
            r = conn.getresponse()
            ttfb = time.perf_counter() - t0
            body = r.read().decode(errors="replace")
        finally:
            conn.close()
        if r.status != 307:
            return r.status, body, ttfb
        path = r.getheader("Location")
    raise AssertionError("redirect loop")


def poll_until_ok(port, host):
    """wall-clock ms of the first 200 from host at 127.0.0.1:port"""
    while True:
        try:
            st, body, _ = fetch(port, host, timeout=2)
            if st == 200 and body.startswith("hi "):
                return time.time() * 1000
        except OSError:
            pass
        time.sleep(0.002)


def held_upstream(c, handle):
    st, obj = c.api("GET", f"/id/berth-{handle}")
    if st != 200:
        return None
    ups = obj["handle"][0]["upstreams"]
    return ups[0]["dial"] if len(ups) > 1 else "berth"


def spread(xs):
    return f"{statistics.median(xs):.1f} (spread {min(xs):.1f}-{max(xs):.1f})"


def sleep_tenant(b, c, h):
    b.post(f"/v1/tenants/{h}/sleep")
    b.wait_tenant(h, "stopped", timeout=20)
    wait_until(lambda: held_upstream(c, h) == "berth", 20, what="route back to berth")


def ready_to_served(b, c):
    b.post("/v1/tenants", {"handle": "rts", "desired": "asleep"})
    wait_until(lambda: held_upstream(c, "rts") == "berth", 20, what="route")
    via, direct = [], []
    for _ in range(ROUNDS):
        since = b.events()[-1]["seq"] if b.events() else 0
        b.post("/v1/tenants/rts/wake")
        t = b.wait_tenant("rts", "ready", timeout=30)
        host_port = int(t["address"].rsplit(":", 1)[1])
        got = {}
        th = threading.Thread(target=lambda: got.update(d=poll_until_ok(host_port, "x")))
        th.start()
        got["c"] = poll_until_ok(c.port, "rts.example.test")
        th.join()
        ready = b.events(since=since, type="tenant.ready", tenant="rts")[0]["time_ms"]
        via.append(got["c"] - ready)
        direct.append(got["d"] - ready)
        sleep_tenant(b, c, "rts")
    print(f"1. tenant.ready -> served through Caddy: {spread(via)} ms; "
          f"-> its own port answering (poll resolution): {spread(direct)} ms")


def loads_per_wakes(batch):
    b, c = setup(batch=batch)
    try:
        hs = [f"w{i:04d}" for i in range(WAKES)]
        for h in hs:
            b.post("/v1/tenants", {"handle": h, "template": "fake", "desired": "asleep"})
        wait_until(lambda: held_upstream(c, hs[-1]) == "berth", 120, what="routes")
        out = []
        for _ in range(ROUNDS):
            before, t0 = c.loads(), time.time()
            ths = [threading.Thread(target=lambda part: [b.post(f"/v1/tenants/{h}/wake")
                                                         for h in part], args=(hs[i::4],))
                   for i in range(4)]
            for t in ths:
                t.start()
            for t in ths:
                t.join()
            took = time.time() - t0
            wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == WAKES,
                       120, 0.05, what="all awake")
            wait_until(lambda: all(x["caddy"] == x["expected"] != "berth"
                                   for x in b.get("/v1/caddy/routes").json["routes"]),
                       60, 0.05, what="every route at its tenant")
            out.append((c.loads() - before, took))
            for h in hs:
                b.post(f"/v1/tenants/{h}/sleep")
            wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == 0, 120,
                       0.05, what="all asleep")
            time.sleep(0.5)     # the last write of the sleeps lands before the next round
        return out
    finally:
        teardown(b, c)


def waking_ttfb(b, c):
    b.post("/v1/tenants", {"handle": "ttfb", "desired": "asleep"})
    wait_until(lambda: held_upstream(c, "ttfb") == "berth", 20, what="route")
    ttfb, own, ratio = [], [], []
    for _ in range(ROUNDS):
        since = b.events()[-1]["seq"]
        st, body, t = fetch(c.port, "ttfb.example.test", "/")
        assert st == 200 and body.startswith("hi from ttfb"), (st, body)
        woke = b.events(since=since, type="tenant.wake_requested", tenant="ttfb")[0]["time_ms"]
        ready = b.events(since=since, type="tenant.ready", tenant="ttfb")[0]["time_ms"]
        ttfb.append(t * 1000)
        own.append(ready - woke)
        ratio.append(t * 1000 / (ready - woke))
        sleep_tenant(b, c, "ttfb")
    print(f"3. TTFB through the waking path: {spread(ttfb)} ms; the tenant's own start "
          f"(wake -> ready): {spread(own)} ms; ratio {spread(ratio)}")


def ws_open(port, host):
    """a websocket-style upgrade through Caddy, read until the tenant closes it (6 s): the
    number of messages and when it closed (s)"""
    t0 = time.time()
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        s.sendall(f"GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".encode())
        got = b""
        while True:
            chunk = s.recv(256)
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    data = got.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in got else b""
    return data.count(b"."), time.time()


def asleep_after(b, since, t0):
    """seconds from t0 to the tenant's next tenant.sleep_requested"""
    ev = wait_until(lambda: b.events(since=since, type="tenant.sleep_requested", tenant="ws"),
                    30, 0.05, what="ws put to sleep")
    return ev[0]["time_ms"] / 1000 - t0


def websocket():
    """Per round: the baseline, one plain request and the time until the idle tenant is put to
    sleep; then a websocket held 6 s (three times idle_timeout, no other requests): whether
    the tenant slept under it, and how long after it closed it was put to sleep."""
    b, c = setup(idle="2s")
    try:
        b.post("/v1/tenants", {"handle": "ws"})
        base, after, under, msgs = [], [], 0, []
        for _ in range(ROUNDS):
            b.post("/v1/tenants/ws/wake")
            addr = b.wait_tenant("ws", "ready", timeout=30)["address"]
            wait_until(lambda: held_upstream(c, "ws") == addr, 20, what="route")
            since = b.events()[-1]["seq"]
            assert fetch(c.port, "ws.example.test")[0] == 200
            base.append(asleep_after(b, since, time.time()))
            sleep_tenant(b, c, "ws")
            b.post("/v1/tenants/ws/wake")
            addr = b.wait_tenant("ws", "ready", timeout=30)["address"]
            wait_until(lambda: held_upstream(c, "ws") == addr, 20, what="route")
            since = b.events()[-1]["seq"]
            n, closed = ws_open(c.port, "ws.example.test")
            msgs.append(n)
            slept = b.events(since=since, type="tenant.sleep_requested", tenant="ws")
            under += bool(slept)
            after.append(asleep_after(b, since, closed))
            sleep_tenant(b, c, "ws")
        print(f"4. idle_timeout 2s: after one plain request, put to sleep {spread(base)} s "
              f"later; a websocket open 6 s: put to sleep under it in {under} of {ROUNDS} "
              f"rounds, {spread(msgs)} of 12 messages, put to sleep {spread(after)} s "
              f"after it closed")
    finally:
        teardown(b, c)


def main():
    print(f"caddy_bench: {ROUNDS} rounds, {WAKES} wakes; Caddy {os.popen('caddy version').read().split()[0]}")
    if os.environ.get("CADDY_BENCH_ONLY") == "ws":
        websocket()
        return
    b, c = setup()
    try:
        ready_to_served(b, c)
        waking_ttfb(b, c)
    finally:
        teardown(b, c)
    batched, unbatched = loads_per_wakes("100ms"), loads_per_wakes("0ms")
    lb, lu = [x[0] for x in batched], [x[0] for x in unbatched]
    print(f"2. config loads per {WAKES} wakes (woken in {spread([x[1] for x in batched])} s): "
          f"batch 100ms {spread(lb)}; batch 0 {spread(lu)}; ratio "
          f"{statistics.median(lu) / max(statistics.median(lb), 1):.1f}x")
    websocket()


if __name__ == "__main__":
    main()
