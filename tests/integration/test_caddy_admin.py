"""plugins/caddy with Caddy's admin API on TCP (`admin: http://127.0.0.1:PORT`) rather than a
unix socket: Caddy then refuses a request whose Host (and, with enforce_origin, Origin) it does
not list for that address, so the core path runs through that check."""
import unittest

from harness import wait_until
from test_caddy import CaddyTest, get


class AdminTCP(CaddyTest):
    admin_tcp = True
    extra = "activity_interval: 200ms"

    def test_routes_through_a_tcp_admin_api(self):
        b, c = self.b, self.caddy
        self.assertTrue(c.admin_url().startswith("http://127.0.0.1:"))
        b.post("/v1/tenants", {"handle": "alice"})
        addr = b.wait_tenant("alice", "ready")["address"]
        wait_until(lambda: (self.held() or {}).get("alice") == addr, 10,
                   what="Caddy to route alice to her address")
        self.assertEqual(get(c.port, "alice.example.test", "/t"), (200, "hi from alice /t"))
        self.assertEqual(b.tenant("alice")["plugins"]["caddy"],
                         {"host": "alice.example.test", "route": "present", "upstream": addr})
        self.assertRegex(b.ctl("routes").stdout, r"alice +alice\.example\.test +%s +%s +ok" %
                         (addr, addr))                  # list.c reads Caddy over TCP too
        self.assertEqual(get(c.port, "nobody.example.test")[0], 404)
        self.assertTrue(self.foreign_intact())
        # delete: the route goes before the tenant
        self.assertEqual(b.req("DELETE", "/v1/tenants/alice").status, 202)
        wait_until(lambda: b.tenant("alice") is None, 15, what="alice to be deleted")
        self.assertNotIn("alice", self.held())
        self.assertEqual(get(c.port, "alice.example.test")[0], 404)
        self.assertTrue(self.foreign_intact())
        # none of berth's calls (writes, checks, the in-flight poll) was refused
        log = c.log()
        self.assertIn("/reverse_proxy/upstreams", log)
        self.assertNotIn("host not allowed", log)
        self.assertNotIn('"status_code":403', log)


if __name__ == "__main__":
    unittest.main()
