"""plugins/lifecycle heartbeats through berthd with the exec driver: a running tenant that
misses its heartbeat is stale (status, event, berthctl tenant ls --stale, /metrics) and the
next heartbeat clears it; the last status is kept across a restart."""
import http.client
import json
import os
import unittest

from harness import SLOW, SRC, Berthd, free_port, wait_until

CONF = """plugins:
  exec: {ports: %(lo)d-%(hi)d}
  lifecycle: {check_interval: 200ms}
templates:
  default:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle:
      idle_timeout: 0
      heartbeat: {expect_every: %(every)dms}
  quiet:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle: {idle_timeout: 0}
"""


class Heartbeat(unittest.TestCase):
    def setUp(self):
        base = 28000 + (os.getpid() % 100) * 20
        self.every = int(1000 * SLOW)
        self.b = Berthd({"10.yaml": CONF % {"lo": base, "hi": base + 19, "every": self.every}},
                        plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")
        self.b.start()

    def tearDown(self):
        b = self.b
        for t in b.get("/v1/tenants").json["tenants"]:
            b.req("DELETE", f"/v1/tenants/{t['handle']}")
        wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 20, what="cleanup")
        rc = b.stop()
        log = b.log()
        b.cleanup()
        self.assertEqual(rc, 0, log[-3000:])

    def lc(self, handle):
        return self.b.tenant(handle)["plugins"].get("lifecycle", {})

    def beat(self, handle, body=None):
        return self.b.req("POST", f"/v1/tenants/{handle}/heartbeat", body)

    def events(self, kind, handle):
        return [e for e in self.b.events(type=kind) if e.get("tenant") == handle]

    def stale_listed(self):
        out = self.b.ctl("tenant", "ls", "--stale").stdout
        return [line.split()[0] for line in out.splitlines()[1:] if line.strip()]

    def test_missed_heartbeat_marks_stale_and_the_next_clears_it(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "agent"})
        b.post("/v1/tenants", {"handle": "other", "template": "quiet"})
        b.wait_tenant("agent", "ready")
        b.wait_tenant("other", "ready")
        r = self.beat("agent", {"progress": "indexing", "percent": 40})
        self.assertEqual(r.status, 200, r.body)
        at_ms = r.json["at_ms"]
        hb = self.lc("agent")
        self.assertFalse(hb["stale"])
        self.assertEqual(hb["heartbeat"]["status"], {"progress": "indexing", "percent": 40})
        self.assertEqual(hb["heartbeat"]["expect_every_ms"], self.every)
        self.assertEqual(self.stale_listed(), [])
        # silence for longer than expect_every: stale, with an event and a metric
        wait_until(lambda: self.lc("agent")["stale"], 5 * SLOW, what="stale")
        ev = self.events("heartbeat.missed", "agent")
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual(ev[0]["payload"]["expect_every_ms"], self.every)
        self.assertEqual(ev[0]["payload"]["last_ms"], at_ms)
        self.assertGreaterEqual(ev[0]["time_ms"] - at_ms, self.every)     # not before
        self.assertEqual(self.stale_listed(), ["agent"])
        metrics = b.get("/metrics").body
        self.assertIn('berth_lifecycle_stale{tenant="agent"} 1', metrics)
        self.assertIn("berth_lifecycle_stale_tenants 1", metrics)
        self.assertNotIn("stale", json.dumps(self.lc("other")))     # no expectation
        # the next heartbeat clears it
        self.assertEqual(self.beat("agent", {"progress": "done", "percent": 100}).status, 200)
        hb = self.lc("agent")
        self.assertFalse(hb["stale"])
        self.assertEqual(hb["heartbeat"]["status"]["percent"], 100)
        self.assertEqual(len(self.events("heartbeat.resumed", "agent")), 1)
        self.assertEqual(self.stale_listed(), [])
        metrics = b.get("/metrics").body
        self.assertIn('berth_lifecycle_stale{tenant="agent"} 0', metrics)
        self.assertIn("berth_lifecycle_stale_tenants 0", metrics)
        show = b.ctl("tenant", "show", "agent").stdout
        self.assertIn('"progress":"done"', show)

    def test_bad_requests_lose_nothing(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "agent"})
        b.wait_tenant("agent", "ready")
        self.assertEqual(self.beat("agent", {"progress": "half"}).status, 200)
        self.assertEqual(self.beat("nobody").status, 404)
        r = b.req("POST", "/v1/tenants/agent/heartbeat", "[1, 2]")
        self.assertEqual(r.status, 400, r.body)
        r = b.req("POST", "/v1/tenants/agent/heartbeat", "{not json")
        self.assertEqual(r.status, 400, r.body)
        r = b.req("POST", "/v1/tenants/agent/heartbeat", {"x": "y" * 5000})
        self.assertEqual(r.status, 400, r.body)
        self.assertEqual(self.lc("agent")["heartbeat"]["status"], {"progress": "half"})
        # an empty heartbeat keeps no status but counts
        self.assertEqual(self.beat("agent").status, 200)
        self.assertNotIn("status", self.lc("agent")["heartbeat"])

    def test_sleeping_tenant_is_not_expected_and_state_survives_restart(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "agent"})
        b.wait_tenant("agent", "ready")
        self.assertEqual(self.beat("agent", {"progress": "kept"}).status, 200)
        b.req("POST", "/v1/tenants/agent/sleep")
        b.wait_tenant("agent", "stopped")
        self.assertNotIn("deadline_ms", self.lc("agent")["heartbeat"])
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertEqual(self.lc("agent")["heartbeat"]["status"], {"progress": "kept"})
        self.assertFalse(self.lc("agent")["stale"])


