#!/usr/bin/env python3
"""Provisioning Matrix identities through berth against the same API calls made directly in
sequence, in the same run, against the same real Synapse.

  BERTH_SYNAPSE_DIR=... python3 bench/matrix_bench.py [build-dir] [tenants] [rounds]

Synapse 1.67 (rate limits off) on a free port. Per round, N tenants with 2 accounts each and
one room joined:
  - baseline: one client, in sequence, the calls a provisioning script makes per tenant:
    2 x (GET nonce, POST shared-secret register with display name) and one admin join of the
    second account into the lobby (5 calls per tenant; the rooms exist already);
  - berth: N POST /v1/tenants at once to a berthd with the matrix plugin (max_concurrent 4)
    and the testdrv driver, timed until all are ready (same calls, plus berth's own records).
The order alternates between rounds. Reported: seconds per N tenants for each, the median
over rounds, the ratio of the medians and the spread of the per-round ratios.
"""
import hashlib
import hmac
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "matrix"))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["BERTH_BUILD"] = build
N = int(sys.argv[2]) if len(sys.argv) > 2 else 100
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3

from harness import Berthd, free_port, wait_until  # noqa: E402
from synapse_fixture import Synapse, q, synapse_dir  # noqa: E402

CONF = """berth: {{log: {{level: warn}}}}
plugins:
  testdrv: {{delay: 0ms}}
  matrix:
    homeserver: {url}
    server_name: test.local
    registration: {{shared_secret: {{file: {secret}}}}}
    rooms:
      - {{alias: fleet, name: Fleet, space: true}}
      - {{alias: lobby, name: Lobby, in_space: fleet, join: ["{{handle}}_ai"]}}
templates:
  default:
    driver: testdrv
    matrix:
      accounts: [{{localpart: "{{handle}}", display_name: "{{handle}}"}},
                 {{localpart: "{{handle}}_ai", display_name: "{{handle}}'s AI"}}]
      env_account: "{{handle}}_ai"
"""


def register(hs, user, display):
    _, n = hs.call("GET", "/_synapse/admin/v1/register")
    pw = os.urandom(24).hex()
    mac = hmac.new(hs.secret.encode(), b"\x00".join(
        [n["nonce"].encode(), user.encode(), pw.encode(), b"notadmin"]), hashlib.sha1)
    st, b = hs.call("POST", "/_synapse/admin/v1/register", {
        "nonce": n["nonce"], "username": user, "password": pw, "admin": False,
        "displayname": display, "mac": mac.hexdigest()})
    assert st == 200, b
    return b


def direct(hs, prefix, lobby, admin):
    t0 = time.perf_counter()
    for i in range(N):
        h = f"{prefix}{i}"
        register(hs, h, h)
        register(hs, h + "_ai", h + "'s AI")
        st, b = hs.call("POST", f"/_synapse/admin/v1/join/{q(lobby)}",
                        {"user_id": f"@{h}_ai:test.local"}, admin)
        assert st == 200, b
    return time.perf_counter() - t0


def via_berth(b, prefix, ready_before):
    t0 = time.perf_counter()
    for i in range(N):
        r = b.post("/v1/tenants", {"handle": f"{prefix}{i}"})
        assert r.status == 201, r
    wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == ready_before + N,
               1200, 0.05, what=f"{N} tenants ready")
    return time.perf_counter() - t0


def main():
    if not synapse_dir():
        sys.exit("no Synapse: set BERTH_SYNAPSE_DIR")
    hs = Synapse(free_port()).start()
    tmp = tempfile.mkdtemp(prefix="berth-mxbench-")
    b = Berthd({"10-matrix.yaml": CONF.format(url=hs.url, secret=hs.secret_file(tmp))},
               plugins=("testdrv",))
    try:
        b.install_plugin_from_build("matrix")
        b.start()
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 60, what="rooms")
        lobby = hs.room_of("#lobby:test.local")
        import sqlite3
        db = sqlite3.connect(os.path.join(b.state, "berth.db"))
        admin = db.execute("SELECT token FROM matrix_accounts WHERE tenant=''").fetchone()[0]
        db.close()      # the baseline administers with the same account (it owns the rooms)
        base, berth = [], []
        for r in range(ROUNDS):
            first_direct = r % 2 == 0
            if first_direct:
                base.append(direct(hs, f"d{r}x", lobby, admin))
            berth.append(via_berth(b, f"b{r}x", r * N))
            if not first_direct:
                base.append(direct(hs, f"d{r}x", lobby, admin))
            print(f"round {r + 1}: direct {base[-1]:.1f}s, berth {berth[-1]:.1f}s",
                  file=sys.stderr)
        ratios = [y / x for x, y in zip(base, berth)]
        mb, mm = statistics.median(base), statistics.median(berth)
        print(f"{N} tenants x 2 accounts + 1 join, {ROUNDS} rounds: direct in sequence "
              f"{mb:.1f}s, berth {mm:.1f}s; berth/direct {mm / mb:.2f} "
              f"(per-round {min(ratios):.2f}-{max(ratios):.2f})")
        assert b.stop() == 0
    finally:
        b.cleanup()
        hs.stop(wipe=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
