"""exec under hostile workloads and lost state: no tenant process outlives its stop or delete,
limits hold, and a lost database never runs a tenant twice. Processes are counted from /proc
by a marker in their environment, which every descendant inherits."""
import os
import signal
import sqlite3
import subprocess
import time
import unittest
import uuid

from exec_util import (cgroup_name, controller_dir, cpu_ticks, has_controller, marked,
                       read, stop_and_clean)
from harness import SLOW, Berthd, wait_until

# A leader with a child that ignores SIGTERM and one that leaves the session with setsid;
# both keep running after the leader is gone. The forks happen once, at start: the tree is
# then exactly three processes. The orphaner
# template runs it with 0.3: its leader leaves the two behind and exits.
TREE = ("import os, signal, sys, time\\n"
        "def child(setsid):\\n"
        "    if os.fork() == 0:\\n"
        "        if setsid: os.setsid()\\n"
        "        else: signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "        while True: time.sleep(1)\\n"
        "child(False)\\n"
        "child(True)\\n"
        "print('started', flush=True)\\n"
        "time.sleep(float(sys.argv[1]))\\n")

EXEC = """plugins:
  exec: {ports: %d-%d, cgroups: %s}
templates:
  tree:
    driver: exec
    command: [python3, -c, "%s", "600"]
    env: {MARK: "%s"}
    stop_timeout: 300ms
  orphaner:
    driver: exec
    command: [python3, -c, "%s", "0.3"]
    stop_timeout: 300ms
    env: {MARK: "%s"}
  busy:
    driver: exec
    command: [sh, -c, "while :; do :; done"]
    env: {MARK: "%s"}
    cpus: 0.5
  forker:
    driver: exec
    command: [python3, -c, "%s"]
    env: {MARK: "%s"}
    pids: 16
  hog:
    driver: exec
    command: [python3, -c, "%s"]
    env: {MARK: "%s"}
    memory: 48m
"""

# Takes memory a MiB at a time, touching every page, far past the template's 48m.
HOG = ("x = []\\n"
       "for i in range(1024):\\n"
       "    x.append(bytearray(1 << 20))\\n"
       "print('took 1 GiB', flush=True)\\n")

FORKER = ("import os, time\\n"
          "n = 0\\n"
          "try:\\n"
          "    for i in range(100):\\n"
          "        if os.fork() == 0:\\n"
          "            time.sleep(600)\\n"
          "            os._exit(0)\\n"
          "        n += 1\\n"
          "except OSError as e:\\n"
          "    print('refused after', n, 'errno', e.errno, flush=True)\\n"
          "print('forked', n, flush=True)\\n"
          "time.sleep(600)\\n")


def descends(pid, ancestor):
    """True when ancestor is pid or one of its ancestors (by /proc's parent pids)."""
    while pid > 1 and pid != ancestor:
        try:
            pid = int(read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[1])
        except OSError:
            return False
    return pid == ancestor


def alive(pid):
    try:
        return read(f"/proc/{pid}/stat").rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cgroups_in_use(b):
    return "no cgroups (" not in b.log()


