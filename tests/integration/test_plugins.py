"""The plugin loader and the host API as plugins see it."""
import os
import shutil
import subprocess
import time
import unittest

from harness import (ABI, BERTHD, SLOW, BerthTest, Berthd, TESTDRV, UnixHTTPConnection,
                     free_port, wait_until)


def check(b):
    p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True, text=True)
    return p.returncode, p.stderr


class Loader(unittest.TestCase):
    def setUp(self):
        self.b = Berthd({"10-test.yaml": TESTDRV},
                        plugins=("testdrv", "echo", "badabi", "nodesc"))

    def tearDown(self):
        self.b.cleanup()

    def test_refusals_are_clear(self):
        b = self.b
        b.write("20-bad.yaml", "plugins:\n  badabi: {}\n  nodesc: {}\n  missing: {}\n")
        rc, err = check(b)
        self.assertEqual(rc, 1)
        self.assertIn("badabi.so: it was built for plugin ABI 99.0 and this berthd speaks 1.1; "
                      "rebuild it against the installed SDK", err)
        self.assertIn("nodesc.so: it exports no berth_plugin_v1 descriptor", err)
        self.assertIn("cannot open plugin " + os.path.join(b.plugin_dir, "missing.so"), err)

    def test_writable_by_others_is_refused(self):
        b = self.b
        so = os.path.join(b.plugin_dir, "echo.so")
        os.chmod(so, 0o775)
        rc, err = check(b)
        self.assertEqual(rc, 1)
        self.assertIn(f"refusing to load {so}: it is writable by group or others", err)
        os.chmod(so, 0o755)
        os.chmod(b.plugin_dir, 0o777)
        rc, err = check(b)
        self.assertIn(f"its directory {b.plugin_dir} is writable by group or others", err)
        os.chmod(b.plugin_dir, 0o755)
        self.assertEqual(check(b)[0], 0)

    def test_bad_plugin_at_runtime_reload_keeps_running(self):
        b = self.b
        b.start()
        try:
            b.write("20-bad.yaml", "plugins:\n  badabi: {}\n")
            r = b.post("/v1/reload")
            self.assertEqual(r.status, 422)
            self.assertIn("ABI 99.0", " ".join(r.json["error"]["details"]))
            self.assertEqual(b.get("/health").status, 200)
            self.assertEqual(len(b.get("/v1/plugins").json["plugins"]), 2)
        finally:
            self.assertEqual(b.stop(), 0)


class HostAPI(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("echo: {}", "echo: {}\n  echo2: {module: echo, "
                                            "greeting: second}\n  echo3: {path: echo_v2.so}")}
    plugins = ("testdrv", "echo", "echo_v2")

    def test_instances_of_one_module_side_by_side(self):
        b = self.b
        plugins = {p["name"]: p for p in b.get("/v1/plugins").json["plugins"]}
        self.assertEqual(set(plugins), {"testdrv", "echo", "echo2", "echo3"})
        self.assertEqual(plugins["echo2"]["module"], "echo")
        self.assertEqual(plugins["echo3"]["version"], "1.2")
        # three instances registered the same route: the newest answers, all three subscribe
        self.assertEqual(b.get("/v1/echo/info").json["instance"], "echo3")

    def test_custom_events_and_counting_subscribers(self):
        b = self.b
        self.assertEqual(b.post("/v1/echo/ping").status, 202)
        ev = wait_until(lambda: b.events(type="echo.pinged"), what="echo.pinged")
        self.assertEqual(ev[-1]["payload"], {"from": "echo"})
        self.assertGreater(b.get("/v1/echo/info").json["events"], 0)

    def test_http_client_on_the_loop(self):
        b = self.b
        r = b.get(f"/v1/echo/fetch?url=http://x/health&unix={b.sock}")
        self.assertEqual(r.json["status"], 200)
        self.assertEqual(r.json["length"], 16)
        port = free_port()          # nothing listens there
        r = b.get(f"/v1/echo/fetch?url=http://127.0.0.1:{port}/")
        self.assertEqual(r.json["status"], 0)
        self.assertEqual(r.json["error"], -111)

    def test_streaming_response(self):
        r = self.b.get("/v1/echo/stream?n=5")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body.count("chunk v"), 5)
        self.assertEqual(r.headers.get("Transfer-Encoding"), "chunked")

    def test_slow_reader_gets_every_byte_in_order(self):
        # chunks bigger than the socket buffer, and a reader that starts late: the server
        # writes what the socket takes, queues the rest, and queues what follows behind it
        c = UnixHTTPConnection(self.b.sock, timeout=20 * SLOW)
        c.request("GET", "/v1/echo/stream?n=12&pad=300000")
        time.sleep(0.5)
        r = c.getresponse()
        body = r.read().decode()        # http.client checks the chunked framing
        c.close()
        v = body[:8]                    # "chunk vN": the newest echo instance answers
        want = "".join(f"{v} {i} " + chr(97 + i % 26) * 300000 + "\n" for i in range(11, -1, -1))
        self.assertEqual(len(body), len(want))
        if body != want:    # not assertEqual: a diff of 3.6 MB helps nobody
            i = next(k for k, (x, y) in enumerate(zip(body, want)) if x != y)
            self.fail(f"byte {i}: {body[max(0, i - 20):i + 20]!r}, not {want[max(0, i - 20):i + 20]!r}")


if __name__ == "__main__":
    unittest.main()
