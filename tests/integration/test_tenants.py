"""Tenants through berthd: desired vs observed, the reconciler, finalizers, adoption, crashes."""
import os
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import time
import unittest

from harness import BerthTest, Berthd, TESTDRV, wait_until


class TenantLifecycle(BerthTest):
    def test_create_sleep_wake_restart_delete(self):
        b = self.b
        r = b.post("/v1/tenants", {"handle": "alice", "kind": "agent"})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json["desired"], "running")
        t = b.wait_tenant("alice", "ready")
        self.assertEqual(t["driver"], "testdrv")
        self.assertTrue(t["id"].startswith("tc-alice-"))
        self.assertTrue(t["address"].startswith("127.0.0.1:"))
        # the spec the driver received: template env, identity, and a plugin's contribution
        env = b.get("/v1/testdrv/alice").json["env"]
        for kv in ("TZ=UTC", "BERTH_HANDLE=alice", "BERTH_KIND=agent", "ECHO_GREETING=hello"):
            self.assertIn(kv + ";", env)

        self.assertEqual(b.post("/v1/tenants/alice/sleep").status, 202)
        b.wait_tenant("alice", "stopped")
        self.assertEqual(b.get("/v1/testdrv/alice").json["state"], "stopped")
        self.assertEqual(b.tenant("alice")["desired"], "asleep")

        self.assertEqual(b.post("/v1/tenants/alice/wake").status, 202)
        t = b.wait_tenant("alice", "ready")
        self.assertEqual(b.get("/v1/testdrv/alice").json["state"], "running")

        self.assertEqual(b.post("/v1/tenants/alice/restart").status, 202)
        wait_until(lambda: b.tenant("alice")["restarts"] == 1, what="a restart")
        b.wait_tenant("alice", "ready")

        r = b.req("DELETE", "/v1/tenants/alice")
        self.assertEqual(r.status, 202)
        self.assertEqual(r.json["desired"], "deleted")
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, what="deletion")
        self.assertEqual(b.get("/v1/testdrv/alice").status, 404)
        types = [e["type"] for e in b.events(tenant="alice")]
        for want in ("tenant.created", "container.created", "container.started", "tenant.ready",
                     "tenant.sleep_requested", "container.stopped", "tenant.wake_requested",
                     "tenant.deleting", "container.removed", "tenant.deleted"):
            self.assertIn(want, types)
        self.assertLess(types.index("tenant.created"), types.index("container.created"))
        self.assertLess(types.index("tenant.deleting"), types.index("tenant.deleted"))

    def test_create_asleep_does_not_start(self):
        b = self.b
        self.assertEqual(b.post("/v1/tenants", {"handle": "sleepy", "desired": "asleep"}).status,
                         201)
        time.sleep(0.3)
        t = b.tenant("sleepy")
        self.assertEqual(t["desired"], "asleep")
        self.assertIn(t["observed"], ("absent", "stopped"))

    def test_validation(self):
        b = self.b
        for bad in ("A", "x", "1abc", "-ab", "ab-", "a_b", "a.b", "a" * 33, "../etc", ""):
            r = b.post("/v1/tenants", {"handle": bad})
            self.assertEqual(r.status, 400, (bad, r))
            self.assertEqual(r.json["error"]["code"], "invalid_handle")
        self.assertEqual(b.post("/v1/tenants", {"handle": "ok-1", "kind": "robot"}).status, 400)
        r = b.post("/v1/tenants", {"handle": "ok-1", "template": "nope"})
        self.assertEqual((r.status, r.json["error"]["code"]), (422, "unknown_template"))
        self.assertEqual(b.post("/v1/tenants", "not json").status, 400)
        self.assertEqual(b.post("/v1/tenants", {"handle": 7}).status, 400)
        self.assertEqual(b.post("/v1/tenants", {"handle": "dup"}).status, 201)
        r = b.post("/v1/tenants", {"handle": "dup"})
        self.assertEqual((r.status, r.json["error"]["code"]), (409, "exists"))
        self.assertEqual(b.get("/v1/tenants/nobody").status, 404)
        self.assertEqual(b.get("/v1/tenants/Bad%20Handle").status, 400)
        self.assertEqual(b.post("/v1/tenants/dup/dance").status, 404)
        self.assertEqual(len(b.get("/v1/tenants").json["tenants"]), 1)

    def test_crash_behind_our_back_is_repaired(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "bob"})
        first = b.wait_tenant("bob", "ready")
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        self.assertEqual(b.post("/v1/testdrv/bob/crash").status, 200)
        stopped = wait_until(lambda: [e for e in b.events(since=seq, type="container.stopped")
                                      if e["tenant"] == "bob"], what="container.stopped")
        self.assertEqual(stopped[0]["payload"]["exit_code"], 137)
        self.assertTrue(stopped[0]["payload"]["oom"])
        self.assertFalse(stopped[0]["payload"]["expected"])
        # desired is still running, so the reconciler starts it again
        wait_until(lambda: [e for e in b.events(since=seq, type="container.started")
                            if e["tenant"] == "bob"], what="a restart after the crash")
        t = b.wait_tenant("bob", "ready")
        self.assertEqual(t["id"], first["id"])


