"""plugins/lifecycle schedules through berthd with the exec driver: a cron schedule wakes a
sleeping tenant at its due time and not before, leaves an awake one alone, and a restart across
due times follows catch_up (one run, never a burst). The schedule's clock is shifted with the
plugin's test-only test_clock_offset, so a minute boundary comes a few seconds after start."""
import os
import subprocess
import time
import unittest

from harness import BERTHD, SLOW, Berthd, wait_until

CONF = """plugins:
  exec: {ports: %(lo)d-%(hi)d}
  lifecycle: {check_interval: 200ms, test_clock_offset: %(offset)d}
templates:
  default:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle:
      idle_timeout: 0
      schedule: {cron: "* * * * *", tz: Europe/Berlin, catch_up: one}
  skip:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle:
      idle_timeout: 0
      schedule: {cron: "* * * * *", catch_up: none}
  brief:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    lifecycle:
      idle_timeout: 0
      schedule: {cron: "*/5 * * * *", run_for: %(run_for)dms}
"""


def offset_for(lead_s):
    """a clock offset that puts the schedule's clock lead_s before a minute boundary"""
    now = time.time()
    boundary = (int(now) // 60 + 2) * 60
    return int((boundary - now - lead_s) * 1000), boundary * 1000


class Schedule(unittest.TestCase):
    def setUp(self):
        base = 26000 + (os.getpid() % 100) * 20
        self.ports = (base, base + 19)
        self.b = Berthd({}, plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")

    def configure(self, offset, run_for=60000):
        self.b.write("10.yaml", CONF % {"lo": self.ports[0], "hi": self.ports[1],
                                        "offset": offset, "run_for": run_for})

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

    def test_wakes_a_sleeping_tenant_at_the_due_time_and_not_before(self):
        lead = 3.0 * SLOW
        offset, boundary_ms = offset_for(lead)
        t_due = boundary_ms / 1000 - offset / 1000     # the real time the run is due
        self.configure(offset)
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "sleeper", "desired": "asleep"})
        b.post("/v1/tenants", {"handle": "awake"})
        b.wait_tenant("awake", "ready")
        st = b.tenant("sleeper")["plugins"]["lifecycle"]["schedule"]
        self.assertEqual(st["next_ms"], boundary_ms)
        # before the due time it stays asleep
        while time.time() < t_due - 0.3:
            self.assertEqual(b.tenant("sleeper")["desired"], "asleep")
            self.assertEqual(self.woke("sleeper"), [])
            time.sleep(0.05)
        wait_until(lambda: b.tenant("sleeper")["desired"] == "running", 5 * SLOW,
                   what="the scheduled wake")
        self.assertGreaterEqual(time.time(), t_due - 0.05)
        b.wait_tenant("sleeper", "ready")
        ev = self.woke("sleeper")
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual(ev[0]["payload"]["due_ms"], boundary_ms)
        self.assertEqual(ev[0]["payload"]["reason"], "schedule")
        wakes = [e["payload"] for e in b.events(type="tenant.wake_requested")
                 if e.get("tenant") == "sleeper"]
        self.assertEqual(wakes, [{"source": "schedule"}])
        # the awake one was left alone: no wake, same process
        self.assertEqual(self.woke("awake"), [])
        nxt = b.tenant("sleeper")["plugins"]["lifecycle"]["schedule"]["next_ms"]
        self.assertEqual(nxt, boundary_ms + 60000)
        info = b.get("/v1/lifecycle").json
        self.assertEqual(info["scheduled_wakes"], 1)
        self.assertEqual(info["scheduled_skipped"], 1)      # the awake one's run
        self.assertIn("berth_lifecycle_scheduled_wakes_total 1", b.get("/metrics").body)

    def test_restart_across_due_times_follows_catch_up(self):
        offset, boundary_ms = offset_for(30)        # the next run is 30 s away
        self.configure(offset)
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "one", "desired": "asleep"})
        b.post("/v1/tenants", {"handle": "none", "template": "skip", "desired": "asleep"})
        self.assertEqual(b.stop(), 0)
        # down across three due times: catch_up one runs once at start, none waits
        self.configure(offset + 150000)
        b.start()
        wait_until(lambda: b.tenant("one")["desired"] == "running", 5 * SLOW,
                   what="the catch-up run")
        ev = self.woke("one")
        self.assertEqual(len(ev), 1, ev)
        self.assertTrue(ev[0]["payload"]["catch_up"])
        self.assertEqual(ev[0]["payload"]["due_ms"], boundary_ms)
        self.assertEqual(b.tenant("none")["desired"], "asleep")
        self.assertEqual(self.woke("none"), [])
        # the next run is planned after now, not at the missed ones
        for h in ("one", "none"):
            nxt = b.tenant(h)["plugins"]["lifecycle"]["schedule"]["next_ms"]
            self.assertEqual(nxt, boundary_ms + 180000, h)
        # never a burst: the missed runs after the first did not run against the awake tenant
        info = b.get("/v1/lifecycle").json
        self.assertEqual(info["missed_while_down"], 2)
        self.assertEqual(info["scheduled_wakes"], 1)
        self.assertEqual(info["scheduled_skipped"], 0)
        # a restart without time passing across a due time runs nothing
        b.req("POST", "/v1/tenants/one/sleep")
        self.assertEqual(b.stop(), 0)
        b.start()       # the start itself plans: checked at once below
        self.assertEqual(b.tenant("one")["desired"], "asleep")
        self.assertEqual(b.get("/v1/lifecycle").json["missed_while_down"], 0)

    def test_catch_up_of_a_run_missed_moments_before_the_restart(self):
        offset, boundary_ms = offset_for(30)
        self.configure(offset)
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "one", "desired": "asleep"})
        self.assertEqual(b.stop(), 0)
        self.configure(offset + 50000)      # back 20 s after the run it missed
        b.start()
        wait_until(lambda: self.woke("one"), 5 * SLOW, what="the catch-up run")
        ev = self.woke("one")
        self.assertEqual(len(ev), 1, ev)
        self.assertEqual(ev[0]["payload"]["due_ms"], boundary_ms)
        self.assertTrue(ev[0]["payload"]["catch_up"], ev)

    def test_run_for_puts_an_unused_tenant_back_to_sleep(self):
        lead = 2.0 * SLOW
        now = time.time()
        boundary = (int(now) // 300 + 2) * 300         # a */5 boundary
        offset = int((boundary - now - lead) * 1000)
        self.configure(offset, run_for=int(1500 * SLOW))
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "brief", "template": "brief", "desired": "asleep"})
        b.post("/v1/tenants", {"handle": "used", "template": "brief", "desired": "asleep"})
        wait_until(lambda: b.tenant("brief")["desired"] == "running", 10 * SLOW,
                   what="the scheduled wake")
        t_woke = time.time()
        wait_until(lambda: b.tenant("used")["desired"] == "running", 2 * SLOW,
                   what="the other scheduled wake")
        self.assertEqual(b.post("/v1/tenants/used/touch").status, 202)     # used meanwhile
        wait_until(lambda: b.tenant("brief")["desired"] == "asleep", 10 * SLOW,
                   what="sleep after run_for")
        self.assertGreaterEqual(time.time() - t_woke, 1.3 * SLOW)
        # run_for is over for both; the one that was used stays up (idle_timeout decides)
        sched = lambda: b.tenant("used")["plugins"]["lifecycle"]["schedule"]
        wait_until(lambda: "run_until_ms" not in sched(), 5 * SLOW, what="used's run_for end")
        self.assertEqual(b.tenant("used")["desired"], "running")


    def test_reload_replans_and_drops_schedules(self):
        offset, boundary_ms = offset_for(30)
        self.configure(offset)
        b = self.b
        b.start()
        b.post("/v1/tenants", {"handle": "sleeper", "desired": "asleep"})
        sched = lambda: b.tenant("sleeper")["plugins"].get("lifecycle", {}).get("schedule")
        self.assertEqual(sched()["next_ms"], boundary_ms)
        conf = CONF % {"lo": self.ports[0], "hi": self.ports[1], "offset": offset,
                       "run_for": 60000}
        b.write("10.yaml", conf.replace('cron: "* * * * *", tz: Europe/Berlin',
                                        'cron: "0 3 * * *", tz: Europe/Berlin'))
        self.assertEqual(b.post("/v1/reload").status, 200)
        nxt = sched()["next_ms"]
        self.assertGreater(nxt, boundary_ms)
        self.assertEqual(time.gmtime(nxt / 1000).tm_min, 0)
        self.assertIn(time.gmtime(nxt / 1000).tm_hour, (1, 2))     # 03:00 in Berlin
        b.write("10.yaml", conf.replace('schedule: {cron: "* * * * *", tz: Europe/Berlin, '
                                        'catch_up: one}', 'heartbeat: {expect_every: 0}'))
        self.assertEqual(b.post("/v1/reload").status, 200)
        self.assertIsNone(sched())
        self.assertEqual(b.get("/v1/lifecycle").json["due_queue"], 0)


