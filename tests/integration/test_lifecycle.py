"""berthd's own life: SIGTERM drains plugins in reverse load order and exits 0."""
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
