"""plugins/caddy with a real Caddy (Debian's) and exec tenants: routes by the admin API, the
waking path, delete, Caddy restarts, batching and the on-demand TLS `ask`."""
import http.client
import os
import socket
import ssl
import threading
import time
import unittest

from caddyd import Caddy
from exec_util import marked
from harness import SLOW, Berthd, free_port, wait_until

CONF = """plugins:
  exec: {ports: %(lo)d-%(hi)d}
  lifecycle: {check_interval: 200ms}
  caddy:
    admin: %(admin)s
    server: srv0
    domain: example.test
    listen: 127.0.0.1:%(listen)d
    batch: %(batch)s
    check: 300ms
    waking: {mode: %(mode)s, hold: 20s}
    extra_hosts: [www.example.test]
    %(extra)s
templates:
  default:
    driver: exec
    command: [python3, "%(tenant)s", "{port}"]
    port: 8080
    lifecycle:
      idle_timeout: %(idle)s
      health: {http: /, interval: 100ms, timeout: 1s, retries: 100}
    caddy: {}
  partners:
    driver: exec
    command: [python3, "%(tenant)s", "{port}"]
    port: 8080
    lifecycle: {idle_timeout: 0, health: {http: /, interval: 100ms, timeout: 1s, retries: 100}}
    caddy: {domain: partners.test}
  unrouted:
    driver: exec
    command: [python3, "%(tenant)s", "{port}"]
    port: 8080
"""

TENANT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "caddy", "tenant.py")


def get(port, host, path="/", follow=True, timeout=30, polling=False):
    """GET through Caddy with a Host header; follows berth's 307s like a browser.

    polling: for a loop waiting while berth switches routes, whose every switch is a config
    load in Caddy, which can reset a connection arriving at that instant (README, Limits):
    a reset is status 0, "not yet", rather than an error."""
    for _ in range(10):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout * SLOW)
        try:
            c.request("GET", path, headers={"Host": host})
            r = c.getresponse()
            body = r.read().decode(errors="replace")
        except ConnectionResetError:
            if not polling:
                raise
            return 0, ""
        finally:
            c.close()
        if follow and r.status == 307:
            path = r.getheader("Location")
            continue
        return r.status, body
    raise AssertionError("redirect loop")


class CaddyTest(unittest.TestCase):
    mode = "hold"
    batch = "100ms"
    idle = "0"
    extra = ""

    tls = False
    admin_tcp = False

    def setUp(self):
        self.listen = free_port()
        self.caddy = Caddy(tls=self.tls, ask=f"http://127.0.0.1:{self.listen}/ask",
                           admin_tcp=self.admin_tcp).start()
        base = 28000 + (os.getpid() % 100) * 40    # above test_idle's ports
        conf = CONF % {"lo": base, "hi": base + 39, "admin": self.caddy.admin_url(),
                       "listen": self.listen, "mode": self.mode, "batch": self.batch,
                       "idle": self.idle, "tenant": os.path.abspath(TENANT),
                       "extra": self.extra.replace("{free}", str(free_port()))
                                          .replace("{caddy}", str(self.caddy.port))}
        self.b = Berthd({"10.yaml": conf}, plugins=())
        for m in ("exec", "lifecycle", "caddy"):
            self.b.install_plugin_from_build(m)
        self.b.start()

    def tearDown(self):
        b = self.b
        try:
            for t in b.get("/v1/tenants").json["tenants"]:
                b.req("DELETE", f"/v1/tenants/{t['handle']}")
            wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 30, what="cleanup")
            rc = b.stop()
            log = b.log()
            self.assertEqual(rc, 0, log[-3000:])
        finally:
            b.cleanup()
            self.caddy.stop()

    def held(self):
        """berth's routes as Caddy holds them: {handle: first upstream dial}"""
        st, obj = self.caddy.api("GET", "/id/berth")
        if st != 200:
            return None
        out = {}
        for r in obj["handle"][0]["routes"]:
            ups = r["handle"][0]["upstreams"]
            out[r["@id"][len("berth-"):]] = ups[0]["dial"] if len(ups) > 1 else "berth"
        return out

    def foreign_intact(self):
        st, routes = self.caddy.api("GET", "/config/apps/http/servers/srv0/routes")
        return [r for r in routes if r.get("@id") == "foreign"] and \
            get(self.caddy.port, "x.other.test", "/foreign") == (200, "foreign")


