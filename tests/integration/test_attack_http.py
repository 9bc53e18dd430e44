"""A hostile client against berthd's HTTP server, through a plugin listener with an
authorize hook (the relay test plugin, tests/abi/relay.c: GET /_headers answers with the
headers the handler was handed)."""
import socket
import time
import unittest

from harness import SLOW
from test_http import RelayTest


def exchange(port, data, timeout=5):
    """sends data, reads until the server closes (or the timeout); returns what came back"""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout * SLOW)
    try:
        s.sendall(data)
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except socket.timeout:
                return out + b"<timeout>"
            if not b:
                return out
            out += b
    finally:
        s.close()


class Hostile(RelayTest):
    berth = "  http: {header_timeout: 1s, idle_timeout: 1s}\n"
    relay = "    token: t0k\n    max_body: 4k\n"

    def drip(self, first, piece, seconds):
        """sends first, then piece every 0.2 s; returns (seconds until the server closed or
        None if it never did, everything it sent)"""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=0.2)
        start = time.monotonic()
        out = b""
        try:
            s.sendall(first)
            while time.monotonic() - start < seconds:
                try:
                    s.sendall(piece)
                    b = s.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    return time.monotonic() - start, out
                if not b:
                    return time.monotonic() - start, out
                out += b
            return None, out
        finally:
            s.close()

    def test_empty_lines_do_not_hold_a_connection(self):
        # http-parser skips CR/LF before a request line: each used to restart the clock
        took, out = self.drip(b"", b"\r\n", 4 * SLOW)
        self.assertIsNotNone(took, "a client sending only empty lines held the connection")
        self.assertLess(took, 3 * SLOW)
        self.assertEqual(out, b"")
        # the same once idle after an answer (idle_timeout 1s)
        took, out = self.drip(b"GET /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\n\r\n", b"\r\n",
                              4 * SLOW)
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out)
        self.assertIsNotNone(took, "an idle connection sending empty lines was never closed")
        self.assertLess(took, 3 * SLOW)

    def test_slow_headers_and_body_get_408(self):
        for first, piece in ((b"GET /_headers HTTP/1.1\r\n", b"X"),
                             (b"POST /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\n"
                              b"Content-Length: 100\r\n\r\n", b"a"),
                             (b"POST /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\n"
                              b"Transfer-Encoding: chunked\r\n\r\n1;", b"ext")):
            took, out = self.drip(first, piece, 4 * SLOW)
            self.assertIsNotNone(took, first)
            self.assertTrue(out.startswith(b"HTTP/1.1 408"), out)

    def test_trailers_are_not_headers(self):
        # authorization saw the headers; what follows the body must not join them
        out = exchange(self.port, b"POST /_headers HTTP/1.1\r\nHost: x\r\nX-Relay-Token: t0k\r\n"
                       b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       b"3\r\nabc\r\n0\r\nX-Api-Key: smuggled\r\nX-Last: z\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out)
        body = out.split(b"\r\n\r\n", 1)[1]
        self.assertIn(b"X-Relay-Token: t0k\n", body)
        self.assertNotIn(b"smuggled", body)
        self.assertNotIn(b"X-Last", body)
        # trailers still count against max_header
        out = exchange(self.port, b"POST /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n0\r\n" +
                       b"X-T: " + b"t" * 20000 + b"\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 431"), out)

    def test_codings_other_than_chunked_and_two_hosts_are_refused(self):
        tok = b"X-Relay-Token: t0k\r\n"
        # the parser decodes chunked only: a gzip body would reach the handler still gzip
        for te in (b"gzip, chunked", b"chunked,chunked, x-custom ,chunked", b"deflate,chunked"):
            out = exchange(self.port, b"POST /_headers HTTP/1.1\r\n" + tok +
                           b"Transfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n")
            self.assertTrue(out.startswith(b"HTTP/1.1 501"), (te, out))
            self.assertIn(b"Connection: close", out)
        for te in (b"chunked", b"Chunked", b" chunked "):
            out = exchange(self.port, b"POST /_headers HTTP/1.1\r\n" + tok +
                           b"Transfer-Encoding: " + te + b"\r\nConnection: close\r\n\r\n"
                           b"1\r\na\r\n0\r\n\r\n")
            self.assertTrue(out.startswith(b"HTTP/1.1 200"), (te, out))
        # which site would two Host fields mean? (the caddy plugin picks a tenant by Host)
        out = exchange(self.port, b"GET /_headers HTTP/1.1\r\nHost: a.example\r\n" + tok +
                       b"Host: b.example\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out)
        self.assertIn(b"more than one Host", out)
        out = exchange(self.port, b"GET /_headers HTTP/1.1\r\nHost: a.example\r\n" + tok +
                       b"Connection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out)

    def test_pipelined_requests_behind_a_refusal_are_never_served(self):
        ok = b"GET /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\nX-N: %d\r\n\r\n"
        out = exchange(self.port, ok % 1 + b"GET /_headers HTTP/1.1\r\nX-N: 2\r\n\r\n" + ok % 3)
        self.assertEqual(out.count(b"HTTP/1.1 "), 2, out)
        first, second = out.split(b"HTTP/1.1 ")[1:]
        self.assertTrue(first.startswith(b"200") and b"X-N: 1\n" in first, out)
        self.assertTrue(second.startswith(b"401") and b"Connection: close" in second, out)
        self.assertNotIn(b"X-N: 3", out)
        # one too large in the middle: answered 413, what follows is dropped
        out = exchange(self.port, ok % 1 + b"POST /_headers HTTP/1.1\r\nX-Relay-Token: t0k\r\n"
                       b"Content-Length: 5000\r\n\r\n" + b"a" * 5000 + ok % 3)
        self.assertEqual([p[:3] for p in out.split(b"HTTP/1.1 ")[1:]], [b"200", b"413"], out)
        self.assertNotIn(b"X-N: 3", out)

    def test_framing_attacks_are_refused(self):
        tok = b"X-Relay-Token: t0k\r\n"
        for data, status in (
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Content-Length: 3\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Content-Length: 3\r\n"
                 b"Content-Length: 4\r\n\r\nabcd", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Content-Length: 1, 1\r\n\r\na", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Content-Length: -1\r\n\r\n", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok +
                 b"Content-Length: 99999999999999999999999\r\n\r\n", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"ffffffffffffffffff\r\n", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"fffffff\r\n" + b"a" * 5000, b"413"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
                 b"501"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Transfer-Encoding: chunked\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n", b"400"),
                (b"POST /_headers HTTP/1.1\r\n" + tok + b"Content-Length: 5000\r\n\r\n", b"413"),
                (b"GET /_headers%00 HTTP/1.1\r\n" + tok + b"\r\n", b"400"),
                (b"GET /_headers HTTP/1.1\r\n" + tok + b"X-A: a\x00b\r\n\r\n", b"400"),
                (b"GET /_headers HTTP/1.1\r\n" + tok + b"X-A: a\rb\r\n\r\n", b"400"),
                (b"GET /_headers HTTP/1.1\r\n" + tok + b"A: b\r\n" * 200 + b"\r\n", b"431"),
                (b"GET /_headers HTTP/1.1\r\n" + tok + b": v\r\n\r\n", b"400"),
                (b"CONNECT 127.0.0.1:1 HTTP/1.1\r\n" + tok + b"\r\n", b"400")):
            out = exchange(self.port, data)
            self.assertTrue(out.startswith(b"HTTP/1.1 " + status), (data[:80], out))
            self.assertIn(b"Connection: close", out)
        # a folded header is one header, with no CR or LF in it
        out = exchange(self.port, b"GET /_headers HTTP/1.1\r\n" + tok +
                       b"X-F: a\r\n\tx-relay-token: no\r\nConnection: close\r\n\r\n")
        body = out.split(b"\r\n\r\n", 1)[1]
        self.assertIn(b"X-F: a\tx-relay-token: no\n", body)


if __name__ == "__main__":
    unittest.main()
