"""Status is true across a template's removal and return: while a tenant's template is not
defined its reason says so, and once the template is back and the tenant is ready the reason
is gone, without a restart. With the exec driver (and the lifecycle plugin's health checks,
as the quickstart runs) and the test driver with a provisioner; the docker case is in
test_docker_ports."""
import os
import signal
import unittest

from exec_util import marked
from harness import Berthd, BerthTest, TESTDRV, wait_until

# the tenant's processes carry this run's mark, so a test kills its own and not those of a
# run of this file in another checkout on the same machine (same handle)
RUN = f"r{os.getpid()}r"
BOX = """templates:
  box:
    driver: exec
    command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    env: {BOX_RUN: RUN}
    port: 8080
    stop_timeout: 2s
    lifecycle:
      health: {http: /, interval: 200ms, timeout: 1s, retries: 2, start_period: 10s}
""".replace("RUN}", RUN + "}")
EXEC = """plugins:
  exec: {ports: 23100-23199}
  lifecycle: {check_interval: 200ms}
berth:
  reconcile: {retry_base: 200ms, retry_max: 1s, crash_backoff_base: 200ms}
"""


class Exec(unittest.TestCase):
    def setUp(self):
        self.b = Berthd({"10-exec.yaml": EXEC, "20-box.yaml": BOX}, plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")
        self.b.start()

    def tearDown(self):
        b = self.b
        for t in b.get("/v1/tenants").json["tenants"]:
            b.req("DELETE", f"/v1/tenants/{t['handle']}?force=true")
        try:
            wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 20, what="deletions")
            self.assertEqual(b.stop(), 0, b.log()[-3000:])
        finally:
            b.cleanup()

    def reload(self, ok=True):
        r = self.b.post("/v1/reload")
        self.assertEqual(r.status, 200 if ok else r.status, r.body)

    def without_box(self):
        self.b.remove("20-box.yaml")
        self.reload()
        wait_until(lambda: "not defined" in (self.b.tenant("bx")["reason"] or ""), 10,
                   what="the reason to say the template is gone")

    def back(self):
        self.b.write("20-box.yaml", BOX)
        self.reload()

    def ready_without_reason(self, crashed=False):
        def clear():
            t = self.b.tenant("bx")
            want = "crashed once (last: killed by signal 9 (Killed)); ready again" \
                if crashed else None
            return t["observed"] == "ready" and t["reason"] == want and t
        try:
            return wait_until(clear, 15, what="ready with no reason")
        except AssertionError as e:
            raise AssertionError(f"{e}: {self.b.tenant('bx')}") from None

    def add(self):
        self.assertEqual(self.b.post("/v1/tenants", {"handle": "bx", "template": "box"}).status,
                         201)
        return self.b.wait_tenant("bx", "ready", timeout=15)

    def test_removed_and_restored_while_running(self):
        self.add()
        self.without_box()
        self.back()
        self.ready_without_reason()

    def test_crashed_while_removed_then_restored(self):
        t = self.add()
        self.without_box()
        for pid in marked(f"BOX_RUN={RUN}", "python3"):
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: self.b.tenant("bx")["observed"] != "ready", 10, what="the crash")
        self.back()
        self.ready_without_reason(crashed=True)

    def test_woken_while_removed(self):
        self.add()
        self.b.post("/v1/tenants/bx/sleep")
        self.b.wait_tenant("bx", "stopped", timeout=15)
        self.without_box()
        self.b.post("/v1/tenants/bx/wake")
        self.back()
        self.ready_without_reason()

    def test_removed_with_its_driver_and_restored(self):
        """the quickstart's 10-exec.yaml holds the driver's instance and the template: both
        go, and come back, in one reload"""
        b = self.b
        b.write("10-exec.yaml", EXEC.replace("  exec: {ports: 23100-23199}\n", ""))
        b.write("20-box.yaml", "plugins:\n  exec: {ports: 23100-23199}\n" + BOX)
        self.reload()
        self.add()
        self.without_box()
        b.write("20-box.yaml", "plugins:\n  exec: {ports: 23100-23199}\n" + BOX)
        self.reload()
        self.ready_without_reason()

    def test_removed_while_starting_restored_by_sighup(self):
        b = self.b
        slow = BOX.replace('command: [python3,', 'command: [sh, -c, "sleep 1; exec python3 '
                           '-m http.server --bind 127.0.0.1 $PORT"]\n    x: [python3,')
        slow = "\n".join(ln for ln in slow.split("\n") if not ln.startswith("    x:"))
        b.write("20-box.yaml", slow)
        self.reload()
        self.assertEqual(b.post("/v1/tenants", {"handle": "bx", "template": "box"}).status, 201)
        wait_until(lambda: b.tenant("bx")["observed"] in ("starting", "running"), 10,
                   what="bx to start")
        b.remove("20-box.yaml")
        b.signal(signal.SIGHUP)
        wait_until(lambda: "not defined" in (b.tenant("bx")["reason"] or ""), 10,
                   what="the reason to say the template is gone")
        b.write("20-box.yaml", slow)
        b.signal(signal.SIGHUP)
        self.ready_without_reason()

    def test_restored_with_a_change(self):
        self.add()
        self.without_box()
        self.b.write("20-box.yaml", BOX.replace("stop_timeout: 2s", "stop_timeout: 3s"))
        self.reload()
        self.ready_without_reason()


TBOX = """plugins:
  keys: {module: testprov, delay: 300ms}
templates:
  box: {driver: testdrv, port: 8080, keys: {env: API_KEY, value: VALUE}}
"""


class Testdrv(BerthTest):
    """with a provisioner: the template's return provisions the tenant again when its block
    changed, and a provisioner that comes back with it too"""
    conf = {"10-test.yaml": TESTDRV, "20-box.yaml": TBOX.replace("VALUE", "k1")}
    plugins = ("testdrv", "echo", "testprov")

    def cycle(self, back):
        b = self.b
        b.remove("20-box.yaml")
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: "not defined" in (b.tenant("bx")["reason"] or ""), 10)
        b.write("20-box.yaml", back)
        self.assertEqual(b.post("/v1/reload").status, 200)
        try:
            wait_until(lambda: (lambda t: t["observed"] == "ready" and t["reason"] is None)(
                b.tenant("bx")), 10, what="ready with no reason")
        except AssertionError as e:
            raise AssertionError(f"{e}: {b.tenant('bx')}") from None

    def test_removed_and_restored(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "bx", "template": "box"})
        b.wait_tenant("bx", "ready")
        self.cycle(TBOX.replace("VALUE", "k1"))
        self.cycle(TBOX.replace("VALUE", "k2"))


if __name__ == "__main__":
    unittest.main()