class Routes(CaddyTest):
    def test_host_reaches_tenant_and_delete_removes_route(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "alice"})
        t = b.wait_tenant("alice", "ready")
        wait_until(lambda: (self.held() or {}).get("alice") == t["address"], 10,
                   what="Caddy to route alice to her address")
        self.assertEqual(get(port, "alice.example.test", "/x?y=1"), (200, "hi from alice /x?y=1"))
        self.assertEqual(b.tenant("alice")["plugins"]["caddy"],
                         {"host": "alice.example.test", "route": "present",
                          "upstream": t["address"]})
        self.assertIn(t["address"], b.ctl("tenant", "show", "alice").stdout)
        out = b.ctl("routes").stdout
        self.assertRegex(out, r"alice +alice\.example\.test +%s +%s +ok" %
                         (t["address"], t["address"]))
        # somebody changes berth's route in Caddy: `berthctl routes` shows the drift
        self.assertEqual(self.caddy.api("PATCH", "/id/berth-alice/handle/0/upstreams/0/dial",
                                        "127.0.0.1:9")[0], 200)
        p = b.ctl("routes", check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertRegex(p.stdout, r"alice +alice\.example\.test +%s +127\.0\.0\.1:9 +differs" %
                         t["address"])
        # unknown handles get berth's 404 page, the foreign route is untouched
        st, body = get(port, "nobody.example.test")
        self.assertEqual(st, 404)
        self.assertIn("No such site", body)
        self.assertTrue(self.foreign_intact())
        # delete: the route is gone before the tenant is
        self.assertEqual(b.req("DELETE", "/v1/tenants/alice").status, 202)
        wait_until(lambda: b.tenant("alice") is None, 15, what="alice to be deleted")
        self.assertNotIn("alice", self.held())
        self.assertEqual(get(port, "alice.example.test")[0], 404)
        dep = b.events(type="tenant.deprovisioned", tenant="alice")
        gone = b.events(type="tenant.deleted", tenant="alice")
        self.assertEqual((len(dep), len(gone)), (1, 1))
        self.assertLess(dep[0]["seq"], gone[0]["seq"])      # the route went first
        self.assertTrue(self.foreign_intact())

    def test_template_domain_and_templates_without_a_block(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "pat", "template": "partners"})
        b.post("/v1/tenants", {"handle": "nor", "template": "unrouted", "desired": "asleep"})
        addr = b.wait_tenant("pat", "ready")["address"]
        wait_until(lambda: (self.held() or {}).get("pat") == addr, 10, what="pat's route")
        self.assertEqual(get(port, "pat.partners.test"), (200, "hi from pat /"))
        self.assertEqual(get(port, "pat.example.test")[0], 404)
        # unknown handles of the template's own domain get berth's 404 page too
        st, body = get(port, "nobody.partners.test")
        self.assertEqual(st, 404)
        self.assertIn("No such site", body)
        # and keep it once the domain's last tenant is gone
        b.req("DELETE", "/v1/tenants/pat")
        wait_until(lambda: b.tenant("pat") is None, 15, what="pat to be deleted")
        st, body = get(port, "pat.partners.test")
        self.assertEqual(st, 404)
        self.assertIn("No such site", body)
        self.assertNotIn("nor", self.held())
        self.assertNotIn("caddy", b.tenant("nor").get("plugins", {}))

    def test_delete_while_caddy_is_down_waits_for_the_route_to_go(self):
        b, c = self.b, self.caddy
        b.post("/v1/tenants", {"handle": "dora", "desired": "asleep"})
        wait_until(lambda: "dora" in (self.held() or {}), 10, what="dora's route")
        c.kill()
        self.assertEqual(b.req("DELETE", "/v1/tenants/dora").status, 202)
        failed = wait_until(lambda: b.events(type="tenant.deprovision_failed", tenant="dora"),
                            10, what="the deprovision to fail while Caddy is down")
        self.assertIn("caddy", failed[0]["payload"]["reason"])
        self.assertIsNotNone(b.tenant("dora"))          # not gone while Caddy may route it
        c.start()
        wait_until(lambda: b.tenant("dora") is None, 20, what="dora to be deleted")
        self.assertNotIn("dora", self.held())
        self.assertEqual(get(c.port, "dora.example.test")[0], 404)

    def test_caddy_restart_gets_routes_back(self):
        b, c = self.b, self.caddy
        for h in ("ann", "ben"):
            b.post("/v1/tenants", {"handle": h})
        addr = {h: b.wait_tenant(h, "ready")["address"] for h in ("ann", "ben")}
        wait_until(lambda: all((self.held() or {}).get(h) == a for h, a in addr.items()), 10,
                   what="routes to the tenants")
        # restarted empty with nothing changed meanwhile: the periodic check notices
        c.kill()
        c.start()
        t0 = time.time()
        wait_until(lambda: set((self.held() or {})) >= {"ann", "ben"}, 10,
                   what="routes back after the restart")
        self.assertLess(time.time() - t0, 3 * SLOW)
        # a deleted tenant's route never comes back, whatever Caddy restarts
        b.req("DELETE", "/v1/tenants/ben")
        wait_until(lambda: b.tenant("ben") is None, 15, what="ben to be deleted")
        # a change while Caddy is down is queued, not lost
        c.kill()
        p = b.ctl("routes", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("Caddy unreachable", p.stdout)
        b.post("/v1/tenants", {"handle": "cid"})
        failed = wait_until(lambda: b.events(type="tenant.provision_failed", tenant="cid"), 10,
                            what="cid's route to fail while Caddy is down")
        self.assertIn("caddy", failed[0]["payload"]["reason"])
        c.start()
        t0 = time.time()
        wait_until(lambda: set((self.held() or {})) >= {"ann", "cid"}, 10,
                   what="routes back after the restart")
        self.assertLess(time.time() - t0, 5 * SLOW)
        self.assertNotIn("ben", self.held())
        self.assertEqual(get(c.port, "ben.example.test")[0], 404)
        b.wait_tenant("cid", "ready", timeout=20)
        wait_until(lambda: get(c.port, "cid.example.test", polling=True)[0] == 200, 10, what="cid served")
        self.assertEqual(get(c.port, "ann.example.test"), (200, "hi from ann /"))
        self.assertTrue(self.foreign_intact())

    def test_caddy_restarted_empty_without_server_listen_says_why(self):
        b, c = self.b, self.caddy
        b.post("/v1/tenants", {"handle": "eve", "desired": "asleep"})
        wait_until(lambda: "eve" in (self.held() or {}), 10, what="eve's route")
        c.kill()
        c.start(empty=True)
        wait_until(lambda: "set server_listen" in b.ctl("routes", check=False).stdout, 10,
                   what="berthctl routes to say the server is missing")
        self.assertIsNone(c.api("GET", "/config/apps")[1])     # berth created nothing
        c.kill()
        c.start()               # Caddy's own config again: the route is back, eve goes
        wait_until(lambda: "eve" in (self.held() or {}), 10, what="eve's route again")

    def test_ask_approves_tenant_hosts_only(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "alice", "desired": "asleep"})
        wait_until(lambda: "alice" in (self.held() or {}), 10, what="alice's route")

        def ask(d):
            c = http.client.HTTPConnection("127.0.0.1", self.listen, timeout=10)
            try:
                c.request("GET", f"/ask?domain={d}")
                return c.getresponse().status
            finally:
                c.close()
        self.assertEqual(ask("alice.example.test"), 200)
        self.assertEqual(ask("ALICE.example.test"), 200)
        self.assertEqual(ask("www.example.test"), 200)
        self.assertEqual(ask("evil.example.test"), 404)
        self.assertEqual(ask("alice.example.test.evil.test"), 404)
        self.assertEqual(ask(""), 404)


