"""Provisioners through berthd: they run before the workload is created and give it env and
labels, retry with backoff, survive a SIGKILL, re-run on a block change or on request, and
deprovision (in reverse order) before a tenant is gone."""
import json
import signal
import time
import unittest

from harness import BerthTest, wait_until

BASE = """berth:
  reconcile: {retry_base: 50ms, retry_max: 200ms}
plugins:
  testdrv: {delay: 10ms}
  echo: {}
  keys: {module: testprov, order: 100, hold: HOLD}
  routes: {module: testprov, order: 900}
templates:
  default:
    driver: testdrv
    env: {TZ: UTC}
    keys: {env: API_KEY, value: k1, fail: FAIL, deprov_fail: DEPROV}
    routes: {env: ROUTE, value: r, label: web}
"""


def conf(fail=0, deprov=0, hold="false", value="k1"):
    return (BASE.replace("FAIL", str(fail)).replace("DEPROV", str(deprov))
            .replace("HOLD", hold).replace("value: k1", f"value: {value}"))


def types(b, handle):
    return [e["type"] for e in b.events(tenant=handle)]


class Provisioners(BerthTest):
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": conf(fail=2)}

    def calls(self, inst, handle):
        return self.b.get(f"/v1/{inst}/calls/{handle}").json

    def env(self, handle):
        r = self.b.get(f"/v1/testdrv/{handle}")
        return r.json["env"] if r.status == 200 else None

    def test_fails_twice_then_succeeds_and_the_workload_gets_its_env(self):
        b = self.b
        self.assertEqual(b.post("/v1/tenants", {"handle": "alice"}).status, 201)
        # while keys fails, nothing is created and the reason names the provisioner
        t = wait_until(lambda: (lambda t: "provisioner 'keys' failed" in (t["reason"] or "")
                                and t)(b.tenant("alice")), what="the first failure")
        self.assertIn("provision 1 of 2 refused", t["reason"])
        self.assertEqual(t["provisioners"]["keys"]["state"], "failed")
        self.assertIsNone(self.env("alice"))
        t = b.wait_tenant("alice", "ready")
        self.assertIsNone(t["reason"])
        env = self.env("alice")
        for kv in ("TZ=UTC", "BERTH_HANDLE=alice", "API_KEY=k1-alice", "ROUTE=r-alice",
                   "ECHO_GREETING=hello"):
            self.assertIn(kv + ";", env)
        self.assertEqual(t["provisioners"]["keys"]["state"], "done")
        self.assertEqual(t["provisioners"]["keys"]["env"], ["API_KEY"])
        self.assertEqual(t["provisioners"]["routes"]["labels"], {"testprov.routes": "web"})
        # the driver was given the label, not only the record
        self.assertEqual(self.b.get("/v1/testdrv/alice").json["labels"], "testprov.routes=web;")
        self.assertNotIn("k1-alice", str(t["provisioners"]))   # values stay inside
        self.assertEqual(t["plugins"]["keys"], {"value": "k1-alice"})
        ev = types(b, "alice")
        self.assertEqual(ev.count("tenant.provision_failed"), 2)
        # in order: keys (100) before routes (900), both before the workload
        self.assertLess(ev.index("tenant.provisioned"), ev.index("container.created"))
        prov = [e["payload"]["provisioner"] for e in b.events(tenant="alice")
                if e["type"] == "tenant.provisioned"]
        self.assertEqual(prov, ["keys", "routes"])
        self.assertEqual(self.calls("keys", "alice"),
                         {"provision": 3, "provision_started": 3, "provisioned": 1})
        out = b.ctl("tenant", "show", "alice").stdout
        self.assertIn("provisioner:   keys done env API_KEY", out)

        # delete: the workload goes first, then routes, then keys
        self.assertEqual(b.req("DELETE", "/v1/tenants/alice").status, 202)
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, what="deletion")
        evs = [e for e in b.events(tenant="alice")
               if e["type"] in ("container.removed", "tenant.deprovisioned")]
        self.assertEqual([e["type"] for e in evs], ["container.removed",
                                                    "tenant.deprovisioned",
                                                    "tenant.deprovisioned"])
        self.assertEqual([e["payload"]["provisioner"] for e in evs[1:]], ["routes", "keys"])

    def test_block_change_reprovision_and_rotation(self):
        b = self.b
        b.write("10-test.yaml", conf())
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "bob"})
        b.wait_tenant("bob", "ready")
        first_id = b.tenant("bob")["id"]
        # the same result again: the workload stays as it is
        b.ctl("tenant", "reprovision", "bob")
        wait_until(lambda: self.calls("keys", "bob").get("provisioned") == 2, what="reprovision")
        wait_until(lambda: self.calls("routes", "bob").get("provisioned") == 2,
                   what="reprovision of routes")
        self.assertEqual(self.calls("keys", "bob")["provisioned"], 2)
        self.assertEqual(b.post("/v1/keys/rotate/bob").status, 202)    # the host call
        wait_until(lambda: self.calls("keys", "bob").get("provisioned") == 3, what="rotation")
        self.assertEqual(self.calls("routes", "bob")["provisioned"], 2)   # only its own
        b.wait_tenant("bob", "ready")
        self.assertEqual(b.tenant("bob")["id"], first_id)
        self.assertEqual(types(b, "bob").count("container.created"), 1)
        # a changed block runs keys again; a new value re-creates the workload with it
        b.write("10-test.yaml", conf(value="k2"))
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: "API_KEY=k2-bob;" in (self.env("bob") or ""), what="the new key")
        t = b.wait_tenant("bob", "ready")
        self.assertEqual(t["provisioners"]["keys"]["state"], "done")
        self.assertEqual(types(b, "bob").count("container.created"), 2)
        self.assertEqual(self.calls("routes", "bob")["provisioned"], 2)   # its block is same

    def test_eperm_is_permanent_until_reprovisioned(self):
        b = self.b
        b.write("10-test.yaml", conf(fail=1).replace("fail: 1", "fail: 1, eperm: true"))
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "ivan"})
        t = wait_until(lambda: (lambda t: "provisioner 'keys' failed" in (t["reason"] or "")
                                and t)(b.tenant("ivan")), what="the refusal")
        self.assertIn("provision 1 of 1 refused", t["reason"])
        keys = t["provisioners"]["keys"]
        self.assertEqual((keys["state"], keys["attempts"], keys["permanent"]),
                         ("failed", 1, True))
        self.assertIn("not retried", b.ctl("tenant", "show", "ivan").stdout)
        # retry_max is 200ms: over five of them a retried failure would have run again
        end = time.time() + 1.0
        while time.time() < end:
            self.assertEqual(self.calls("keys", "ivan")["provision_started"], 1)
            time.sleep(0.05)
        self.assertEqual(b.tenant("ivan")["provisioners"]["keys"]["attempts"], 1)
        self.assertIsNone(self.env("ivan"))
        b.ctl("tenant", "reprovision", "ivan")
        t = b.wait_tenant("ivan", "ready")
        self.assertEqual(t["provisioners"]["keys"]["permanent"], False)
        self.assertIn("API_KEY=k1-ivan;", self.env("ivan"))

    def test_failing_deprovision_keeps_the_tenant_deleting(self):
        b = self.b
        b.write("10-test.yaml", conf(deprov=2))
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "carol"})
        b.wait_tenant("carol", "ready")
        b.req("DELETE", "/v1/tenants/carol")
        t = wait_until(lambda: (lambda t: t and "deprovisioner 'keys' failed"
                                in (t["reason"] or "") and t)(b.tenant("carol")),
                       what="a failed deprovision")
        self.assertEqual((t["desired"], t["observed"]), ("deleted", "absent"))
        self.assertIsNone(self.env("carol"))             # the workload went first
        self.assertNotIn("routes", t["provisioners"])    # deprovisioned before keys
        wait_until(lambda: b.get("/v1/tenants/carol").status == 404, what="deletion")
        self.assertEqual(types(b, "carol").count("tenant.deprovision_failed"), 2)
        self.assertEqual(self.calls("keys", "carol")["deprovisioned"], 1)

    def test_force_rm_abandons_what_is_left(self):
        b = self.b
        # the failed deprovision's retry an hour away: --force finds it failed, not running
        # again (with 50ms it raced the retry and found it `deprovisioning`)
        b.write("10-test.yaml", conf(deprov=1000).replace("retry_base: 50ms, retry_max: 200ms",
                                                          "retry_base: 1h, retry_max: 1h"))
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "dave"})
        b.wait_tenant("dave", "ready")
        b.ctl("tenant", "rm", "dave")
        wait_until(lambda: "tenant.deprovision_failed" in types(b, "dave"), what="a failure")
        self.assertEqual(b.tenant("dave")["desired"], "deleted")
        b.ctl("tenant", "rm", "dave", "--force")
        wait_until(lambda: b.get("/v1/tenants/dave").status == 404, what="the forced delete")
        ab = [e["payload"] for e in b.events(tenant="dave") if e["type"] == "tenant.abandoned"]
        self.assertEqual(ab, [{"provisioner": "keys", "state": "deprovision_failed"}])
        self.assertEqual(self.calls("keys", "dave").get("deprovisioned"), None)
        self.assertEqual(self.calls("routes", "dave")["deprovisioned"], 1)

    def test_unloaded_provisioner_blocks_and_its_status_goes(self):
        b = self.b
        b.write("10-test.yaml", conf())
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "erin"})
        t = b.wait_tenant("erin", "ready")
        self.assertEqual(t["plugins"]["keys"], {"value": "k1-erin"})
        # keys no longer loads: its status goes with it, and a new tenant is not created
        b.write("10-test.yaml", conf().replace("order: 100,", "order: 100, fail_start: true,"))
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: "keys" not in b.tenant("erin")["plugins"], what="status cleared")
        b.post("/v1/tenants", {"handle": "fred"})
        t = wait_until(lambda: (lambda t: "did not load" in (t["reason"] or "") and t)(
            b.tenant("fred")), what="the blocked create")
        self.assertIn("plugin instance 'keys' did not load", t["reason"])
        self.assertIsNone(self.env("fred"))
        self.assertNotIn("routes", t["provisioners"])    # nothing runs past a missing one


