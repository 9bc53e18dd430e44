#!/usr/bin/env python3
"""Provisioning overhead per tenant, with its baseline in the same run.

  python3 bench/provision_bench.py [build-dir] [tenants] [rounds]

One berthd, the testdrv driver with no delay, two templates: `plain` (no provisioner) and
`prov` (a no-op provisioner: testprov with count: false and delay 0, which returns one
environment variable at once). Each round creates N tenants of one template and times until
all are ready, then N of the other; the order alternates between rounds so drift falls on
both sides. Reported per tenant: wall time (POST to ready, client included) and berthd's own
CPU time (utime + stime from /proc, which other load on the machine disturbs less); for each
the median of the rounds, the ratio of the medians and the spread of the per-round ratios.
"""
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["BERTH_BUILD"] = build
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5

from harness import Berthd, wait_until  # noqa: E402

CONF = """berth: {log: {level: warn}}
plugins:
  testdrv: {delay: 0ms}
  noop: {module: testprov, delay: 0ms, count: false}
templates:
  plain:
    driver: testdrv
  prov:
    driver: testdrv
    noop: {}
"""


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch(b, tmpl, prefix, ready_before):
    t0, c0 = time.perf_counter(), cpu(b.proc.pid)
    for i in range(N):
        r = b.post("/v1/tenants", {"handle": f"{prefix}-{i}", "template": tmpl})
        assert r.status == 201, r
    wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == ready_before + N,
               600, 0.02, what=f"{N} {tmpl} tenants ready")
    return (time.perf_counter() - t0) / N, (cpu(b.proc.pid) - c0) / N


def report(what, plain, prov):
    ratios = [q / p for p, q in zip(plain, prov)]
    mp, mq = statistics.median(plain), statistics.median(prov)
    print(f"  {what}: no provisioner {mp * 1e6:.0f} us/tenant, one no-op provisioner "
          f"{mq * 1e6:.0f} us/tenant, ratio {mq / mp:.2f} (per-round "
          f"{min(ratios):.2f}-{max(ratios):.2f}), overhead {(mq - mp) * 1e6:.0f} us/tenant")


def main():
    b = Berthd({"10.yaml": CONF}, plugins=("testdrv", "testprov"))
    try:
        b.start()
        got = {"plain": [], "prov": []}
        ready = 0
        for r in range(ROUNDS):
            for tmpl in (("plain", "prov") if r % 2 == 0 else ("prov", "plain")):
                got[tmpl].append(batch(b, tmpl, f"{tmpl[:2]}{r}", ready))
                ready += N
        t = b.tenant("pr0-0")
        assert t["provisioners"]["noop"]["state"] == "done", t
        print(f"create to ready, {N} tenants a batch, median of {ROUNDS} rounds:")
        report("wall", [w for w, _ in got["plain"]], [w for w, _ in got["prov"]])
        report("berthd CPU", [c for _, c in got["plain"]], [c for _, c in got["prov"]])
        assert b.stop() == 0
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
