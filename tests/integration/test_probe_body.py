"""plugins/lifecycle's HTTP health probe reads an answer's status only: a tenant that answers
its probe with a huge body is healthy (its status is 200) and costs berthd no memory for it
(the probe drops the body and cuts the call past 64 KiB, where a buffered call would hold up
to 64 MiB per probe)."""
import os
import unittest

from harness import SLOW, Berthd, wait_until

# a server whose every answer is 200 with a body of 48 MiB (under a buffered call's 64 MiB cap), sent as fast as it is read
SERVER = r"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(48 << 20))
        self.end_headers()
        chunk = b"x" * (1 << 20)
        try:
            for _ in range(48):
                self.wfile.write(chunk)
        except OSError:
            pass
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""

CONF = """plugins:
  exec: {ports: %(lo)d-%(hi)d}
  lifecycle: {check_interval: 200ms}
templates:
  big:
    driver: exec
    command: [python3, %(server)s, "{port}"]
    port: 8080
    stop_timeout: 2s
    lifecycle:
      idle_timeout: 0
      health: {http: /, interval: 300ms, timeout: 10s, retries: 2, start_period: 20s}
"""


def hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


class ProbeBody(unittest.TestCase):
    def setUp(self):
        base = 29000 + (os.getpid() % 100) * 10
        self.b = Berthd({}, plugins=())
        server = os.path.join(self.b.dir, "big_server.py")
        with open(server, "w") as f:
            f.write(SERVER)
        self.b.write("10.yaml", CONF % {"lo": base, "hi": base + 9, "server": server})
        self.b.install_plugin_from_build("exec")
        self.b.install_plugin_from_build("lifecycle")
        self.b.start()

    def tearDown(self):
        b = self.b
        b.req("DELETE", "/v1/tenants/big?force=true")
        wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 20, what="deletion")
        rc = b.stop()
        log = b.log()
        b.cleanup()
        self.assertEqual(rc, 0, log[-3000:])

    def test_a_huge_probe_answer_is_healthy_and_not_held(self):
        b = self.b
        before = hwm_kib(b.proc.pid)
        self.assertEqual(b.post("/v1/tenants", {"handle": "big", "template": "big"}).status, 201)
        wait_until(lambda: b.tenant("big")["observed"] == "ready", 30 * SLOW,
                   what="big to be ready on its probe's status")
        # a few more probes: each would buffer up to 64 MiB if the body were kept
        seen = b.tenant("big")["plugins"]["lifecycle"]
        wait_until(lambda: b.tenant("big")["plugins"]["lifecycle"] != seen, 10 * SLOW,
                   what="another probe")
        grown = hwm_kib(b.proc.pid) - before
        self.assertLess(grown, 16 * 1024, f"berthd's peak RSS grew {grown} KiB over probes")
        self.assertEqual(b.tenant("big")["observed"], "ready")


if __name__ == "__main__":
    unittest.main()
