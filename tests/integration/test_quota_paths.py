"""The quota proxy's remaining paths, through a real berthd and the fake upstream of
test_quota: the reservation as a true upper bound (images, dense text, what cannot be
bounded, an upstream reporting more), upstream timeouts before and after the head,
connection reuse, headers passed through, unpriced models, the usage chunk a client did not
ask for, the budget line in both system prompt shapes, and GET /usage on the proxy."""
import base64
import http.client
import json
import os
import signal
import subprocess
import unittest

from harness import wait_until
from test_quota import ANT_KEY, OAI_KEY, QuotaBase, cost

DENSE = "\u6f22\u5b57" * 1000       # 6,000 bytes of text: a token per byte at worst


def chat(content, **kw):
    return dict({"model": "gpt-test", "max_completion_tokens": 100,
                 "messages": [{"role": "user", "content": content}]}, **kw)


def image_url(url, detail=None):
    iu = {"url": url}
    if detail:
        iu["detail"] = detail
    return {"type": "image_url", "image_url": iu}


class Bound(QuotaBase):
    def spend(self, handle):
        u = self.usage(handle)
        return u["spent_micro"], u["reserved_micro"]

    def test_images_and_dense_text_never_pass_an_almost_spent_budget(self):
        self.add("img")
        key = self.env("img")["OPENAI_API_KEY"]
        body = chat([{"type": "text", "text": "[worst] " + DENSE},
                     image_url("https://example.com/a.png"),
                     image_url("https://example.com/b.png")])
        # the worst this call can cost (gpt-4o-mini's image tiles): ~41,000 micro-dollars
        worst = cost("gpt-test", 6008 + 2 * (2833 + 8 * 5667), 100)
        self.assertEqual(self.b.req("PUT", "/v1/tenants/img/budget",
                                    {"budget": 0.02}).status, 200)
        st, _, data = self.call(key, "/v1/chat/completions", body)
        self.assertEqual(st, 402, data)
        self.assertEqual(json.loads(data)["error"]["code"], "insufficient_quota")
        self.assertEqual(self.spend("img"), (0, 0))
        self.assertEqual(self.fake.log(), [])
        # with room for its bound it goes, and costs near all of it, within the budget
        self.assertEqual(self.b.req("PUT", "/v1/tenants/img/budget",
                                    {"budget": 0.05}).status, 200)
        st, _, data = self.call(key, "/v1/chat/completions", body)
        self.assertEqual(st, 200, data)
        sent = self.fake.log()[0]
        spent = self.spend("img")
        self.assertEqual(spent, (cost("gpt-test", sent["input"], sent["output"]), 0))
        self.assertLessEqual(spent[0], 50000)
        self.assertGreater(spent[0], 0.7 * worst)
        # an image's base64 bytes are not text: a large one does not cost its bytes
        self.add("pic")
        akey = self.env("pic")["ANTHROPIC_API_KEY"]
        self.assertEqual(self.b.req("PUT", "/v1/tenants/pic/budget",
                                    {"budget": 0.08}).status, 200)
        png = base64.b64encode(os.urandom(300000)).decode()
        st, _, data = self.call(akey, body={
            "model": "claude-test", "max_tokens": 100, "system": "be brief",
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": png}},
                {"type": "text", "text": "[worst] " + DENSE}]}]})
        self.assertEqual(st, 200, data)
        sent = self.fake.log()[1]
        self.assertEqual(sent["input"], 1600 + 6008 + len("be brief"))
        self.assertEqual(self.spend("pic"), (cost("claude-test", sent["input"], sent["output"]),
                                             0))
        self.assertNotIn("berth_quota_over_reservation_total{", self.b.get("/metrics").body)

    def test_what_cannot_be_bounded_is_refused_in_the_apis_format(self):
        self.add("unb")
        key = self.env("unb")["ANTHROPIC_API_KEY"]
        refused = [
            ("/v1/messages", {"model": "claude-test", "max_tokens": 10,
                              "tools": [{"type": "web_search_20250305", "name": "web_search"}],
                              "messages": [{"role": "user", "content": "search"}]}),
            ("/v1/messages", {"model": "claude-test", "max_tokens": 10, "messages": [
                {"role": "user", "content": [
                    {"type": "document", "source": {"type": "base64",
                                                    "media_type": "application/pdf",
                                                    "data": "JVBERi0xLjQK"}},
                    {"type": "text", "text": "summarize"}]}]}),
            ("/v1/responses", {"model": "gpt-test", "input": "go on",
                               "previous_response_id": "resp_123"}),
            ("/v1/responses", {"model": "gpt-test", "input": "find",
                               "tools": [{"type": "web_search"}]}),
            ("/v1/chat/completions", chat([{"type": "file", "file": {
                "file_data": "data:application/pdf;base64,JVBERi0xLjQK",
                "filename": "a.pdf"}}])),
        ]
        for path, body in refused:
            st, _, data = self.call(key, path, body)
            self.assertEqual(st, 400, (path, data))
            err = json.loads(data)
            if path == "/v1/messages":
                self.assertEqual((err["type"], err["error"]["type"]),
                                 ("error", "invalid_request_error"))
            else:
                self.assertEqual((err["error"]["type"], err["error"]["param"]),
                                 ("invalid_request_error", None))
            self.assertIn("bounded", err["error"]["message"])
        self.assertEqual(self.fake.log(), [])
        # each of chat's n choices may use its whole output limit
        self.assertEqual(self.b.req("PUT", "/v1/tenants/unb/budget",
                                    {"budget": 0.03}).status, 200)
        many = chat("[long:3]", max_completion_tokens=10000)
        st, _, data = self.call(key, "/v1/chat/completions", dict(many, n=3))
        self.assertEqual(st, 402, data)
        self.assertEqual(self.call(key, "/v1/chat/completions", many)[0], 200)
        self.assertEqual(len(self.fake.log()), 1)

    def test_usage_above_the_reservation_is_billed_warned_and_counted(self):
        self.add("over")
        key = self.env("over")["ANTHROPIC_API_KEY"]
        st, _, data = self.call(key, body={"model": "claude-test", "max_tokens": 10,
                                           "messages": [{"role": "user", "content": "[over]"}]})
        self.assertEqual(st, 200, data)
        sent = self.fake.log()[0]
        self.assertEqual(sent["input"], 10000000)
        u = self.usage("over")
        self.assertEqual((u["spent_micro"], u["reserved_micro"]),
                         (cost("claude-test", sent["input"], sent["output"]), 0))
        self.assertIn("above its reservation", self.b.log())
        m = self.b.get("/metrics").body
        self.assertIn('berth_quota_over_reservation_total{api="messages"} 1', m)
        st, _, data = self.call(key)        # the budget is spent: nothing more goes
        self.assertEqual(st, 402, data)


