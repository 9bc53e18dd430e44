"""A hostile tenant against the quota proxy (plugins/quota): its key is valid, everything else
it sends is chosen to get calls priced wrong, admitted past its budget, its key mixed with the
platform's, or berthd to hold what it should not. The fake upstream is
tests/quota/fake_upstream.py (Python's json: a duplicate key's last value wins, as in the
real APIs' parsers); a hostile upstream is served here.

Each Flaws, Overflow and Events test reproduces a fault this pass found (fixed since: body.c
refuses repeated keys and odd model names, meter.c saturates costs)."""
import http.client
import http.server
import json
import os
import socket
import threading
import unittest

from harness import SLOW, wait_until
from test_quota import ANT_KEY, OAI_KEY, QuotaBase, cost

MSG = [{"role": "user", "content": "hello"}]


class Tenant(QuotaBase):
    """one tenant, alice, and raw access to the proxy"""

    def setUp(self):
        super().setUp()
        self.add("alice")
        self.key = self.env("alice")["ANTHROPIC_API_KEY"]

    def post_raw(self, body, path="/v1/messages", headers=None, target=None):
        """posts body (bytes, sent as is) with alice's key; (status, parsed or raw body)"""
        h = {"x-api-key": self.key, "anthropic-version": "2023-06-01",
             "content-type": "application/json"}
        if not path.startswith("/v1/messages"):
            h = {"authorization": "Bearer " + self.key, "content-type": "application/json"}
        h.update(headers or {})
        c = self.conn()
        try:
            c.request("POST", target or path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
        finally:
            c.close()
        try:
            return r.status, json.loads(data)
        except ValueError:
            return r.status, data

    def calls(self, api="messages"):
        return [e for e in self.fake.log() if e.get("api") == api and "headers" in e]


class Forwarding(Tenant):
    def test_the_real_key_goes_only_to_the_configured_upstream(self):
        # a Host of its own, an absolute URI naming another host, its own credentials in
        # every header that could carry one, a percent-encoded path
        st, body = self.post_raw(
            json.dumps({"model": "claude-test", "max_tokens": 5, "messages": MSG}),
            target="http://evil.example:81/v1/%6Dessages",
            headers={"Host": "evil.example", "authorization": "Bearer tenant-own",
                     "proxy-authorization": "Basic eA==", "x-forwarded-host": "evil.example"})
        self.assertEqual(st, 200, body)
        (rec,) = self.calls()
        self.assertEqual(rec["headers"]["x-api-key"], ANT_KEY)
        self.assertEqual(rec["headers"]["host"], f"127.0.0.1:{self.fake.port}")
        self.assertNotIn("authorization", rec["headers"])
        # OpenAI: the platform's bearer, never the tenant's x-api-key
        st, body = self.post_raw(json.dumps({"model": "gpt-test", "messages": MSG}),
                                 "/v1/chat/completions", headers={"x-api-key": self.key})
        self.assertEqual(st, 200, body)
        (rec,) = self.calls("chat")
        self.assertEqual(rec["headers"]["authorization"], "Bearer " + OAI_KEY)
        self.assertNotIn("x-api-key", rec["headers"])
        # paths that only resemble a served one are not forwarded anywhere
        for target in ("/v1/messages/../messages", "/v1/messages/", "//v1/messages",
                       "/v1/messages%2F..%2Fmodels", "/v1/models", "*", "/usage"):
            st, body = self.post_raw(b"{}", target=target)
            self.assertEqual(st, 404, (target, body))
        self.assertEqual(len(self.fake.log()), 2)
        # a key is a key in full: its prefix, or with something appended, is not
        for bad in (self.key[:-1], self.key + "0", self.key.upper(), self.key[9:]):
            st, _ = self.post_raw(b"{}", headers={"x-api-key": bad})
            self.assertEqual(st, 401, bad)

    def test_usage_is_the_callers_own(self):
        self.add("bob")
        kb = self.env("bob")["ANTHROPIC_API_KEY"]
        self.assertEqual(self.call(self.key)[0], 200)
        for path in ("/usage?handle=alice", "/usage?tenant=alice", "/usage?alice"):
            c = self.conn()
            c.request("GET", path, headers={"authorization": "Bearer " + kb})
            r = c.getresponse()
            data = json.loads(r.read())
            c.close()
            self.assertEqual(r.status, 200, (path, data))
            self.assertEqual((data["tenant"], data["calls"]), ("bob", 0), path)
        c = self.conn()
        c.request("GET", "/v1/tenants/alice/usage", headers={"authorization": "Bearer " + kb})
        self.assertEqual(c.getresponse().status, 404)
        c.close()

    def test_odd_max_tokens_and_models_are_answered_and_leave_no_reservation(self):
        for mt in (-5, 1.5, "100", None, [], 1e300, 0):
            st, body = self.post_raw(json.dumps({"model": "claude-test", "max_tokens": mt,
                                                 "messages": MSG}))
            # 1e300 is a bound no budget pays: 402, never a wrapped, admitted cost
            self.assertIn(st, (200, 400) if mt != 1e300 else (402,), (mt, body))
        for model in ("m" * 10000, 'claude-test"', "claude-test\n", "", None, 7):
            st, body = self.post_raw(json.dumps({"model": model, "max_tokens": 5,
                                                 "messages": MSG}))
            self.assertEqual(st, 400, (model, body))
            self.assertEqual(body["type"], "error")
        for raw in (b"", b"[]", b"{", b'{"model":"claude-test"' + b" " * 100000, b"\xff\xfe"):
            st, body = self.post_raw(raw)
            self.assertEqual(st, 400, raw[:20])
        u = self.usage("alice")
        self.assertEqual(u["reserved_micro"], 0)
        self.assertTrue(self.b.healthy())


class Flaws(Tenant):
    """Faults in plugins/quota, left to its owner: see each test."""

    # plugins/quota/proxy.c shape_body(): cJSON returns the FIRST "model" of a body, the
    # upstream uses the LAST, and the body is forwarded unchanged: a tenant has the cheap
    # model priced and the expensive one served. Fix: refuse (400) a body whose top level
    # repeats a key (walk j->child comparing ->string), or forward the re-printed object
    # after deleting every duplicate.
    def test_a_repeated_model_is_refused_or_priced_as_served(self):
        raw = ('{"model":"gpt-test","model":"claude-test","max_tokens":5,'
               '"messages":[{"role":"user","content":"hello"}]}')
        st, body = self.post_raw(raw.encode())
        if st == 400:
            return
        self.assertEqual(st, 200, body)
        (rec,) = self.calls()
        served = rec["body"]["model"]
        self.assertEqual(served, "claude-test")
        self.assertEqual([m["model"] for m in self.usage("alice")["models"]], [served])

    # the same in shape_body()/int_field(): the first "max_tokens" makes the reservation's
    # output bound, the upstream honours the last, so a call is admitted with a bound of 1
    # token whatever it costs. Same fix as above.
    def test_a_repeated_max_tokens_is_refused_or_bound_as_served(self):
        raw = ('{"model":"claude-test","max_tokens":1,"max_tokens":100000,'
               '"messages":[{"role":"user","content":"hello"}]}')
        st, body = self.post_raw(raw.encode())
        self.assertEqual(st, 400, body)


class Overflow(Tenant):
    """plugins/quota/meter.c part(): tokens * thousandths of a micro-dollar is int64
    arithmetic on a client-chosen max_tokens, so max_tokens 614891469123652 (x 15000 for
    an output price of 15) overflows: undefined behaviour, which UBSan stops berthd on, and
    in a release build a negative reservation that admits the call whatever the budget
    (the upstream honours a repeated max_tokens' last value, see Flaws). Fix: refuse an
    output bound above a sane maximum in shape_body() (e.g. > 10^9) and saturate in
    part()/meter_cost() (__builtin_mul_overflow, __builtin_add_overflow -> INT64_MAX)."""

    def test_a_huge_max_tokens_cannot_overflow_the_bound(self):
        self.add("poor", "monthly")     # budget $0.01: 667 output tokens of claude-test
        key = self.env("poor")["ANTHROPIC_API_KEY"]
        for raw in ('{"model":"claude-test","max_tokens":614891469123652,"max_tokens":5,'
                    '"messages":[{"role":"user","content":"hello"}]}',
                    '{"model":"claude-test","max_tokens":614891469123652,'
                    '"messages":[{"role":"user","content":"hello"}]}'):
            self.assertIn(self.post_huge(key, raw), (400, 402), raw)
        self.assertEqual(self.usage("poor")["reserved_micro"], 0)

    def post_huge(self, key, raw):
        c = self.conn()
        try:
            c.request("POST", "/v1/messages", body=raw, headers={
                "x-api-key": key, "anthropic-version": "2023-06-01",
                "content-type": "application/json"})
            st = c.getresponse().status
        except (OSError, http.client.HTTPException):
            st = None       # berthd died under the client: let it finish exiting
            try:
                self.b.proc.wait(10 * SLOW)
            except Exception:
                pass
        finally:
            c.close()
        self.assertIsNone(self.b.proc.poll(), "berthd exited:\n" + self.b.log()[-3000:])
        return st


class Events(Tenant):
    """plugins/quota/proxy.c account() (and refuse()) print the model into the quota.call
    payload with "%s", unescaped: with default_price set (any model is priced) a tenant
    chooses the event's fields, or makes the payload invalid JSON so the core refuses the
    event and the call is never reported. Fix: build the payload with cJSON (or escape
    the model)."""

    def conf(self, tls, price=3, inject="false"):
        return super().conf(tls, price, inject).replace(
            "    prices:\n", "    default_price: {input: 1, output: 2}\n    prices:\n")

    def test_a_model_name_cannot_write_the_call_event(self):
        model = 'x","cost_micro":0,"outcome":"forged'
        st, body = self.post_raw(json.dumps({"model": model, "max_tokens": 5,
                                             "messages": MSG}))
        self.assertEqual(st, 400, body)
        self.assertEqual(body["error"]["type"], "invalid_request_error")
        st, body = self.post_raw(json.dumps({"model": "x.y-z:1", "max_tokens": 5,
                                             "messages": MSG}))
        self.assertEqual(st, 200, body)     # default-priced, of a real name's characters
        wait_until(lambda: self.usage("alice")["calls"] == 1, 10, what="the call settled")
        ev = [e for e in self.b.events(tenant="alice") if e["type"] == "quota.call"]
        self.assertEqual([(e["payload"]["model"], e["payload"]["outcome"]) for e in ev],
                         [("x.y-z:1", "ok")])
        self.assertGreater(ev[0]["payload"]["cost_micro"], 0)
        # models a default price admits share one metrics label: no series per random name
        m = self.b.get("/metrics").body
        self.assertIn('model="(default price)"', m)
        self.assertNotIn('model="x.y-z:1"', m)


class Hostile(http.server.ThreadingHTTPServer):
    """an upstream that answers what a compromised or broken API might: the last user
    message's text picks [redirect], [huge:MB], [sse-noline:MB], [sse-giant:MB]"""
    daemon_threads = True

    def __init__(self):
        self.seen = []
        super().__init__(("127.0.0.1", 0), HostileHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


class HostileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.server.seen.append((self.path, dict(self.headers)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def do_POST(self):   # noqa: F811
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        self.server.seen.append((self.path, dict(self.headers)))
        if self.path == "/steal":
            return self.do_GET()
        text = body.get("messages", [{}])[-1].get("content", "")
        mode, _, n = text.strip("[]").partition(":")
        size = int(n or 0) << 20
        if mode == "redirect":
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/steal")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif mode == "huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.blast(size, b"{" + b" " * 65535)
        elif mode in ("sse-noline", "sse-giant"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            start = {"type": "message_start", "message": {"usage": {
                "input_tokens": 11, "output_tokens": 1}}}
            self.wfile.write(b"event: message_start\ndata: " + json.dumps(start).encode() +
                             b"\n\n")
            self.wfile.write(b"event: content_block_delta\ndata: ")
            self.blast(size, b"x" * 65536)
            if mode == "sse-giant":
                end = {"type": "message_delta", "usage": {"output_tokens": 7}}
                self.wfile.write(b"\n\nevent: message_delta\ndata: " + json.dumps(end).encode() +
                                 b"\n\n")
            self.close_connection = True

    def blast(self, size, block):
        sent = 0
        while sent < size:
            piece = block[:size - sent]
            self.wfile.write(piece)
            sent += len(piece)


class HostileBase(Tenant):
    def setUp(self):
        self.up = Hostile()
        super().setUp()

    def tearDown(self):
        try:
            super().tearDown()
        finally:
            self.up.stop()

    def conf(self, tls, price=3, inject="false"):
        return super().conf(tls, price, inject).replace(
            f'anthropic: {{url: "http://127.0.0.1:{self.fake.port}"',
            f'anthropic: {{url: "http://127.0.0.1:{self.up.server_port}"')

    def stream(self, text):
        """posts a call and reads its whole answer; (status, bytes read, tail)"""
        c = self.conn()
        c.request("POST", "/v1/messages", body=json.dumps({
            "model": "claude-test", "max_tokens": 10, "messages": [
                {"role": "user", "content": text}]}),
            headers={"x-api-key": self.key, "anthropic-version": "2023-06-01",
                     "content-type": "application/json"})
        r = c.getresponse()
        n, tail = 0, b""
        try:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                n += len(b)
                tail = (tail + b)[-300:]
        except http.client.IncompleteRead as e:
            n += len(e.partial)
        c.close()
        return r.status, n, tail, dict(r.getheaders())


class HostileUpstream(HostileBase):
    def test_a_redirect_is_relayed_never_followed_with_the_real_key(self):
        st, _, _, h = self.stream("[redirect]")
        self.assertEqual(st, 307)
        self.assertTrue(h["Location"].endswith("/steal"))
        self.assertEqual([p for p, _ in self.up.seen], ["/v1/messages"])
        self.assertEqual(self.up.seen[0][1]["x-api-key"], ANT_KEY)

    def test_huge_answers_and_unterminated_events_are_relayed_and_billed(self):
        mb = 32 if SLOW == 1 else 8
        st, n, _, _ = self.stream(f"[huge:{mb}]")
        self.assertEqual((st, n), (200, mb << 20))
        # an SSE line that never ends: relayed, metered as far as it goes
        st, n, _, _ = self.stream(f"[sse-noline:{mb}]")
        self.assertEqual(st, 200)
        self.assertGreater(n, mb << 20)
        # one giant event, then the usage: the usage still counts
        st, n, tail, _ = self.stream(f"[sse-giant:{mb // 4}]")
        self.assertEqual(st, 200)
        self.assertIn(b'"output_tokens": 7', tail)
        wait_until(lambda: self.usage("alice")["calls"] == 3 and
                   self.usage("alice")["reserved_micro"] == 0, 10, what="the calls settled")
        u = self.usage("alice")
        (m,) = u["models"]
        self.assertEqual(m["calls"], 3)
        self.assertGreaterEqual(m["output_tokens"], 7)     # the giant event's usage counted
        self.assertTrue(self.b.healthy())


class Limits(Tenant):
    def conf(self, tls, price=3, inject="false"):
        return super().conf(tls, price, inject).replace(
            f"    listen: 127.0.0.1:{self.port}\n",
            f"    listen: 127.0.0.1:{self.port}\n    max_connections: 3\n    max_body: 64k\n")

    def answer(self, head):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        try:
            s.sendall(head)         # no body byte: the answer must not wait for one
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    return out
                out += b
        finally:
            s.close()

    def test_refusals_come_before_the_body_and_connections_are_capped(self):
        big = b"Content-Length: 60000\r\ncontent-type: application/json\r\n"
        out = self.answer(b"POST /v1/messages HTTP/1.1\r\nx-api-key: sk-berth-nope\r\n" + big +
                          b"\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 401"), out)
        out = self.answer(b"POST /v1/models HTTP/1.1\r\nx-api-key: " + self.key.encode() +
                          b"\r\n" + big + b"\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 404"), out)
        out = self.answer(b"POST /v1/messages HTTP/1.1\r\nx-api-key: " + self.key.encode() +
                          b"\r\nContent-Length: 70000\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 413"), out)
        # three idle connections fill the cap: a fourth is closed unanswered (refused ones
        # count until they are gone: berthd lingers to let them read the answer)
        wait_until(lambda: self.metric_conns() == 1, 5 * SLOW, what="the refused to be gone")
        held = [socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
                for _ in range(3)]
        try:
            # accepted: berthd counts them (and the /metrics request asking)
            wait_until(lambda: self.metric_conns() == 4, 5 * SLOW, what="3 connections held")
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
            try:
                s.sendall(b"GET /usage HTTP/1.1\r\nx-api-key: " + self.key.encode() + b"\r\n\r\n")
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
            finally:
                s.close()
        finally:
            for h in held:
                h.close()
        wait_until(lambda: self.get_usage_status() == 200, 5 * SLOW, what="a free slot")

    def metric_conns(self):
        for ln in self.b.get("/metrics").body.splitlines():
            if ln.startswith("berth_http_connections "):
                return float(ln.split()[1])
        return 0

    def get_usage_status(self):
        c = self.conn()
        try:
            c.request("GET", "/usage", headers={"x-api-key": self.key})
            return c.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            c.close()


if __name__ == "__main__":
    unittest.main()
