"""berthd's own life: SIGTERM drains plugins in reverse load order and exits 0."""
import json
import signal
import time
import unittest

from harness import Berthd, TESTDRV


class Shutdown(unittest.TestCase):
    def test_sigterm_drains_in_reverse_order(self):
        b = Berthd({"10-test.yaml": TESTDRV.replace("echo: {}", "echo: {drain_delay: 400ms}\n"
                                                    "  late: {module: echo}")})
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "alice"})
            b.wait_tenant("alice", "ready")
            t0 = time.time()
            self.assertEqual(b.stop(), 0)
            self.assertGreaterEqual(time.time() - t0, 0.35)    # echo's drain was waited for
            log = b.log()
            order = [log.index(f"[plugin:{n}] draining") for n in ("late", "echo", "testdrv")]
            self.assertEqual(order, sorted(order))
            self.assertIn("stopped", log.splitlines()[-1])
            # the state survived: the tenant is there after a restart
            b.start()
            self.assertEqual(b.tenant("alice")["desired"], "running")
            b.proc.send_signal(signal.SIGINT)
            self.assertEqual(b.proc.wait(20), 0)
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()


class Logging(unittest.TestCase):
    def test_json_logs_and_levels(self):
        b = Berthd({"10-test.yaml": TESTDRV,
                    "20-log.yaml": "berth:\n  log: {level: warn, format: json}\n"})
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "alice"})
            b.wait_tenant("alice", "ready")
            # a reload lowers the level at run time
            b.write("20-log.yaml", "berth:\n  log: {level: info, format: json}\n")
            self.assertEqual(b.post("/v1/reload").status, 200)
            self.assertEqual(b.stop(), 0)
            lines = [json.loads(l) for l in b.log().splitlines() if l.strip()]
            self.assertTrue(all({"ts", "level", "component", "msg"} <= set(l) for l in lines))
            levels = [l["level"] for l in lines]
            # nothing below warn before the reload; info afterwards ("stopped" is info)
            first_info = next(i for i, l in enumerate(lines) if l["level"] == "info")
            self.assertIn("generation 2", lines[first_info]["msg"])
            self.assertEqual(lines[-1]["msg"], "stopped")
            self.assertNotIn("debug", levels)
        finally:
            b.cleanup()