class Waking(CaddyTest):
    idle = "1500ms"

    def test_sleeping_tenant_wakes_through_caddy_without_502(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "alice"})
        b.wait_tenant("alice", "ready")
        wait_until(lambda: get(port, "alice.example.test", polling=True)[0] == 200, 10, what="alice served")
        b.wait_tenant("alice", "stopped", timeout=10)     # idle sleep
        wait_until(lambda: (self.held() or {}).get("alice") == "berth", 10,
                   what="the route to point at berth")
        statuses = []
        stop = threading.Event()

        def hammer():                   # other requests while she wakes: none may be a 502
            while not stop.is_set():
                statuses.append(get(port, "alice.example.test", "/h", timeout=30)[0])
        th = threading.Thread(target=hammer)
        t0 = time.time()
        th.start()
        try:
            st, body = get(port, "alice.example.test", "/again?q=1")
        finally:
            stop.set()
            th.join()
        self.assertEqual((st, body), (200, "hi from alice /again?q=1"))
        self.assertGreater(time.time() - t0, 0.3)         # she did start
        self.assertNotIn(502, statuses)
        self.assertTrue(set(statuses) <= {200}, statuses)
        self.assertEqual(len(b.events(type="container.started", tenant="alice")), 2)


class Fallback(CaddyTest):
    def test_a_ready_tenant_that_dies_gets_no_502(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "victim"})
        addr = b.wait_tenant("victim", "ready")["address"]
        wait_until(lambda: (self.held() or {}).get("victim") == addr, 10, what="the route")
        self.assertEqual(get(port, "victim.example.test")[0], 200)
        pids = marked("BERTH_HANDLE=victim", "python3")
        self.assertTrue(pids)
        for p in pids:
            os.kill(p, 9)       # Caddy still holds the route to the dead port
        statuses = []
        served = threading.Event()
        deadline = time.time() + 20 * SLOW

        def hammer():       # requests in flight while berth switches the route: none a 502
            while not served.is_set() and time.time() < deadline:
                statuses.append(get(port, "victim.example.test", "/after")[0])
                if statuses[-1] == 200:
                    served.set()
        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        self.assertTrue(served.is_set(), statuses)
        self.assertNotIn(502, statuses)
        self.assertGreaterEqual(len(b.events(type="container.started", tenant="victim")), 2)


