"""A tenant for the caddy tests: an HTTP server on 127.0.0.1:<argv[1]> that starts after
0.4 s (so a wake takes a while) and answers
  GET /...    "hi from <BERTH_HANDLE> <path>"
  GET /ws     a websocket-style upgrade (101), then one byte every 0.5 s for 6 s."""
import http.server
import os
import sys
import time


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.end_headers()
            self.wfile.flush()
            for _ in range(12):
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.5)
            self.close_connection = True
            return
        body = f"hi from {os.environ.get('BERTH_HANDLE', '?')} {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


time.sleep(0.4)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
