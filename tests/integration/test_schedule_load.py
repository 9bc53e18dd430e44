"""plugins/lifecycle schedules among other work, through berthd: a scheduled wake is single
flight like any wake (exec tenants that are slow to listen), and however many tenants are
scheduled the plugin holds one timer for them (testdrv tenants). Split from test_schedule.py to
keep each file fast."""
import os
import time
import unittest

from harness import SLOW, Berthd, wait_until
from test_schedule import offset_for


class Flight(unittest.TestCase):
    def setUp(self):
        base = 32000 + (os.getpid() % 100) * 20     # above test_caddy's ports
        self.ports = (base, base + 19)
        self.b = Berthd({}, plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")

    def tearDown(self):
        b = self.b
        if b.proc and b.proc.poll() is None:
            for t in b.get("/v1/tenants").json["tenants"]:
                b.req("DELETE", f"/v1/tenants/{t['handle']}")
            wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 20, what="cleanup")
            rc = b.stop()
            self.assertEqual(rc, 0, b.log()[-3000:])
        b.cleanup()

    def woke(self, handle):
        return [e for e in self.b.events(type="schedule.woke") if e.get("tenant") == handle]

    def test_a_scheduled_wake_is_single_flight_like_any_wake(self):
        """a slow starter: a user's wake during the scheduled start joins it, and a run due
        while a user's wake is starting the tenant leaves it alone; each starts once"""
        lead = 2.0 * SLOW
        offset, boundary_ms = offset_for(lead)
        t_due = boundary_ms / 1000 - offset / 1000
        starts = os.path.join(self.b.dir, "starts-")
        slow = (f'echo x >> {starts}{{handle}}; sleep {1.2 * SLOW:.1f}; '
                'exec python3 -m http.server $PORT --bind 127.0.0.1')
        self.b.write("10.yaml", f"""plugins:
  exec: {{ports: {self.ports[0]}-{self.ports[1]}}}
  lifecycle: {{check_interval: 200ms, test_clock_offset: {offset}}}
templates:
  default:
    driver: exec
    port: 8080
    command: [sh, -c, "{slow}"]
    lifecycle:
      idle_timeout: 0
      health: {{tcp: true, interval: 100ms, timeout: 1s, retries: 100}}
      schedule: {{cron: "* * * * *"}}
""")
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "sched", "desired": "asleep"})
        b.post("/v1/tenants", {"handle": "early", "desired": "asleep"})
        while time.time() < t_due - 0.5 * SLOW:
            time.sleep(0.05)
        r = b.req("POST", "/v1/tenants/early/wake")
        self.assertEqual(r.status, 202, r.body)     # still starting when the run is due
        wait_until(lambda: b.tenant("sched")["desired"] == "running", 5 * SLOW,
                   what="the scheduled wake")
        self.assertNotEqual(b.tenant("sched")["observed"], "ready")        # still starting
        r = b.req("POST", "/v1/tenants/sched/wake?wait=30s", timeout=40)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(b.tenant("sched")["observed"], "ready")
        b.wait_tenant("early", "ready", timeout=10 * SLOW)
        for h in ("sched", "early"):
            with open(starts + h) as f:
                self.assertEqual(f.read(), "x\n", h)
        self.assertEqual(len(self.woke("sched")), 1)
        self.assertEqual(self.woke("early"), [])
        info = b.get("/v1/lifecycle").json
        self.assertEqual((info["scheduled_wakes"], info["scheduled_skipped"]), (1, 1))


class OneTimer(unittest.TestCase):
    """the scheduler's cost: however many tenants have a schedule and a heartbeat deadline,
    the plugin holds one timer for all of them (plus the idle sweep's)"""

    CONF = """plugins:
  testdrv: {delay: 1ms}
  lifecycle: {check_interval: 1h}
templates:
  default:
    driver: testdrv
    port: 8080
    lifecycle:
      idle_timeout: 0
      schedule: {cron: "*/5 * * * *"}
      heartbeat: {expect_every: 1h}
berth: {log: {level: info}}
"""
    N = 300

    def test_many_tenants_cost_one_timer(self):
        b = Berthd({"10.yaml": self.CONF}, plugins=("testdrv",))
        try:
            b.install_plugin_from_build("lifecycle")
            b.start()
            timers = lambda: b.get("/v1/system/info").json["loop_handles"].get("lifecycle")
            b.post("/v1/tenants", {"handle": "first"})
            b.wait_tenant("first", "ready")
            self.assertEqual(b.get("/v1/lifecycle").json["due_queue"], 2)    # run + deadline
            self.assertEqual(timers(), 2)       # the sweep and the due-queue
            for i in range(self.N):
                r = b.post("/v1/tenants", {"handle": f"t{i}",
                                           "desired": "asleep" if i % 2 else "running"})
                self.assertEqual(r.status, 201, r.body)
            wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] ==
                       1 + self.N // 2, 30 * SLOW, what="the running half ready")
            # every tenant has its next run queued, every running one its deadline
            info = b.get("/v1/lifecycle").json
            self.assertEqual(info["due_queue"], (1 + self.N) + (1 + self.N // 2))
            self.assertEqual(timers(), 2)
            for t in b.get("/v1/tenants").json["tenants"]:
                b.req("DELETE", f"/v1/tenants/{t['handle']}")
            wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 30 * SLOW,
                       what="cleanup")
            self.assertEqual(b.get("/v1/lifecycle").json["due_queue"], 0)
            self.assertEqual(timers(), 1)       # nothing due: the sweep's alone
            self.assertEqual(b.stop(), 0, b.log()[-3000:])
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