class Failures(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("{delay: 10ms}", "{delay: 10ms, fail_create: true}"),
            "20-retry.yaml": "berth:\n  reconcile: {retry_base: 100ms, retry_max: 400ms}\n"}

    def test_failed_step_is_visible_and_retried_until_fixed(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "carol"})
        t = wait_until(lambda: (b.tenant("carol") or {}).get("attempts", 0) >= 3 and
                       b.tenant("carol"), what="three failed attempts")
        self.assertEqual(t["observed"], "failed")
        self.assertIn("create failed: testdrv: create refused", t["reason"])
        fails = b.events(type="tenant.failed", tenant="carol")
        self.assertGreaterEqual(len(fails), 3)
        delays = [e["payload"]["retry_in_ms"] for e in fails[:4]]
        self.assertEqual(delays[:3], [100, 200, 400])   # doubling, capped
        show = b.ctl("tenant", "show", "carol").stdout
        self.assertIn("create failed", show)
        self.assertIn("retry:", show)
        # fix the cause: the reconciler retries idempotently and converges
        b.write("10-test.yaml", TESTDRV)
        self.assertEqual(b.post("/v1/reload").status, 200)
        t = b.wait_tenant("carol", "ready")
        self.assertIsNone(t["reason"])
        self.assertEqual(t["attempts"], 0)


class Finalizers(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("echo: {}",
                                            "echo: {finalize: true, finalize_delay: 700ms}")}

    def test_delete_waits_for_every_finalizer(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "dave"})
        t = b.wait_tenant("dave", "ready")
        self.assertEqual(t["finalizers"], ["echo/cleanup"])
        t0 = time.time()
        b.req("DELETE", "/v1/tenants/dave")
        t = wait_until(lambda: (b.tenant("dave") or {}).get("observed") == "absent" and
                       b.tenant("dave"), what="container removal")
        self.assertIn("waiting for finalizer echo/cleanup", t["reason"])
        wait_until(lambda: b.get("/v1/tenants/dave").status == 404, what="deletion")
        self.assertGreaterEqual(time.time() - t0, 0.6)


class Durability(unittest.TestCase):
    def test_sigkill_during_activity_loses_nothing(self):
        b = Berthd({"10-test.yaml": TESTDRV})
        try:
            b.start()
            acked = []
            for i in range(60):
                h = f"t{i:03d}"
                if b.post("/v1/tenants", {"handle": h}).status == 201:
                    acked.append(h)
                if i == 40:
                    b.post("/v1/tenants/t010/sleep")
            b.kill()     # in the middle of reconciling most of them
            b.start()
            tenants = {t["handle"]: t for t in b.get("/v1/tenants").json["tenants"]}
            self.assertEqual(sorted(tenants), sorted(acked))
            self.assertEqual(tenants["t010"]["desired"], "asleep")
            for h in acked:
                want = "stopped" if h == "t010" else "ready"
                wait_until(lambda: (b.tenant(h) or {}).get("observed") == want, what=h)
            # adopted, not duplicated: the driver holds exactly one container per tenant
            db = sqlite3.connect(os.path.join(b.state, "berth.db"))
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            self.assertEqual(db.execute("SELECT COUNT(*) FROM testdrv_containers").fetchone()[0],
                             len(acked))
            db.close()
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()

    def test_orphan_workload_is_adopted(self):
        b = Berthd({"10-test.yaml": TESTDRV})
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "erin"})
            b.wait_tenant("erin", "ready")
            self.assertEqual(b.stop(), 0)
            db = sqlite3.connect(os.path.join(b.state, "berth.db"))
            db.execute("DELETE FROM tenants")       # the record is lost, the container is not
            db.commit()
            db.close()
            b.start()
            t = b.wait_tenant("erin", "ready")
            self.assertEqual(t["template"], "default")
            self.assertIn("adopted erin", b.log())
        finally:
            b.stop()
            b.cleanup()


