"""berth's own HTTP client (core/http_conn.c) against a hostile upstream, through a real
berthd and the echo plugin's /v1/echo/fetch: answers that must not leave a connection in the
pool out of step with its peer, URLs a plugin could use to inject a header, and descriptors
left open by error paths."""
import http.client
import json
import os
import socket
import time
import unittest
import urllib.parse

from harness import SLOW, free_port, wait_until
from test_http_client import RelayCase, Upstream


class Hostile(Upstream):
    def answer(self, s, method, path, hdrs, body):
        if path == "/304":      # a conditional GET's answer: the length is the entity's
            s.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n")
            return True
        if path == "/upgrade":  # the connection speaks another protocol from here on
            s.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\n"
                      b"Connection: upgrade\r\n\r\n")
            return True
        if path == "/cut-while-held":   # more than socket buffers hold, then a hang-up
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for _ in range(4000):
                s.sendall(b"3e8\r\n" + b"c" * 1000 + b"\r\n")
            return False
        if path == "/head-then-silent":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            self.stop_ev.wait(30)
            return False
        if path == "/headers":
            out = json.dumps(hdrs).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(out), out))
            return True
        return super().answer(s, method, path, hdrs, body)


class HostileTest(RelayCase):
    upstream = Hostile

    def relay(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        self.addCleanup(c.close)
        c.request("GET", path)
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        return c, r

    def fds(self):
        return len(os.listdir(f"/proc/{self.b.proc.pid}/fd"))

    def fetch(self, path, url=None, **q):
        q["url"] = url or f"http://127.0.0.1:{self.up.port}{path}"
        r = self.b.get("/v1/echo/fetch?" + urllib.parse.urlencode(q), timeout=20)
        return r

    def ok(self, path, **q):
        r = self.fetch(path, **q)
        self.assertEqual(r.status, 200, r.body)
        return r.json

    def test_304_with_a_length_has_no_body(self):
        t0 = time.time()
        r = self.ok("/304", timeout=3000)
        self.assertEqual((r["status"], r["error"], r["length"]), (304, 0, 0), r)
        self.assertLess(time.time() - t0, 2 * SLOW)
        self.assertEqual(self.ok("/ka")["body"], "ok")
        self.assertEqual(self.up.conns, 1)

    def test_an_upgraded_connection_is_not_pooled(self):
        r = self.ok("/upgrade", timeout=3000)
        self.assertEqual((r["status"], r["error"]), (101, 0), r)
        r = self.ok("/ka", timeout=3000)
        self.assertEqual((r["status"], r["body"]), (200, "ok"), r)
        self.assertEqual(self.up.conns, 2, "a connection after 101 went back to the pool")

    def test_crlf_in_a_url_is_refused(self):
        p = self.up.port
        for url in (f"http://127.0.0.1:{p}/headers\r\nX-Evil: 1",
                    f"http://127.0.0.1:{p}\r\nX-Evil: 1/headers",
                    f"http://127.0.0.1:{p}/headers?a=\nX-Evil:1",
                    f"http://127.0.0.1:{p}/head ers",
                    f"http://127.0.0.1:{p}/headers\t",
                    f"http://127.0.0.1:{p}/head\fers",
                    f"http://127.0.0.1:{p}/headers#\r\nX-Evil: 1"):
            r = self.fetch(None, url=url)
            if r.status == 200:
                self.assertNotEqual(r.json["status"], 200, (url, r.json))
        self.assertEqual(self.up.seen, {}, "a URL with a blank or CR/LF went out")
        self.assertEqual(self.ok("/ka")["body"], "ok")

    def test_error_paths_leave_no_descriptor_open(self):
        fds = self.fds

        # a listener whose backlog is full: a connect to it never completes
        full = socket.socket()
        self.addCleanup(full.close)
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        for _ in range(4):
            f = socket.socket()
            self.addCleanup(f.close)
            f.setblocking(False)
            f.connect_ex(full.getsockname())

        def errors():
            for path in ("/reset", "/bighead", "/bad", "/drop", "/close"):
                self.ok(path)
            self.assertEqual(self.ok("/silent", timeout=100)["error"], -110)
            r = self.ok(None, url="http://127.0.0.1:%d/" % full.getsockname()[1], timeout=100)
            self.assertEqual(r["error"], -110, r)
            self.ok(None, url=f"http://127.0.0.1:{free_port()}/")
            self.ok(None, url="http://x/", unix="/nonexistent/sock")
            self.ok(None, url="http://x/", unix="/tmp/" + "s" * 120)
            self.ok(None, url="http://no-such-host.invalid/", timeout=3000)
        errors()        # what is opened once and kept (the resolver's) is not a leak
        before = fds()
        for _ in range(3):
            errors()
        # the control API's own connections close asynchronously
        wait_until(lambda: fds() <= before, 5, what=f"berthd's descriptors back to {before}")

    def test_an_upstream_that_hangs_up_while_held_is_a_cut_stream(self):
        c, r = self.relay("/cut-while-held")
        got = r.read(1000)      # then the relay holds the upstream (high_water 1k)
        wait_until(lambda: self.up.count("/cut-while-held") == 1, 5, what="the upstream")
        with self.assertRaises(http.client.IncompleteRead):
            while True:
                d = r.read(65536)
                if not d:
                    break
                got += d
        self.assertLess(len(got), 4000 * 1000)

    def test_a_client_leaving_cancels_held_and_waiting_calls(self):
        self.ok("/ka")
        before = self.fds()
        for _ in range(3):
            c, r = self.relay("/many")
            r.read(1000)        # the call is paused now, its connection not read
            c.close()
            # a streamed answer's client that hangs up is gone at once (a client waiting
            # for the head may have only half-closed: that is the server's rule)
            c, r = self.relay("/head-then-silent")
            c.close()           # the call waits for the body: canceled
        wait_until(lambda: self.fds() <= before, 5, what=f"berthd's descriptors back to {before}")
        self.assertEqual(self.ok("/ka")["body"], "ok")

    def test_a_body_length_past_int64_is_refused_not_smuggled(self):
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        for declared in (2**64 - 2, 2**63, 2**63 + 5):
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
            self.addCleanup(c.close)
            c.request("POST", "/echo", body=smuggled, headers={"X-Relay-Pull": str(declared)})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 502, declared)
        self.assertEqual(self.ok("/ka")["body"], "ok")
        self.assertEqual(self.up.count("/smuggled"), 0, "the body went out as a request")
        self.assertEqual(self.up.count("/echo"), 0)

    def test_a_cancel_inside_a_callback_ends_the_call_cleanly(self):
        self.ok("/ka")
        before = self.fds()
        for _ in range(2):
            for where, path, hdrs in (("head", "/ka", {}), ("data", "/many", {}),
                                      ("pull", "/echo", {"X-Relay-Pull": "chunked"})):
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
                self.addCleanup(c.close)
                c.request("POST" if where == "pull" else "GET", path, body=b"p" * 10000,
                          headers={"X-Relay-Cancel": where, **hdrs})
                r = c.getresponse()
                if where == "data":
                    self.assertEqual(r.status, 200)
                    with self.assertRaises(http.client.IncompleteRead):
                        r.read()
                else:
                    self.assertEqual(r.status, 502, where)
                    self.assertIn(b"canceled inside", r.read())
                c.close()
        wait_until(lambda: self.fds() <= before, 5, what=f"berthd's descriptors back to {before}")
        self.assertEqual(self.ok("/ka")["body"], "ok")

    def test_a_cancel_inside_the_done_callback_is_a_no_op(self):
        """a plugin that cancels its call from inside that call's own callback frees nothing
        twice: the answer is relayed, berthd goes on (ASan: no double free)"""
        for path in ("/ka", "/many"):
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
            self.addCleanup(c.close)
            c.request("GET", path, headers={"X-Relay-Cancel": "cb"})
            r = c.getresponse()
            r.read()
            self.assertEqual(r.status, 200, path)
            c.close()
        self.assertEqual(self.ok("/ka")["body"], "ok")


if __name__ == "__main__":
    unittest.main()
