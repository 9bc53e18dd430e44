"""The quota proxy's cap on the connections one tenant's key holds (max_connections_per_tenant),
through a real berthd and the fake upstream of test_quota: a tenant at its cap is refused a
further connection in the API's own format (429, Retry-After, the connection closed, nothing
reserved), other tenants get through, a closed connection frees its place, unauthenticated
connections fall under the listener's own limit only, and the cap changes on SIGHUP."""
import json
import signal
import socket
import subprocess
import unittest

from harness import BERTHD, SLOW, wait_until
from test_quota import QuotaBase

CAP = 3
MAX_CONNECTIONS = 12
BODY = {"model": "claude-test", "max_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}]}


class Conns(QuotaBase):
    def conf(self, tls, price=3, inject="false", cap=CAP):
        return super().conf(tls, price, inject).replace(
            "  quota:\n", f"  quota:\n    max_connections: {MAX_CONNECTIONS}\n"
            f"    max_connections_per_tenant: {cap}\n", 1)

    def setUp(self):
        super().setUp()
        self.socks = []

    def tearDown(self):
        for s in self.socks:
            s.close()
        super().tearDown()

    # ---- helpers ----
    def held(self, key):
        """a keep-alive connection that made one call, left open"""
        c = self.conn()
        self.socks.append(c)
        self.assertEqual(self.ask(c, key)[0], 200)
        return c

    def ask(self, c, key, path="/v1/messages"):
        h = {"content-type": "application/json"}
        if path == "/v1/messages":
            h.update({"x-api-key": key, "anthropic-version": "2023-06-01"})
        else:
            h["authorization"] = "Bearer " + key
        body = BODY if path == "/v1/messages" else {
            "model": "gpt-test", "max_completion_tokens": 100,
            "messages": [{"role": "user", "content": "hello"}]}
        c.request("POST", path, body=json.dumps(body), headers=h)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()

    @staticmethod
    def send(c, key, path="/v1/messages"):
        h = f"x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n" \
            if path == "/v1/messages" else f"authorization: Bearer {key}\r\n"
        body = json.dumps(BODY).encode()
        c.sendall(f"POST {path} HTTP/1.1\r\nhost: proxy\r\ncontent-type: application/json\r\n"
                  f"{h}content-length: {len(body)}\r\n\r\n".encode() + body)

    def answer(self, c):
        """one answer on a raw socket, read by its Content-Length; the socket stays open"""
        data = b""
        while b"\r\n\r\n" not in data:
            got = c.recv(65536)
            self.assertTrue(got, f"closed before an answer: {data!r}")
            data += got
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        while len(rest) < int(hdrs["content-length"]):
            rest += c.recv(65536)
        return int(lines[0].split()[1]), hdrs

    def raw(self, key, path="/v1/messages"):
        """one request on a new connection, read until the server closes it (a timeout if
        it keeps the connection open); the status, headers and body"""
        c = self.ask_raw_socket()
        self.send(c, key, path)
        data = b""
        while True:
            try:
                got = c.recv(65536)
            except socket.timeout:
                self.fail(f"the connection stayed open after: {data!r}")
            if not got:
                break
            data += got
        c.close()
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        hdrs = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
        return int(lines[0].split()[1]), hdrs, rest

    def ask_raw_socket(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        self.socks.append(s)
        return s

    def open_conns(self):
        def n():
            for ln in self.b.get("/metrics").body.splitlines():
                if ln.startswith("berth_http_connections "):
                    return int(ln.split()[1]) - 1      # less the one asking
        return n

    def refused_count(self):
        for ln in self.b.get("/metrics").body.splitlines():
            if ln.startswith('berth_quota_refused_total{reason="connections"}'):
                return int(float(ln.split()[1]))
        return 0

    def reload(self, cap):
        seq = max([e["seq"] for e in self.b.events()] or [0])
        self.b.write("10-quota.yaml", self.conf(None, cap=cap))
        self.b.signal(signal.SIGHUP)
        wait_until(lambda: "config.reloaded" in [e["type"] for e in self.b.events(since=seq)],
                   10 * SLOW, what="the reload")

    # ---- tests ----
    def test_a_tenant_at_its_cap_is_refused_and_others_get_through(self):
        self.add("hog")
        self.add("fair")
        hog = self.env("hog")["ANTHROPIC_API_KEY"]
        fair = self.env("fair")["ANTHROPIC_API_KEY"]
        held = [self.held(hog) for _ in range(CAP)]
        # one more: refused in Anthropic's format, and its connection closes after the answer
        st, h, body = self.raw(hog)
        self.assertEqual(st, 429, body)
        self.assertEqual((h.get("retry-after"), h.get("connection")), ("1", "close"))
        err = json.loads(body)
        self.assertEqual((err["type"], err["error"]["type"]), ("error", "rate_limit_error"))
        self.assertIn("connections", err["error"]["message"])
        # and in OpenAI's on its path
        st, h, body = self.raw(hog, "/v1/chat/completions")
        err = json.loads(body)["error"]
        self.assertEqual((st, err["type"], err["code"], err["param"]),
                         (429, "requests", "rate_limit_exceeded", None), body)
        # nothing reached the upstream, nothing was reserved or billed for them
        self.assertEqual(len(self.fake.log()), CAP)
        u = self.usage("hog")
        self.assertEqual((u["calls"], u["reserved_micro"]), (CAP, 0))
        self.assertEqual(self.refused_count(), 2)
        ev = [e for e in self.b.events(tenant="hog") if e["type"] == "quota.refused"]
        self.assertEqual([e["payload"] for e in ev], [{"reason": "connections", "status": 429}] * 2)
        # the connections it holds go on serving it; another tenant is not held back
        for c in held:
            self.assertEqual(self.ask(c, hog)[0], 200)
        fair_held = [self.held(fair) for _ in range(CAP)]
        self.assertEqual(self.raw(fair)[0], 429)
        # one of hog's closing frees its place
        held[0].close()
        wait_until(lambda: self.open_conns()() == 2 * CAP - 1, 10 * SLOW,
                   what="the closed connection gone")
        held[0] = self.held(hog)
        self.assertEqual(self.raw(hog)[0], 429)        # and that was the only place
        for c in held:
            self.assertEqual(self.ask(c, hog)[0], 200)
        for c in fair_held:
            self.assertEqual(self.ask(c, fair)[0], 200)

    def test_unauthenticated_connections_fall_under_the_listeners_limit_only(self):
        self.add("ua")
        key = self.env("ua")["ANTHROPIC_API_KEY"]
        held = [self.held(key) for _ in range(CAP)]
        # connections with no request yet (or a refused key) are no tenant's: accepted up to
        # the listener's max_connections, whatever the tenants hold
        idle = [self.ask_raw_socket() for _ in range(MAX_CONNECTIONS - CAP - 1)]
        wait_until(lambda: self.open_conns()() == MAX_CONNECTIONS - 1, 10 * SLOW,
                   what="the idle connections accepted")
        st, _, body = self.raw("sk-not-a-key")
        self.assertEqual(st, 401, body)
        wait_until(lambda: self.open_conns()() == MAX_CONNECTIONS - 1, 10 * SLOW,
                   what="the refused connection gone")
        idle.append(self.ask_raw_socket())
        wait_until(lambda: self.open_conns()() == MAX_CONNECTIONS, 10 * SLOW,
                   what="the listener full")
        late = self.ask_raw_socket()            # the listener is full: closed at once
        self.assertEqual(late.recv(1), b"")
        for s in idle:
            s.close()
        wait_until(lambda: self.open_conns()() == CAP, 10 * SLOW, what="the idle ones gone")
        for c in held:
            self.assertEqual(self.ask(c, key)[0], 200)
        self.assertEqual(self.raw(key)[0], 429)
        self.assertEqual(self.refused_count(), 1)

    def test_the_cap_changes_on_sighup(self):
        self.add("rl")
        key = self.env("rl")["ANTHROPIC_API_KEY"]
        held = []
        for _ in range(CAP):        # raw sockets: a refused one is not closed by the client
            held.append(self.ask_raw_socket())
            self.send(held[-1], key)
            self.assertEqual(self.answer(held[-1])[0], 200)

        reload = self.reload
        # lowered below what the tenant holds: its requests beyond the cap are refused,
        # each ending its connection's claim with the answer (though the client keeps it
        # open a while), until it holds no more than the cap
        reload(1)
        st = []
        for c in held:
            self.send(c, key)
            s, h = self.answer(c)
            st.append((s, h.get("connection")))
        self.assertEqual(st, [(429, "close"), (429, "close"), (200, None)])
        self.send(held[2], key)
        self.assertEqual(self.answer(held[2])[0], 200)
        self.assertEqual(self.raw(key)[0], 429)
        # 0: no cap
        reload(0)
        more = [self.held(key) for _ in range(CAP + 2)]
        self.assertEqual(len(more), CAP + 2)

    def test_a_connection_whose_answer_is_still_being_written_stays_claimed(self):
        """an answer the client does not read holds its connection open after the call is
        done: the tenant holds that connection until it is closed"""
        self.add("sr")
        key = self.env("sr")["ANTHROPIC_API_KEY"]
        held = [self.held(key) for _ in range(CAP - 1)]
        s = socket.socket()
        self.socks.append(s)
        # before connect: a small window and small segments keep the kernel's buffers on
        # the way small (its send buffer grows by segments in flight)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        s.settimeout(10 * SLOW)
        s.connect(("127.0.0.1", self.port))
        # 224 KiB of answer with Connection: close: below the proxy's high water (the call
        # completes), beyond what the sockets on the way hold
        body = json.dumps({"model": "claude-test", "max_tokens": 1000,
                           "messages": [{"role": "user", "content": "[big:14]"}]}).encode()
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nhost: proxy\r\nconnection: close\r\n"
                  b"content-type: application/json\r\nanthropic-version: 2023-06-01\r\n"
                  b"x-api-key: %s\r\ncontent-length: %d\r\n\r\n%s"
                  % (key.encode(), len(body), body))
        wait_until(lambda: self.usage("sr")["calls"] == CAP, 10 * SLOW, what="the call done")
        self.assertEqual(self.open_conns()(), CAP)     # its answer still on the way
        c = self.conn()
        self.socks.append(c)
        self.assertEqual(self.ask(c, key)[0], 429)
        # read: the answer ends, the connection with it, and its place is free
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        self.assertIn(b"00000013", got)
        wait_until(lambda: self.open_conns()() == CAP - 1, 10 * SLOW,
                   what="the slow connection gone")
        held.append(self.held(key))
        self.assertEqual(self.raw(key)[0], 429)

    def test_a_cap_set_on_sighup_counts_the_connections_open_without_one(self):
        """connections are counted while there is no cap (0), so one set later holds the
        tenant to it with the streams it has open already"""
        self.add("nc")
        key = self.env("nc")["ANTHROPIC_API_KEY"]
        self.reload(0)
        try:
            streams = [self.open_stream(key, "[hold:nocap] [long:3]") for _ in range(CAP)]
            self.reload(CAP)
            c = self.conn()
            self.socks.append(c)
            self.assertEqual(self.ask(c, key)[0], 429)
        finally:
            self.fake.release("nocap")
        for c, r in streams:
            self.assertIn(b"message_stop", r.read())
            c.close()

    def test_check_validates_the_cap(self):
        for bad in ("-1", "1000001", "many"):
            self.b.write("10-quota.yaml", self.conf(None, cap=bad))
            p = subprocess.run([BERTHD, "--config", self.b.conf, "--check"],
                               capture_output=True, text=True, timeout=30 * SLOW)
            self.assertEqual(p.returncode, 1, (bad, p.stderr))
            self.assertIn("max_connections_per_tenant", p.stderr)
        self.b.write("10-quota.yaml", self.conf(None, cap=0))
        p = subprocess.run([BERTHD, "--config", self.b.conf, "--check"], capture_output=True,
                           text=True, timeout=30 * SLOW)
        self.assertEqual(p.returncode, 0, p.stderr)


if __name__ == "__main__":
    unittest.main()
