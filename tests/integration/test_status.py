"""Status is true: a tenant's reason, crash and restart counts say what happened and what
holds now, not what held a while ago."""
import unittest

from harness import BerthTest, TESTDRV, wait_until

class Status(BerthTest):
    conf = {"10-test.yaml": TESTDRV,
            "05-reconcile.yaml": "berth:\n  reconcile: {crash_backoff_base: 1s}\n"}

    def crash(self, handle, gone=False):
        r = self.b.post(f"/v1/testdrv/{handle}/crash" + ("?gone=1" if gone else ""))
        self.assertEqual(r.status, 200, r)

    def test_crash_loop_reason_in_seconds_and_past_once_ready(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "cr"})
        b.wait_tenant("cr", "ready")
        self.crash("cr")
        b.wait_tenant("cr", "ready")
        self.crash("cr")
        t = b.tenant("cr")
        self.assertIn("crashed 2 times in a row (last: killed); restarting in 1s", t["reason"])
        t = b.wait_tenant("cr", "ready")
        self.assertNotIn("restarting", t["reason"] or "")
        self.assertEqual(t["reason"], "crashed 2 times in a row (last: killed); ready again")
        self.assertEqual((t["crashes"], t["restarts"]), (2, 2))

    def test_one_removal_is_one_crash(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "rmf"})
        b.wait_tenant("rmf", "ready")
        self.crash("rmf", gone=True)        # stopped, then absent: one event, one crash
        t = b.wait_tenant("rmf", "ready")
        self.assertEqual((t["crashes"], t["restarts"]), (1, 1))
        stopped = b.events(type="container.stopped", tenant="rmf")
        self.assertEqual(len(stopped), 1, stopped)


class HealthAgrees(BerthTest):
    # nothing listens on testdrv's addresses: the probe stays in its start period
    conf = {"10-test.yaml": TESTDRV.replace("  echo: {}\n", "  echo: {}\n  lifecycle: {}\n"),
            "20-health.yaml": "templates:\n  default:\n    lifecycle:\n      health: "
                              "{http: /, interval: 100ms, start_period: 60s}\n"}

    def setUp(self):
        self.start = False
        super().setUp()
        self.b.install_plugin_from_build("lifecycle")
        self.b.start()

    def test_top_level_health_and_lifecycle_agree_while_starting(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "hp"})
        t = wait_until(lambda: (b.tenant("hp") or {}).get("plugins", {}).get("lifecycle")
                       and b.tenant("hp"), what="the probe's status")
        self.assertEqual(t["plugins"]["lifecycle"]["health"], "starting")
        self.assertEqual((t["observed"], t["health"]), ("running", "starting"))


if __name__ == "__main__":
    unittest.main()
