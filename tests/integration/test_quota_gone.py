"""A quota client that leaves while its call waits for the upstream's head (a model thinking
for a minute) is noticed at once, through a real berthd and the fake upstream of test_quota:
the upstream call is cancelled, the slot, reservation and busy hold come back, and the call
is billed as a client gone before the head (plugins/quota/README.md). A client that only
half-closes is gone too; a request pipelined behind a waiting one is answered after it.
Each over plain HTTP and HTTPS to the upstream (berth's own client, then libcurl)."""
import json
import socket
import time
import unittest

from harness import SLOW, wait_until
from test_quota import QuotaBase, cost


class ClientGone(QuotaBase):
    concurrency = 1     # a slot still held shows as a 429 on the next call

    def tearDown(self):
        for name in ("g1", "g2", "g3", "p1"):
            self.fake.release(name)
        super().tearDown()

    def stalls(self):
        return self.fake.ctl("GET", "/_stats")["stalls"]

    def raw_call(self, key, text, max_tokens=10):
        body = json.dumps({"model": "claude-test", "max_tokens": max_tokens,
                           "messages": [{"role": "user", "content": text}]}).encode()
        return (b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"x-api-key: %s\r\nanthropic-version: 2023-06-01\r\nContent-Length: %d\r\n\r\n"
                % (key.encode(), len(body))) + body

    def waiting_call(self, key, name, handle, extra=b""):
        """a raw connection whose call the upstream holds before its head, reserved; extra
        is pipelined behind it then, while it waits"""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10 * SLOW)
        self.addCleanup(s.close)
        s.sendall(self.raw_call(key, f"[stall:{name}]"))
        wait_until(lambda: self.stalls().get(name) == "waiting", 10, what="the upstream call")
        self.assertGreater(self.usage(handle)["reserved_micro"], 0)
        self.assertEqual(self.b.get(f"/v1/tenants/{handle}").json["busy"], 1)
        s.sendall(extra)
        return s

    def assert_gone_and_free(self, name, handle, key):
        t0 = time.monotonic()
        # the brief's bound is ~1 s; the sanitizer build gets its usual factor
        wait_until(lambda: self.stalls().get(name) == "gone", 1,
                   what="the upstream to see its connection closed")
        self.assertLess(time.monotonic() - t0, 1 * SLOW)
        wait_until(lambda: self.usage(handle)["calls"] == 1, 5, what="the call settled")
        u = self.usage(handle)
        self.assertEqual(u["reserved_micro"], 0)
        self.assertEqual(self.b.get(f"/v1/tenants/{handle}").json["busy"], 0)
        self.assertEqual(self.metric("inflight"), 0)
        # billed as a client gone before the head: the input at its bound, no output
        ev = [e["payload"] for e in self.b.events(tenant=handle) if e["type"] == "quota.call"]
        self.assertEqual([e["outcome"] for e in ev], ["client_gone"])
        self.assertGreater(ev[0]["input_tokens"], 0)
        self.assertEqual(ev[0]["output_tokens"], 0)
        self.assertEqual(ev[0]["cost_micro"], cost("claude-test", ev[0]["input_tokens"], 0))
        self.assertEqual(u["spent_micro"], ev[0]["cost_micro"])
        # the one slot is free: the next call goes through
        st, _, data = self.call(key)
        self.assertEqual(st, 200, data)

    def test_a_client_that_closes_before_the_head_ends_the_call_at_once(self):
        self.add("gc")
        key = self.env("gc")["ANTHROPIC_API_KEY"]
        # a second request pipelined behind the waiting one goes with the client: it never
        # reaches the upstream
        s = self.waiting_call(key, "g1", "gc", self.raw_call(key, "[stall:g2]"))
        s.close()
        self.assert_gone_and_free("g1", "gc", key)
        self.assertNotIn("g2", self.stalls())

    def test_a_client_that_half_closes_before_the_head_is_gone_too(self):
        """EOF while the answer is pending is the client gone, as nginx (without
        proxy_ignore_client_abort) and Node's HTTP server read it: the peer cannot tell
        a half-close from a close, and a proxy must not pay for an answer nobody reads"""
        self.add("gh")
        key = self.env("gh")["ANTHROPIC_API_KEY"]
        s = self.waiting_call(key, "g3", "gh")
        s.shutdown(socket.SHUT_WR)
        self.assert_gone_and_free("g3", "gh", key)
        self.assertEqual(s.recv(4096), b"")     # closed without an answer

    def test_a_request_pipelined_behind_a_waiting_one_is_answered_after_it(self):
        self.add("gp")
        key = self.env("gp")["ANTHROPIC_API_KEY"]
        # at concurrency 1, the second dispatched before the first ended would be a 429
        s = self.waiting_call(key, "p1", "gp", self.raw_call(key, "second"))
        self.fake.release("p1")
        f = s.makefile("rb")
        texts = []
        for _ in range(2):
            status = f.readline()
            self.assertTrue(status.startswith(b"HTTP/1.1 200"), status)
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            texts.append(json.loads(f.read(length))["content"][0]["text"])
        f.close()
        self.assertEqual(len(texts), 2)     # both answered, in order, on one connection
        wait_until(lambda: self.usage("gp")["calls"] == 2, 5, what="both settled")
        self.assertEqual(self.usage("gp")["reserved_micro"], 0)


class ClientGoneTls(ClientGone):
    tls = True      # the upstream over HTTPS: the call is libcurl's, cancelled the same way


if __name__ == "__main__":
    unittest.main()