TENANT_CONF = """plugins:
  exec: {}
  lifecycle: {heartbeat_listen: "127.0.0.1:%(port)d"}
templates:
  default:
    driver: exec
    command: [python3, "%(beat)s", "%(token)s"]
    lifecycle:
      idle_timeout: 0
      heartbeat: {expect_every: 1m}
  quiet:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle: {idle_timeout: 0}
"""


class TenantForm(unittest.TestCase):
    """the form a tenant reaches itself, with the token the plugin provisioned into its env"""

    def setUp(self):
        self.port = free_port()
        self.b = Berthd(plugins=())
        self.token_file = os.path.join(self.b.dir, "agent-token")
        self.b.write("10.yaml", TENANT_CONF % {
            "port": self.port, "beat": os.path.join(SRC, "tests", "schedule", "beat.py"),
            "token": self.token_file})
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")
        self.b.start()

    def tearDown(self):
        b = self.b
        for t in b.get("/v1/tenants").json["tenants"]:
            b.req("DELETE", f"/v1/tenants/{t['handle']}")
        wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 20, what="cleanup")
        rc = b.stop()
        log = b.log()
        b.cleanup()
        self.assertEqual(rc, 0, log[-3000:])

    def post(self, token, body=b"{}"):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        try:
            hdrs = {"Authorization": "Bearer " + token} if token is not None else {}
            c.request("POST", "/v1/heartbeat", body=body, headers=hdrs)
            r = c.getresponse()
            return r.status, r.read().decode()
        finally:
            c.close()

    def test_tenant_reports_with_its_provisioned_token(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "agent"})
        b.post("/v1/tenants", {"handle": "other", "template": "quiet"})

        def beating():
            hb = b.tenant("agent")["plugins"].get("lifecycle", {}).get("heartbeat", {})
            return hb.get("status", {}).get("progress") == "from inside"
        try:
            wait_until(beating, 10 * SLOW, what="the tenant's own heartbeat")
        except AssertionError:
            print(json.dumps(b.tenant("agent"), indent=1), b.log()[-3000:])
            raise
        env = b.tenant("agent")["provisioners"]["lifecycle"]["env"]
        self.assertEqual(sorted(env), ["HEARTBEAT_TOKEN", "HEARTBEAT_URL"])
        # a tenant without heartbeat expectations gets nothing
        self.assertEqual(b.tenant("other")["provisioners"].get("lifecycle", {}).get("env", []),
                         [])
        # the token the tenant holds works from outside too
        with open(self.token_file) as f:
            token = f.read()
        self.assertEqual(self.post(token, b'{"progress": "by hand"}')[0], 200)
        # no token, a forged one, another tenant's name on agent's mac: refused
        self.assertEqual(self.post(None)[0], 401)
        self.assertEqual(self.post("agent." + "0" * 64)[0], 401)
        self.assertEqual(self.post("garbage")[0], 401)
        self.assertEqual(self.post("other." + token.split(".", 1)[1])[0], 401)
        self.assertNotIn("heartbeat", b.tenant("other")["plugins"].get("lifecycle", {}))
        # it outlives a restart of berthd (the key is kept; the tenant runs on)
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertEqual(self.post(token)[0], 200)
        # the token dies with its tenant, also for a later tenant of the same handle
        b.req("DELETE", "/v1/tenants/agent")
        wait_until(lambda: all(t["handle"] != "agent"
                               for t in b.get("/v1/tenants").json["tenants"]), 20 * SLOW,
                   what="agent deleted")
        self.assertEqual(self.post(token)[0], 401)
        b.post("/v1/tenants", {"handle": "agent", "template": "quiet"})
        self.assertEqual(self.post(token)[0], 401)
        self.assertNotIn("heartbeat", b.tenant("agent")["plugins"].get("lifecycle", {}))


if __name__ == "__main__":
    unittest.main()
