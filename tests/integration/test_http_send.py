"""Answers with output pending, through a real berthd and the relay test plugin: a client that
never reads is closed after berth.http.send_timeout (and the streaming handler hears of it),
while a slow client that keeps reading gets all of a long answer, idle_timeout or not."""
import http.client
import os
import subprocess
import http.server
import socket
import threading
import time
import unittest

from harness import BERTHD, SLOW, Berthd, free_port, wait_until
from test_http import Upstream, UpstreamHandler, RelayTest

MID = 2 * 1000 * 1000
LONG = 10 * 1000 * 1000     # more than the kernel's send buffer takes (tcp_wmem: 4 MB)


class SendHandler(UpstreamHandler):
    """/mid, /long: 2 and 10 MB answers sent at once; /endless: a body that never ends, whose end (the
    relay canceling the call) the test sees."""

    def do_GET(self):
        srv = self.server
        if self.path in ("/mid", "/long"):
            n = MID if self.path == "/mid" else LONG
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            self.wfile.write(b"m" * n)
        elif self.path == "/endless":
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            try:
                while not srv.release.is_set():
                    self.wfile.write(b"e" * 65536)
            except OSError:
                pass
            srv.endless_over.set()
            self.close_connection = True
        else:
            super().do_GET()


class SendUpstream(Upstream):
    def __init__(self):     # Upstream's, with this handler
        http.server.ThreadingHTTPServer.__init__(self, ("127.0.0.1", 0), SendHandler)
        self.sent = 0
        self.release = threading.Event()
        self.endless_over = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()


def tiny_client(port):
    """a connection whose receive window is as small as the kernel allows"""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5 * SLOW)
    s.connect(("127.0.0.1", port))
    return s


class SendTimeout(RelayTest):
    berth = "  http: {send_timeout: 1s, idle_timeout: 1s}\n"
    relay = "    high_water: 16m\n"     # /mid is queued whole: its request is over at once

    def setUp(self):
        self.up = SendUpstream()
        self.port = free_port()
        self.b = Berthd(self.conf(), plugins=("relay",))
        self.drain_late_ok = False
        self.b.start()

    def open_connections(self):
        for line in self.b.get("/metrics").body.splitlines():
            if line.startswith("berth_http_connections "):
                return int(line.split()[1])

    def fetch_mid(self):
        c = self.conn()
        c.request("GET", "/mid")
        r = c.getresponse()
        body = r.read()
        c.close()
        return r.status, len(body)

    def test_a_client_reading_nothing_is_closed(self):
        idle = self.open_connections()
        s = tiny_client(self.port)
        t0 = time.monotonic()
        # a streamed answer the relay pauses by back-pressure, and it is never read
        s.sendall(b"GET /endless HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        wait_until(lambda: self.open_connections() == idle + 1, 5, what="the connection")
        # others are served meanwhile
        self.assertEqual(self.fetch_mid(), (200, MID))
        wait_until(lambda: self.open_connections() == idle, 6,
                   what="the unread connection to be closed")
        took = time.monotonic() - t0
        self.assertGreater(took, 0.9)       # not before send_timeout
        # the relay heard of the close (on_close) and let its upstream call go
        self.assertTrue(self.up.endless_over.wait(5 * SLOW), "the upstream call was kept")
        self.assertIn("read nothing of its answer", self.b.log())
        s.close()
        self.assertEqual(self.fetch_mid(), (200, MID))

    def test_a_slow_reader_gets_a_long_answer_past_idle_timeout(self):
        c = self.conn()
        c.sock = tiny_client(self.port)
        c.request("GET", "/long")       # keep-alive: idle_timeout runs once it is written
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        got, t0 = 0, time.monotonic()
        try:
            while True:
                b = r.read(32768)
                if not b:
                    break
                got += len(b)
                time.sleep(0.01)    # about 3 MB/s: what berthd still queues outlasts idle
        except http.client.IncompleteRead as e:
            got += len(e.partial)
        took = time.monotonic() - t0
        self.assertEqual(got, LONG, f"cut after {took:.1f} s")
        self.assertGreater(took, 2)         # the answer really outlasted idle_timeout
        c.close()


class SendTimeoutConfig(unittest.TestCase):
    def test_send_timeout_is_validated(self):
        b = Berthd({"10-http.yaml": "berth:\n  http: {send_timeout: 10ms}\n"}, plugins=())
        try:
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 1)
            self.assertIn(os.path.join(b.conf, "10-http.yaml") + ":2:24: 'send_timeout' is out "
                          "of range (100ms..86400000ms)", p.stderr)
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
