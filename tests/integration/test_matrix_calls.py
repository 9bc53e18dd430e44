"""What plugins/matrix sends to a real Synapse (one for this module), seen through a recording
proxy: no new login, device, registration or room across restarts and a reload and one
whoami per token per start; a login only after M_UNKNOWN_TOKEN, on the same device, backed
off while logins fail; every 429's retry_after_ms waited out; plan only reads and apply
writes only what differs."""
import os
import sys
import unittest

from harness import free_port, wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "matrix"))
from matrix_case import MatrixCase, env_of, read  # noqa: E402
from synapse_fixture import Synapse, q, synapse_dir  # noqa: E402

HS = None


def setUpModule():
    global HS
    if not synapse_dir():
        raise unittest.SkipTest("no Synapse: set BERTH_SYNAPSE_DIR or provide ../shared/synapse")
    HS = MatrixCase.hs = Synapse(free_port()).start()


def tearDownModule():
    if HS:
        HS.stop(wipe=True)


class Calls(MatrixCase):
    def test_restarts_and_reload_make_no_new_login(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "bob"}).status, 201)
        b.wait_tenant("bob", "ready", timeout=30)
        uids = ["@bob:test.local", "@bob_ai:test.local", f"@{self.admin}:test.local"]
        devices = {u: HS.devices(u) for u in uids}
        self.assertEqual([len(d) for d in devices.values()], [1, 1, 1])
        token = env_of(b, "bob")["MATRIX_ACCESS_TOKEN"]
        rooms = [HS.room_of(f"#{self.prefix}{r}:test.local") for r in ("fleet", "lobby")]
        mark = self.proxy.mark()
        for _ in range(3):
            self.stop_ok()
            b.start()
            b.wait_tenant("bob", "ready", timeout=30)
            wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20,
                       what="rooms applied at start")
        b.ctl("reload")
        self.assertEqual(b.post("/v1/matrix/apply").status, 200)
        self.assertEqual({u: HS.devices(u) for u in uids}, devices)
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
        self.assertEqual([HS.room_of(f"#{self.prefix}{r}:test.local") for r in ("fleet", "lobby")],
                         rooms)
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
        devices = HS.devices("@ivan_ai:test.local")
        st, _ = HS.call("POST", "/_matrix/client/v3/logout", {},
                        token=old["MATRIX_ACCESS_TOKEN"])
        self.assertEqual(st, 200)
        self.stop_ok()
        b.start()
        b.ctl("tenant", "reprovision", "ivan")
        new = wait_until(lambda: (lambda e: e and e["MATRIX_ACCESS_TOKEN"] !=
                                  old["MATRIX_ACCESS_TOKEN"] and e)(env_of(b, "ivan")), 30,
                         what="a new token for the workload")
        st, who = HS.call("GET", "/_matrix/client/v3/account/whoami",
                          token=new["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@ivan_ai:test.local"))
        self.assertEqual(new["MATRIX_DEVICE_ID"], old["MATRIX_DEVICE_ID"])
        self.assertEqual(HS.devices("@ivan_ai:test.local"), devices)
        self.assertEqual(b.log().count("logged in @ivan_ai:test.local again"), 1)
        self.assertEqual(b.log().count("logged in"), 1)
        self.stop_ok()

    def test_failing_logins_are_backed_off_and_the_dead_token_asked_once(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "kim"}).status, 201)
        b.wait_tenant("kim", "ready", timeout=30)
        old = env_of(b, "kim")["MATRIX_ACCESS_TOKEN"]
        st, _ = HS.call("POST", "/_matrix/client/v3/logout", {}, token=old)
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
        st, who = HS.call("GET", "/_matrix/client/v3/account/whoami",
                          token=new["MATRIX_ACCESS_TOKEN"])
        self.assertEqual((st, who.get("user_id")), (200, "@kim_ai:test.local"))
        self.stop_ok()

    def test_a_later_429_asking_less_never_cuts_a_wait_short(self):
        b = self.berthd(proxied=True)
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")
        # two registration nonces in flight at once: the first is answered last, after 1 s,
        # asking 0.1 s; the second at once, asking 2 s. Nothing may go out for those 2 s.
        mark = self.proxy.mark()
        self.proxy.fail("GET", "/_synapse/admin/v1/register", (429, 100, 1.0), (429, 2000))
        for h in ("kai", "lea"):
            self.assertEqual(b.post("/v1/tenants", {"handle": h}).status, 201)
        for h in ("kai", "lea"):
            b.wait_tenant(h, "ready", timeout=30)
        limited = [c["retry_after_ms"] for c in self.proxy.since(mark) if c["status"] == 429]
        self.assertEqual(sorted(limited), [100, 2000])
        self.assertEqual(self.proxy.early_after_429(mark), [], "sent before retry_after_ms")
        self.stop_ok()

    def test_plan_writes_nothing_and_apply_restores_the_config(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "hal"}).status, 201)
        b.wait_tenant("hal", "ready", timeout=30)
        p = self.prefix
        lobby, fleet = (HS.room_of(f"#{p}{r}:test.local") for r in ("lobby", "fleet"))
        admin = self.admin_token(b)

        def state(room, kind, key=""):
            return [e["content"] for e in HS.state(room) if e["type"] == kind and
                    e["state_key"] == key]

        def put(room, kind, content, key=""):
            st, _ = HS.call("PUT", f"/_matrix/client/v3/rooms/{q(room)}/state/{kind}/{q(key)}",
                            content, token=admin)
            self.assertEqual(st, 200)

        def writes(mark):
            return [(c["method"], c["path"]) for c in self.proxy.since(mark)
                    if c["method"] != "GET"]
        # drift on the server (name, topic, place in the space): plan shows it and changes
        # nothing; apply restores it
        put(lobby, "m.room.name", {"name": "renamed"})
        put(lobby, "m.room.topic", {"topic": "changed"})
        put(fleet, "m.space.child", {}, lobby)
        mark = self.proxy.mark()
        self.assertEqual(b.ctl("matrix", "plan").stdout.splitlines(),
                         [f'set the name of #{p}lobby:test.local to "Lobby"',
                          f'set the topic of #{p}lobby:test.local to "everyone"',
                          f"add #{p}lobby:test.local to space #{p}fleet:test.local"])
        self.assertEqual(writes(mark), [])
        self.assertEqual(state(lobby, "m.room.name"), [{"name": "renamed"}])
        self.assertEqual(b.ctl("matrix", "apply").stdout.strip(), "matrix: applied")
        self.assertEqual(state(lobby, "m.room.name"), [{"name": "Lobby"}])
        self.assertEqual(state(lobby, "m.room.topic"), [{"topic": "everyone"}])
        self.assertEqual(state(fleet, "m.space.child", lobby), [{"via": ["test.local"]}])
        self.assertEqual(b.ctl("matrix", "plan").stdout.strip(), "matrix: nothing to change")
        # applied again, it only reads
        mark = self.proxy.mark()
        self.assertEqual(b.ctl("matrix", "apply").stdout.strip(), "matrix: applied")
        self.assertGreater(len(self.proxy.since(mark)), 3)
        self.assertEqual(writes(mark), [])
        # a room gone from the directory: plan would create it, put it in its space and join
        # hal's AI to it, and writes nothing; apply does it
        st, _ = HS.call("DELETE", f"/_matrix/client/v3/directory/room/{q(f'#{p}lobby:test.local')}",
                        token=HS.admin())
        self.assertEqual(st, 200)
        mark = self.proxy.mark()
        self.assertEqual(b.ctl("matrix", "plan").stdout.splitlines(),
                         [f"create room #{p}lobby:test.local",
                          f"add #{p}lobby:test.local to space #{p}fleet:test.local",
                          f"join @hal_ai:test.local to #{p}lobby:test.local"])
        self.assertEqual(writes(mark), [])
        self.assertIsNone(HS.room_of(f"#{p}lobby:test.local"))
        self.assertEqual(b.ctl("matrix", "apply").stdout.strip(), "matrix: applied")
        lobby2 = HS.room_of(f"#{p}lobby:test.local")
        self.assertNotIn(lobby2, (None, lobby))
        self.assertIn(lobby2, HS.joined_rooms("@hal_ai:test.local"))
        self.assertEqual(state(fleet, "m.space.child", lobby2), [{"via": ["test.local"]}])
        self.assertEqual(b.ctl("matrix", "plan").stdout.strip(), "matrix: nothing to change")
        # a room added by a reload is created, put in its space and joined per `join`
        conf = read(os.path.join(b.conf, "10-matrix.yaml"))
        b.write("10-matrix.yaml", conf.replace(
            "    rooms:\n", f"    rooms:\n      - {{alias: {p}ops, name: Ops, in_space: {p}fleet,"
            " join: [\"{handle}\"]}\n"))
        b.ctl("reload")
        ops = wait_until(lambda: HS.room_of(f"#{p}ops:test.local"), 20, what="the new room")
        wait_until(lambda: ops in HS.joined_rooms("@hal:test.local"), 20, what="hal joined")
        fleet = HS.room_of(f"#{p}fleet:test.local")
        self.assertIn(ops, [e["state_key"] for e in HS.state(fleet)
                            if e["type"] == "m.space.child"])
        wait_until(lambda: b.ctl("matrix", "plan").stdout.strip() == "matrix: nothing to change",
                   10, what="an empty plan")
        self.stop_ok()


if __name__ == "__main__":
    unittest.main()
