"""plugins/lifecycle through berthd with the exec driver: idle sleep, wake and readiness,
busy holds, health checks and crash-loop backoff."""
import os
import threading
import time
import unittest

from harness import Berthd, wait_until

CONF = """berth:
  reconcile: {crash_backoff_base: 300ms, crash_backoff_max: 2400ms, crash_reset: 1m}
plugins:
  exec: {ports: %d-%d}
  lifecycle: {check_interval: 200ms}
  echo: {}
templates:
  default:
    driver: exec
    command: [sh, -c, "sleep ${DELAY:-0}; exec python3 -m http.server --bind 127.0.0.1 {port}"]
    port: 8080
    lifecycle:
      idle_timeout: 2s
      health: {http: /, interval: 200ms, timeout: 1s, retries: 2, start_period: 5s}
  slow:
    driver: exec
    command: [sh, -c, "sleep 1.2; exec python3 -m http.server --bind 127.0.0.1 {port}"]
    port: 8080
    lifecycle:
      idle_timeout: 0
      health: {http: /, interval: 100ms, timeout: 1s, retries: 100}
  crashy:
    driver: exec
    command: [sh, -c, "echo boom; exit 3"]
    lifecycle:
      idle_timeout: 0
  sick:
    driver: exec
    command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    port: 8080
    lifecycle:
      idle_timeout: 0
      health: {http: /no-such-page, interval: 150ms, timeout: 1s, retries: 2, start_period: 0}
  watched:
    driver: exec
    command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    port: 8080
    lifecycle:
      idle_timeout: 0
      health: {http: /, interval: 100ms, timeout: 1s, retries: 2, start_period: 5s}
"""