class ExecFaults(unittest.TestCase):
    """With a cgroup per tenant where the machine has them (exec.cgroups: auto)."""
    cgroups = "auto"

    def setUp(self):
        base = 23000 + (os.getpid() % 200) * 10 + (5 if self.cgroups == "off" else 0)
        self.mark = "berth-test-" + uuid.uuid4().hex
        conf = EXEC % (base, base + 4, self.cgroups, TREE, self.mark, TREE, self.mark,
                       self.mark, FORKER, self.mark, HOG, self.mark)
        self.b = Berthd({"10-exec.yaml": conf}, plugins=())
        self.b.install_plugin_from_build("exec")
        self.b.start()

    def tearDown(self):
        rc, log = stop_and_clean(self.b, self.mark)
        self.assertEqual(rc, 0, log[-3000:])

    def need_cgroups(self, *ctls):
        if not cgroups_in_use(self.b):
            self.skipTest("no usable cgroups on this machine: " + self.b.log().split(
                "no cgroups (", 1)[1].split(")")[0])
        for c in ctls:
            if not has_controller(c):
                self.skipTest(f"this machine has no {c} cgroup controller")

    def leader(self, handle):
        """The workload's first process: the recorded pid, or with a supervisor its child."""
        pid = self.pid(handle)
        if cgroups_in_use(self.b):
            return pid
        return int(read(f"/proc/{pid}/task/{pid}/children").split()[0])

    def pid(self, handle):
        db = sqlite3.connect(os.path.join(self.b.state, "berth.db"))
        row = db.execute("SELECT pid FROM exec_procs WHERE handle=?", (handle,)).fetchone()
        db.close()
        return row[0] if row else None

    def start_tree(self, handle):
        self.b.post("/v1/tenants", {"handle": handle, "template": "tree"})
        self.b.wait_tenant(handle, "ready")
        log = os.path.join(self.b.state, "exec", handle + ".log")
        wait_until(lambda: os.path.exists(log) and "started" in read(log), what="the tree")
        return wait_until(lambda: len(marked(self.mark)) == 3 and marked(self.mark),
                          what="the whole tree")

    def test_stop_and_delete_leave_no_survivor(self):
        b = self.b
        pids = self.start_tree("tt")
        leader_sid = os.getsid(self.pid("tt"))
        wait_until(lambda: [p for p in pids if os.getsid(p) != leader_sid],
                   what="the setsid child to be in a session of its own")
        for cycle in range(3):
            b.post("/v1/tenants/tt/sleep")
            b.wait_tenant("tt", "stopped")
            # stopped means the whole cgroup is empty: no polling for stragglers
            self.assertEqual(marked(self.mark), [], f"survivors after sleep #{cycle + 1}")
            b.post("/v1/tenants/tt/wake")
            b.wait_tenant("tt", "ready")
            wait_until(lambda: len(marked(self.mark)) >= 3, what="the tree again")
        self.assertEqual(len(marked(self.mark)), 3, "one tree, not an accumulation")
        cg = cgroups_in_use(b) and controller_dir(self.pid("tt"), "pids")
        b.req("DELETE", "/v1/tenants/tt")
        wait_until(lambda: b.get("/v1/tenants/tt").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [], "survivors after delete")
        if cg:
            self.assertFalse(os.path.exists(cg), "the tenant's cgroup is removed")

    def test_delete_of_a_running_tree_leaves_no_survivor(self):
        self.start_tree("dd")
        self.b.req("DELETE", "/v1/tenants/dd")
        wait_until(lambda: self.b.get("/v1/tenants/dd").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [])

    def test_a_leader_that_exits_takes_its_tree_along(self):
        b = self.b
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        b.post("/v1/tenants", {"handle": "orph", "template": "orphaner"})
        ev = wait_until(lambda: b.events(since=seq, type="container.stopped", tenant="orph"),
                        what="the leader's exit")[0]["payload"]
        self.assertEqual(ev["exit_code"], 0)
        # what it left behind was killed before the exit was reported, and every restart
        # starts from nothing: never more than one run's processes at a time
        deadline = time.time() + 10 * SLOW
        while len(b.events(since=seq, type="container.stopped", tenant="orph")) < 2:
            self.assertLessEqual(len(marked(self.mark)), 3, "one run at a time")
            self.assertLess(time.time(), deadline, "a second run of the orphaner")
            time.sleep(0.05)
        b.req("DELETE", "/v1/tenants/orph")
        wait_until(lambda: b.get("/v1/tenants/orph").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [])

    def test_leftovers_of_a_leader_that_died_while_berthd_was_down_are_killed(self):
        b = self.b
        pids = self.start_tree("ll")
        first, leader = self.pid("ll"), self.leader("ll")
        b.kill()
        os.kill(leader, signal.SIGKILL)
        wait_until(lambda: leader not in marked(self.mark), what="the leader's death")
        left = marked(self.mark)    # with a supervisor: already being killed by it
        b.start()
        wait_until(lambda: (self.pid("ll") or first) != first, what="a new run")
        b.wait_tenant("ll", "ready")
        wait_until(lambda: len(marked(self.mark)) == 3, what="the new tree")
        self.assertFalse(set(left) & set(marked(self.mark)), "the leftovers were killed")
        self.assertFalse(set(pids) & set(marked(self.mark)))
        if cgroups_in_use(b):
            # found without a leader, or adopted as a zombie that then reports its end
            self.assertRegex(b.log(), "processes without their leader; killing them|"
                             "leader exited .*; killing what it left")

    def test_a_tree_started_without_cgroups_is_stopped_after_they_are_turned_on(self):
        self.need_cgroups()
        b = self.b
        conf = os.path.join(b.conf, "10-exec.yaml")
        auto = read(conf)
        b.write("10-exec.yaml", auto.replace("cgroups: auto", "cgroups: off"))
        self.assertEqual(b.stop(), 0)
        b.start()
        pids = self.start_tree("up")
        self.assertEqual(read(f"/proc/{self.pid('up')}/comm").strip(), "berth-supervise")
        b.write("10-exec.yaml", auto)
        self.assertEqual(b.stop(), 0)
        b.start()
        b.wait_tenant("up", "ready")
        self.assertEqual(sorted(marked(self.mark)), sorted(pids))     # adopted as it runs
        b.post("/v1/tenants/up/sleep")
        b.wait_tenant("up", "stopped")
        self.assertEqual(marked(self.mark), [])
        b.post("/v1/tenants/up/wake")
        b.wait_tenant("up", "ready")
        self.assertTrue(controller_dir(self.pid("up"), "pids").endswith("/exec/up"))

    def test_cpu_limit_holds_a_busy_loop_to_half_a_cpu(self):
        self.need_cgroups("cpu")
        b = self.b
        b.post("/v1/tenants", {"handle": "busy", "template": "busy"})
        b.wait_tenant("busy", "ready")
        pid = self.pid("busy")
        cpu = controller_dir(pid, "cpu")
        quota = (read(os.path.join(cpu, "cpu.max")).split()[0]
                 if os.path.exists(os.path.join(cpu, "cpu.max"))
                 else read(os.path.join(cpu, "cpu.cfs_quota_us")).strip())
        self.assertEqual(quota, "50000")
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0 = time.monotonic(), cpu_ticks(pid)
        time.sleep(2)       # the measurement window, not a synchronisation
        share = (cpu_ticks(pid) - c0) / hz / (time.monotonic() - t0)
        print(f"busy loop under cpus 0.5: {share:.2f} CPU")
        # the upper bound is the limit; the lower one only says it ran (a loaded machine may
        # give it much less than its quota)
        self.assertGreater(share, 0.05)
        self.assertLess(share, 0.65)

    def test_pids_limit_refuses_a_fork_bombs_extra_forks(self):
        self.need_cgroups("pids")
        b = self.b
        b.post("/v1/tenants", {"handle": "fb", "template": "forker"})
        b.wait_tenant("fb", "ready")
        log = os.path.join(b.state, "exec", "fb.log")
        wait_until(lambda: os.path.exists(log) and "forked" in read(log), what="the forks")
        # pids.max 16 counts the leader: 15 children, then EAGAIN
        self.assertIn("refused after 15 errno 11", read(log))
        self.assertEqual(len(marked(self.mark)), 16)
        b.req("DELETE", "/v1/tenants/fb")
        wait_until(lambda: b.get("/v1/tenants/fb").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [])

    def test_memory_limit_kills_a_tree_that_takes_more(self):
        self.need_cgroups("memory")
        b = self.b
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        b.post("/v1/tenants", {"handle": "hog", "template": "hog"})
        ev = wait_until(lambda: b.events(since=seq, type="container.stopped", tenant="hog"),
                        10, what="the hog's end")[0]["payload"]
        self.assertEqual(ev["exit_code"], 128 + signal.SIGKILL, ev)
        self.assertTrue(ev["oom"], ev)      # said as docker says it: not any SIGKILL
        self.assertIn("out of memory", ev["message"])
        self.assertNotIn("took 1 GiB", read(os.path.join(b.state, "exec", "hog.log")))
        b.req("DELETE", "/v1/tenants/hog")
        wait_until(lambda: b.get("/v1/tenants/hog").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [])

    def test_a_cgroup_with_neither_row_nor_record_is_emptied_and_removed(self):
        """Processes in a tenant cgroup berthd has no row or record of (both lost): nothing
        can tell what they run, so they are killed and the cgroup removed at start."""
        self.need_cgroups()
        b = self.b
        self.assertEqual(b.stop(), 0)
        # where berthd keeps this instance's tenants, in the hierarchies exec uses
        name = cgroup_name(os.path.join(b.state, "exec"))
        roots = [os.path.join(controller_dir(os.getpid(), c), name)
                 for c in ("memory", "pids", "freezer") if controller_dir(os.getpid(), c)]
        ghost = subprocess.Popen(["sleep", "600"], env={"MARK": self.mark})
        self.addCleanup(ghost.wait)
        self.addCleanup(ghost.kill)
        dirs = [os.path.join(r, "exec", "ghost") for r in roots]
        for d in dirs:
            os.makedirs(d)
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(ghost.pid))
        self.assertEqual(marked(self.mark), [ghost.pid])
        b.start()
        wait_until(lambda: ghost.poll() is not None, 10, what="the ghost to be killed")
        self.assertEqual(ghost.returncode, -signal.SIGKILL)
        wait_until(lambda: not any(os.path.isdir(d) for d in dirs), 3,
                   what=f"the ghost's cgroups to be removed: {[d for d in dirs if os.path.isdir(d)]}")
        self.assertIn("tenant ghost: processes without their leader; killing them", b.log())
        self.assertIsNone(b.tenant("ghost"))

    def test_lost_database_adopts_instead_of_running_twice(self):
        b = self.b
        pids = self.start_tree("keep")
        leader = self.pid("keep")
        self.assertEqual(b.stop(), 0)
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(os.path.join(b.state, "berth.db" + suffix))
            except FileNotFoundError:
                pass
        b.start()
        t = b.wait_tenant("keep", "ready")
        self.assertEqual(t["template"], "tree")
        self.assertIn("restored from its record", b.log())
        # an operator who finds it missing creates it again: still the one tree
        b.post("/v1/tenants", {"handle": "keep", "template": "tree"})
        b.wait_tenant("keep", "ready")
        self.assertEqual(self.pid("keep"), leader)
        self.assertEqual(sorted(marked(self.mark)), sorted(pids))
        # and it is still supervised: a stop ends all of it
        b.post("/v1/tenants/keep/sleep")
        b.wait_tenant("keep", "stopped")
        self.assertEqual(marked(self.mark), [])

    def test_database_deleted_under_a_running_berthd_never_runs_a_tenant_twice(self):
        """Issue 8 #4 as reported: the database deleted while berthd runs, then a restart."""
        b = self.b
        pids = self.start_tree("gone")
        leader = self.pid("gone")
        os.unlink(os.path.join(b.state, "berth.db"))
        r = b.post("/v1/tenants", {"handle": "late", "template": "tree"})
        self.assertEqual(r.status, 503, r.body)       # noticed at this write, refused
        self.assertIn("was deleted while berthd had it open", b.log())
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        self.assertEqual(sorted(marked(self.mark)), sorted(pids), "kept running")
        b.start()
        b.wait_tenant("gone", "ready")
        self.assertIsNone(b.tenant("late"))
        b.post("/v1/tenants", {"handle": "gone", "template": "tree"})
        b.wait_tenant("gone", "ready")
        self.assertEqual(self.pid("gone"), leader)
        self.assertEqual(sorted(marked(self.mark)), sorted(pids), "the tenant runs twice")
        b.req("DELETE", "/v1/tenants/gone")
        wait_until(lambda: b.get("/v1/tenants/gone").status == 404, what="deletion")
        self.assertEqual(marked(self.mark), [])

    def test_berthd_killed_before_it_recorded_a_start_runs_it_once(self):
        """The window of a start between fork and the durable record of the pid: the
        database is held locked (berthd waits up to its busy timeout in its write), a crash
        restarts the tenant, berthd is SIGKILLed while its new process is forked. A restart
        must not run the tenant a second time beside a run it never recorded."""
        b = self.b
        old = set(self.start_tree("once")) | {self.pid("once")}
        berthd = b.proc.pid
        db = sqlite3.connect(os.path.join(b.state, "berth.db"), timeout=10,
                             isolation_level=None)
        db.execute("BEGIN EXCLUSIVE")
        try:
            os.kill(self.leader("once"), signal.SIGKILL)

            def forked():
                kids = read(f"/proc/{berthd}/task/{berthd}/children").split()
                return [k for k in map(int, kids) if k not in old and alive(k)]
            wait_until(forked, 20 * SLOW, what="berthd forking the tenant's new run")
            b.kill()
        finally:
            db.execute("ROLLBACK")
            db.close()
        b.start()
        b.wait_tenant("once", "ready", timeout=20 * SLOW)

        def run():      # the marked processes of the run berthd recorded, once all started
            pid = self.pid("once")
            mine = [p for p in marked(self.mark) if descends(p, pid)]
            return pid not in old and len(mine) == 3 and mine
        mine = wait_until(run, 10 * SLOW, what="the recorded run")
        self.assertEqual(sorted(marked(self.mark)), sorted(mine), "the tenant runs twice")


class ExecFaultsSupervised(ExecFaults):
    """The same trees without cgroups (exec.cgroups: off): a subreaper supervisor per tenant
    holds each tree. Limits are cgroup limits, refused in this mode (see test_exec)."""
    cgroups = "off"
    test_cpu_limit_holds_a_busy_loop_to_half_a_cpu = None
    test_pids_limit_refuses_a_fork_bombs_extra_forks = None
    test_memory_limit_kills_a_tree_that_takes_more = None
    test_a_cgroup_with_neither_row_nor_record_is_emptied_and_removed = None
    test_a_tree_started_without_cgroups_is_stopped_after_they_are_turned_on = None

    def test_the_supervisor_is_in_use(self):
        self.assertIn("no cgroups (exec.cgroups is off)", self.b.log())
        pids = self.start_tree("sv")
        sup = self.pid("sv")
        self.assertEqual(read(f"/proc/{sup}/comm").strip(), "berth-supervise")
        self.assertNotIn(sup, pids)
        self.assertIn(self.leader("sv"), pids)


if __name__ == "__main__":
    unittest.main()