class Check(unittest.TestCase):
    def test_bad_cron_fails_check_at_its_line(self):
        b = Berthd({}, plugins=())
        try:
            b.install_plugin_from_build("exec")
            b.install_plugin_from_build("lifecycle")
            b.write("10.yaml", "plugins:\n  exec: {}\n  lifecycle: {}\ntemplates:\n"
                    "  default:\n    driver: exec\n    command: [sleep, '1']\n"
                    "    lifecycle:\n      schedule:\n        tz: UTC\n"
                    "        cron: \"*/15 25 * * *\"\n"
                    "  other:\n    driver: exec\n    command: [sleep, '1']\n"
                    "    lifecycle: {schedule: {cron: '@hourly', tz: Mars/Base}}\n")
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 1, p.stderr)
            path = os.path.join(b.conf, "10.yaml")
            self.assertIn(f"{path}:11:15: templates.default.lifecycle: schedule.cron: "
                          "'*/15 25 * * *': hour: out of range 0-23 (at character 6)",
                          p.stderr)
            self.assertIn(f"{path}:15:", p.stderr)
            self.assertIn("unknown time zone 'Mars/Base'", p.stderr)
            # fixed, it passes
            b.write("10.yaml", "plugins:\n  exec: {}\n  lifecycle: {}\ntemplates:\n"
                    "  default:\n    driver: exec\n    command: [sleep, '1']\n"
                    "    lifecycle: {schedule: {cron: '*/15 2 * * mon-fri', tz: Europe/Berlin},"
                    " heartbeat: {expect_every: 30m}}\n")
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
