"""Status is true: a tenant's reason, crash and restart counts say what happened and what
holds now, not what held a while ago."""
import unittest

from harness import BerthTest, TESTDRV

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


if __name__ == "__main__":
    unittest.main()