class Timeouts(QuotaBase):
    def conf(self, tls, price=3, inject="false"):
        return super().conf(tls, price, inject).replace(
            "  quota:\n", "  quota:\n    timeout: 1s\n", 1)

    def tearDown(self):
        for name in ("st1", "st2", "mid"):
            self.fake.release(name)
        super().tearDown()

    def test_upstream_timeouts_release_the_slot_bill_what_was_reported_and_say_so(self):
        self.add("tmo")
        key = self.env("tmo")["ANTHROPIC_API_KEY"]
        # no head at all: a 504 in each API's format, nothing reported so nothing billed
        st, _, data = self.call(key, body={"model": "claude-test", "max_tokens": 10,
                                           "messages": [{"role": "user",
                                                         "content": "[stall:st1]"}]})
        self.assertEqual((st, json.loads(data)["error"]["type"]), (504, "timeout_error"), data)
        st, _, data = self.call(key, "/v1/chat/completions", chat("[stall:st2]"))
        err = json.loads(data)["error"]
        self.assertEqual((st, err["type"], err["param"]), (504, "server_error", None), data)
        u = self.usage("tmo")
        self.assertEqual((u["calls"], u["spent_micro"], u["reserved_micro"]), (2, 0, 0))
        # mid-stream: the client gets the API's error event, then the cut
        c, r = self.open_stream(key, "[hold:mid] [long:3]")
        try:
            rest = r.read()
        except http.client.IncompleteRead as e:
            rest = e.partial
        c.close()
        events = [blk for blk in rest.decode().split("\n\n") if blk.strip()]
        last = events[-1].splitlines()
        self.assertEqual(last[0], "event: error", events[-1])
        err = json.loads(last[1][len("data: "):])
        self.assertEqual((err["type"], err["error"]["type"]), ("error", "timeout_error"))
        wait_until(lambda: self.usage("tmo")["calls"] == 3, 10, what="the stream settled")
        sent = [e for e in self.fake.log() if e.get("headers")][-1]
        u = self.usage("tmo")
        # message_start reported the input and 1 output token; "w0 " followed
        self.assertEqual((u["spent_micro"], u["reserved_micro"]),
                         (cost("claude-test", sent["input"], 4), 0))
        self.assertEqual(self.metric("inflight"), 0)
        held = [self.open_stream(key, f"[hold:mid] {i}") for i in range(5)]  # all 5 slots
        for c, _ in held:
            c.close()

    def test_connections_to_the_upstream_are_reused(self):
        self.add("reuse")
        key = self.env("reuse")["ANTHROPIC_API_KEY"]
        for i in range(50):
            st, _, data = self.call(key, stream=bool(i % 2))
            self.assertEqual(st, 200, data)
        conns = {e["conn"] for e in self.fake.log()}
        self.assertLessEqual(len(conns), 5, conns)