def count_syncs(pid, action):
    """fsync and fdatasync calls of process pid (all its threads) while action() runs."""
    out = tempfile.NamedTemporaryFile(prefix="berth-strace-", delete=False)
    out.close()
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-c", "-e", "trace=fsync,fdatasync",
                               "-o", out.name, "-p", str(pid)], stderr=subprocess.DEVNULL)
    try:
        def traced():
            with open(f"/proc/{pid}/status") as f:
                return any(ln.startswith("TracerPid:") and ln.split()[1] != "0" for ln in f)
        wait_until(traced, what="strace to attach")
        action()
    finally:
        tracer.terminate()
        tracer.wait()
    with open(out.name) as f:
        text = f.read()
    os.unlink(out.name)
    assert "total" in text, "strace wrote no summary: " + text
    # the summary's rows: % time, seconds, usecs/call, calls, [errors,] syscall
    return sum(int(row.split()[3]) for row in text.splitlines()
               if row.split()[-1:] in (["fsync"], ["fdatasync"]))


class Adoption(unittest.TestCase):
    N = 150

    def test_adopting_many_syncs_the_store_once_not_per_tenant(self):
        # Workloads labelled as ours with no record (a lost store): each is adopted with its
        # record and tenant.created event, and the records are synced together. Before: one
        # synced commit per adopted tenant, an fsync each with the loop waiting (seconds for
        # 500 containers on a busy disk).
        if not shutil.which("strace"):
            self.skipTest("needs strace")
        b = Berthd({"10-test.yaml": TESTDRV})
        try:
            b.start()                           # testdrv creates the table of its workloads
            self.assertEqual(b.stop(), 0)
            db = sqlite3.connect(os.path.join(b.state, "berth.db"))
            db.executemany("INSERT INTO testdrv_containers(handle,template,id,state) "
                           "VALUES(?1,'default',?2,'stopped')",
                           [(f"w{i:03d}", f"tc-w{i:03d}") for i in range(self.N)])
            db.commit()
            db.close()
            b.remove("10-test.yaml")            # no driver yet: it lists once traced
            b.start()

            def adopt():
                b.write("10-test.yaml", TESTDRV)
                b.signal(signal.SIGHUP)
                wait_until(lambda: b.get("/v1/system/info").json["tenants"]["total"] == self.N,
                           what="all workloads adopted")
            syncs = count_syncs(b.proc.pid, adopt)
            self.assertLess(syncs, 10, f"{syncs} syncs to adopt {self.N} workloads")

            tenants = b.get("/v1/tenants").json["tenants"]
            self.assertEqual(len(tenants), self.N)
            for t in tenants:                   # stopped workloads are adopted asleep
                self.assertEqual((t["driver"], t["desired"], t["observed"]),
                                 ("testdrv", "asleep", "stopped"), t)
                self.assertEqual(t["id"], "tc-" + t["handle"])
            wait_until(lambda: len(b.events(type="tenant.created")) == self.N,
                       what="a tenant.created event per adopted tenant")
            self.assertEqual(b.stop(), 0)
            db = sqlite3.connect(os.path.join(b.state, "berth.db"))
            rows = db.execute("SELECT driver, desired, observed, COUNT(*) FROM tenants "
                              "GROUP BY 1, 2, 3").fetchall()
            db.close()
            self.assertEqual(rows, [("testdrv", "asleep", "stopped", self.N)])
        finally:
            b.stop()
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