class Activity(CaddyTest):
    idle = "1500ms"
    extra = "access_log: 127.0.0.1:{free}\n    activity_interval: 200ms"

    def test_requests_through_caddy_keep_a_tenant_awake(self):
        b, port = self.b, self.caddy.port
        wait_until(self.has_logger, 10, what="berth's access logger in Caddy")
        b.post("/v1/tenants", {"handle": "busy"})
        b.post("/v1/tenants", {"handle": "lazy"})
        b.wait_tenant("busy", "ready")
        b.wait_tenant("lazy", "ready")
        wait_until(lambda: get(port, "busy.example.test", polling=True)[0] == 200, 10, what="busy served")
        t0 = time.time()
        while time.time() - t0 < 3.5:                   # more than twice idle_timeout
            self.assertEqual(get(port, "busy.example.test")[0], 200)
            time.sleep(0.2)
        self.assertEqual(b.tenant("busy")["desired"], "running")
        self.assertEqual(b.tenant("lazy")["desired"], "asleep")
        act = b.events(type="tenant.activity", tenant="busy")
        self.assertTrue(act and all(e["payload"]["source"] == "caddy" for e in act), act)
        self.assertLess(len(act), 30)                   # batched: not one per request
        b.wait_tenant("busy", "stopped", timeout=10)    # once the requests stop

    def test_an_open_websocket_keeps_a_tenant_awake(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "ws"})
        addr = b.wait_tenant("ws", "ready")["address"]
        wait_until(lambda: (self.held() or {}).get("ws") == addr, 10, what="ws's route")
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: ws.example.test\r\nConnection: Upgrade\r\n"
                      b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                      b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
            got = b""
            while True:             # 12 bytes over 6 s: four times idle_timeout
                chunk = s.recv(256)
                if not chunk:
                    break
                got += chunk
        finally:
            s.close()
        self.assertIn(b" 101 ", got.split(b"\r\n", 1)[0])
        self.assertEqual(got.split(b"\r\n\r\n", 1)[1], b"." * 12)   # never cut
        self.assertEqual(b.events(type="tenant.sleep_requested", tenant="ws"), [])
        b.wait_tenant("ws", "stopped", timeout=10)      # idle once it closed

    def test_caddy_restart_gets_the_logger_back(self):
        c = self.caddy
        wait_until(self.has_logger, 10, what="berth's access logger in Caddy")
        c.kill()
        c.start()
        wait_until(self.has_logger, 10, what="the logger after a restart")

    def test_reload_replaces_the_instance_and_keeps_routes(self):
        b, c = self.b, self.caddy
        # partners: no idle sleep, so no route changes while the test waits
        addr = {}
        for h in ("keep", "kept", "kelp"):
            b.post("/v1/tenants", {"handle": h, "template": "partners"})
        for h in ("keep", "kept", "kelp"):
            addr[h] = b.wait_tenant(h, "ready")["address"]
        wait_until(lambda: all((self.held() or {}).get(h) == a for h, a in addr.items()), 10,
                   what="the routes")
        wait_until(self.has_logger, 10, what="berth's access logger in Caddy")
        before, loads = len(b.events(type="plugin.loaded")), c.loads()
        with open(os.path.join(b.conf, "10.yaml")) as f:
            conf = f.read()
        b.write("10.yaml", conf.replace("check: 300ms", "check: 400ms"))
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: len(b.events(type="plugin.loaded")) > before, 10,
                   what="the new caddy instance")
        # the new instance serves the route, the listener and the access log
        self.assertEqual(get(c.port, "keep.partners.test"), (200, "hi from keep /"))
        self.assertEqual(self.held().get("keep"), addr["keep"])
        since = b.events()[-1]["seq"]
        wait_until(lambda: get(c.port, "keep.partners.test")[0] == 200 and
                   b.events(since=since, type="tenant.activity", tenant="keep"), 10,
                   what="activity after the reload")
        self.assertEqual(get(c.port, "nobody.example.test")[0], 404)
        self.assertEqual(get(c.port, "nobody.partners.test")[0], 404)
        # the new instance found Caddy holding its routes (in the same order) and logger as
        # they were: no config load, each of which can cost a connection (README, Limits)
        self.assertEqual(c.loads(), loads)
        self.assertIn("nothing to write", b.log())

    def has_logger(self):
        st, obj = self.caddy.api("GET", "/config/logging/logs/berth")
        return st == 200 and obj and obj["writer"]["output"] == "net"


