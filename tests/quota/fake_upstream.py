"""A fake LLM upstream for the quota tests, following the published Anthropic Messages and
OpenAI Chat Completions / Responses references: the same bodies, SSE event sequences (with
pings), usage fields and error bodies.

    python3 fake_upstream.py --port N [--tls-cert C --tls-key K] --anthropic-key A --openai-key O

Prints "ready <port>" once it listens. The last user message's text steers an answer:
  [429] / [529] / [500]   an error in the API's format (429 with retry-after: 7)
  [hold:NAME]             a stream that stops after its first text delta until
                          POST /_release?name=NAME (pinging every 50 ms meanwhile)
  [park:NAME]             the same, pinging every 2 s (for many streams held open)
  [slow]                  a stream with 50 ms between events
  [die]                   a stream whose connection closes after its first text delta
  [tool]                  a tool_use answer (Anthropic) / tool call (OpenAI)
  [long:N]                N text deltas
  [big:N]                 N text deltas of 16 KiB each (the log counts those sent so far)
  [stall:NAME]            no answer at all (not even its head) until /_release?name=NAME;
                          a client that closes meanwhile ends it (GET /_stats: "stalls")
  [worst]                 input usage at the most the references allow for the body: a
                          token per byte of text, and per image Anthropic's ~1,600 or
                          gpt-4o-mini's 2,833 + 8 tiles of 5,667 (2,833 at detail low)
  [over]                  input usage of 10,000,000 tokens, more than any bound
Usage is deterministic: input = 10 + bytes of the messages // 10, output = number of deltas,
cache_read = 3 when the body says "cache_control", an hour's cache write of 20 (Anthropic) when
it says "ttl": "1h". GET /_log lists every request with the
usage reported, whether its client went away and the id of the connection it came on;
GET /_stats counts open streams and says of each stall whether it is "waiting", "released"
or "gone" (its client closed the connection before any answer).
"""
import argparse
import json
import os
import re
import select
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = []
LOCK = threading.Lock()
HOLDS = {}
STALLS = {}
OPEN = [0]
CONNS = [0]


def worst_input(body, anthropic):
    """the documented maximum input of a body: text bytes, and each image at its cap"""
    total = 0

    def walk(n):
        nonlocal total
        if isinstance(n, dict):
            t = n.get("type")
            if t == "image":
                total += 1600
                return
            if t in ("image_url", "input_image"):
                iu = n.get("image_url")
                detail = (iu.get("detail") if isinstance(iu, dict) else n.get("detail"))
                total += 2833 if detail == "low" else 2833 + 8 * 5667
                return
            for k, v in n.items():
                if k in ("text", "content", "system", "instructions", "input") and \
                        isinstance(v, str):
                    total += len(v.encode())
                else:
                    walk(v)
        elif isinstance(n, list):
            for v in n:
                walk(v)
    walk({k: body.get(k) for k in ("messages", "system", "input", "instructions")})
    return total + (346 if anthropic and body.get("tools") else 0)


def words_for(text):
    m = re.search(r"\[big:(\d+)\]", text)
    if m:
        return [f"{i:08d}" + "x" * 16376 for i in range(int(m.group(1)))]
    m = re.search(r"\[long:(\d+)\]", text)
    n = int(m.group(1)) if m else 3
    return [f"w{i} " for i in range(n)]


