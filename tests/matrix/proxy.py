"""A recording proxy on a free loopback port in front of the test's homeserver. berthd is
pointed at it, so a test sees every call berth makes: counts them (logins, whoamis, writes),
knows how many were in flight at once and when each 429 went out and what was sent after it,
and can make chosen calls fail."""
import http.client
import http.server
import json
import threading
import time
import urllib.parse

HOP = {"host", "connection", "content-length", "transfer-encoding", "keep-alive", "server",
       "date"}


class Proxy:
    def __init__(self, upstream):
        u = urllib.parse.urlsplit(upstream)
        self.up = (u.hostname, u.port)
        self.calls = []         # dicts: t_in, t_out, method, path, token, status, retry_after_ms
        self.faults = {}        # (method, path) -> statuses answered instead of forwarding
        self.in_flight = self.peak = 0
        self.every, self.every_after, self.seen = 0, 0, 0    # see rate_limit()
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def serve(self):
                proxy._serve(self)
            do_GET = do_POST = do_PUT = do_DELETE = serve

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method, path, *answers):
        """the next calls of method+path are answered these, not forwarded: a status, or
        (429, retry_after_ms[, seconds the answer is held]), or (status, body) with the body
        a dict sent as JSON"""
        with self.lock:
            self.faults[(method, path)] = list(answers)

    def rate_limit(self, every, retry_after_ms):
        """every `every`-th call from now on is answered 429 with retry_after_ms"""
        with self.lock:
            self.every, self.every_after, self.seen = every, retry_after_ms, 0

    def mark(self):
        with self.lock:
            return len(self.calls)

    def since(self, mark=0, method=None, path=None):
        with self.lock:
            return [c for c in self.calls[mark:] if (method is None or c["method"] == method)
                    and (path is None or c["path"].startswith(path))]

    def early_after_429(self, mark=0, slack=0.05):
        """calls sent while a 429's retry_after_ms ran (slack either side for calls that
        crossed the 429 on the wire), as (method, path, seconds early)"""
        calls = self.since(mark)
        early = []
        for c in calls:
            if c["status"] != 429 or c["retry_after_ms"] is None:
                continue
            end = c["t_out"] + c["retry_after_ms"] / 1000
            early += [(d["method"], d["path"], round(end - d["t_in"], 3)) for d in calls
                      if c["t_out"] + slack < d["t_in"] < end - slack]
        return early

    def _forward(self, h, body):
        c = http.client.HTTPConnection(*self.up, timeout=120)
        try:
            c.request(h.command, h.path, body=body,
                      headers={k: v for k, v in h.headers.items() if k.lower() not in HOP})
            r = c.getresponse()
            return r.status, [(k, v) for k, v in r.getheaders() if k.lower() not in HOP], r.read()
        finally:
            c.close()

    def _serve(self, h):
        t_in = time.time()
        n = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(n) if n else None
        path = h.path.split("?")[0]
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            pending = self.faults.get((h.command, path))
            injected = pending.pop(0) if pending else None
            if not injected and self.every:
                self.seen += 1
                if self.seen % self.every == 0:
                    injected = (429, self.every_after)
        ctype = [("Content-Type", "application/json")]
        try:
            if isinstance(injected, tuple) and isinstance(injected[1], dict):
                headers, data = ctype, json.dumps(injected[1]).encode()
                status = injected[0]
            elif injected:
                injected = injected if isinstance(injected, tuple) else (injected,)
                status, after, hold = injected + (None, 0)[len(injected) - 1:]
                time.sleep(hold)
                answer = {"errcode": "M_UNKNOWN", "error": "injected by the test"}
                if after is not None:
                    answer.update(errcode="M_LIMIT_EXCEEDED", retry_after_ms=after)
                headers, data = ctype, json.dumps(answer).encode()
            else:
                status, headers, data = self._forward(h, body)
        except OSError as e:
            status, headers, data = 502, ctype, json.dumps({"error": str(e)}).encode()
        retry = None
        if status == 429:
            try:
                retry = json.loads(data).get("retry_after_ms")
            except ValueError:
                pass
        auth = h.headers.get("Authorization") or ""
        # out of flight before berth can have the answer, so the peak never over-counts
        with self.lock:
            self.in_flight -= 1
            self.calls.append({"t_in": t_in, "t_out": time.time(), "method": h.command,
                               "path": path, "token": auth[7:] if auth[:7] == "Bearer " else None,
                               "status": status, "retry_after_ms": retry})
        try:
            h.send_response(status)
            for k, v in headers:
                h.send_header(k, v)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
        except OSError:         # berthd stopped, its call canceled: nobody is left to tell
            h.close_connection = True
