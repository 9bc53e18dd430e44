"""plugins/matrix's tokens against a real Synapse (one for this module), seen through a
recording proxy: no new login, device, registration or room across restarts and a reload and
one whoami per token per start; a login only after M_UNKNOWN_TOKEN, on the same device, backed
off while logins fail; a token refused while berthd runs (berth's own, or an account's without
the admin API) replaced by one login."""
import os
import sys
import unittest

from harness import wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "matrix"))
from matrix_case import (env_of, MatrixCase, read,  # noqa: E402
                         setUpModule, tearDownModule)



class Tokens(MatrixCase):
    def test_restarts_and_reload_make_no_new_login(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "bob"}).status, 201)
        b.wait_tenant("bob", "ready", timeout=30)
        uids = ["@bob:test.local", "@bob_ai:test.local", f"@{self.admin}:test.local"]
        devices = {u: self.hs.devices(u) for u in uids}
        self.assertEqual([len(d) for d in devices.values()], [1, 1, 1])
        token = env_of(b, "bob")["MATRIX_ACCESS_TOKEN"]
        rooms = [self.hs.room_of(f"#{self.prefix}{r}:test.local") for r in ("fleet", "lobby")]
        mark = self.proxy.mark()
        for _ in range(3):
            self.stop_ok()
            b.start()
            b.wait_tenant("bob", "ready", timeout=30)
            wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20,
                       what="rooms applied at start")
        b.ctl("reload")
        self.assertEqual(b.post("/v1/matrix/apply").status, 200)
        self.assertEqual({u: self.hs.devices(u) for u in uids}, devices)
        self.assertEqual(env_of(b, "bob")["MATRIX_ACCESS_TOKEN"], token)
        self.assertEqual(b.tenant("bob")["plugins"]["matrix"]["accounts"], uids[:2])
        self.assertNotIn("logged in", b.log())
        # what went to the homeserver: one whoami per start (berth's own account, checked
        # once), no login, no registration, no room made again
        calls = self.proxy.since(mark)
        self.assertEqual([c for c in calls if c["method"] == "POST" and c["path"].endswith(
            ("/login", "/register", "/createRoom"))], [])
        whoami = [c["token"] for c in calls if c["path"].endswith("/account/whoami")]
        self.assertEqual(whoami, [self.admin_token(b)] * 3)
        self.assertEqual([self.hs.room_of(f"#{self.prefix}{r}:test.local")
                          for r in ("fleet", "lobby")], rooms)
        self.assertEqual(len(b.events(type="matrix.room_created")), 2)
        # provisioning run again twice in one start checks each stored token once
        mark = self.proxy.mark()
        for n in (1, 2):
            done = len(b.events(tenant="bob", type="tenant.provisioned"))
            b.ctl("tenant", "reprovision", "bob")
            wait_until(lambda: len(b.events(tenant="bob", type="tenant.provisioned")) > done,
                       20, what=f"reprovision {n}")
        whoami = [c["token"] for c in self.proxy.since(mark, "GET", "/_matrix/client/v3/account")]
        self.assertEqual(sorted(whoami), sorted([token, self.db(
            b, "SELECT token FROM matrix_accounts WHERE user_id='@bob:test.local'")[0][0]]))
        self.stop_ok()

    def test_unknown_token_logs_in_once_on_the_same_device(self):
        b = self.berthd()
        self.assertEqual(b.post("/v1/tenants", {"handle": "ivan"}).status, 201)
        b.wait_tenant("ivan", "ready", timeout=30)
        old = env_of(b, "ivan")
        devices = self.hs.devices("@ivan_ai:test.local")
        st, _ = self.hs.call("POST", "/_matrix/client/v3/logout", {},
                        token=old["MATRIX_ACCESS_TOKEN"])
        self.assertEqual(st, 200)
        self.stop_ok()
        b.start()
        b.ctl("tenant", "reprovision", "ivan")
        new = wait_until(lambda: (lambda e: e and e["MATRIX_ACCESS_TOKEN"] !=
                                  old["MATRIX_ACCESS_TOKEN"] and e)(env_of(b, "ivan")), 30,
                         what="a new token for the workload")
        st, who = self.hs.call("GET", "/_matrix/client/v3/account/whoami",
                          token=new["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@ivan_ai:test.local"))
        self.assertEqual(new["MATRIX_DEVICE_ID"], old["MATRIX_DEVICE_ID"])
        self.assertEqual(self.hs.devices("@ivan_ai:test.local"), devices)
        self.assertEqual(b.log().count("logged in @ivan_ai:test.local again"), 1)
        self.assertEqual(b.log().count("logged in"), 1)
        self.stop_ok()

    def test_failing_logins_are_backed_off_and_the_dead_token_asked_once(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "kim"}).status, 201)
        b.wait_tenant("kim", "ready", timeout=30)
        old = env_of(b, "kim")["MATRIX_ACCESS_TOKEN"]
        st, _ = self.hs.call("POST", "/_matrix/client/v3/logout", {}, token=old)
        self.assertEqual(st, 200)
        self.stop_ok()
        b.start()
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")
        # the homeserver fails two logins: the core retries the provisioning every 50 ms,
        # but the logins come 1 s, then 2 s apart
        mark = self.proxy.mark()
        self.proxy.fail("POST", "/_matrix/client/v3/login", 500, 500)
        b.ctl("tenant", "reprovision", "kim")
        new = wait_until(lambda: (lambda e: e and e["MATRIX_ACCESS_TOKEN"] != old and e)(
            env_of(b, "kim")), 30, what="a new token for the workload")
        logins = self.proxy.since(mark, "POST", "/_matrix/client/v3/login")
        self.assertEqual([c["status"] for c in logins], [500, 500, 200])
        gaps = [y["t_in"] - x["t_in"] for x, y in zip(logins, logins[1:])]
        self.assertGreater(gaps[0], 0.95, gaps)
        self.assertGreater(gaps[1], 1.95, gaps)
        # the refused token was asked about once; the attempts after went to the login
        whoami = self.proxy.since(mark, "GET", "/_matrix/client/v3/account/whoami")
        self.assertEqual(len([c for c in whoami if c["token"] == old]), 1)
        st, who = self.hs.call("GET", "/_matrix/client/v3/account/whoami",
                          token=new["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@kim_ai:test.local"))
        self.stop_ok()

    def test_a_token_refused_while_running_is_replaced_by_one_login(self):
        b = self.berthd(proxied=True)
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")
        old = self.admin_token(b)
        st, _ = self.hs.call("POST", "/_matrix/client/v3/logout", {}, token=old)
        self.assertEqual(st, 200)
        # the first call with berth's own token meets M_UNKNOWN_TOKEN and fails; the next
        # logs in once and goes on
        mark = self.proxy.mark()
        self.assertEqual(b.post("/v1/matrix/apply").status, 503)
        self.assertEqual(b.post("/v1/matrix/apply").status, 200)
        logins = self.proxy.since(mark, "POST", "/_matrix/client/v3/login")
        self.assertEqual([c["status"] for c in logins], [200])
        self.assertNotEqual(self.admin_token(b), old)
        self.assertEqual(b.post("/v1/tenants", {"handle": "max"}).status, 201)
        b.wait_tenant("max", "ready", timeout=30)
        self.assertIn(self.hs.room_of(f"#{self.prefix}lobby:test.local"),
                      self.hs.joined_rooms("@max_ai:test.local"))
        self.stop_ok()

    def test_an_accounts_token_refused_while_running_without_the_admin_api(self):
        st, tok = self.hs.acall("POST", "/_synapse/admin/v1/registration_tokens/new", {})
        self.assertEqual(st, 200, tok)
        path = os.path.join(self.tmp, "regtoken")
        with open(path, "w") as f:
            f.write(tok["token"])
        b = self.berthd(registration="{token: {file: %s}}" % path, proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "ned"}).status, 201)
        b.wait_tenant("ned", "ready", timeout=30)
        ned = "@ned_ai:test.local"
        old = env_of(b, "ned")["MATRIX_ACCESS_TOKEN"]
        self.assertEqual(self.hs.call("POST", "/_matrix/client/v3/logout", {}, token=old)[0], 200)
        # a room added by a reload: ned's AI joins it with its own token, which is refused;
        # the apply after that logs it in once and joins
        p = self.prefix
        conf = read(os.path.join(b.conf, "10-matrix.yaml"))
        ops = f"      - {{alias: {p}ops, name: Ops, join: [\"{{handle}}_ai\"]}}\n"
        b.write("10-matrix.yaml", conf.replace("    rooms:\n", "    rooms:\n" + ops))
        mark = self.proxy.mark()
        b.ctl("reload")
        wait_until(lambda: "M_UNKNOWN_TOKEN" in b.get("/v1/matrix/health").json.get(
            "rooms_error", ""), 20, what="the refused join")
        self.assertEqual(b.post("/v1/matrix/apply").status, 200)
        self.assertIn(self.hs.room_of(f"#{p}ops:test.local"), self.hs.joined_rooms(ned))
        logins = self.proxy.since(mark, "POST", "/_matrix/client/v3/login")
        self.assertEqual([c["status"] for c in logins], [200])
        # refused again, then deleted: the account's own deactivation logs in first
        new = self.db(b, f"SELECT token FROM matrix_accounts WHERE user_id='{ned}'")[0][0]
        self.assertEqual(self.hs.call("POST", "/_matrix/client/v3/logout", {}, token=new)[0], 200)
        self.assertEqual(b.req("DELETE", "/v1/tenants/ned").status, 202)
        wait_until(lambda: b.get("/v1/tenants/ned").status == 404, 30, what="deletion")
        self.assertTrue(self.hs.user(ned)[1].get("deactivated"))
        logins = self.proxy.since(mark, "POST", "/_matrix/client/v3/login")
        self.assertEqual([c["status"] for c in logins], [200, 200])
        self.stop_ok()


if __name__ == "__main__":
    unittest.main()