class HeldProvisions(BerthTest):
    """keys holds every provision until POST /v1/keys/release."""
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": conf(hold="true")}

    def started(self, handle, n):
        wait_until(lambda: self.b.get(f"/v1/keys/calls/{handle}").json.get(
            "provision_started") == n, what=f"provision {n} of {handle} in flight")

    def test_reprovision_during_a_provision_runs_it_again_after(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "hana"})
        self.started("hana", 1)
        self.assertEqual(b.post("/v1/tenants/hana/reprovision").status, 202)
        self.assertEqual(b.post("/v1/keys/release").json, {"released": 1})
        self.started("hana", 2)                 # asked during the first: a second one
        b.post("/v1/keys/release")
        b.wait_tenant("hana", "ready")
        self.assertEqual(b.get("/v1/keys/calls/hana").json["provisioned"], 2)

    def test_delete_during_a_provision_deprovisions_after_it(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "ines"})
        self.started("ines", 1)
        self.assertEqual(b.req("DELETE", "/v1/tenants/ines").status, 202)
        self.assertEqual(b.tenant("ines")["operation"], "provision")
        # a provision that never finishes holds the deletion: the operator is told which
        wait_until(lambda: b.tenant("ines")["reason"] == "deleting: deprovision waits for "
                   "provisioner 'keys' to finish its provision in flight", what="the reason")
        b.post("/v1/keys/release")
        wait_until(lambda: b.get("/v1/tenants/ines").status == 404, what="deletion")
        calls = b.get("/v1/keys/calls/ines").json
        self.assertEqual((calls["provisioned"], calls["deprovisioned"]), (1, 1))
        self.assertNotIn("container.created", types(b, "ines"))


