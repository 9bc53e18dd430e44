"""What plugins/matrix sends to a real Synapse (one for this module), seen through a recording
proxy: every 429's retry_after_ms waited out, a later 429 asking less never cutting a wait
short; a register answer berth cannot use whole refused with the reason; plan only reads
and apply writes only what differs; a client gone while its call waits on the homeserver.
test_matrix_tokens.py watches logins and whoamis."""
import os
import socket
import sys
import unittest

from harness import wait_until

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "matrix"))
from matrix_case import MatrixCase, read, setUpModule, tearDownModule  # noqa: E402
from synapse_fixture import q  # noqa: E402



class Calls(MatrixCase):
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

    def test_a_register_answer_berth_cannot_use_whole_is_refused(self):
        b = self.berthd(proxied=True)
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")
        # two 200s to mia's registration berth must not keep: a token that would put a line
        # break into its Authorization header, then an answer naming another user. Each fails
        # the attempt with the reason; the core's retry then registers mia for real.
        mark = self.proxy.mark()
        self.proxy.fail("POST", "/_synapse/admin/v1/register",
                        (200, {"user_id": "@mia:test.local", "device_id": "EVIL",
                               "access_token": "syt_a\r\nX-Injected: 1"}),
                        (200, {"user_id": "@mallory:test.local", "device_id": "EVIL",
                               "access_token": "syt_bWFsbG9yeQ_other"}))
        self.assertEqual(b.post("/v1/tenants", {"handle": "mia"}).status, 201)
        b.wait_tenant("mia", "ready", timeout=30)
        log = b.log()
        self.assertIn("HTTP 200 but the answer's access_token is empty, too long or not "
                      "printable ASCII", log)
        self.assertIn("HTTP 200 but the answer names another user", log)
        self.assertEqual(len(self.proxy.since(mark, "POST", "/_synapse/admin/v1/register")), 4)
        (token, device), = self.db(b, "SELECT token, device_id FROM matrix_accounts "
                                      "WHERE user_id='@mia:test.local'")
        self.assertNotEqual(device, "EVIL")
        st, who = self.hs.call("GET", "/_matrix/client/v3/account/whoami", token=token)
        self.assertEqual((st, who["user_id"]), (200, "@mia:test.local"))
        self.stop_ok()

    def test_a_client_gone_while_its_call_waits_on_the_homeserver_ends_its_request(self):
        """the plugin hears of it at once (on_close) and must still end the request: one
        left open counts as in flight forever and holds the plugin's drain"""
        b = self.berthd(proxied=True)
        wait_until(lambda: b.get("/v1/matrix/health").json["rooms_ready"], 20, what="rooms")

        def in_flight():    # the plugin's requests and its own calls
            return {p["name"]: p for p in b.get("/v1/plugins").json["plugins"]}[
                "matrix"]["requests_in_flight"]
        path = "/_synapse/admin/v1/registration_tokens/new"
        self.proxy.fail("POST", path, (500, None, 3.0))     # held 3 s, then refused
        mark = self.proxy.mark()
        body = b'{"uses": 1}'
        s = socket.socket(socket.AF_UNIX)
        self.addCleanup(s.close)
        s.connect(b.sock)
        s.sendall(b"POST /v1/matrix/invites HTTP/1.1\r\nHost: x\r\nContent-Type: "
                  b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: self.proxy.faults[("POST", path)] == [], 10,
                   what="the call at the homeserver")
        wait_until(lambda: in_flight() == 2, 5, what="the request and its call in flight")
        s.close()
        # the request ends at once; the held call goes on (its answer is dropped)
        wait_until(lambda: in_flight() <= 1, 1, what="the request to end")
        wait_until(lambda: self.proxy.since(mark, "POST", path), 10, what="the held answer")
        wait_until(lambda: in_flight() == 0, 5, what="the call to end")
        self.assertEqual(b.get("/health").status, 200)
        self.stop_ok()

    def test_plan_writes_nothing_and_apply_restores_the_config(self):
        b = self.berthd(proxied=True)
        self.assertEqual(b.post("/v1/tenants", {"handle": "hal"}).status, 201)
        b.wait_tenant("hal", "ready", timeout=30)
        p = self.prefix
        lobby, fleet = (self.hs.room_of(f"#{p}{r}:test.local") for r in ("lobby", "fleet"))
        admin = self.admin_token(b)

        def state(room, kind, key=""):
            return [e["content"] for e in self.hs.state(room) if e["type"] == kind and
                    e["state_key"] == key]

        def put(room, kind, content, key=""):
            st, _ = self.hs.call("PUT", f"/_matrix/client/v3/rooms/{q(room)}/state/{kind}/{q(key)}",
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
        alias = q(f"#{p}lobby:test.local")
        st, _ = self.hs.call("DELETE", f"/_matrix/client/v3/directory/room/{alias}",
                             token=self.hs.admin())
        self.assertEqual(st, 200)
        mark = self.proxy.mark()
        self.assertEqual(b.ctl("matrix", "plan").stdout.splitlines(),
                         [f"create room #{p}lobby:test.local",
                          f"add #{p}lobby:test.local to space #{p}fleet:test.local",
                          f"join @hal_ai:test.local to #{p}lobby:test.local"])
        self.assertEqual(writes(mark), [])
        self.assertIsNone(self.hs.room_of(f"#{p}lobby:test.local"))
        self.assertEqual(b.ctl("matrix", "apply").stdout.strip(), "matrix: applied")
        lobby2 = self.hs.room_of(f"#{p}lobby:test.local")
        self.assertNotIn(lobby2, (None, lobby))
        self.assertIn(lobby2, self.hs.joined_rooms("@hal_ai:test.local"))
        self.assertEqual(state(fleet, "m.space.child", lobby2), [{"via": ["test.local"]}])
        self.assertEqual(b.ctl("matrix", "plan").stdout.strip(), "matrix: nothing to change")
        # a room added by a reload is created, put in its space and joined per `join`
        conf = read(os.path.join(b.conf, "10-matrix.yaml"))
        b.write("10-matrix.yaml", conf.replace(
            "    rooms:\n", f"    rooms:\n      - {{alias: {p}ops, name: Ops, in_space: {p}fleet,"
            " join: [\"{handle}\"]}\n"))
        b.ctl("reload")
        ops = wait_until(lambda: self.hs.room_of(f"#{p}ops:test.local"), 20, what="the new room")
        wait_until(lambda: ops in self.hs.joined_rooms("@hal:test.local"), 20, what="hal joined")
        fleet = self.hs.room_of(f"#{p}fleet:test.local")
        self.assertIn(ops, [e["state_key"] for e in self.hs.state(fleet)
                            if e["type"] == "m.space.child"])
        wait_until(lambda: b.ctl("matrix", "plan").stdout.strip() == "matrix: nothing to change",
                   10, what="an empty plan")
        self.stop_ok()


if __name__ == "__main__":
    unittest.main()
