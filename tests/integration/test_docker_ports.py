"""A docker tenant keeps its host port across sleep, wake, re-creation and a restart of
berthd (routes to it do not churn), and moves to another one, saying so, when that port was
taken while it slept. Against a real, private dockerd."""
import os
import socket
import unittest

from dockerd import Dockerd
from harness import DRAIN_LATE, Berthd, http_get, wait_until

D = None


def setUpModule():
    global D
    D = Dockerd()
    try:
        D.start()
        D.import_image()
    except BaseException:
        D.cleanup()
        raise


def tearDownModule():
    D.cleanup()


def conf(vol):
    return f"""plugins:
  docker: {{socket: {D.sock}}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/httpd, -f, -p, "8080", -h, /www]
    port: 8080
    volumes: ["{vol}/{{handle}}:/www"]
    stop_timeout: 1s
berth:
  reconcile: {{retry_base: 200ms, retry_max: 1s, crash_backoff_base: 200ms}}
"""


class Ports(unittest.TestCase):
    def setUp(self):
        self.vol = os.path.join(D.dir, "vol-" + self._testMethodName[-12:])
        self.b = Berthd({"10-docker.yaml": conf(self.vol)}, plugins=())
        self.b.install_plugin_from_build("docker")
        self.b.start()

    def tearDown(self):
        rc = self.b.stop()
        log = self.b.log()
        self.b.cleanup()
        for c in D.containers():
            D.api("DELETE", f"/containers/{c['Id']}?force=true")
        self.assertEqual(rc, 0, log[-3000:])
        self.assertNotIn(DRAIN_LATE, log)

    def add(self, handle):
        os.makedirs(f"{self.vol}/{handle}")
        with open(f"{self.vol}/{handle}/index.html", "w") as f:
            f.write(f"{handle}'s page\n")
        self.assertEqual(self.b.post("/v1/tenants", {"handle": handle}).status, 201)
        return self.b.wait_tenant(handle, "ready", timeout=30)

    def sleep_wake(self, handle):
        b = self.b
        b.post(f"/v1/tenants/{handle}/sleep")
        b.wait_tenant(handle, "stopped", timeout=30)
        r = b.post(f"/v1/tenants/{handle}/wake?wait=30s", timeout=40)
        self.assertEqual(r.status, 200, r.body)
        return r.json

    def test_kept_across_sleep_wake_recreation_and_restart(self):
        b = self.b
        t = self.add("alice")
        addr = t["address"]
        self.assertEqual(self.sleep_wake("alice")["address"], addr)
        self.assertEqual(self.sleep_wake("alice")["address"], addr)
        self.assertEqual(http_get(addr, "/"), "alice's page\n")
        # removed behind berth's back: made again, on the same port
        D.api("DELETE", "/containers/berth-alice?force=true")
        wait_until(lambda: (D.inspect("berth-alice") or {}).get("Id") not in (None, t["id"]),
                   30, what="a new container")
        self.assertEqual(b.wait_tenant("alice", "ready", timeout=30)["address"], addr)
        # berthd restarted while the container is gone: the port is in berthd's state
        self.assertEqual(b.stop(), 0)
        D.api("DELETE", "/containers/berth-alice?force=true")
        b.start()
        self.assertEqual(b.wait_tenant("alice", "ready", timeout=30)["address"], addr)
        self.assertEqual(http_get(addr, "/"), "alice's page\n")
        # a deleted tenant gives its port up: one made again under its handle gets a new one
        b.req("DELETE", "/v1/tenants/alice")
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, 30, what="deletion")
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((addr.split(":")[0], int(addr.split(":")[1])))
        holder.listen()
        try:
            self.assertEqual(b.post("/v1/tenants", {"handle": "alice"}).status, 201)
            self.assertNotEqual(b.wait_tenant("alice", "ready", timeout=30)["address"], addr)
        finally:
            holder.close()
        self.assertNotIn("publishing on", b.log())      # not a move: a new tenant

    def test_a_port_taken_while_asleep_moves_and_says_so(self):
        b = self.b
        t = self.add("bob")
        ip, port = t["address"].split(":")
        b.post("/v1/tenants/bob/sleep")
        b.wait_tenant("bob", "stopped", timeout=30)
        holder = socket.socket()
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind((ip, int(port)))
        holder.listen()
        try:
            r = b.post("/v1/tenants/bob/wake?wait=30s", timeout=40)
            self.assertEqual(r.status, 200, r.body)
            moved = r.json
            self.assertNotEqual(moved["address"], t["address"])
            self.assertEqual(http_get(moved["address"], "/"), "bob's page\n")
            self.assertIn(f"tenant bob: host port {port} is taken; publishing on "
                          f"{moved['address'].split(':')[1]}", b.log())
            self.assertEqual((moved["crashes"], moved["reason"]), (0, None))
        finally:
            holder.close()
        # the new port is the one kept from now on
        self.assertEqual(self.sleep_wake("bob")["address"], moved["address"])


class TemplateStatus(unittest.TestCase):
    """A template removed and restored leaves no stale reason on a ready docker tenant, also
    when its file holds the docker instance too (both go and come back in one reload)."""

    def test_removed_and_restored(self):
        vol = os.path.join(D.dir, "vol-status")
        text = conf(vol).replace("  default:", "  box:").replace("berth:\n  reconcile", "berth:\n"
                                                                   "  log: {level: debug}\n"
                                                                   "  reconcile")
        head, box = text.split("templates:\n")
        plugins = head
        box = "templates:\n" + box.split("berth:\n")[0]
        core = "berth:\n" + text.split("berth:\n")[1]
        b = Berthd({"05-core.yaml": core, "10-docker.yaml": plugins, "20-box.yaml": box},
                   plugins=())
        b.install_plugin_from_build("docker")
        try:
            b.start()
            os.makedirs(f"{vol}/bx")
            self.assertEqual(b.post("/v1/tenants", {"handle": "bx", "template": "box"}).status,
                             201)
            b.wait_tenant("bx", "ready", timeout=30)
            for gone, back in ((("20-box.yaml",), {"20-box.yaml": box}),
                               (("10-docker.yaml", "20-box.yaml"), {"20-box.yaml": plugins + box})):
                for f in gone:
                    b.remove(f)
                self.assertEqual(b.post("/v1/reload").status, 200)
                wait_until(lambda: "not" in (b.tenant("bx")["reason"] or ""), 10,
                           what="a reason while the template is gone")
                for f, t in back.items():
                    b.write(f, t)
                self.assertEqual(b.post("/v1/reload").status, 200)
                try:
                    wait_until(lambda: (lambda t: t["observed"] == "ready" and
                                        t["reason"] is None)(b.tenant("bx")), 15,
                               what=f"no reason once {list(back)} is back")
                except AssertionError as e:
                    raise AssertionError(f"{e}: {b.tenant('bx')}") from None
            b.req("DELETE", "/v1/tenants/bx")
            wait_until(lambda: b.get("/v1/tenants/bx").status == 404, 30, what="deletion")
            self.assertEqual(b.stop(), 0, b.log()[-3000:])
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
