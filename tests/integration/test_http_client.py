"""berth's own HTTP/1.1 client (core/http_conn.c, every plain http:// call of http_request)
against an upstream that misbehaves on purpose: a chunked answer split at every byte, close-
delimited answers, a pooled connection the server drops, a reset mid-body, heads that are too
big or malformed, HEAD and 204, a stalled answer, a unix socket and names to resolve. Calls
go through the echo plugin's /v1/echo/fetch (a buffered call) and the relay plugin (on_head,
on_data, pause and resume, read_body)."""
import hashlib
import http.client
import json
import os
import socket
import struct
import tempfile
import threading
import time
import unittest
import urllib.parse

from harness import SLOW, Berthd, free_port, wait_until

CHUNKED_BODY = b"every byte its own segment; " * 8
MANY = 32 * 1000 * 1000     # /many: a chunked body of 1000-byte chunks, more than socket
                            # buffers hold


def pattern(n):
    return (bytes(range(251)) * (n // 251 + 1))[:n]


class Upstream:
    """A raw HTTP/1.1 server, one thread per connection, doing what each path says. It counts
    connections and requests per path."""

    def __init__(self):
        self.tcp = socket.create_server(("127.0.0.1", 0))
        self.port = self.tcp.getsockname()[1]
        self.tmp = tempfile.mkdtemp(prefix="berth-hc-")
        self.path = os.path.join(self.tmp, "up.sock")
        self.unix = socket.socket(socket.AF_UNIX)
        self.unix.bind(self.path)
        self.unix.listen(64)
        self.listeners = [self.tcp, self.unix]
        try:
            self.v6 = socket.create_server(("::1", 0), family=socket.AF_INET6)
            self.v6port = self.v6.getsockname()[1]
            self.listeners.append(self.v6)
        except OSError:
            self.v6 = None
        self.lock = threading.Lock()
        self.conns = 0
        self.seen = {}
        self.sent = 0
        self.stop_ev = threading.Event()
        self.socks = []
        for s in self.listeners:
            threading.Thread(target=self.accept, args=(s,), daemon=True).start()

    def count(self, path):
        with self.lock:
            return self.seen.get(path, 0)

    def accept(self, ls):
        while not self.stop_ev.is_set():
            try:
                s, _ = ls.accept()
            except OSError:
                return
            with self.lock:
                self.conns += 1
                self.socks.append(s)
            threading.Thread(target=self.serve, args=(s,), daemon=True).start()

    def close(self):
        self.stop_ev.set()
        for s in self.listeners:
            s.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass
        os.unlink(self.path)
        os.rmdir(self.tmp)

    @staticmethod
    def read_request(s, buf):
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            if not d:
                return None, None, buf
            buf += d
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        hdrs = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
        body = b""
        if "content-length" in hdrs:
            n = int(hdrs["content-length"])
            while len(buf) < n:
                d = s.recv(65536)
                if not d:
                    return None, None, buf
                buf += d
            body, buf = buf[:n], buf[n:]
        elif hdrs.get("transfer-encoding") == "chunked":
            while True:
                while b"\r\n" not in buf:
                    buf += s.recv(65536)
                size, buf = buf.split(b"\r\n", 1)
                n = int(size, 16)
                while len(buf) < n + 2:
                    buf += s.recv(65536)
                body, buf = body + buf[:n], buf[n + 2:]
                if not n:
                    break
        return (method, urllib.parse.urlsplit(target).path, hdrs, body), body, buf

    def serve(self, s):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) if s.family != socket.AF_UNIX \
            else None
        buf, drop_next = b"", False
        with s:
            while True:
                try:
                    req, body, buf = self.read_request(s, buf)
                except OSError:
                    return
                if not req:
                    return
                method, path, hdrs, body = req
                with self.lock:
                    self.seen[path] = self.seen.get(path, 0) + 1
                if drop_next or path.startswith("/drop"):
                    return          # closed without a word: what a stale keep-alive does
                try:
                    go = self.answer(s, method, path, hdrs, body)
                except OSError:
                    return
                if go == "drop-next":
                    drop_next = True
                elif not go:
                    return

    def answer(self, s, method, path, hdrs, body):
        if path == "/bytes":    # a chunked answer, every byte in its own segment
            out = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(CHUNKED_BODY), 37):
                piece = CHUNKED_BODY[i:i + 37]
                out += b"%x\r\n%s\r\n" % (len(piece), piece)
            out += b"0\r\nX-Trailer: t\r\n\r\n"
            for i in range(len(out)):
                s.sendall(out[i:i + 1])
                time.sleep(0.0005)
            return True
        if path == "/close":
            s.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            return False
        if path == "/http10":
            s.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/x-old\r\n\r\nold style")
            return False
        if path == "/ka":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return True
        if path == "/ka-then-drop":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return "drop-next"
        if path == "/reset":
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False        # the close is a reset
        if path == "/bighead":
            s.sendall(b"HTTP/1.1 200 OK\r\nX-Big: " + b"h" * 100000 + b"\r\n"
                      b"Content-Length: 2\r\n\r\nok")
            return True
        if path == "/bad":
            s.sendall(b"HTTP/1.1 2x0 OK\r\nContent-Length: 2\r\n\r\nok")
            return False
        if path == "/head":     # what a GET would have: the body is not sent for a HEAD
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            return True
        if path == "/204":
            s.sendall(b"HTTP/1.1 204 No Content\r\nX-Empty: yes\r\n\r\n")
            return True
        if path == "/continue":
            s.sendall(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
            return True
        if path == "/silent":
            self.stop_ev.wait(30)
            return False
        if path == "/many":     # many small chunks at once: reads end mid-chunk, mid-pause
            data = pattern(MANY)
            s.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, MANY, 100000):
                block = b"".join(b"3e8\r\n%s\r\n" % data[j:j + 1000]
                                 for j in range(i, i + 100000, 1000))
                s.sendall(block)
                self.sent = i + 100000
            s.sendall(b"0\r\n\r\n")
            return True
        if path == "/echo":
            out = json.dumps({"method": method, "len": len(body),
                              "sha": hashlib.sha256(body).hexdigest(),
                              "host": hdrs.get("host")}).encode()
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(out), out))
            return True
        s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return True


