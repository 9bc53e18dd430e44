"""A private Caddy for tests (Debian's caddy): its admin API on a unix socket in a temp dir (or,
with admin_tcp, on a free loopback TCP port, Host and Origin enforced), one HTTP server `srv0` on a free loopback port, HOME and XDG dirs of its own (no autosave or
certificate left anywhere else), and its log in a file the test reads."""
import http.client
import json
import os
import shutil
import subprocess
import tempfile

from harness import UnixHTTPConnection, die_with_parent, free_port, wait_until

CADDY = shutil.which("caddy") or "/usr/bin/caddy"


class Caddy:
    def __init__(self, tls=False, ask=None, admin_tcp=False):
        self.dir = tempfile.mkdtemp(prefix="berth-caddy-")
        self.admin = os.path.join(self.dir, "admin.sock")
        self.admin_port = free_port() if admin_tcp else None
        self.port = free_port()
        self.tls = tls
        self.ask = ask
        self.proc = None
        self.logf = None
        self.starts = 0

    def config(self):
        srv = {"listen": [f"127.0.0.1:{self.port}"], "logs": {},
               "routes": [{"@id": "foreign", "match": [{"path": ["/foreign"]}],
                           "handle": [{"handler": "static_response", "body": "foreign"}]}]}
        apps = {"http": {"servers": {"srv0": srv}}}
        if not self.tls:
            srv["automatic_https"] = {"disable": True}
        else:
            # berth's routes name hosts: no certificates for them up front, no port 80
            srv["automatic_https"] = {"disable_redirects": True, "disable_certificates": True}
            srv["tls_connection_policies"] = [{}]
            apps["tls"] = {"automation": {
                "policies": [{"issuers": [{"module": "internal"}], "on_demand": True}],
                "on_demand": {"ask": self.ask}}}
            apps["pki"] = {"certificate_authorities": {"local": {"install_trust": False}}}
        admin = {"listen": f"unix/{self.admin}", "config": {"persist": False}}
        if self.admin_port:     # Caddy then checks Host, and Origin too with enforce_origin
            admin.update(listen=f"127.0.0.1:{self.admin_port}", enforce_origin=True)
        return {"admin": admin,
                "logging": {"logs": {"default": {"level": "INFO"}}},
                "storage": {"module": "file_system", "root": os.path.join(self.dir, "data")},
                "apps": apps}

    def start(self, empty=False):
        """empty: Caddy with no config but its admin endpoint (no apps, no server)."""
        path = os.path.join(self.dir, "caddy.json")
        cfg = self.config()
        with open(path, "w") as f:
            json.dump({"admin": cfg["admin"]} if empty else cfg, f)
        if os.path.exists(self.admin):
            os.unlink(self.admin)
        env = dict(os.environ, HOME=self.dir, XDG_CONFIG_HOME=os.path.join(self.dir, "cfg"),
                   XDG_DATA_HOME=os.path.join(self.dir, "data"))
        if self.logf:
            self.logf.close()
        self.logf = open(os.path.join(self.dir, "caddy.log"), "ab")
        self.starts += 1
        self.proc = subprocess.Popen([CADDY, "run", "--config", path], stdout=self.logf,
                                     stderr=self.logf, env=env, preexec_fn=die_with_parent)
        wait_until(lambda: self.alive() and self.api("GET", "/config/")[0] == 200, 15,
                   what="caddy's admin API")
        return self

    def admin_url(self):
        """The admin address as berth's `admin:` key names it."""
        return f"http://127.0.0.1:{self.admin_port}" if self.admin_port else f"unix:{self.admin}"

    def alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"caddy exited {self.proc.returncode}:\n{self.log()}")
        return self.admin_port or os.path.exists(self.admin)

    def api(self, method, path, body=None):
        if self.admin_port:
            c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
            host = f"127.0.0.1:{self.admin_port}"
        else:
            c = UnixHTTPConnection(self.admin, timeout=10)
            host = ""       # what Caddy accepts on a unix socket
        try:
            data = json.dumps(body) if body is not None else None
            c.putrequest(method, path, skip_host=True)
            c.putheader("Host", host)
            if self.admin_port:
                c.putheader("Origin", f"http://{host}")
            if data is not None:
                c.putheader("Content-Type", "application/json")
                c.putheader("Content-Length", str(len(data)))
            c.endheaders(data.encode() if data is not None else None)
            r = c.getresponse()
            raw = r.read().decode()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw
        except OSError:
            return 0, None
        finally:
            c.close()

    def log(self):
        with open(os.path.join(self.dir, "caddy.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def loads(self):
        """Config loads through the admin API, from Caddy's log (each start loads one more)."""
        return self.log().count('"msg":"admin endpoint started"') - self.starts

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        self.kill()
        if self.logf:
            self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)