class Formats(QuotaBase):
    def conf(self, tls, price=3, inject="true"):
        return super().conf(tls, price, inject)

    def test_headers_pass_through_and_only_the_real_key_goes_upstream(self):
        self.add("hdr")
        key = self.env("hdr")["ANTHROPIC_API_KEY"]
        st, _, data = self.call(key, headers={"anthropic-beta": "one-2025,two-2025",
                                              "x-stainless-lang": "js"})
        self.assertEqual(st, 200, data)
        st, _, data = self.call(key, "/v1/chat/completions", chat("hi"),
                                headers={"openai-beta": "assistants=v2",
                                         "openai-organization": "org-x"})
        self.assertEqual(st, 200, data)
        ant, oai = [e["headers"] for e in self.fake.log()]
        self.assertEqual((ant["anthropic-beta"], ant["anthropic-version"],
                          ant["x-stainless-lang"]), ("one-2025,two-2025", "2023-06-01", "js"))
        self.assertEqual(ant["x-api-key"], ANT_KEY)
        self.assertEqual((oai["openai-beta"], oai["openai-organization"]),
                         ("assistants=v2", "org-x"))
        self.assertEqual(oai["authorization"], "Bearer " + OAI_KEY)
        self.assertNotIn(key, json.dumps([ant, oai]))

    def test_a_model_without_a_price_is_refused_unless_a_default_price_is_set(self):
        self.add("np")
        key = self.env("np")["ANTHROPIC_API_KEY"]
        body = {"model": "claude-unpriced", "max_tokens": 10,
                "messages": [{"role": "user", "content": "hi"}]}
        st, _, data = self.call(key, body=body)
        err = json.loads(data)
        self.assertEqual((st, err["type"], err["error"]["type"]),
                         (400, "error", "invalid_request_error"))
        self.assertIn("claude-unpriced", err["error"]["message"])
        st, _, data = self.call(key, "/v1/chat/completions", dict(chat("hi"), model="gpt-x"))
        err = json.loads(data)["error"]
        self.assertEqual((st, err["type"], err["param"], err["code"]),
                         (400, "invalid_request_error", None, None))
        self.assertEqual(self.fake.log(), [])
        conf = self.conf(None).replace("    prices:\n", "    default_price: {input: 1, "
                                       "output: 2}\n    prices:\n", 1)
        seq = max([e["seq"] for e in self.b.events()] or [0])
        self.b.write("10-quota.yaml", conf)
        self.b.signal(signal.SIGHUP)
        wait_until(lambda: "config.reloaded" in [e["type"] for e in self.b.events(since=seq)],
                   10, what="the reload")
        st, _, data = self.call(key, body=body)
        self.assertEqual(st, 200, data)
        sent = self.fake.log()[0]
        self.assertEqual(self.usage("np")["spent_micro"],
                         (sent["input"] * 1000 + sent["output"] * 2000 + 999) // 1000)

    def stream_chat(self, key, body):
        c = self.conn()
        c.request("POST", "/v1/chat/completions", body=json.dumps(body),
                  headers={"authorization": "Bearer " + key,
                           "content-type": "application/json"})
        r = c.getresponse()
        self.assertEqual(r.status, 200)
        data = r.read().decode()
        c.close()
        chunks = [ln[6:] for ln in data.split("\n") if ln.startswith("data: ")]
        self.assertEqual(chunks[-1], "[DONE]")
        return [json.loads(x) for x in chunks[:-1]]

    def test_the_usage_chunk_reaches_only_a_client_that_asked_for_it(self):
        self.add("uc")
        key = self.env("uc")["OPENAI_API_KEY"]
        chunks = self.stream_chat(key, dict(chat("[long:4]"), stream=True))
        self.assertTrue(all(ch["choices"] for ch in chunks), chunks[-1])
        self.assertEqual("".join(ch["choices"][0]["delta"].get("content") or ""
                                 for ch in chunks), "w0 w1 w2 w3 ")
        sent = self.fake.log()[0]
        self.assertTrue(sent["body"]["stream_options"]["include_usage"])
        self.assertEqual(self.usage("uc")["spent_micro"],
                         cost("gpt-test", sent["input"], sent["output"]))
        chunks = self.stream_chat(key, dict(chat("[long:2]"), stream=True,
                                            stream_options={"include_usage": True}))
        self.assertEqual(chunks[-1]["choices"], [])
        self.assertEqual(chunks[-1]["usage"]["completion_tokens"], 2)

    def test_inject_budget_in_a_string_and_a_block_system_prompt(self):
        self.add("inj")
        key = self.env("inj")["ANTHROPIC_API_KEY"]
        line = self.usage("inj")["summary"]
        self.assertEqual(line, "Budget: $5.00 remaining")
        self.assertEqual(self.call(key, body={
            "model": "claude-test", "max_tokens": 10, "system": "You are terse.",
            "messages": [{"role": "user", "content": "hi"}]})[0], 200)
        blocks = [{"type": "text", "text": "You are terse.",
                   "cache_control": {"type": "ephemeral"}}]
        line2 = self.usage("inj")["summary"]
        self.assertEqual(self.call(key, body={
            "model": "claude-test", "max_tokens": 10, "system": blocks,
            "messages": [{"role": "user", "content": "hi"}]})[0], 200)
        first, second = [e["body"]["system"] for e in self.fake.log()]
        self.assertEqual(first, "You are terse.\n\n" + line)
        self.assertEqual(second, blocks + [{"type": "text", "text": line2}])

    def test_an_hours_cache_write_is_priced_as_one(self):
        self.add("ttl")
        key = self.env("ttl")["ANTHROPIC_API_KEY"]
        system = [{"type": "text", "text": "long context",
                   "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        st, _, data = self.call(key, body={"model": "claude-test", "max_tokens": 10,
                                           "system": system,
                                           "messages": [{"role": "user", "content": "hi"}]})
        self.assertEqual(st, 200, data)
        sent = self.fake.log()[0]
        u = self.usage("ttl")
        self.assertEqual(u["models"][0]["cache_write_tokens"], 20)
        # no cache_write_1h price for claude-test: Anthropic's 2x input ($6/M), not $3.75/M
        nano = (sent["input"] * 3000 + sent["output"] * 15000 + 3 * 300 + 20 * 6000)
        self.assertEqual(u["spent_micro"], (nano + 999) // 1000)

    def test_usage_on_the_proxy_with_the_tenants_own_key(self):
        self.add("me")
        self.add("other")
        key = self.env("me")["ANTHROPIC_API_KEY"]
        self.assertEqual(self.call(key)[0], 200)
        want = self.usage("me")
        for h in ({"x-api-key": key}, {"authorization": "Bearer " + key}):
            c = self.conn()
            c.request("GET", "/usage", headers=h)
            r = c.getresponse()
            got = json.loads(r.read())
            c.close()
            self.assertEqual(r.status, 200)
            self.assertEqual((got["tenant"], got["spent_micro"], got["calls"], got["summary"]),
                             ("me", want["spent_micro"], 1, want["summary"]))
            self.assertRegex(got["summary"], r"^Budget: \$\d+\.\d\d remaining$")
        c = self.conn()
        c.request("GET", "/usage", headers={"x-api-key": "sk-berth-nope"})
        r = c.getresponse()
        self.assertEqual((r.status, json.loads(r.read())["error"]["type"]),
                         (401, "authentication_error"))
        c.close()


class FullDisk(QuotaBase):
    """A settlement the store cannot take (its disk full) is retried until it can: the call's
    slot and reserved money come back once there is room, without a restart."""
    concurrency = 1

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount a small tmpfs as the state dir")
        super().setUp()
        self.assertEqual(self.b.stop(), 0)
        os.makedirs(self.b.state, exist_ok=True)
        self.mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs",
                                       self.b.state], capture_output=True).returncode == 0
        if self.mounted:
            self.b.start()

    def tearDown(self):
        try:
            self.b.stop_checked(self)
        finally:
            if self.mounted:
                subprocess.run(["umount", "-l", self.b.state], capture_output=True)
            super().tearDown()

    def fill(self, path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while True:
                os.write(fd, b"\0" * 65536)
        except OSError:
            pass
        finally:
            os.close(fd)

    def test_a_settlement_the_disk_refused_is_retried_until_it_fits(self):
        if not self.mounted:
            self.skipTest("cannot mount a tmpfs here")
        self.add("alice")
        key = self.env("alice")["ANTHROPIC_API_KEY"]
        c, r = self.open_stream(key, "[hold:full] [long:3]")
        filler = os.path.join(self.b.state, "filler")
        self.fill(filler)
        self.fake.release("full")
        self.assertIn(b"message_stop", r.read())
        c.close()
        wait_until(lambda: "cannot settle" in self.b.log(), 10, what="the refused settlement")
        st, _, _ = self.call(key)           # its slot is still taken: concurrency 1
        self.assertNotEqual(st, 200)
        os.unlink(filler)
        u = wait_until(lambda: (lambda u: u["reserved_micro"] == 0 and u)(self.usage("alice")),
                       15, what="the settlement retried once there is room")
        self.assertEqual(u["calls"], 1)
        self.assertGreater(u["spent_micro"], 0)
        st, _, body = self.call(key)
        self.assertEqual(st, 200, body)     # the slot came back without a restart
        self.assertIn("settled after", self.b.log())


if __name__ == "__main__":
    unittest.main()