class EmptyCaddy(CaddyTest):
    extra = 'server_listen: ["127.0.0.1:{caddy}"]'

    def test_caddy_restarted_with_no_config_gets_a_server_and_routes(self):
        b, c = self.b, self.caddy
        b.post("/v1/tenants", {"handle": "ann"})
        addr = b.wait_tenant("ann", "ready")["address"]
        wait_until(lambda: (self.held() or {}).get("ann") == addr, 10, what="ann's route")
        # the server exists: berth inserted its route and left the server as it was
        self.assertTrue(self.foreign_intact())
        c.kill()
        c.start(empty=True)
        t0 = time.time()
        wait_until(lambda: (self.held() or {}).get("ann") == addr, 10,
                   what="ann's route in a Caddy started with no config")
        self.assertLess(time.time() - t0, 3 * SLOW)
        st, srv = c.api("GET", "/config/apps/http/servers/srv0")
        self.assertEqual(srv["listen"], [f"127.0.0.1:{c.port}"])
        self.assertEqual([r.get("@id") for r in srv["routes"]], ["berth"])
        wait_until(lambda: get(c.port, "ann.example.test", polling=True)[0] == 200, 10, what="ann served")
        self.assertEqual(get(c.port, "ann.example.test", "/y"), (200, "hi from ann /y"))
        self.assertEqual(get(c.port, "nobody.example.test")[0], 404)
        self.assertEqual(b.ctl("routes").returncode, 0)


