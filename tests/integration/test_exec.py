"""The exec driver end to end through berthd: real processes, limits, logs, adoption."""
import os
import signal
import sqlite3
import time
import unittest

from exec_util import controller_dir, has_controller, remove_cgroups
from harness import Berthd, http_get, wait_until

EXEC = """plugins:
  exec: {ports: %d-%d}
templates:
  default:
    driver: exec
    command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    port: 8080
    env: {TZ: UTC, GREETING: "hi {handle}"}
    nofile: 256
    stop_timeout: 2s
  limited:
    driver: exec
    command: [sleep, "600"]
    cpus: 0.5
    memory: 96m
    pids: 40
  stubborn:
    driver: exec
    command: [sh, -c, "trap '' TERM; echo started; while :; do sleep 0.1; done"]
    stop_timeout: 300ms
"""


def read(path):
    with open(path) as f:
        return f.read()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] != "Z"


class Exec(unittest.TestCase):
    def setUp(self):
        base = 21000 + (os.getpid() % 200) * 20
        self.ports = (base, base + 19)
        self.b = Berthd({"10-exec.yaml": EXEC % self.ports}, plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.start()

    def tearDown(self):
        rc = self.b.stop()      # first: a stopped berthd restarts nothing we kill
        log = self.b.log()
        for pid in self.pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
        remove_cgroups(os.path.join(self.b.state, "exec"))
        self.b.cleanup()
        self.assertEqual(rc, 0, log[-3000:])

    def pids(self):
        try:
            db = sqlite3.connect(os.path.join(self.b.state, "berth.db"))
            rows = db.execute("SELECT pid FROM exec_procs WHERE pid IS NOT NULL").fetchall()
            db.close()
            return [r[0] for r in rows]
        except sqlite3.Error:
            return []

    def pid(self, handle):
        db = sqlite3.connect(os.path.join(self.b.state, "berth.db"))
        row = db.execute("SELECT pid FROM exec_procs WHERE handle=?", (handle,)).fetchone()
        db.close()
        return row[0] if row else None

    def test_life_cycle_with_limits_logs_and_data(self):
        b = self.b
        self.assertEqual(b.post("/v1/tenants", {"handle": "alice"}).status, 201)
        t = b.wait_tenant("alice", "ready")
        pid = self.pid("alice")
        self.assertTrue(alive(pid))
        wd = os.path.join(b.state, "exec", "alice")
        with open(os.path.join(wd, "hello.txt"), "w") as f:
            f.write("alice's data\n")
        self.assertEqual(http_get(t["address"], "/hello.txt"), "alice's data\n")
        self.assertRegex(read(f"/proc/{pid}/limits"), r"Max open files\s+256\s+256")
        env = dict(kv.split("=", 1) for kv in
                   read(f"/proc/{pid}/environ").split("\0") if "=" in kv)
        self.assertEqual(env["PORT"], t["address"].split(":")[1])
        self.assertEqual(env["BERTH_HANDLE"], "alice")
        self.assertEqual(env["TZ"], "UTC")
        self.assertEqual(env["HOME"], wd)
        self.assertEqual(os.getsid(pid), pid)       # its own session
        if has_controller("pids"):
            self.assertTrue(controller_dir(pid, "pids").endswith("/exec/alice"))
        if has_controller("cpu"):
            # without a cpu limit it is not made a CFS group of its own (cgroup.c says why)
            self.assertEqual(controller_dir(pid, "cpu"), controller_dir(b.proc.pid, "cpu"))
        # stdout and stderr go to the tenant's log file
        log = os.path.join(b.state, "exec", "alice.log")
        wait_until(lambda: "GET /hello.txt" in read(log), what="the request in the log")

        b.post("/v1/tenants/alice/sleep")
        b.wait_tenant("alice", "stopped")
        wait_until(lambda: not alive(pid), what="the process to be gone")
        b.post("/v1/tenants/alice/wake")
        t = b.wait_tenant("alice", "ready")
        self.assertNotEqual(self.pid("alice"), pid)
        self.assertEqual(http_get(t["address"], "/hello.txt"), "alice's data\n")

        b.req("DELETE", "/v1/tenants/alice")
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, what="deletion")
        self.assertFalse(os.path.exists(wd))
        self.assertFalse(os.path.exists(log))

    def test_limits_are_written_to_the_tenants_cgroup(self):
        for ctl in ("cpu", "memory", "pids"):
            if not has_controller(ctl):
                self.skipTest(f"this machine has no {ctl} cgroup controller")
        b = self.b
        b.post("/v1/tenants", {"handle": "lim", "template": "limited"})
        b.wait_tenant("lim", "ready")
        pid = self.pid("lim")
        cpu, mem, pids = (controller_dir(pid, c) for c in ("cpu", "memory", "pids"))
        for d in (cpu, mem, pids):
            self.assertTrue(d.endswith("/exec/lim"), d)     # <root>/<instance>/<handle>
        if os.path.exists(os.path.join(cpu, "cpu.max")):   # v2
            self.assertEqual(read(os.path.join(cpu, "cpu.max")).split(), ["50000", "100000"])
            self.assertEqual(int(read(os.path.join(mem, "memory.max"))), 96 << 20)
        else:
            self.assertEqual(int(read(os.path.join(cpu, "cpu.cfs_quota_us"))), 50000)
            self.assertEqual(int(read(os.path.join(cpu, "cpu.cfs_period_us"))), 100000)
            self.assertEqual(int(read(os.path.join(mem, "memory.limit_in_bytes"))), 96 << 20)
        self.assertEqual(read(os.path.join(pids, "pids.max")).strip(), "40")
        b.req("DELETE", "/v1/tenants/lim")
        wait_until(lambda: b.get("/v1/tenants/lim").status == 404, what="deletion")
        for d in (cpu, mem, pids):
            self.assertFalse(os.path.exists(d), d)          # delete removes the cgroup

    def test_a_limit_the_machine_cannot_enforce_is_refused(self):
        b = self.b
        b.write("10-exec.yaml", EXEC.replace("{ports: %d-%d}", "{ports: %d-%d, cgroups: off}")
                % self.ports)
        self.assertEqual(b.stop(), 0)
        b.start()
        self.assertIn("no cgroups (exec.cgroups is off)", b.log())
        b.post("/v1/tenants", {"handle": "lim", "template": "limited"})
        t = wait_until(lambda: "cannot enforce" in ((b.tenant("lim") or {}).get("reason") or "")
                       and b.tenant("lim"), what="the refusal on the tenant")
        self.assertIn("cpus (cgroup cpu controller)", t["reason"])
        self.assertIsNone(self.pid("lim"))
        self.assertEqual(b.post("/v1/tenants", {"handle": "ok"}).status, 201)
        b.wait_tenant("ok", "ready")        # a template without limits still runs

    def test_a_user_that_is_not_a_uid_is_refused(self):
        b = self.b
        users = ["4294967296", "-1", "65534:-1", " 65534", "4294967295"]
        b.write("20-user.yaml", "templates:\n" + "".join(
            f"  odd{i}:\n    driver: exec\n    command: [sleep, '600']\n    user: '{u}'\n"
            for i, u in enumerate(users)))
        self.assertEqual(b.stop(), 0)
        b.start()
        for i, user in enumerate(users):
            h = f"odd{i}"
            self.assertEqual(b.post("/v1/tenants", {"handle": h, "template": h}).status, 201)
            t = wait_until(lambda: "is not uid[:gid]" in ((b.tenant(h) or {}).get("reason")
                                                          or "") and b.tenant(h),
                           what=f"the refusal of user {user!r}")
            self.assertNotEqual(t["observed"], "ready", user)
            self.assertIsNone(self.pid(h), user)    # nothing ran, least of all as root

    def test_unexpected_exit_is_reported_and_repaired(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "bob"})
        b.wait_tenant("bob", "ready")
        pid = self.pid("bob")
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        os.kill(pid, signal.SIGKILL)
        ev = wait_until(lambda: b.events(since=seq, type="container.stopped", tenant="bob"),
                        what="container.stopped")[0]["payload"]
        self.assertEqual(ev["exit_code"], 137)
        self.assertIn("killed by signal 9", ev["message"])
        self.assertFalse(ev["expected"])
        wait_until(lambda: (self.pid("bob") or pid) != pid and alive(self.pid("bob")),
                   what="a new process")
        b.wait_tenant("bob", "ready")

    def test_processes_are_adopted_after_berthd_dies(self):
        b = self.b
        for h in ("ann", "ben"):
            b.post("/v1/tenants", {"handle": h})
        for h in ("ann", "ben"):
            b.wait_tenant(h, "ready")
        before = {h: self.pid(h) for h in ("ann", "ben")}
        b.kill()
        self.assertTrue(all(alive(p) for p in before.values()))
        b.start()
        for h in ("ann", "ben"):
            b.wait_tenant(h, "ready")
        self.assertEqual({h: self.pid(h) for h in ("ann", "ben")}, before)
        self.assertIn("adopted running pid", b.log())
        # an adopted process is still supervised
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        os.kill(before["ann"], signal.SIGTERM)
        wait_until(lambda: b.events(since=seq, type="container.stopped", tenant="ann"),
                   what="the adopted process's exit")
        wait_until(lambda: (self.pid("ann") or 0) not in (0, before["ann"]), what="a restart")

    def test_a_record_or_log_that_is_not_a_regular_file_never_holds_berthd(self):
        """The record and the log beside the working directory are opened by berthd; a tenant
        running as berthd's user can reach them (`../<handle>.run`). A FIFO there used to
        hold the loop in open() until a writer came: no answer to anything, ever."""
        b = self.b
        b.post("/v1/tenants", {"handle": "fifo"})
        b.wait_tenant("fifo", "ready")
        rec = os.path.join(b.state, "exec", "fifo.run")
        os.unlink(rec)
        os.mkfifo(rec)
        self.assertEqual(b.post("/v1/tenants/fifo/sleep").status, 202)
        b.wait_tenant("fifo", "stopped")
        self.assertTrue(os.path.isfile(rec), "the record is written again, as a file")
        self.assertIn("state=stopped", read(rec))
        self.assertEqual(b.get("/health").status, 200)
        # the log beside it: opened by berthd at each start, refused unless a regular file
        log = os.path.join(b.state, "exec", "fifo.log")
        os.unlink(log)
        os.mkfifo(log)
        self.assertEqual(b.post("/v1/tenants/fifo/wake").status, 202)
        wait_until(lambda: "not a regular file" in (b.tenant("fifo")["reason"] or ""),
                   what="the start to be refused")
        self.assertEqual(b.get("/health").status, 200)
        os.unlink(log)
        b.wait_tenant("fifo", "ready", timeout=15)
        self.assertTrue(os.path.isfile(log))

    def test_sigterm_ignored_escalates_to_sigkill(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "stub", "template": "stubborn"})
        b.wait_tenant("stub", "ready")
        pid = self.pid("stub")
        log = os.path.join(b.state, "exec", "stub.log")
        wait_until(lambda: "started" in read(log), what="the shell to install its trap")
        t0 = time.time()
        b.post("/v1/tenants/stub/sleep")
        b.wait_tenant("stub", "stopped")
        self.assertGreaterEqual(time.time() - t0, 0.25)
        self.assertFalse(alive(pid))
        self.assertIn("still running after SIGTERM; SIGKILL", b.log())


if __name__ == "__main__":
    unittest.main()
