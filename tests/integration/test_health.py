"""Dependency health through a real berthd: what plugins report with
host->dependency_report decides /health (required ones), and shows in GET /v1/system and
`berthctl info`; a report that is not renewed goes stale; reports go with their instance.
Then the shipped reporters: Caddy's admin API (a real Caddy, killed and restarted) and the
Matrix homeserver (a closed port, then a server that answers)."""
import http.server
import os
import socket
import threading
import time
import unittest

from caddyd import Caddy
from harness import SLOW, Berthd, BerthTest, free_port, wait_until

DEPTEST = """plugins:
  testdrv: {delay: 10ms}
  deptest: {}
templates:
  default: {driver: testdrv}
"""


def health(b):
    r = b.get("/health?details=1")
    return r.status, r.json


class Reports(BerthTest):
    conf = {"10-test.yaml": DEPTEST}
    plugins = ("testdrv", "deptest")

    def report(self, name, status=0, interval=1000, required=True, message=None):
        q = f"name={name}&status={status}&interval={interval}&required={int(required)}"
        if message:
            q += "&message=" + message.replace(" ", "%20")
        return self.b.post(f"/v1/deptest/report?{q}").json["rc"]

    def test_required_failure_is_503_and_listed_everywhere(self):
        b = self.b
        self.assertEqual(self.report("db", interval=60000), 0)
        self.assertEqual(self.report("cache", status=-111, interval=60000, required=False,
                                     message="refused"), 0)
        st, j = health(b)
        self.assertEqual(st, 200, j)      # an optional failure is listed, not fatal
        self.assertEqual(b.ctl("health").stdout, "berthd is healthy\noptional dependency "
                                                 "deptest/cache is failing: refused\n")
        self.assertEqual(j["checks"]["dependencies"]["deptest/cache"]["status"], "failing")
        self.assertEqual(j["checks"]["dependencies"]["deptest/db"]["ok"], True)
        for _ in range(2):      # a repeat is not logged again
            self.assertEqual(self.report("db", status=-5, interval=60000, message="disk gone"),
                             0)
        st, j = health(b)
        self.assertEqual(st, 503)
        self.assertEqual(j["reason"], "dependency deptest/db is failing: disk gone")
        d = b.get("/v1/system").json["dependencies"]["deptest/db"]
        self.assertEqual((d["ok"], d["status"], d["required"], d["error"], d["message"]),
                         (False, "failing", True, "I/O error", "disk gone"))
        self.assertEqual(d["interval_ms"], 60000)
        self.assertLess(d["age_ms"], 60000)
        out = b.ctl("info").stdout
        self.assertRegex(out, r"depends: +deptest/db FAILING \(required, checked \S+ ago\): "
                              r"disk gone")
        self.assertRegex(out, r"depends: +deptest/cache FAILING \(optional, .*\): refused")
        m = b.get("/metrics").body
        self.assertIn('berth_dependency_up{dependency="deptest/db",required="true"} 0\n', m)
        self.assertIn('berth_dependency_up{dependency="deptest/cache",required="false"} 0\n', m)
        p = b.ctl("health", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("deptest/db", p.stderr)
        self.assertEqual(self.report("db", interval=60000), 0)
        self.assertEqual(health(b)[0], 200)
        self.assertIn('berth_dependency_up{dependency="deptest/db",required="true"} 1\n',
                      b.get("/metrics").body)
        log = b.log()
        self.assertEqual(log.count("dependency db is failing: disk gone"), 1, log)
        self.assertIn("dependency db is usable again", log)

    def test_a_report_not_renewed_goes_stale(self):
        b = self.b
        t0 = time.monotonic()
        self.assertEqual(self.report("feed", interval=1000), 0)
        st, j = wait_until(lambda: (lambda r: r[0] == 503 and r)(health(b)), 10 * SLOW,
                           what="the report to go stale")
        self.assertGreaterEqual(time.monotonic() - t0, 3.0)     # 3 intervals
        self.assertEqual(j["checks"]["dependencies"]["deptest/feed"]["status"], "stale")
        self.assertRegex(j["reason"], r"^dependency deptest/feed: no report for \S+ "
                                      r"\(checked every 1s\)$")
        self.assertEqual(self.report("feed", interval=1000), 0)
        self.assertEqual(health(b)[0], 200)

    def test_bad_reports_are_refused_and_unload_clears(self):
        b = self.b
        for q in ("BAD", "-x", "a" * 65):
            self.assertEqual(self.report(q), -22, q)
        self.assertEqual(self.report("ok", interval=0), -22)
        self.assertEqual(self.report("ok", status=5), -22)
        for i in range(32):
            self.assertEqual(self.report(f"d{i}", interval=60000), 0)
        self.assertEqual(self.report("one-more", interval=60000), -22)
        self.assertIn("already reports 32 dependencies", b.log())
        self.assertEqual(self.report("d0", status=-110, interval=60000), 0)
        self.assertEqual(health(b)[0], 503)
        # the instance goes: so do its reports
        b.write("10-test.yaml", DEPTEST.replace("  deptest: {}\n", ""))
        b.ctl("reload")
        wait_until(lambda: health(b)[0] == 200, 10 * SLOW, what="the reports to go")
        self.assertFalse([k for k in b.get("/v1/system").json["dependencies"] if "/" in k])


CADDY_CONF = """plugins:
  caddy:
    admin: unix:%(admin)s
    domain: example.test
    listen: 127.0.0.1:%(listen)d
    check: 300ms
    required: %(required)s
"""


class CaddyAdmin(unittest.TestCase):
    required = "true"

    def setUp(self):
        self.caddy = Caddy().start()
        conf = CADDY_CONF % {"admin": self.caddy.admin, "listen": free_port(),
                             "required": self.required}
        self.b = Berthd({"10.yaml": conf}, plugins=())
        self.b.install_plugin_from_build("caddy")
        self.b.start()

    def tearDown(self):
        try:
            self.assertEqual(self.b.stop(), 0, self.b.log()[-3000:])
        finally:
            self.b.cleanup()
            self.caddy.stop()

    def test_caddy_down_is_503_naming_it_and_back_is_200(self):
        b = self.b
        wait_until(lambda: health(b)[0] == 200, 10 * SLOW, what="caddy/admin to be ok")
        self.assertEqual(b.get("/v1/system").json["dependencies"]["caddy/admin"]["status"], "ok")
        self.caddy.proc.kill()
        self.caddy.proc.wait()
        t0 = time.monotonic()
        st, j = wait_until(lambda: (lambda r: r[0] == 503 and r)(health(b)), 10 * SLOW,
                           what="/health to fail")
        # the next check (300ms), or the write it triggers, finds it: well before staleness
        self.assertLess(time.monotonic() - t0, 2.0 * SLOW)
        self.assertIn("dependency caddy/admin is failing: admin API unix:", j["reason"])
        self.assertFalse(j["checks"]["dependencies"]["caddy/admin"]["ok"])
        self.assertIn("caddy/admin FAILING (required", b.ctl("info").stdout)
        self.caddy.start()
        wait_until(lambda: health(b)[0] == 200, 10 * SLOW, what="/health to recover")


class CaddyOptional(CaddyAdmin):
    required = "false"

    def test_caddy_down_is_200_but_listed(self):
        b = self.b
        dep = lambda: b.get("/v1/system").json["dependencies"].get("caddy/admin", {})
        wait_until(lambda: dep().get("status") == "ok", 10 * SLOW, what="caddy/admin ok")
        self.caddy.proc.kill()
        self.caddy.proc.wait()
        j = wait_until(lambda: (lambda d: d.get("status") == "failing" and d)(dep()),
                       10 * SLOW, what="caddy/admin to fail")
        self.assertIn("admin API unix:", j["message"])
        self.assertFalse(j["required"])
        self.assertEqual(health(b)[0], 200)
        self.caddy.start()

    test_caddy_down_is_503_naming_it_and_back_is_200 = None


MATRIX_CONF = """plugins:
  matrix:
    homeserver: http://127.0.0.1:%(port)d
    server_name: test.local
    registration: {shared_secret: {file: %(secret)s}}
    check: 200ms
"""


class Versions(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.path == "/_matrix/client/versions"
        body = b'{"versions": ["v1.11"]}' if ok else b'{"errcode": "M_UNRECOGNIZED"}'
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_PUT = do_GET

    def log_message(self, *a):
        pass


class Homeserver(unittest.TestCase):
    def setUp(self):
        self.port = free_port()
        self.b = Berthd(None, plugins=())
        secret = os.path.join(self.b.dir, "secret")
        with open(secret, "w") as f:
            f.write("s3cret\n")
        self.b.write("10.yaml", MATRIX_CONF % {"port": self.port, "secret": secret})
        self.b.install_plugin_from_build("matrix")
        self.srv = None

    def tearDown(self):
        try:
            self.assertEqual(self.b.stop(), 0, self.b.log()[-3000:])
        finally:
            self.b.cleanup()
            if self.srv:
                self.srv.shutdown()
                self.srv.server_close()

    def test_closed_port_is_503_naming_the_homeserver(self):
        b = self.b.start()
        st, j = wait_until(lambda: (lambda r: r[0] == 503 and r)(health(b)), 10 * SLOW,
                           what="/health to fail")
        self.assertIn(f"dependency matrix/homeserver is failing: http://127.0.0.1:{self.port}",
                      j["reason"])
        d = j["checks"]["dependencies"]["matrix/homeserver"]
        self.assertEqual((d["status"], d["error"], d["interval_ms"]),
                         ("failing", "connection refused", 200))
        # a homeserver answers on that port now
        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Versions)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()
        wait_until(lambda: health(b)[0] == 200, 10 * SLOW, what="/health to recover")
        self.assertTrue(b.get("/v1/system").json["dependencies"]["matrix/homeserver"]["ok"])

    def test_a_homeserver_that_never_answers_goes_stale(self):
        # connections are taken (the backlog) and never answered; the call's timeout is 30s
        lsn = socket.socket()
        lsn.bind(("127.0.0.1", self.port))
        lsn.listen(16)
        try:
            b = self.b.start()
            st, j = wait_until(lambda: (lambda r: r[0] == 503 and "no report" in
                                        r[1]["reason"] and r)(health(b)), 10 * SLOW,
                               what="the homeserver to go stale")
            self.assertRegex(j["reason"], r"^dependency matrix/homeserver: no report for \S+ "
                                          r"\(checked every 200ms\)$")
            d = j["checks"]["dependencies"]["matrix/homeserver"]
            self.assertEqual((d["status"], d["message"]),
                             ("stale", f"http://127.0.0.1:{self.port}: not checked yet"))
            # one probe at a time: the hung ones do not pile up in the queue
            time.sleep(0.5)     # a few check intervals pass (there is nothing to poll)
            self.assertEqual(b.get("/v1/matrix/health").json["in_flight"], 1)
        finally:
            lsn.close()


if __name__ == "__main__":
    unittest.main()