class OnDemandTLS(CaddyTest):
    tls = True

    def handshake(self, name):
        """The certificate Caddy presents for SNI name (its internal CA, not verified), or
        None when the handshake fails."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", self.caddy.port), timeout=10) as s:
                with ctx.wrap_socket(s, server_hostname=name) as t:
                    return t.getpeercert(binary_form=True)
        except (ssl.SSLError, OSError):
            return None

    def test_certificates_only_for_tenants(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "alice", "desired": "asleep"})
        wait_until(lambda: "alice" in (self.held() or {}), 10, what="alice's route")
        self.assertIsNotNone(self.handshake("alice.example.test"))
        self.assertIsNone(self.handshake("evil.example.test"))
        log = self.caddy.log()
        self.assertIn("alice.example.test", log)
        self.assertNotIn('"identifiers":["evil.example.test"]', log)
        self.assertFalse(os.path.exists(os.path.join(
            self.caddy.dir, "data", "certificates", "local", "evil.example.test")))
        self.assertTrue(os.path.isdir(os.path.join(
            self.caddy.dir, "data", "certificates", "local", "alice.example.test")))


class WakingPage(CaddyTest):
    mode = "page"

    def test_page_mode_shows_a_refreshing_page(self):
        b, port = self.b, self.caddy.port
        b.post("/v1/tenants", {"handle": "bob", "desired": "asleep"})
        wait_until(lambda: "bob" in (self.held() or {}), 10, what="bob's route")
        st, body = get(port, "bob.example.test", follow=False)
        self.assertEqual(st, 503)
        self.assertIn('http-equiv="refresh"', body)
        self.assertIn("bob", body)
        seen = []

        def served():
            seen.append(get(port, "bob.example.test", follow=False, polling=True)[0])
            return seen[-1] == 200
        wait_until(served, 20, interval=0.2, what="bob to answer after the page")
        self.assertNotIn(502, seen)


class Batching(CaddyTest):
    batch = "500ms"

    def test_200_tenants_cost_a_handful_of_config_loads(self):
        b, c = self.b, self.caddy
        wait_until(lambda: self.held() is not None, 10, what="berth's container")

        def create(hs, pace=0.0):
            for h in hs:
                self.assertEqual(b.post("/v1/tenants", {"handle": h, "desired": "asleep"})
                                 .status, 201)
                time.sleep(pace)                # spreads creations over time, on purpose
        # 40 over about two seconds: one load per batch (500ms), not one per tenant
        paced = [f"p{i:03d}" for i in range(40)]
        before, t0 = c.loads(), time.time()
        create(paced, pace=0.05)
        wait_until(lambda: len(self.held() or {}) == 41, 20, what="40 routes")
        loads, took = c.loads() - before, time.time() - t0
        self.assertLessEqual(loads, took / 0.5 + 2, f"{loads} config loads in {took:.2f}s")
        # 200 at once, from 4 clients
        burst = [f"t{i:03d}" for i in range(200)]
        before = c.loads()
        ths = [threading.Thread(target=create, args=(burst[i::4],)) for i in range(4)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        wait_until(lambda: len(self.held() or {}) == 241, 20, what="200 more routes")
        loads = c.loads() - before
        self.assertGreaterEqual(loads, 1)
        self.assertLessEqual(loads, 5, f"{loads} config loads for 200 tenants at once")
        # every removal goes too: nothing is left but the catch-all
        for h in burst + paced:
            b.req("DELETE", f"/v1/tenants/{h}")
        wait_until(lambda: list(self.held() or {"x": 1}) == ["any"], 30, what="routes removed")


if __name__ == "__main__":
    unittest.main()