class ProvisionerRestart(BerthTest):
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": conf(hold="true")}

    def test_sigkill_mid_provision_runs_it_again_once(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "gina"})
        wait_until(lambda: b.get("/v1/keys/calls/gina").json.get("provision_started") == 1,
                   what="the provision in flight")
        t = b.tenant("gina")
        self.assertEqual(t["provisioners"]["keys"]["state"], "pending")
        self.assertEqual(t["operation"], "provision")
        b.kill()
        b.write("10-test.yaml", conf(hold="false"))
        b.start()
        b.wait_tenant("gina", "ready")
        calls = b.get("/v1/keys/calls/gina").json
        self.assertEqual((calls["provision_started"], calls["provisioned"]), (2, 1))
        self.assertIn("API_KEY=k1-gina;", b.get("/v1/testdrv/gina").json["env"])
        self.assertEqual(types(b, "gina").count("container.created"), 1)
        # done survives a restart too: nothing runs again
        self.assertEqual(b.stop(), 0)
        b.start()
        b.wait_tenant("gina", "ready")
        self.assertEqual(b.get("/v1/keys/calls/gina").json["provision_started"], 2)
        self.assertEqual(b.tenant("gina")["provisioners"]["keys"]["state"], "done")


class ProvisionerFailureRestart(BerthTest):
    """A failed provision or deprovision is remembered across a restart: its message,
    attempts, next retry (an hour away here) and permanence, and it does not run again before
    that retry."""
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": conf(fail=5).replace("retry_base: 50ms, retry_max: 200ms",
                                                 "retry_base: 1h, retry_max: 1h")
            + "  refuse:\n    driver: testdrv\n"
            "    keys: {env: API_KEY, value: k1, fail: 1, eperm: true}\n"
            "  leave:\n    driver: testdrv\n"
            "    keys: {env: API_KEY, value: k1, deprov_fail: 1}\n"}
    FIELDS = ("state", "message", "attempts", "next_retry_ms", "permanent")

    def failed(self, handle):
        return wait_until(lambda: (lambda t: "provisioner 'keys' failed" in (t["reason"] or "")
                                   and t)(self.b.tenant(handle)), what=f"{handle}'s failure")

    def test_a_failure_survives_a_restart_and_keeps_its_retry(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "kim"})
        b.post("/v1/tenants", {"handle": "lea", "template": "refuse"})
        before = {h: self.failed(h)["provisioners"]["keys"] for h in ("kim", "lea")}
        self.assertEqual((before["kim"]["attempts"], before["kim"]["permanent"]), (1, False))
        self.assertGreater(before["kim"]["next_retry_ms"], time.time() * 1000 + 1800 * 1000)
        self.assertEqual((before["lea"]["attempts"], before["lea"]["permanent"]), (1, True))
        for stop in (b.kill, b.stop):
            stop()
            b.start()
            for h in ("kim", "lea"):
                t = b.tenant(h)
                self.assertIn("provisioner 'keys' failed", t["reason"] or "")
                after = t["provisioners"]["keys"]
                self.assertEqual({k: after[k] for k in self.FIELDS},
                                 {k: before[h][k] for k in self.FIELDS}, h)
            # neither runs again on start: one is an hour away, the other is permanent
            end = time.time() + 1.0
            while time.time() < end:
                for h in ("kim", "lea"):
                    self.assertEqual(b.get(f"/v1/keys/calls/{h}").json["provision_started"],
                                     1, h)
                time.sleep(0.05)
        self.assertEqual(b.get("/v1/testdrv/kim").status, 404)     # nothing was created
        b.ctl("tenant", "reprovision", "lea")
        b.wait_tenant("lea", "ready")
        self.assertIn("API_KEY=k1-lea;", b.get("/v1/testdrv/lea").json["env"])


    def test_a_failed_deprovision_survives_a_restart(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "mia", "template": "leave"})
        b.wait_tenant("mia", "ready")
        self.assertEqual(b.req("DELETE", "/v1/tenants/mia").status, 202)
        t = wait_until(lambda: (lambda t: "deprovisioner 'keys' failed" in (t["reason"] or "")
                                and t)(b.tenant("mia")), what="the failed deprovision")
        before = t["provisioners"]["keys"]
        self.assertEqual((before["state"], before["attempts"]), ("deprovision_failed", 1))
        b.kill()
        b.start()
        t = b.tenant("mia")
        self.assertEqual(t["desired"], "deleted")
        self.assertIn("deprovisioner 'keys' failed", t["reason"] or "")
        self.assertEqual({k: t["provisioners"]["keys"][k] for k in self.FIELDS},
                         {k: before[k] for k in self.FIELDS})
        end = time.time() + 1.0         # its retry is an hour away
        while time.time() < end:
            self.assertEqual(b.get("/v1/keys/calls/mia").json["deprovision_started"], 1)
            time.sleep(0.05)
        b.ctl("tenant", "rm", "mia", "--force")
        wait_until(lambda: b.get("/v1/tenants/mia").status == 404, what="the forced delete")
        ab = [e["payload"] for e in b.events(tenant="mia") if e["type"] == "tenant.abandoned"]
        self.assertEqual(ab, [{"provisioner": "keys", "state": "deprovision_failed"}])


