#!/usr/bin/env python3
"""Lifecycle benchmarks, each with its baseline in the same run.

  python3 bench/lifecycle_bench.py [build-dir] [wakes] [tenants]

1. wake latency, asleep -> ready (health probe passed), through
   `POST /v1/tenants/{h}/wake?wait=30s`, against starting the same stopped container directly
   (`POST /containers/{id}/start` to dockerd, then polling its HTTP port), on a private
   dockerd (run as root);
2. one idle sweep over N tenants (testdrv driver, all idle-eligible but busy-free and fresh)
   against a bare walk over the same tenants.
"""
import os
import statistics
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["BERTH_BUILD"] = build
WAKES = int(sys.argv[2]) if len(sys.argv) > 2 else 10
N = int(sys.argv[3]) if len(sys.argv) > 3 else 10000

from dockerd import Dockerd  # noqa: E402
from harness import Berthd, TESTDRV, wait_until  # noqa: E402


def answers(address):
    try:
        with urllib.request.urlopen(f"http://{address}/", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def wake_latency():
    d = Dockerd().start()
    try:
        d.import_image()
        b = Berthd({"10.yaml": f"""berth: {{log: {{level: warn}}}}
plugins:
  docker: {{socket: {d.sock}}}
  lifecycle: {{check_interval: 1h}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/httpd, -f, -p, "8080", -h, /www]
    port: 8080
    stop_timeout: 1s
    lifecycle: {{health: {{http: /, interval: 100ms, timeout: 1s, retries: 3}}}}
"""}, plugins=())
        b.install_plugin_from_build("docker")
        b.install_plugin_from_build("lifecycle")
        b.start()
        b.post("/v1/tenants", {"handle": "waker"})
        b.wait_tenant("waker", "ready", timeout=30)
        berth, direct = [], []
        for _ in range(WAKES):
            b.post("/v1/tenants/waker/sleep")
            b.wait_tenant("waker", "stopped", timeout=30)
            t0 = time.time()
            r = b.post("/v1/tenants/waker/wake?wait=30s", timeout=40)
            assert r.status == 200, r
            berth.append(time.time() - t0)
        addr = b.tenant("waker")["address"]
        cid = b.tenant("waker")["id"]
        b.stop()            # berthd gone: dockerd alone, the same container
        b.cleanup()
        for _ in range(WAKES):
            d.api("POST", f"/containers/{cid}/stop?t=1")
            t0 = time.time()
            st, _ = d.api("POST", f"/containers/{cid}/start")
            assert st == 204
            port = d.inspect(cid)["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
            wait_until(lambda: answers(f"127.0.0.1:{port}"), 30, 0.01, what="direct start")
            direct.append(time.time() - t0)
        mb, md = statistics.median(berth), statistics.median(direct)
        print(f"wake latency, median of {WAKES}: berth wake?wait {mb * 1000:.0f} ms, "
              f"direct start+poll {md * 1000:.0f} ms, ratio {mb / md:.2f}")
    finally:
        d.cleanup()


def sweep_cost():
    b = Berthd({"10.yaml": TESTDRV.replace("echo: {}", "lifecycle: {check_interval: 1h}")
                .replace("memory: 128m", "memory: 128m\n    lifecycle: {idle_timeout: 1h}")
                + "berth: {log: {level: warn}}\n"}, plugins=("testdrv",))
    b.install_plugin_from_build("lifecycle")
    try:
        b.start()
        t0 = time.time()
        for i in range(N):
            b.post("/v1/tenants", {"handle": f"s{i}"})
        wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == N, 600, 0.5,
                   what="all tenants ready")
        print(f"({N} tenants created and ready in {time.time() - t0:.1f} s)")
        sweeps, walks = [], []
        for _ in range(20):
            sweeps.append(b.post("/v1/lifecycle/sweep").json["last_sweep_us"])
            walks.append(b.post("/v1/lifecycle/sweep?walk_only=1").json["walk_us"])
        ms, mw = statistics.median(sweeps), statistics.median(walks)
        print(f"idle sweep over {N} tenants, median of 20: {ms / 1000:.2f} ms "
              f"(bare walk {mw / 1000:.2f} ms, ratio {ms / mw:.2f}); "
              f"per tenant {ms * 1000 / N:.0f} ns")
        b.stop()
    finally:
        b.cleanup()


if __name__ == "__main__":
    wake_latency()
    sweep_cost()
