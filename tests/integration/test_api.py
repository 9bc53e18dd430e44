"""The control API and berthctl, and the HTTP server's behaviour under bad input."""
import json
import os
import socket
import stat
import subprocess
import time
import unittest

from harness import (BERTHCTL, BERTHD, SLOW, BerthTest, Berthd, TESTDRV, UnixHTTPConnection,
                     free_port, wait_until)


def raw(path, data, timeout=5.0, read_all=True):
    """Sends bytes on a new connection to a unix socket and returns all it answers."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout * SLOW)
    s.connect(path)
    s.sendall(data)
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
            if not read_all:
                break
    except socket.timeout:
        out += b"<timeout>"
    s.close()
    return out


class ControlAPI(BerthTest):
    def test_health_info_metrics_plugins(self):
        b = self.b
        self.assertEqual(b.get("/health").json, {"status": "ok"})
        info = b.get("/v1/system/info").json
        self.assertEqual(info["version"], "0.1.0")
        self.assertEqual(sorted(p["name"] for p in info["plugins"]), ["echo", "testdrv"])
        self.assertEqual(info["tenants"]["total"], 0)
        self.assertGreater(info["disk"]["database_bytes"], 0)
        self.assertGreater(info["disk"]["free_bytes"], 0)
        self.assertTrue(info["config"]["last_reload"]["ok"])
        b.post("/v1/tenants", {"handle": "alice"})
        b.wait_tenant("alice", "ready")
        m = b.get("/metrics")
        self.assertEqual(m.status, 200)
        self.assertTrue(m.headers["Content-Type"].startswith("text/plain"))
        self.assertIn('berth_tenants{observed="ready"} 1', m.body)
        self.assertIn("berth_plugins 2", m.body)
        self.assertRegex(m.body, r"berth_http_requests_total \d+")
        self.assertEqual(b.get("/v1/system/info").json["tenants"]["ready"], 1)
        plugins = b.get("/v1/plugins").json["plugins"]
        self.assertEqual({p["name"]: p["state"] for p in plugins},
                         {"testdrv": "running", "echo": "running"})

    def test_errors_have_shape_and_status(self):
        b = self.b
        r = b.get("/v1/nowhere")
        self.assertEqual(r.status, 404)
        self.assertEqual(r.json["error"]["code"], "not_found")
        self.assertTrue(r.json["error"]["message"])
        r = b.req("PUT", "/v1/tenants")
        self.assertEqual((r.status, r.json["error"]["code"]), (405, "method_not_allowed"))
        self.assertEqual(b.req("HEAD", "/health").status, 200)

    def test_socket_is_0660(self):
        mode = stat.S_IMODE(os.stat(self.b.sock).st_mode)
        self.assertEqual(mode, 0o660)

    def test_events_sse_resumes_with_last_event_id(self):
        b = self.b
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5 * SLOW)
        s.connect(b.sock)
        s.sendall(b"GET /v1/events?type=tenant.created HTTP/1.1\r\nHost: x\r\n\r\n")
        head = s.recv(4096)
        self.assertIn(b"200 OK", head)
        self.assertIn(b"text/event-stream", head)
        for h in ("ann", "ben", "cat"):
            b.post("/v1/tenants", {"handle": h})
        got = b""
        while got.count(b"event: tenant.created") < 3:
            got += s.recv(65536)
        s.close()
        ids = [int(line.split(b": ")[1]) for line in got.split(b"\n")
               if line.startswith(b"id: ")]
        self.assertEqual(len(ids), 3)
        self.assertEqual(ids, sorted(ids))
        # resume after the first one: exactly the other two come back
        r = b.get("/v1/events?follow=0&type=tenant.created",
                  headers={"Last-Event-ID": str(ids[0])})
        resumed = [json.loads(l[6:]) for l in r.body.split("\n") if l.startswith("data: ")]
        self.assertEqual([e["tenant"] for e in resumed], ["ben", "cat"])
        self.assertEqual([e["seq"] for e in resumed], ids[1:])
        # prefix filter and tenant filter
        self.assertTrue(all(e["type"].startswith("tenant.")
                            for e in b.events(type="tenant.*")))
        self.assertTrue(all(e["tenant"] == "ben" for e in b.events(tenant="ben")))

    def test_berthctl(self):
        b = self.b
        p = b.ctl("tenant", "add", "zed", "--kind", "agent")
        self.assertIn("zed: desired running", p.stdout)
        b.wait_tenant("zed", "ready")
        out = b.ctl("tenant", "ls").stdout
        self.assertRegex(out, r"HANDLE\s+KIND\s+TEMPLATE\s+DESIRED\s+OBSERVED")
        self.assertRegex(out, r"zed\s+agent\s+default\s+running\s+ready")
        ls = json.loads(b.ctl("--json", "tenant", "ls").stdout)
        self.assertEqual(ls["tenants"][0]["handle"], "zed")
        self.assertIn("observed:      ready", b.ctl("tenant", "show", "zed").stdout)
        b.ctl("tenant", "sleep", "zed")
        b.wait_tenant("zed", "stopped")
        b.ctl("tenant", "wake", "zed")
        b.wait_tenant("zed", "ready")
        b.ctl("tenant", "touch", "zed")
        ev = b.ctl("events", "--tenant", "zed").stdout
        self.assertIn("tenant.activity", ev)
        self.assertIn("tenant.created", ev)
        self.assertIn("testdrv", b.ctl("plugins").stdout)
        self.assertIn("healthy", b.ctl("health").stdout)
        self.assertIn("reloaded", b.ctl("reload").stdout)
        bad = b.ctl("tenant", "add", "Nope!", check=False)
        self.assertEqual(bad.returncode, 1)
        self.assertIn("invalid_handle", bad.stderr)
        missing = b.ctl("tenant", "show", "ghost", check=False)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no tenant 'ghost'", missing.stderr)
        b.ctl("tenant", "rm", "zed")
        wait_until(lambda: b.get("/v1/tenants/zed").status == 404, what="zed deleted")

    def test_berthctl_follow_streams_live_events(self):
        b = self.b
        p = subprocess.Popen([BERTHCTL, "--socket", b.sock, "--json", "events", "-f",
                              "--type", "tenant.created"], stdout=subprocess.PIPE, text=True)
        try:
            time.sleep(0.3)
            b.post("/v1/tenants", {"handle": "live"})
            line = p.stdout.readline()
            self.assertEqual(json.loads(line)["tenant"], "live")
        finally:
            p.terminate()
            p.wait()
            p.stdout.close()

    def test_slow_reader_gets_every_event_once_in_order(self):
        # a replay larger than the socket buffer: what the socket does not take at once is
        # queued, and everything written after it must queue behind it
        b = self.b
        b.post("/v1/tenants", {"handle": "slow"})
        for _ in range(2500):
            b.post("/v1/tenants/slow/touch")
        want = [e["seq"] for e in b.events(since=0)]
        self.assertGreater(len(want), 2500)
        c = UnixHTTPConnection(b.sock, timeout=20 * SLOW)
        c.request("GET", "/v1/events?since=0&follow=0")
        time.sleep(0.5)
        r = c.getresponse()
        body = r.read().decode()        # http.client checks the chunked framing
        c.close()
        got = [int(line[4:]) for line in body.split("\n") if line.startswith("id: ")]
        self.assertEqual(got, want)

    def test_a_since_that_is_not_a_sequence_number_is_refused(self):
        for since in ["-5", "+5", "%205", "x", "", "18446744073709551616"]:
            r = self.b.get(f"/v1/events?since={since}&follow=0")
            self.assertEqual(r.status, 400, since)
            self.assertIn("sequence number", r.json["error"]["message"], since)
        self.assertEqual(self.b.get("/v1/events?since=0&follow=0").status, 200)


BAD_STRINGS = {
    "escaped NUL": b"ab\\u0000cd",
    "raw control": b"ab\x01cd",
    "invalid byte": b"ab\xffcd",
    "cut sequence": b"ab\xc3",
    "overlong slash": b"ab\xc0\xafcd",
    "UTF-8 surrogate": b"ab\xed\xa0\x80cd",
    "escaped lone surrogate": b"ab\\ud800cd",
}


class UntrustedStrings(BerthTest):
    """Every string from outside is checked whole; every answer is JSON."""

    def answer(self, method, path, body=None, headers=None):
        c = UnixHTTPConnection(self.b.sock, timeout=10 * SLOW)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            status, data = r.status, r.read()
        finally:
            c.close()
        doc = json.loads(data.decode("utf-8"))      # strict: raises on invalid UTF-8
        return status, doc

    def assert_nothing_created(self):
        self.assertEqual(self.b.get("/v1/tenants").json["tenants"], [])

    def test_bad_strings_in_every_body_field(self):
        fields = {"handle": b"good", "kind": b"human", "template": b"default",
                  "desired": b"running"}
        for field in fields:
            for what, bad in BAD_STRINGS.items():
                with self.subTest(field=field, bad=what):
                    body = b"{" + b",".join(
                        b'"%s":"%s"' % (k.encode(), bad if k == field else v)
                        for k, v in fields.items()) + b"}"
                    status, doc = self.answer("POST", "/v1/tenants", body,
                                              {"Content-Type": "application/json"})
                    self.assertEqual(status, 400, doc)
                    self.assertEqual(doc["error"]["code"], "invalid_json")
                    self.assertIn("valid UTF-8", doc["error"]["message"])
                    self.assert_nothing_created()
        # a bad key is a bad string too
        status, doc = self.answer("POST", "/v1/tenants", b'{"handle":"ok","x\\u0000":1}')
        self.assertEqual(status, 400, doc)
        # and the same body without the bad byte is accepted
        status, doc = self.answer("POST", "/v1/tenants", b'{"handle":"abcd"}')
        self.assertEqual(status, 201, doc)
        self.assertEqual(self.b.get("/v1/tenants/ab").status, 404)

    def test_a_body_is_one_object_with_each_key_once(self):
        # cJSON stops after the first value and keeps the first of two keys: what a proxy in
        # front reads as "the handle" must be what berthd creates
        for body in (b'{"handle":"abcd"} {"handle":"efgh"}', b'{"handle":"abcd"}x',
                     b'{"handle":"abcd","handle":"efgh"}',
                     b'{"handle":"abcd","kind":"agent","kind":"human"}'):
            with self.subTest(body=body):
                status, doc = self.answer("POST", "/v1/tenants", body)
                self.assertEqual(status, 400, doc)
                self.assertEqual(doc["error"]["code"], "invalid_json")
                self.assert_nothing_created()
        status, doc = self.answer("POST", "/v1/tenants", b' {"handle":"abcd"}\r\n\t ')
        self.assertEqual(status, 201, doc)

    def test_bad_strings_in_action_and_plugin_bodies(self):
        self.assertEqual(self.b.post("/v1/tenants", {"handle": "abcd"}).status, 201)
        for what, bad in BAD_STRINGS.items():
            with self.subTest(bad=what):
                status, doc = self.answer("POST", "/v1/tenants/abcd/sleep",
                                          b'{"reason":"' + bad + b'"}')
                self.assertEqual(status, 400, doc)
                status, doc = self.answer("POST", "/v1/echo/ping", b'{"x":"' + bad + b'"}',
                                          {"Content-Type": "application/json"})
                self.assertEqual(status, 400, doc)
        self.assertEqual(self.b.tenant("abcd")["desired"], "running")
        self.assertEqual(self.b.events(type="echo.pinged"), [])

    def test_bad_bytes_in_paths_and_queries(self):
        cases = [("GET", "/v1/tenants/ab%00cd"), ("GET", "/v1/tenants/ab%ffcd"),
                 ("DELETE", "/v1/tenants/%c3"), ("POST", "/v1/tenants/ab%ff/wake"),
                 ("GET", "/nosuch/%ff%fe"), ("GET", "/v1/events?type=%ff&follow=0"),
                 ("GET", "/v1/events?type=a%00b&follow=0"), ("GET", "/v1/tenants?x=%ed%a0%80"),
                 ("POST", "/v1/tenants/abcd/wake?wait=%ff")]
        for method, path in cases:
            with self.subTest(path=path):
                status, doc = self.answer(method, path, b"{}" if method == "POST" else None)
                self.assertEqual(status, 400, doc)
                self.assertIn("error", doc)
        self.assert_nothing_created()


class Retention(BerthTest):
    conf = {"10-test.yaml": TESTDRV, "20-ev.yaml": "berth:\n  events: {retention: 100}\n"}

    def test_journal_keeps_a_bounded_tail(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "chatty"})
        for _ in range(1200):
            b.post("/v1/tenants/chatty/touch")
        last = b.get("/v1/system/info").json["events"]["last_seq"]
        self.assertGreater(last, 1200)
        kept = b.events(since=0, tenant="chatty")
        # trimmed in rounds of 1024: never more than retention + one round is kept
        self.assertLess(len(kept), 100 + 1024 + 10)
        self.assertGreater(kept[0]["seq"], 1)
        self.assertEqual(kept[-1]["seq"], max(e["seq"] for e in b.events(since=last - 5)))


class NotRunning(unittest.TestCase):
    def test_berthctl_says_berthd_is_not_running(self):
        p = subprocess.run([BERTHCTL, "--socket", "/nonexistent/berth.sock", "tenant", "ls"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot reach berthd at /nonexistent/berth.sock", p.stderr)
        self.assertIn("is berthd running?", p.stderr)


class HTTPRobustness(BerthTest):
    conf = {"10-test.yaml": TESTDRV,
            "20-http.yaml": "berth:\n  http: {header_timeout: 700ms, max_header: 2k,"
                            " max_body: 4k}\n"}

    def test_malformed_oversized_slow(self):
        b = self.b
        out = raw(b.sock, b"GARBAGE\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out)
        out = raw(b.sock, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out)
        big = b"GET /health HTTP/1.1\r\nX-Pad: " + b"a" * 4000 + b"\r\n\r\n"
        out = raw(b.sock, big)
        self.assertTrue(out.startswith(b"HTTP/1.1 431"), out)
        body = b"{" + b" " * 8000 + b"}"
        out = raw(b.sock, b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                  % len(body) + body)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out)
        chunked = b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        chunked += b"1000\r\n" + b" " * 4096 + b"\r\n1000\r\n" + b" " * 4096 + b"\r\n0\r\n\r\n"
        out = raw(b.sock, chunked)
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out)
        # slowloris: half a request line, then nothing
        t0 = time.time()
        out = raw(b.sock, b"GET /heal", timeout=5)
        self.assertTrue(out.startswith(b"HTTP/1.1 408"), out)
        self.assertLess(time.time() - t0, 3 * SLOW)
        # an idle connection that never sends is closed too, without an answer
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5 * SLOW)
        s.connect(b.sock)
        t0 = time.time()
        self.assertEqual(s.recv(100), b"")
        self.assertLess(time.time() - t0, 3 * SLOW)
        s.close()
        # and through all of that berthd kept serving
        self.assertEqual(b.get("/health").status, 200)

    def test_keep_alive_and_pipelining(self):
        b = self.b
        reqs = b"".join(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" for _ in range(20))
        reqs += b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        out = raw(b.sock, reqs)
        self.assertEqual(out.count(b"HTTP/1.1 200 OK"), 21)
        self.assertEqual(out.count(b'{"status":"ok"}'), 21)
        out = raw(b.sock, b"GET /health HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"))


class TCPListener(unittest.TestCase):
    def test_tcp_needs_the_bearer_token(self):
        port = free_port()
        b = Berthd({"10-test.yaml": TESTDRV,
                    "20-tcp.yaml": f"berth:\n  tcp: {{listen: '127.0.0.1:{port}', "
                                   "token: {file: token}}\n"})
        with open(os.path.join(b.conf, "token"), "w") as f:
            f.write("s3cret-token-value\n")
        try:
            b.start()
            import http.client

            def get(headers):
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                c.request("GET", "/v1/tenants", headers=headers)
                r = c.getresponse()
                body = r.read()
                c.close()
                return r.status, body

            self.assertEqual(get({})[0], 401)
            self.assertEqual(get({"Authorization": "Bearer wrong"})[0], 401)
            self.assertEqual(get({"Authorization": "Bearer s3cret-token-value-x"})[0], 401)
            self.assertEqual(get({"Authorization": "Basic s3cret-token-value"})[0], 401)
            status, body = get({"Authorization": "Bearer s3cret-token-value"})
            self.assertEqual(status, 200)
            self.assertIn(b"tenants", body)
            self.assertNotIn("s3cret-token-value", b.log())
            # berthctl over TCP: with the token file it works, without it says so
            url = f"http://127.0.0.1:{port}"
            p = subprocess.run([BERTHCTL, "--url", url, "--token-file",
                                os.path.join(b.conf, "token"), "tenant", "add", "tcp-user"],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("tcp-user: desired running", p.stdout)
            p = subprocess.run([BERTHCTL, "--url", url, "tenant", "ls"], capture_output=True,
                               text=True, env={k: v for k, v in os.environ.items()
                                               if k != "BERTH_TOKEN"})
            self.assertEqual(p.returncode, 1)
            self.assertIn("a valid bearer token is required (unauthorized, HTTP 401)", p.stderr)
            p = subprocess.run([BERTHCTL, "--url", url, "tenant", "ls"], capture_output=True,
                               text=True, env={**os.environ, "BERTH_TOKEN":
                                               "s3cret-token-value"})
            self.assertIn("tcp-user", p.stdout)
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()

    def test_tcp_without_token_is_refused(self):
        b = Berthd({"20-tcp.yaml": "berth:\n  tcp: {listen: '127.0.0.1:1'}\n"}, plugins=())
        try:
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 1)
            self.assertIn("requires a token", p.stderr)
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