class ProvisionerDoneTwice(BerthTest):
    """A provisioner that misuses the SDK: it finishes each op twice and touches it after."""
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": BASE.replace("hold: HOLD", "done_twice: true")
            .replace("FAIL", "0").replace("DEPROV", "0")}

    def test_a_second_op_done_is_refused_not_a_use_after_free(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "hana"})
        b.wait_tenant("hana", "ready")
        self.assertIn("API_KEY=k1-hana;", b.get("/v1/testdrv/hana").json["env"])
        self.assertEqual(b.req("DELETE", "/v1/tenants/hana").status, 202)
        wait_until(lambda: b.get("/v1/tenants/hana").status == 404, what="the deletion")
        self.assertEqual(b.get("/v1/keys/calls/hana").json["deprovisioned"], 1)
        self.assertIn("a plugin called op_done on an operation that is not in flight", b.log())
        self.assertIn("a plugin called op_setenv on an operation that is not in flight", b.log())


class ProvisionerBadBytes(BerthTest):
    """A provisioner whose failure message and status carry bytes that are not UTF-8, as
    text relayed from an upstream would: every answer and event is still valid JSON."""
    plugins = ("testdrv", "echo", "testprov")
    conf = {"10-test.yaml": conf(fail=1).replace("hold: false", "bad_utf8: true")}

    def test_answers_and_events_stay_json(self):
        b = self.b      # b.req decodes strictly: invalid UTF-8 raises
        b.post("/v1/tenants", {"handle": "ulla"})
        t = wait_until(lambda: (lambda t: "refused" in (t["reason"] or "") and t)(
            b.tenant("ulla")), what="the failure")
        self.assertIn("provision 1 of 1 refused \ufffd\ufffd", t["reason"])
        failed = [e for e in b.events(tenant="ulla") if e["type"] == "tenant.provision_failed"]
        self.assertIn("\ufffd", failed[0]["payload"]["reason"])
        t = b.wait_tenant("ulla", "ready")
        self.assertNotIn("keys", t["plugins"])     # tenant_status_set refused the bytes
        self.assertIsNotNone(json.loads(b.get("/v1/tenants").body))


if __name__ == "__main__":
    unittest.main()