def last_text(body):
    msgs = body.get("messages") or []
    if isinstance(body.get("input"), str):
        return body["input"]
    if isinstance(body.get("input"), list):
        msgs = body["input"]
    for m in reversed(msgs):
        c = m.get("content")
        if isinstance(c, str):
            return c
        if isinstance(c, list):
            return " ".join(p.get("text", "") for p in c if isinstance(p, dict))
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"
    disable_nagle_algorithm = True     # as real servers: each event leaves at once

    def log_message(self, *a):
        pass

    def setup(self):
        super().setup()
        with LOCK:
            CONNS[0] += 1
            self.conn_id = CONNS[0]

    # ---- plumbing ----
    def send_json(self, status, obj, extra=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", "req_fake")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def start_sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def event(self, name, obj):
        head = f"event: {name}\n" if name else ""
        self.chunk(f"{head}data: {json.dumps(obj)}\n\n".encode())

    def end_sse(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def record(self, **kw):
        kw["conn"] = self.conn_id
        with LOCK:
            LOG.append(kw)
            return kw

    # ---- control ----
    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                self.send_json(200, LOG)
        elif self.path == "/_stats":
            with LOCK:
                self.send_json(200, {"open": OPEN[0], "holds": sorted(HOLDS),
                                     "stalls": dict(STALLS)})
        else:
            self.send_json(404, {"error": "not found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n)
        if self.path.startswith("/_release"):
            name = self.path.split("name=", 1)[1]
            ev = HOLDS.setdefault(name, threading.Event())
            ev.set()
            return self.send_json(200, {"released": name})
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        if self.path.startswith("/v1/messages"):
            return self.anthropic(body, raw)
        if self.path in ("/v1/chat/completions", "/v1/responses"):
            return self.openai(body, raw)
        self.send_json(404, {"error": {"message": "unknown path", "type": "invalid_request_error"}})

    # ---- Anthropic ----
    def anthropic(self, body, raw):
        if self.headers.get("x-api-key") != ARGS.anthropic_key:
            return self.send_json(401, {"type": "error", "error": {
                "type": "authentication_error", "message": "invalid x-api-key"}})
        if not self.headers.get("anthropic-version"):
            return self.send_json(400, {"type": "error", "error": {
                "type": "invalid_request_error", "message": "anthropic-version header is required"}})
        text = last_text(body)
        if self.stall(text):
            return
        usage_in = self.usage_in(text, body, True,
                                 10 + len(json.dumps(body.get("messages", []))) // 10)
        if self.path == "/v1/messages/count_tokens":
            self.record(api="count_tokens", input=usage_in, output=0, headers=dict(self.headers))
            return self.send_json(200, {"input_tokens": usage_in})
        for code, kind in (("[429]", "rate_limit_error"), ("[529]", "overloaded_error"),
                           ("[500]", "api_error")):
            if code in text:
                self.record(api="messages", status=int(code[1:4]), input=0, output=0)
                return self.send_json(int(code[1:4]), {"type": "error", "error": {
                    "type": kind, "message": "fake " + kind}},
                    [("retry-after", "7")] if code == "[429]" else [])
        cache_read = 3 if b"cache_control" in raw else 0
        hour = 20 if re.search(rb'"ttl": ?"1h"', raw) else 0     # an hour's cache write
        words = words_for(text)
        tool = "[tool]" in text
        model = body.get("model")
        rec = self.record(api="messages", stream=bool(body.get("stream")), input=usage_in,
                          output=len(words), cache_read=cache_read, gone=False,
                          headers={k.lower(): v for k, v in self.headers.items()}, body=body)
        usage = {"input_tokens": usage_in, "cache_creation_input_tokens": hour,
                 "cache_read_input_tokens": cache_read, "output_tokens": len(words),
                 "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                    "ephemeral_1h_input_tokens": hour}}
        if tool:
            content = [{"type": "tool_use", "id": "toolu_fake1", "name": "get_weather",
                        "input": {"location": "Paris"}}]
        else:
            content = [{"type": "text", "text": "".join(words)}]
        msg = {"id": "msg_fake", "type": "message", "role": "assistant", "model": model,
               "content": content, "stop_reason": "tool_use" if tool else "end_turn",
               "stop_sequence": None, "usage": usage}
        if not body.get("stream"):
            return self.send_json(200, msg)
        OPEN[0] += 1
        try:
            self.anthropic_stream(msg, words, text, rec, tool)
        except OSError:
            rec["gone"] = True
        finally:
            OPEN[0] -= 1

    def stall(self, text):
        """waits for the release; True (nothing to answer) when the client closed first"""
        m = re.search(r"\[stall:([\w-]+)\]", text)
        if not m:
            return False
        name, ev = m.group(1), HOLDS.setdefault(m.group(1), threading.Event())
        STALLS[name] = "waiting"
        deadline = time.monotonic() + 30
        while not ev.wait(0.02) and time.monotonic() < deadline:
            if self.client_closed():
                STALLS[name] = "gone"
                self.close_connection = True
                return True
        STALLS[name] = "released"
        return False

    def client_closed(self):
        """the client's end of the connection is closed: EOF (or a reset) waits to be read.
        Peeked on the raw socket (TLS has no peek); over TLS anything readable is the close
        alert, as the proxy sends nothing more on a connection waiting for its answer."""
        if not select.select([self.connection], [], [], 0)[0]:
            return False
        raw = socket.socket(fileno=os.dup(self.connection.fileno()))
        try:
            return raw.recv(1, socket.MSG_PEEK) == b"" or isinstance(self.connection, ssl.SSLSocket)
        except OSError:
            return True
        finally:
            raw.close()

    @staticmethod
    def usage_in(text, body, anthropic, plain):
        if "[over]" in text:
            return 10000000
        return worst_input(body, anthropic) if "[worst]" in text else plain

    def pause(self, text, i):
        m = re.search(r"\[(hold|park):([\w-]+)\]", text)
        if m and i == 0:
            ev = HOLDS.setdefault(m.group(2), threading.Event())
            while not ev.wait(0.05 if m.group(1) == "hold" else 2):
                # a client gone is seen as a failed write of a ping
                self.event("ping", {"type": "ping"})
        if "[slow]" in text:
            time.sleep(0.05)
        if "[halfdie]" in text and i == 0:
            # the upstream fails inside an event: half of it sent, then the connection closes
            self.chunk(b'event: content_block_delta\ndata: {"type": "content_bl')
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError("died on purpose")
        if "[die]" in text and i == 0:
            # the upstream fails mid-body: no terminating chunk, the connection just closes
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            raise ConnectionAbortedError("died on purpose")

    def anthropic_stream(self, msg, words, text, rec, tool):
        self.start_sse()
        start = dict(msg, content=[], stop_reason=None,
                     usage=dict(msg["usage"], output_tokens=1))
        self.event("message_start", {"type": "message_start", "message": start})
        if tool:
            self.event("content_block_start", {"type": "content_block_start", "index": 0,
                       "content_block": {"type": "tool_use", "id": "toolu_fake1",
                                         "name": "get_weather", "input": {}}})
            self.event("ping", {"type": "ping"})
            for part in ('{"location":', ' "Paris"}'):
                self.event("content_block_delta", {"type": "content_block_delta", "index": 0,
                           "delta": {"type": "input_json_delta", "partial_json": part}})
        else:
            self.event("content_block_start", {"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}})
            self.event("ping", {"type": "ping"})
            for i, w in enumerate(words):
                self.event("content_block_delta", {"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": w}})
                rec["sent"] = i + 1
                self.pause(text, i)
        self.event("content_block_stop", {"type": "content_block_stop", "index": 0})
        self.event("message_delta", {"type": "message_delta", "delta": {
            "stop_reason": msg["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": len(words)}})
        self.event("message_stop", {"type": "message_stop"})
        self.end_sse()

    # ---- OpenAI ----
    def openai(self, body, raw):
        if self.headers.get("authorization") != "Bearer " + ARGS.openai_key:
            return self.send_json(401, {"error": {"message": "Incorrect API key provided",
                                                  "type": "invalid_request_error", "param": None,
                                                  "code": "invalid_api_key"}})
        text = last_text(body)
        for code in ("[429]", "[500]"):
            if code in text:
                return self.send_json(int(code[1:4]), {"error": {
                    "message": "fake error", "type": "requests" if code == "[429]" else
                    "server_error", "param": None, "code": "rate_limit_exceeded"
                    if code == "[429]" else None}},
                    [("retry-after", "7")] if code == "[429]" else [])
        chat = self.path == "/v1/chat/completions"
        if self.stall(text):
            return
        usage_in = self.usage_in(text, body, False, 10 + len(json.dumps(
            body.get("messages") or body.get("input") or "")) // 10)
        cached = 3 if b"cache" in raw else 0
        words = words_for(text)
        rec = self.record(api="chat" if chat else "responses", stream=bool(body.get("stream")),
                          input=usage_in, output=len(words), cache_read=cached, gone=False,
                          headers={k.lower(): v for k, v in self.headers.items()}, body=body)
        if chat:
            usage = {"prompt_tokens": usage_in, "completion_tokens": len(words),
                     "total_tokens": usage_in + len(words),
                     "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                   "accepted_prediction_tokens": 0,
                                                   "rejected_prediction_tokens": 0}}
        else:
            usage = {"input_tokens": usage_in, "input_tokens_details": {"cached_tokens": cached},
                     "output_tokens": len(words),
                     "output_tokens_details": {"reasoning_tokens": 0},
                     "total_tokens": usage_in + len(words)}
        OPEN[0] += 1
        try:
            if chat:
                self.chat(body, words, text, usage)
            else:
                self.responses_api(body, words, text, usage)
        except OSError:
            rec["gone"] = True
        finally:
            OPEN[0] -= 1

    def chat(self, body, words, text, usage):
        base = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000,
                "model": body.get("model"), "system_fingerprint": "fp_fake"}
        tool = "[tool]" in text
        if not body.get("stream"):
            msg = {"role": "assistant", "content": None if tool else "".join(words),
                   "refusal": None}
            if tool:
                msg["tool_calls"] = [{"id": "call_fake1", "type": "function", "function": {
                    "name": "get_weather", "arguments": "{\"location\": \"Paris\"}"}}]
            return self.send_json(200, dict(base, choices=[{
                "index": 0, "message": msg, "logprobs": None,
                "finish_reason": "tool_calls" if tool else "stop"}], usage=usage))
        want_usage = (body.get("stream_options") or {}).get("include_usage")
        base = dict(base, object="chat.completion.chunk")
        if want_usage:
            base["usage"] = None
        self.start_sse()
        self.event(None, dict(base, choices=[{"index": 0, "delta": {
            "role": "assistant", "content": "", "refusal": None}, "logprobs": None,
            "finish_reason": None}]))
        for i, w in enumerate(words):
            self.event(None, dict(base, choices=[{"index": 0, "delta": {"content": w},
                                                  "logprobs": None, "finish_reason": None}]))
            self.pause(text, i)
        self.event(None, dict(base, choices=[{"index": 0, "delta": {}, "logprobs": None,
                                              "finish_reason": "stop"}]))
        if want_usage:
            self.event(None, dict(base, choices=[], usage=usage))
        self.chunk(b"data: [DONE]\n\n")
        self.end_sse()

    def responses_api(self, body, words, text, usage):
        out_text = "".join(words)
        item = {"id": "msg_fake", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": out_text, "annotations": []}]}
        resp = {"id": "resp_fake", "object": "response", "created_at": 1700000000,
                "status": "completed", "error": None, "incomplete_details": None,
                "instructions": None, "max_output_tokens": body.get("max_output_tokens"),
                "model": body.get("model"), "output": [item], "parallel_tool_calls": True,
                "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
                "store": True, "temperature": 1.0, "text": {"format": {"type": "text"}},
                "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled",
                "usage": usage, "user": None, "metadata": {}}
        if not body.get("stream"):
            return self.send_json(200, resp)
        self.start_sse()
        seq = [0]

        def ev(kind, **kw):
            self.event(kind, dict({"type": kind, "sequence_number": seq[0]}, **kw))
            seq[0] += 1
        pending = dict(resp, status="in_progress", output=[], usage=None)
        ev("response.created", response=pending)
        ev("response.in_progress", response=pending)
        ev("response.output_item.added", output_index=0,
           item=dict(item, status="in_progress", content=[]))
        ev("response.content_part.added", item_id="msg_fake", output_index=0, content_index=0,
           part={"type": "output_text", "text": "", "annotations": []})
        for i, w in enumerate(words):
            ev("response.output_text.delta", item_id="msg_fake", output_index=0,
               content_index=0, delta=w)
            self.pause(text, i)
        ev("response.output_text.done", item_id="msg_fake", output_index=0, content_index=0,
           text=out_text)
        ev("response.content_part.done", item_id="msg_fake", output_index=0, content_index=0,
           part=item["content"][0])
        ev("response.output_item.done", output_index=0, item=item)
        ev("response.completed", response=resp)
        self.end_sse()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--anthropic-key", required=True)
    p.add_argument("--openai-key", required=True)
    ARGS = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    if ARGS.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("ready", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