class Lifecycle(unittest.TestCase):
    def setUp(self):
        base = 24000 + (os.getpid() % 100) * 40
        self.conf = CONF % (base, base + 39)
        self.b = Berthd({"10.yaml": self.conf}, plugins=("echo",))
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

    def test_idle_tenant_sleeps_and_touch_defers_it(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "idler"})
        b.post("/v1/tenants", {"handle": "toucher"})
        t0 = time.time()
        b.wait_tenant("idler", "ready")
        b.wait_tenant("toucher", "ready")
        self.assertEqual(b.tenant("idler")["health"], "healthy")
        self.assertEqual(b.tenant("idler")["plugins"]["lifecycle"]["health"], "healthy")
        # touch the second one for 3.5 s; the first is left alone
        while time.time() - t0 < 3.5:
            b.post("/v1/tenants/toucher/touch")
            time.sleep(0.3)
        t = b.tenant("idler")
        self.assertEqual((t["desired"], t["observed"]), ("asleep", "stopped"))
        self.assertEqual(b.tenant("toucher")["desired"], "running")
        slept = b.events(type="tenant.sleep_requested", tenant="idler")
        self.assertEqual(slept[0]["payload"]["source"], "idle")
        t_sleep = slept[0]["time_ms"] / 1000
        self.assertGreaterEqual(t_sleep - t0, 1.9)
        self.assertLess(t_sleep - t0, 4.0)            # idle_timeout + check_interval + start
        b.wait_tenant("toucher", "stopped", timeout=6)  # after the touches stop

    def test_wake_wait_answers_when_the_probe_passes(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "waker", "template": "slow", "desired": "asleep"})
        t0 = time.time()
        r = b.post("/v1/tenants/waker/wake?wait=20s", timeout=30)
        elapsed = time.time() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json["observed"], "ready")
        self.assertGreaterEqual(elapsed, 1.2)          # the process listens after 1.2 s
        started = b.events(type="container.started", tenant="waker")
        ready = b.events(type="tenant.ready", tenant="waker")
        self.assertEqual(len(started), 1)
        self.assertGreaterEqual(ready[0]["seq"], started[0]["seq"])
        # already ready: answered at once
        t0 = time.time()
        self.assertEqual(b.post("/v1/tenants/waker/wake?wait=5s").status, 200)
        self.assertLess(time.time() - t0, 0.5)
        self.assertEqual(b.post("/v1/tenants/waker/wake?wait=soon").status, 400)

    def test_concurrent_wakes_start_once_and_all_are_answered(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "crowd", "template": "slow", "desired": "asleep"})
        results = []

        def wake():
            results.append(b.post("/v1/tenants/crowd/wake?wait=20s", timeout=30).status)

        threads = [threading.Thread(target=wake) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [200] * 8)
        self.assertEqual(len(b.events(type="container.started", tenant="crowd")), 1)

    def test_wake_wait_times_out(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "late", "template": "slow", "desired": "asleep"})
        r = b.post("/v1/tenants/late/wake?wait=300ms")
        self.assertEqual((r.status, r.json["error"]["code"]), (504, "timeout"))
        b.wait_tenant("late", "ready")                 # it carried on starting

    def test_busy_is_not_idle(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "streamer"})
        b.wait_tenant("streamer", "ready")
        self.assertEqual(b.post("/v1/echo/busy/streamer").status, 200)
        self.assertEqual(b.tenant("streamer")["busy"], 1)
        time.sleep(3.0)                                # well past idle_timeout
        self.assertEqual(b.tenant("streamer")["desired"], "running")
        self.assertEqual(b.req("DELETE", "/v1/echo/busy/streamer").status, 200)
        b.wait_tenant("streamer", "stopped", timeout=5)

    def test_crash_loop_backs_off_on_schedule(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "crashy", "template": "crashy"})
        starts = wait_until(lambda: len(b.events(type="container.started", tenant="crashy"))
                            >= 5 and b.events(type="container.started", tenant="crashy"),
                            20, what="five starts")
        times = [e["time_ms"] for e in starts]
        gaps = [b - a for a, b in zip(times, times[1:])]
        # first restart at once, then 300ms, 600ms, 1200ms (crash_backoff_base doubling)
        self.assertLess(gaps[0], 250, gaps)
        for gap, want in zip(gaps[1:], (300, 600, 1200)):
            self.assertGreaterEqual(gap, want, gaps)
            self.assertLess(gap, want + 400, gaps)
        t = b.tenant("crashy")
        self.assertGreaterEqual(t["crashes"], 4)
        self.assertIn("crashed", t["reason"])      # visible between crashes too
        time.sleep(0.05)
        self.assertIn("crashed", b.tenant("crashy")["reason"])
        self.assertIn("backoff:", b.ctl("tenant", "show", "crashy").stdout)

    def test_unhealthy_tenant_is_restarted(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "sick", "template": "sick"})
        wait_until(lambda: len(b.events(type="container.started", tenant="sick")) >= 2, 15,
                   what="a restart after failed probes")
        health = b.events(type="container.health", tenant="sick")
        self.assertFalse(health[0]["payload"]["healthy"])
        self.assertIn("health check failed 2 times", health[0]["payload"]["message"])
        # with start_period 0 the first failures may be python not listening yet (a loaded
        # machine); a run that got as far as answering fails on its 404
        wait_until(lambda: any("health check failed 2 times: HTTP 404" in e["payload"]["message"]
                               for e in b.events(type="container.health", tenant="sick")),
                   15, what="a failure on the probe's 404")
        t = b.tenant("sick")
        self.assertGreaterEqual(t["restarts"], 1)
        self.assertNotEqual(t["observed"], "ready")

    def test_health_restarts_wait_their_backoff(self):
        # A restart for failed probes stops the workload first; that stop must not cancel the
        # crash-loop delay (300ms doubling) of the start that follows.
        b = self.b
        b.post("/v1/tenants", {"handle": "sick", "template": "sick"})
        starts = wait_until(lambda: len(b.events(type="container.started", tenant="sick"))
                            >= 5 and b.events(type="container.started", tenant="sick"),
                            20, what="five starts")
        times = [e["time_ms"] for e in starts]
        gaps = [b - a for a, b in zip(times, times[1:])]
        self.assertGreaterEqual(gaps[2], 600, gaps)
        self.assertGreaterEqual(gaps[3], 1200, gaps)
        self.assertIn("restarting in", b.tenant("sick")["reason"])

    def test_reload_changes_a_running_probe(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "watched", "template": "watched"})
        b.wait_tenant("watched", "ready")
        self.assertEqual(b.tenant("watched")["plugins"]["lifecycle"]["probe"], "/")
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        b.write("20.yaml", "templates:\n  watched:\n    lifecycle:\n"
                "      health: {http: /gone, interval: 150ms, start_period: 0}\n")
        self.assertEqual(b.post("/v1/reload").status, 200)
        self.assertEqual(b.tenant("watched")["plugins"]["lifecycle"]["probe"], "/gone")
        ev = wait_until(lambda: b.events(since=seq, type="container.health", tenant="watched"),
                        10, what="the new probe to fail")[0]["payload"]
        self.assertFalse(ev["healthy"])
        self.assertIn("HTTP 404", ev["message"])
        # and a reload that removes the check stops the probe
        b.remove("20.yaml")
        b.write("10.yaml", self.conf.replace(
            "      health: {http: /, interval: 100ms, timeout: 1s, retries: 2, start_period: 5s}\n",
            ""))
        r = b.post("/v1/reload")
        self.assertEqual(r.status, 200, r.body)
        wait_until(lambda: "lifecycle" not in b.tenant("watched").get("plugins", {}), 5,
                   what="the probe to stop")

    def test_idle_clock_survives_a_restart_and_a_reload(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "clock"})
        b.wait_tenant("clock", "ready")
        b.post("/v1/tenants/clock/touch")
        touched = time.time()
        time.sleep(1.0)
        self.assertEqual(b.stop(), 0)
        b.start()
        # a reload that changes the sweep interval keeps the clock too
        b.write("20.yaml", "plugins:\n  lifecycle: {check_interval: 150ms}\n")
        self.assertEqual(b.post("/v1/reload").status, 200)
        self.assertEqual(b.get("/v1/lifecycle").json["check_interval_ms"], 150)
        b.wait_tenant("clock", "stopped", timeout=6)
        slept = b.events(type="tenant.sleep_requested", tenant="clock")[-1]["time_ms"] / 1000
        self.assertLess(slept - touched, 3.2)     # 2 s after the touch, not after the restart


if __name__ == "__main__":
    unittest.main()
