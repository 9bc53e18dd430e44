"""An internet client against the caddy plugin's listener, through a real Caddy where Caddy
passes it on (tests/integration/test_caddy.py's setup): the waking path's redirect and the
on-demand TLS `ask`.

The open-redirect test reproduces a fault this pass found (fixed since in waking.c)."""
import http.client
import unittest
import urllib.parse

from harness import SLOW, wait_until
from test_caddy import CaddyTest


class Ask(CaddyTest):
    def ask(self, query):
        c = http.client.HTTPConnection("127.0.0.1", self.listen, timeout=10 * SLOW)
        try:
            c.request("GET", "/ask" + query, headers={"Host": f"127.0.0.1:{self.listen}"})
            return c.getresponse().status
        finally:
            c.close()

    def test_ask_approves_exact_tenant_hosts_only(self):
        self.b.post("/v1/tenants", {"handle": "alice", "desired": "asleep"})
        wait_until(lambda: "alice" in (self.held() or {}), 10 * SLOW, what="alice's route")
        q = urllib.parse.quote
        for domain, want in (("alice.example.test", 200), ("ALICE.Example.TEST", 200),
                             ("www.example.test", 200), ("WWW.EXAMPLE.TEST", 200),
                             ("alice.example.test.", 404), ("a.alice.example.test", 404),
                             ("alice.example.test.evil.test", 404), ("alice", 404),
                             ("bob.example.test", 404), ("xn--lice-qoa.example.test", 404),
                             ("ålice.example.test", 404), ("alice.example.tes", 404),
                             ("alice%2eexample.test", 404), ("*.example.test", 404),
                             ("example.test", 404), ("alice.example.test" + "x" * 300, 404),
                             ("x" * 10000, 404), ("", 404)):
            self.assertEqual(self.ask("?domain=" + q(domain, safe="")), want, domain)
        for query in ("", "?domain", "?domain=%00alice.example.test",
                      "?domain=alice.example.test%00.evil.test",
                      "?domain=evil.test&domain=alice.example.test", "?DOMAIN=alice.example.test"):
            self.assertEqual(self.ask(query), 404, query)
        # a deleted tenant's host is refused at once
        self.b.req("DELETE", "/v1/tenants/alice")
        wait_until(lambda: self.ask("?domain=alice.example.test") == 404, 10 * SLOW,
                   what="the deleted tenant's host to be refused")


class OpenRedirect(CaddyTest):
    """plugins/caddy/waking.c location_of(): the 307 that sends a woken tenant's client back
    to its URL takes Caddy's X-Berth-Uri when it starts with one '/', and otherwise falls back
    to the request's path unchecked. A link to https://alice.example.test//evil.test/ makes
    Caddy pass X-Berth-Uri "//evil.test/" (refused) and the path "//evil.test/" (used):
    Location: //evil.test/ sends the browser to another site. ("/\\evil.test" would pass the
    check too and browsers read it the same way; Caddy 2.6 happens to escape it.) Fix: accept
    a location only if it starts with '/' and its second character is neither '/' nor '\\'
    (both for the header and the path), and answer "/" otherwise."""

    def location(self, path):
        c = http.client.HTTPConnection("127.0.0.1", self.caddy.port, timeout=30 * SLOW)
        try:
            c.request("GET", path, headers={"Host": "alice.example.test"})
            r = c.getresponse()
            r.read()
            return r.status, r.getheader("Location")
        finally:
            c.close()

    def test_the_waking_redirect_stays_on_the_site(self):
        self.b.post("/v1/tenants", {"handle": "alice", "desired": "asleep"})
        wait_until(lambda: (self.held() or {}).get("alice") == "berth", 10 * SLOW,
                   what="alice's route to berth")
        for path in ("//evil.test/", "/\\evil.test/"):
            self.b.post("/v1/tenants/alice/sleep")
            wait_until(lambda: self.b.tenant("alice")["observed"] in ("stopped", "absent"),
                       10 * SLOW, what="alice asleep")
            wait_until(lambda: (self.held() or {}).get("alice") == "berth", 10 * SLOW,
                       what="alice's route back to berth")
            st, loc = self.location(path)
            self.assertEqual(st, 307, path)
            self.assertTrue(loc.startswith("/") and loc[1:2] not in ("/", "\\"),
                            f"{path} redirected to {loc}")


if __name__ == "__main__":
    unittest.main()
