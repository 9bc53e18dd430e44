"""plugins/matrix under Synapse's default rate limits (its own Synapse, SYNAPSE_RATE_LIMITS=
default), through a recording proxy: 50 tenants created at once are all provisioned with no
more than max_concurrent calls in flight, every 429 (injected by the proxy: with the admin
API berth meets none of Synapse's) waited out; where the client API's registration limiter
answers 429 (registration-token mode, no admin API), nothing is sent before each 429's
retry_after_ms is up, and there is no tight retry loop."""
import os
import shutil
import sys
import tempfile
import time
import unittest

from harness import Berthd, SLOW, free_port, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "matrix"))
from proxy import Proxy  # noqa: E402
from synapse_fixture import Synapse, synapse_dir  # noqa: E402

HS = None
N = 50

CONF = """berth:
  reconcile: {{retry_base: 100ms, retry_max: 2s}}
plugins:
  testdrv: {{delay: 5ms}}
  matrix:
    homeserver: {url}
    server_name: test.local
    registration: {registration}
    admin: {{user: {admin}}}
    max_concurrent: 4
    rooms:
      - {{alias: {p}fleet, name: Fleet, space: true}}
      - {{alias: {p}lobby, name: Lobby, in_space: {p}fleet, join: ["{{handle}}_ai"]}}
templates:
  default:
    driver: testdrv
    matrix:
      accounts: [{{localpart: "{{handle}}", display_name: "{{handle}}"}},
                 {{localpart: "{{handle}}_ai", display_name: "{{handle}}'s AI"}}]
      env_account: "{{handle}}_ai"
"""


def setUpModule():
    global HS
    if not synapse_dir():
        raise unittest.SkipTest("no Synapse: set BERTH_SYNAPSE_DIR or provide ../shared/synapse")
    HS = Synapse(free_port(), rate_limits="default").start()


def tearDownModule():
    if HS:
        HS.stop(wipe=True)


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load(unittest.TestCase):
    def run_fleet(self, n, prefix, registration, every=0):
        tmp = tempfile.mkdtemp(prefix="berth-mx-")
        self.addCleanup(shutil.rmtree, tmp, True)
        if registration == "token":
            st, tok = HS.acall("POST", "/_synapse/admin/v1/registration_tokens/new", {})
            self.assertEqual(st, 200, tok)
            path = os.path.join(tmp, "regtoken")
            with open(path, "w") as f:
                f.write(tok["token"])
            reg = "{token: {file: %s}}" % path
        else:
            reg = "{shared_secret: {file: %s}}" % HS.secret_file(tmp)
        proxy = Proxy(HS.url)
        self.addCleanup(proxy.stop)
        conf = CONF.format(url=proxy.url, registration=reg, admin=prefix + "berth", p=prefix)
        b = Berthd({"10-matrix.yaml": conf}, plugins=("testdrv",))
        b.install_plugin_from_build("matrix")
        self.addCleanup(b.cleanup)
        b.start()
        if every:
            proxy.rate_limit(every, 300)
        handles = [f"{prefix}{i:02d}" for i in range(n)]
        t0 = time.time()
        for h in handles:
            self.assertEqual(b.post("/v1/tenants", {"handle": h}).status, 201)
        wait_until(lambda: all((b.tenant(h) or {}).get("observed") == "ready"
                               for h in handles), 50, 0.5, what=f"{n} tenants ready")
        took = time.time() - t0
        lobby = HS.room_of(f"#{prefix}lobby:test.local")
        for h in handles:
            self.assertIn(lobby, HS.joined_rooms(f"@{h}_ai:test.local"), h)
        m = b.get("/metrics").body
        calls = {k: metric(m, f'berth_matrix_homeserver_calls_total{{result="{k}"}}')
                 for k in ("ok", "error", "rate_limited")}
        print(f"\n{n} tenants ({registration}) in {took:.1f}s ({SLOW}x): {calls}, "
              f"{proxy.peak} in flight at most", file=sys.stderr)
        self.assertEqual(b.stop(), 0, b.log()[-4000:])
        return calls, proxy

    def test_fifty_tenants_at_once_with_the_admin_api(self):
        # Synapse's limiters are not met here (admin API, berth's own limits lifted): the
        # proxy answers every 40th call 429 (retry_after_ms 300) instead, 4 calls in flight
        calls, proxy = self.run_fleet(N, "a", "shared_secret", every=40)
        # per tenant: 2 x (nonce + register) and one admin join; plus rooms and probes
        self.assertLessEqual(calls["ok"], N * 5 + 30)
        self.assertEqual(calls["error"], 0)
        # every 429 waited out, and sent again once: no retry loop
        limited = [c for c in proxy.since() if c["status"] == 429]
        self.assertGreater(len(limited), 3)
        self.assertEqual(calls["rate_limited"], len(limited))
        self.assertEqual(proxy.early_after_429(), [], "sent before retry_after_ms was up")
        # 100 registrations queued at once: the limit is reached and never passed
        self.assertEqual(proxy.peak, 4)

    def test_registrations_paced_by_429s_are_waited_out(self):
        # the client API's registration limiter lets 3 through at once, then one every ~6 s:
        # 2 tenants of 2 accounts and berth's own make 5 registrations, 2 of them paced
        n = 2
        calls, proxy = self.run_fleet(n, "b", "token")
        self.assertGreater(calls["rate_limited"], 0)     # the limiter was met
        # nothing at all is sent while a 429's retry_after_ms runs
        self.assertEqual(proxy.early_after_429(), [], "sent before retry_after_ms was up")
        # a tight loop would make hundreds in those seconds; waiting retry_after_ms as asked
        # makes about one 429 per paced registration stage
        self.assertLessEqual(calls["rate_limited"], 8)
        self.assertEqual(calls["error"], 0)

if __name__ == "__main__":
    unittest.main()