class RelayCase(unittest.TestCase):
    """berthd with the relay test plugin in front of an upstream of class `upstream`"""
    upstream = Upstream

    def setUp(self):
        self.up = self.upstream()
        self.port = free_port()
        conf = (f"plugins:\n  echo: {{}}\n  relay:\n    listen: '127.0.0.1:{self.port}'\n"
                f"    upstream: 'http://127.0.0.1:{self.up.port}'\n    high_water: 1k\n")
        self.b = Berthd({"10-hc.yaml": conf}, plugins=("echo", "relay"))
        self.b.start()

    def tearDown(self):
        try:
            self.b.stop_checked(self)
        finally:
            self.up.close()
            self.b.cleanup()


class ClientTest(RelayCase):
    def relay(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10 * SLOW)
        self.addCleanup(c.close)
        return c

    def fetch(self, path, url=None, **q):
        q["url"] = url or f"http://127.0.0.1:{self.up.port}{path}"
        r = self.b.get("/v1/echo/fetch?" + urllib.parse.urlencode(q), timeout=20)
        self.assertEqual(r.status, 200, r.body)
        return r.json

    def test_chunked_answer_split_at_every_byte(self):
        r = self.fetch("/bytes")
        self.assertEqual((r["status"], r["error"], r["type"]), (200, 0, "text/plain"))
        self.assertEqual(r["body"], CHUNKED_BODY.decode())
        self.assertEqual(self.fetch("/ka")["body"], "ok")   # the connection was kept
        self.assertEqual(self.up.conns, 1)

    def test_close_delimited_answers(self):
        r = self.fetch("/close")
        self.assertEqual((r["status"], r["error"], r["body"]), (200, 0, "until the end"))
        r = self.fetch("/http10")
        self.assertEqual((r["status"], r["body"], r["type"]), (200, "old style", "text/x-old"))
        self.assertEqual(self.fetch("/ka")["body"], "ok")
        self.assertEqual(self.up.conns, 3, "a connection that ended its answer was reused")

    def test_a_dead_pooled_connection_is_retried_once(self):
        self.assertEqual(self.fetch("/ka-then-drop")["body"], "ok")
        # the pooled connection is dropped when the next request arrives: a fresh one answers
        r = self.fetch("/echo")
        self.assertEqual((r["status"], r["error"]), (200, 0), r)
        self.assertEqual(self.up.count("/echo"), 2)
        self.assertEqual(self.up.conns, 2)
        # a server that drops every request: one retry after the pooled try, no more
        r = self.fetch("/drop")
        self.assertEqual((r["status"], r["error"]), (0, -5), r)
        self.assertIn("without answering", r["message"])
        self.assertEqual(self.up.count("/drop"), 2)
        # on a fresh connection (none pooled now): not retried at all
        r = self.fetch("/drop")
        self.assertEqual(r["error"], -5)
        self.assertEqual(self.up.count("/drop"), 3)

    def test_a_reset_mid_body_is_an_error_and_not_retried(self):
        self.fetch("/ka")
        r = self.fetch("/reset")
        self.assertEqual((r["status"], r["error"]), (0, -5), r)
        self.assertEqual(self.up.count("/reset"), 1)
        # through the relay the client sees the stream cut short
        c = self.relay()
        c.request("GET", "/reset")
        resp = c.getresponse()
        self.assertEqual(resp.status, 200)
        with self.assertRaises(http.client.IncompleteRead):
            resp.read()
        self.assertEqual(self.up.count("/reset"), 2)

    def test_a_streamed_request_body_is_not_sent_twice(self):
        self.fetch("/ka-then-drop")     # the next request on that connection is dropped
        c = self.relay()
        c.request("POST", "/drop-after-body", body=b"b" * 20000,
                  headers={"X-Relay-Pull": "chunked"})
        self.assertEqual(c.getresponse().status, 502)
        self.assertEqual(self.up.count("/drop-after-body"), 1)
        # a sized body that the caller owns is sent again on the retry, whole
        self.fetch("/ka-then-drop")
        c = self.relay()
        c.request("POST", "/echo", body=b"z" * 30000)
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        out = json.loads(r.read())
        self.assertEqual((out["len"], out["sha"]),
                         (30000, hashlib.sha256(b"z" * 30000).hexdigest()))

    def test_head_and_204_have_no_body(self):
        r = self.fetch("/head", method="HEAD", timeout=3000)
        self.assertEqual((r["status"], r["error"], r["length"]), (200, 0, 0), r)
        r = self.fetch("/204", timeout=3000)
        self.assertEqual((r["status"], r["error"], r["length"]), (204, 0, 0), r)
        self.assertEqual(self.fetch("/ka")["body"], "ok")
        self.assertEqual(self.up.conns, 1)

    def test_1xx_heads_are_skipped(self):
        r = self.fetch("/continue")
        self.assertEqual((r["status"], r["body"]), (200, "final"))

    def test_oversized_and_malformed_heads_are_transport_errors(self):
        r = self.fetch("/bighead")
        self.assertEqual((r["status"], r["error"]), (0, -5), r)
        self.assertIn("head", r["message"])
        r = self.fetch("/bad")
        self.assertEqual((r["status"], r["error"]), (0, -5), r)
        self.assertIn("malformed", r["message"])

    def test_timeout_and_refused(self):
        t0 = time.time()
        r = self.fetch("/silent", timeout=300)
        self.assertEqual((r["status"], r["error"]), (0, -110), r)
        self.assertLess(time.time() - t0, 5 * SLOW)
        r = self.fetch(None, url=f"http://127.0.0.1:{free_port()}/")
        self.assertEqual((r["status"], r["error"]), (0, -111), r)
        r = self.fetch(None, url="http://127.0.0.1:1/", unix="/nonexistent/sock")
        self.assertEqual((r["status"], r["error"]), (0, -111), r)
        # a socket path longer than sun_path is refused, not cut short to another path
        r = self.fetch(None, url="http://x/", unix="/tmp/" + "s" * 120)
        self.assertEqual((r["status"], r["error"]), (0, -111), r)
        self.assertIn("too long", r["message"])

    def test_unix_socket_names_and_ipv6(self):
        r = self.fetch(None, url="http://upstream.test/echo", unix=self.up.path)
        self.assertEqual((r["status"], json.loads(r["body"])["host"]), (200, "upstream.test"))
        r = self.fetch(None, url=f"http://localhost:{self.up.port}/echo")
        self.assertEqual(json.loads(r["body"])["host"], f"localhost:{self.up.port}")
        if self.up.v6:
            r = self.fetch(None, url=f"http://[::1]:{self.up.v6port}/echo")
            self.assertEqual(json.loads(r["body"])["host"], f"[::1]:{self.up.v6port}")

    def test_pause_mid_read_keeps_every_byte_and_holds_the_upstream(self):
        c = self.relay()
        c.request("GET", "/many")
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        got = r.read(1000)
        # the client reads no more: the relay (high_water 1k) pauses the call, which stops
        # reading its connection; the upstream blocks well before the end
        last = [-1, time.time()]

        def held():
            if self.up.sent != last[0]:
                last[:] = [self.up.sent, time.time()]
            return time.time() - last[1] > 0.5
        wait_until(held, 10 * SLOW, interval=0.05, what="the upstream to be held back")
        self.assertLess(self.up.sent, MANY)
        while True:
            d = r.read(65536)
            if not d:
                break
            got += d
        self.assertEqual(len(got), MANY)
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(pattern(MANY)).digest())


if __name__ == "__main__":
    unittest.main()
