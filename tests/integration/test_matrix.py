"""plugins/matrix against a real Synapse (one for this module, on its own port and data dir):
accounts registered before the workload starts and their token working inside it, display
names, rooms in a space joined, secrets kept to the plugin, provisioning that waits for a
stopped homeserver, a foreign account refused, a lost registration adopted, deactivation on
delete (erase as configured), invite tokens, the registration-token flow.
test_matrix_calls.py watches what berth sends to the homeserver."""
import os
import subprocess
import sys
import time
import unittest

from harness import BERTHD, Berthd, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "matrix"))
from matrix_case import (CONF, env_of, MatrixCase,  # noqa: E402
                         read, setUpModule, tearDownModule)
from synapse_fixture import q  # noqa: E402



EXEC = """
  exec: {{ports: {lo}-{hi}}}
templates:
  inside:
    driver: exec
    command: [sh, -c, 'curl -sS -H "Authorization: Bearer $MATRIX_ACCESS_TOKEN"
              "$MATRIX_HOMESERVER_URL/_matrix/client/v3/account/whoami" > {out}.tmp;
              mv {out}.tmp {out}; exec sleep 600']
    matrix:
      accounts: [{{localpart: "{{handle}}_ai"}}]
"""


class Matrix(MatrixCase):
    def test_create_whoami_names_rooms_then_delete(self):
        lo = 23000 + (os.getpid() % 300) * 10
        out = os.path.join(self.tmp, "whoami.json")
        b = self.berthd({"20-exec.yaml": "plugins:" + EXEC.format(lo=lo, hi=lo + 9, out=out),
                         "30-store.yaml": "plugins:\n  storetest: {}\n"}, plugins=("storetest",))
        self.assertEqual(b.post("/v1/tenants", {"handle": "alice"}).status, 201)
        t = b.wait_tenant("alice", "ready", timeout=30)
        env = env_of(b, "alice")
        self.assertEqual(env["MATRIX_USER_ID"], "@alice_ai:test.local")
        self.assertEqual(env["MATRIX_HOMESERVER_URL"], self.hs.url)
        self.assertTrue(env["MATRIX_DEVICE_ID"])
        # display names, set at registration
        for uid, name in (("@alice:test.local", "alice"), ("@alice_ai:test.local", "alice's AI")):
            st, prof = self.hs.call("GET", f"/_matrix/client/v3/profile/{q(uid)}/displayname",
                               token=self.hs.admin())
            self.assertEqual((st, prof.get("displayname")), (200, name))
        # joined to the lobby, which is a child of the fleet space
        lobby, fleet = (self.hs.room_of(f"#{self.prefix}{r}:test.local")
                        for r in ("lobby", "fleet"))
        self.assertTrue(lobby and fleet)
        self.assertIn(lobby, self.hs.joined_rooms("@alice_ai:test.local"))
        self.assertNotIn(lobby, self.hs.joined_rooms("@alice:test.local"))   # not in its `join`
        kids = [e["state_key"] for e in self.hs.state(fleet) if e["type"] == "m.space.child"]
        self.assertEqual(kids, [lobby])
        create = [e for e in self.hs.state(fleet) if e["type"] == "m.room.create"][0]
        self.assertEqual(create["content"].get("type"), "m.space")
        # accounts shown, never tokens
        r = b.get("/v1/tenants/alice/matrix")
        self.assertEqual(r.json["accounts"], ["@alice:test.local", "@alice_ai:test.local"])
        self.assertEqual(t["plugins"]["matrix"]["accounts"], r.json["accounts"])
        show = b.ctl("tenant", "show", "alice").stdout
        self.assertIn("@alice_ai:test.local", show)
        self.assertNotIn(env["MATRIX_ACCESS_TOKEN"], r.body + show)
        # random passwords, one per account; secrets only in the plugin's own table, never
        # logged (at debug level), and no other plugin may read them
        rows = self.db(b, "SELECT password, token FROM matrix_accounts")
        self.assertEqual(len(rows), 3)          # alice's two and berth's own
        self.assertEqual(len({pw for pw, _ in rows}), 3)
        for pw, tok in rows:
            self.assertRegex(pw, "^[0-9a-f]{48}$")
            self.assertNotIn(pw, b.log())
            self.assertNotIn(tok, b.log())
        for sql in ("SELECT token FROM matrix_accounts", "SELECT * FROM matrix_joins"):
            r = b.post("/v1/storetest/sql", sql)
            self.assertEqual((r.status, r.json["rc"]), (200, -1), sql)   # BERTH_EPERM
        # the plan of a configuration already applied is empty
        self.assertEqual(b.post("/v1/matrix/plan").json, {"changes": []})

        # the workload's own process sees a working token
        self.assertEqual(b.post("/v1/tenants", {"handle": "ivy", "template": "inside"}).status,
                         201)
        b.wait_tenant("ivy", "ready", timeout=30)
        who = wait_until(lambda: os.path.exists(out) and read(out), 20,
                         what="whoami from inside the tenant")
        self.assertIn('"user_id":"@ivy_ai:test.local"', who.replace(" ", ""))

        # delete: deactivated, and the lobby keeps working for others
        self.assertEqual(b.req("DELETE", "/v1/tenants/alice").status, 202)
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, 30, what="deletion")
        for uid, name in (("@alice:test.local", "alice"), ("@alice_ai:test.local", "alice's AI")):
            st, u = self.hs.user(uid)
            self.assertEqual((st, u.get("deactivated")), (200, True))
            self.assertEqual(u.get("displayname"), name)      # erase: false keeps the profile
        # nothing of alice's left in the plugin's tables
        self.assertEqual(self.db(b, "SELECT user_id FROM matrix_accounts WHERE tenant='alice'"),
                         [])
        self.assertEqual(self.db(b, "SELECT user_id FROM matrix_joins WHERE user_id LIKE "
                                 "'@alice%'"), [])
        self.assertEqual(self.hs.room_of(f"#{self.prefix}lobby:test.local"), lobby)
        self.assertIn(lobby, self.hs.joined_rooms("@ivy_ai:test.local"))
        self.assertIn(lobby, self.hs.joined_rooms(f"@{self.admin}:test.local"))
        self.assertEqual(b.get("/v1/tenants/alice/matrix").status, 404)
        ev = [(e["type"], e["payload"].get("user_id")) for e in b.events(tenant="alice")
              if e["type"].startswith("matrix.")]
        self.assertEqual(ev, [("matrix.account_registered", "@alice:test.local"),
                              ("matrix.account_registered", "@alice_ai:test.local"),
                              ("matrix.account_deactivated", "@alice:test.local"),
                              ("matrix.account_deactivated", "@alice_ai:test.local")])
        self.assertEqual(len([e for e in b.events(type="matrix.room_created")]), 2)
        self.stop_ok()

    def test_homeserver_down_while_creating(self):
        b = self.berthd()
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")
        self.hs.stop()
        try:
            self.assertEqual(b.post("/v1/tenants", {"handle": "carol"}).status, 201)
            t = wait_until(lambda: (lambda t: "homeserver unreachable" in (t["reason"] or "")
                                    and t)(b.tenant("carol")), 20, what="the reason")
            self.assertNotEqual(t["observed"], "ready")
            self.assertIsNone(env_of(b, "carol"))    # the workload waits
            h = b.get("/v1/matrix/health").json
            self.assertFalse(h["reachable"])
            self.assertIn("berth_matrix_homeserver_up 0", b.get("/metrics").body)
        finally:
            self.hs.start()
        b.wait_tenant("carol", "ready", timeout=40)
        self.assertEqual(env_of(b, "carol")["MATRIX_USER_ID"], "@carol_ai:test.local")
        self.assertIn(self.hs.room_of(f"#{self.prefix}lobby:test.local"),
                      self.hs.joined_rooms("@carol_ai:test.local"))
        # deleting while the homeserver is down: the tenant stays deleting with the reason
        self.hs.stop()
        try:
            self.assertEqual(b.req("DELETE", "/v1/tenants/carol").status, 202)
            t = wait_until(lambda: (lambda t: "homeserver unreachable" in (t["reason"] or "")
                                    and t)(b.tenant("carol")), 20, what="the reason")
            self.assertEqual(t["desired"], "deleted")
        finally:
            self.hs.start()
        wait_until(lambda: b.get("/v1/tenants/carol").status == 404, 40, what="deletion")
        self.assertTrue(self.hs.user("@carol_ai:test.local")[1].get("deactivated"))
        self.assertIn("berth_matrix_homeserver_up 1", b.get("/metrics").body)
        self.stop_ok()

    def test_user_berth_did_not_create_is_refused(self):
        st, _ = self.hs.register("dave_ai")
        self.assertEqual(st, 200)
        b = self.berthd()
        self.assertEqual(b.post("/v1/tenants", {"handle": "dave"}).status, 201)
        t = wait_until(lambda: (lambda t: "not created by berth" in (t["reason"] or "")
                                and t)(b.tenant("dave")), 20, what="the refusal")
        self.assertIn("@dave_ai:test.local already exists", t["reason"])
        mx = t["provisioners"]["matrix"]
        self.assertEqual((mx["state"], mx["attempts"], mx["permanent"]), ("failed", 1, True))
        # not retried: over a few backoff periods (retry_max 500ms) attempts stay at 1
        end = time.time() + 1.5
        while time.time() < end:
            self.assertEqual(b.tenant("dave")["provisioners"]["matrix"]["attempts"], 1)
            time.sleep(0.05)
        self.assertIsNone(env_of(b, "dave"))
        # berth's own first account of the tenant is there; the foreign one is not adopted
        self.assertEqual(b.get("/v1/tenants/dave/matrix").json["accounts"],
                         ["@dave:test.local"])
        self.stop_ok()

    def test_invite_tokens_mint_register_revoke(self):
        b = self.berthd(proxied=True)
        out = b.ctl("matrix", "invite", "2", "1").stdout
        token = out.split()[0]
        self.assertTrue(token)
        st, r = self.hs.register_with_token("erin", token)
        self.assertEqual(st, 200, r)
        listed = b.ctl("matrix", "invites").stdout
        self.assertIn(token, listed)
        self.assertIn("1/2", listed)
        # USES and DAYS as given: 2 uses, expiring in a day; 0 0 is unlimited and never expires
        unlimited = b.ctl("matrix", "invite", "0", "0").stdout.split()[0]
        tokens = {t["token"]: t for t in b.get("/v1/matrix/invites").json["registration_tokens"]}
        self.assertEqual(tokens[token]["uses_allowed"], 2)
        self.assertAlmostEqual(tokens[token]["expiry_time"] / 1000, time.time() + 86400,
                               delta=300)
        self.assertEqual((tokens[unlimited]["uses_allowed"], tokens[unlimited]["expiry_time"]),
                         (None, None))
        b.ctl("matrix", "revoke", token)
        self.assertNotIn(token, b.ctl("matrix", "invites").stdout)
        st, r = self.hs.register_with_token("frank", token)
        self.assertEqual(st, 401, r)   # the token stage is refused
        self.assertEqual(b.ctl("matrix", "revoke", token, check=False).returncode, 1)
        # a homeserver without the registration-token admin API: said so, not a failure
        self.proxy.fail("POST", "/_synapse/admin/v1/registration_tokens/new", 404)
        r = b.post("/v1/matrix/invites", {"uses": 1})
        self.assertEqual(r.status, 501, r)
        self.assertIn("not supported by this homeserver", r.body)
        self.stop_ok()

    def test_registration_token_flow_without_admin_api(self):
        st, tok = self.hs.acall("POST", "/_synapse/admin/v1/registration_tokens/new", {})
        self.assertEqual(st, 200, tok)
        path = os.path.join(self.tmp, "regtoken")
        with open(path, "w") as f:
            f.write(tok["token"])
        b = self.berthd(registration="{token: {file: %s}}" % path, extra="    erase: true\n")
        self.assertEqual(b.post("/v1/tenants", {"handle": "gus"}).status, 201)
        b.wait_tenant("gus", "ready", timeout=30)
        env = env_of(b, "gus")
        st, who = self.hs.call("GET", "/_matrix/client/v3/account/whoami",
                          token=env["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@gus_ai:test.local"))
        st, prof = self.hs.call("GET", "/_matrix/client/v3/profile/%40gus_ai%3Atest.local",
                           token=self.hs.admin())
        self.assertEqual(prof.get("displayname"), "gus's AI")
        self.assertFalse(self.hs.user("@gus:test.local")[1].get("admin"))
        self.assertFalse(self.hs.user(f"@{self.admin}:test.local")[1].get("admin"))
        self.assertIn(self.hs.room_of(f"#{self.prefix}lobby:test.local"),
                      self.hs.joined_rooms("@gus_ai:test.local"))
        r = b.post("/v1/matrix/invites", {"uses": 1})
        self.assertEqual(r.status, 501)
        self.assertIn("not supported", r.body)
        for args in (("invite",), ("invites",), ("revoke", "x")):
            p = b.ctl("matrix", *args, check=False)
            self.assertEqual(p.returncode, 1, args)
            self.assertIn("not supported", p.stderr)
        # each account deactivates itself with its password, erased as configured
        self.assertEqual(b.req("DELETE", "/v1/tenants/gus").status, 202)
        wait_until(lambda: b.get("/v1/tenants/gus").status == 404, 30, what="deletion")
        for uid in ("@gus:test.local", "@gus_ai:test.local"):
            u = self.hs.user(uid)[1]
            self.assertTrue(u.get("deactivated"), uid)
            self.assertFalse(u.get("displayname"), uid)
        self.stop_ok()

    def test_registration_whose_answer_was_lost_is_adopted(self):
        import sqlite3
        b = self.berthd()
        self.assertEqual(b.post("/v1/tenants", {"handle": "jo"}).status, 201)
        b.wait_tenant("jo", "ready", timeout=30)
        old = env_of(b, "jo")["MATRIX_ACCESS_TOKEN"]
        self.stop_ok()
        # as if berthd died after the homeserver registered jo_ai but before its answer
        # was stored: the row with the password is there, the token is not
        db = sqlite3.connect(os.path.join(b.state, "berth.db"))
        db.execute("UPDATE matrix_accounts SET token=NULL, device_id=NULL "
                   "WHERE user_id='@jo_ai:test.local'")
        db.commit()
        db.close()
        b.start()
        b.ctl("tenant", "reprovision", "jo")
        wait_until(lambda: [e for e in b.events(tenant="jo", type="matrix.account_adopted")],
                   30, what="the adoption")
        # the workload is created again with the adopted account's new token
        wait_until(lambda: (lambda t: t["observed"] == "ready" and t["reason"] is None)(
            b.tenant("jo")) and env_of(b, "jo")["MATRIX_ACCESS_TOKEN"] != old, 30,
            what="jo ready with its new token")
        env = env_of(b, "jo")
        st, who = self.hs.call("GET", "/_matrix/client/v3/account/whoami",
                          token=env["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@jo_ai:test.local"))
        self.stop_ok()

    def test_bad_configuration_is_refused_at_its_key(self):
        conf = CONF.format(url=self.hs.url, secret=self.hs.secret_file(self.tmp), admin=self.admin,
                           prefix="")
        for bad, msg in (
                (conf.replace("in_space: fleet", "in_space: lobby"),
                 "rooms[1].in_space 'lobby' is not a configured space"),
                (conf.replace("registration: {shared_secret:",
                              "registration: {token: {env: HOME}, shared_secret:"),
                 "registration needs exactly one of shared_secret and token"),
                (conf.replace("homeserver: http", "homeserver: ftp"),
                 "homeserver must be an http:// or https:// URL"),
                (conf.replace("server_name: test.local", "server_name: " + "s" * 127),
                 "server_name is longer than 126 bytes"),
                (conf.replace("alias: fleet", "alias: " + "f" * 128).replace(
                    "in_space: fleet", "in_space: " + "f" * 128),
                 "is not a valid alias localpart")):
            b = Berthd({"10-matrix.yaml": bad}, plugins=("testdrv",))
            self.addCleanup(b.cleanup)
            b.install_plugin_from_build("matrix")
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn(msg, p.stderr)


if __name__ == "__main__":
    unittest.main()
