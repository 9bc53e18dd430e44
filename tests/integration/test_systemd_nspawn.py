"""berthd.service under a real systemd: the tree `meson install` makes is booted as a throwaway
OS with systemd-nspawn (a tmpfs root, the host's /usr, the installed prefix bound read-only),
and the installed unit is started, reloaded, watched and stopped through that systemd. What is
asserted is what systemd itself saw: the states `systemctl show` reports and the notification
messages it logs at debug level, and what journald stored of berthd's lines.

Skipped, with the reason, where nspawn cannot run (not root, no systemd-container, a /usr that
is not merged). On a host whose PID 1 is not systemd, the container's cgroups are kept in a
private subtree made for this test, and removed with it."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import uuid

from harness import BUILD, SLOW, die_with_parent, wait_until

UNIT = "berthd.service"
# a template without a memory limit: a container on a cgroup v1 host has no memory controller
PLAIN = """templates:
  plain:
    driver: exec
    command: [python3, -m, http.server, --bind, 127.0.0.1, "{port}"]
    port: 8080
    stop_timeout: 5s
"""


def find(root, suffix):
    for d, _, files in os.walk(root):
        for f in files:
            if os.path.join(d, f).endswith(suffix):
                return os.path.join(d, f)
    raise AssertionError(f"{suffix} is not installed under {root}")


def why_not():
    """None where nspawn can boot the host's /usr here, else the reason"""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if not shutil.which("systemd-nspawn"):
        return "systemd-nspawn is not installed (Debian: systemd-container)"
    if not os.path.islink("/bin") or not os.path.exists("/lib/systemd/systemd"):
        return "the host's /usr is not a merged-usr systemd system that nspawn can boot"
    return None


def own_cgroups():
    """the cgroup directories this process is in, for the hierarchies nspawn manages (the
    unified one and a v1 name=systemd one): [(mountpoint-relative dir, path)]"""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctl, path = line.rstrip("\n").split(":", 2)
            paths[ctl] = path
    dirs = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            fields, (fstype, _, opts) = left.split(), right.split()[:3]
            key = "" if fstype == "cgroup2" else "name=systemd" if (
                fstype == "cgroup" and "name=systemd" in opts.split(",")) else None
            if key is None or key not in paths:
                continue
            root, mnt = fields[3], fields[4]
            rel = os.path.relpath(paths[key], root) if paths[key] != root else "."
            dirs.append(os.path.normpath(os.path.join(mnt, rel)))
    return dirs


def remove_cgroup(path):
    """removes a cgroup subtree once its processes are gone (a killed PID namespace empties
    it shortly after its init dies)"""
    def gone():
        for d, subdirs, _ in os.walk(path, topdown=False):
            for s in subdirs:
                try:
                    os.rmdir(os.path.join(d, s))
                except OSError:
                    pass
        try:
            os.rmdir(path)
        except OSError:
            pass
        return not os.path.exists(path)
    wait_until(gone, 10, 0.1, what=f"an empty {path}")


class Container:
    """one booted systemd-nspawn container holding the installed berth tree"""

    def __init__(self, dest, prefix, conf, unit, dropins):
        self.dir = tempfile.mkdtemp(prefix="berth-nspawn-")
        self.name = f"berth-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        with open(os.path.join(self.dir, "machine-id"), "w") as f:
            f.write(uuid.uuid4().hex + "\n")   # a set machine id: no first boot, no presets
        self.cgroups = []
        if not os.path.isdir("/run/systemd/system"):   # sd_booted(): PID 1 is not systemd
            self.cgroups = [os.path.join(d, self.name) for d in own_cgroups()]
            for d in self.cgroups:
                os.mkdir(d)
        cmd = ["systemd-nspawn", "--quiet", "--directory=/", "--volatile=yes", "--boot",
               f"--machine={self.name}", "--register=no", "--private-network",
               "--console=passive",
               f"--bind-ro={self.dir}/machine-id:/etc/machine-id",
               f"--bind-ro={dest}{prefix}:{prefix}", f"--bind={conf}:{conf[len(dest):]}",
               f"--bind-ro={unit}:/etc/systemd/system/{UNIT}",
               f"--bind-ro={dropins}:/etc/systemd/system/{UNIT}.d"]
        if self.cgroups:
            cmd.append("--keep-unit")   # stay in the private subtree, not a scope of PID 1
        cmd.append("systemd.firstboot=off")
        self.log = open(os.path.join(self.dir, "nspawn.log"), "wb")
        self.pid = None
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                         stderr=subprocess.STDOUT, preexec_fn=self.enter)
        except BaseException:
            self.proc = None
            self.close()
            raise

    def enter(self):
        die_with_parent()
        for d in self.cgroups:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def nspawn_log(self):
        with open(os.path.join(self.dir, "nspawn.log"), errors="replace") as f:
            return f.read()[-2000:]

    def init_pid(self):
        """the container's PID 1, as this host sees it"""
        if self.proc.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}: "
                               f"{self.nspawn_log()}")
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                kids = f.read().split()
        except OSError:
            return None
        for k in kids:
            try:
                with open(f"/proc/{k}/status") as f:
                    ns = [ln for ln in f if ln.startswith("NSpid:")][0].split()
            except (OSError, IndexError):
                continue
            if len(ns) == 3 and ns[2] == "1":
                return int(k)
        return None

    def boot(self):
        self.pid = wait_until(self.init_pid, 20, 0.05, what="the container's systemd")
        wait_until(lambda: self.run("systemctl", "is-system-running").stdout.strip() in
                   ("running", "degraded"), 30, 0.1, what="the container's boot")
        # systemd logs each notification message it gets from a service at debug level
        self.run("systemctl", "log-level", "debug", check=True)

    def run(self, *cmd, check=False, timeout=60):
        return subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-n", "-i", "-u",
                               "--"] + list(cmd), capture_output=True, text=True,
                              check=check, timeout=timeout * SLOW)

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # nspawn powers the container off
            try:
                self.proc.wait(20 * SLOW)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)   # its PID namespace goes with it
            except ProcessLookupError:
                pass
        self.log.close()
        for d in self.cgroups:
            remove_cgroup(d)
        shutil.rmtree(self.dir, ignore_errors=True)


class UnderSystemd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        reason = why_not()
        if reason:
            raise unittest.SkipTest(reason)
        cls.dest = tempfile.mkdtemp(prefix="berth-nspawn-install-")
        try:
            subprocess.run(["meson", "install", "-C", BUILD, "--destdir", cls.dest,
                            "--no-rebuild", "--quiet"], check=True, capture_output=True,
                           timeout=120 * SLOW)
            berthd = find(cls.dest, "/sbin/berthd")
            cls.prefix = os.path.dirname(os.path.dirname(berthd))[len(cls.dest):]
            if cls.prefix in ("", "/", "/usr"):
                raise unittest.SkipTest(f"prefix {cls.prefix!r} would hide the host's /usr")
            cls.conf = os.path.dirname(find(cls.dest, "/etc/berth/conf.d/00-berth.yaml"))
            with open(os.path.join(cls.conf, "50-plain.yaml"), "w") as f:
                f.write(PLAIN)
            cls.dropins = os.path.join(cls.dest, "dropins")
            os.mkdir(cls.dropins)
            cls.write_dropin("00-test.conf", cls.base_dropin())
            cls.c = Container(cls.dest, cls.prefix, cls.conf,
                              find(cls.dest, f"/systemd/system/{UNIT}"), cls.dropins)
        except BaseException:
            shutil.rmtree(cls.dest, ignore_errors=True)
            raise
        try:
            cls.c.boot()
        except (RuntimeError, AssertionError) as e:
            log = cls.c.nspawn_log()
            cls.c.close()
            shutil.rmtree(cls.dest, ignore_errors=True)
            raise unittest.SkipTest(f"systemd-nspawn cannot boot a container here: {e}; {log}")

    @classmethod
    def tearDownClass(cls):
        cls.c.close()
        shutil.rmtree(cls.dest, ignore_errors=True)

    @classmethod
    def base_dropin(cls):
        """a start that never sees READY=1 fails in seconds, not 90; a sanitizer build's
        berthd reports a leak or UB through its exit status, as under the harness"""
        lines = ["[Service]", f"TimeoutStartSec={int(15 * SLOW)}s"]
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if k in os.environ:
                lines.append(f"Environment={k}={os.environ[k]}")
        return "\n".join(lines) + "\n"

    @classmethod
    def write_dropin(cls, name, text):
        with open(os.path.join(cls.dropins, name), "w") as f:
            f.write(text)

    def setUp(self):
        self.began = self.mark()
        self.systemctl("start", UNIT)
        self.assertEqual(self.show("ActiveState"), "active")

    def tearDown(self):
        # every berthd that ended (a stop, a restart) exited 0: no leak, no sanitizer report
        ends = [e["MESSAGE"] for e in self.journal(after=self.began)
                if "Main process exited" in e.get("MESSAGE", "")]
        self.assertEqual([m for m in ends if "status=0/SUCCESS" not in m], [])

    # what systemd says

    def systemctl(self, *args, ok=True):
        p = self.c.run("systemctl", *args)
        if ok:
            self.assertEqual(p.returncode, 0, f"systemctl {' '.join(args)}: {p.stderr}\n"
                             f"{self.journal_text()}")
        return p

    def show(self, prop):
        return self.systemctl("show", UNIT, "-p", prop, "--value").stdout.strip()

    def mark(self):
        """the cursor of the journal's last entry: journal(after=) is what came later"""
        p = self.c.run("journalctl", "-n", "1", "-o", "json", "--no-pager", check=True)
        return json.loads(p.stdout.splitlines()[-1])["__CURSOR"]

    def journal(self, after=None):
        """what systemd logged about the unit, and berthd's own lines. Not `-u`: without a
        cgroup namespace, journald in the container may file berthd's stream under
        init.scope (it resolves the peer while systemd's forked child is still there)"""
        cmd = ["journalctl", "-o", "json", "--no-pager"]
        if after:
            cmd.append(f"--after-cursor={after}")
        p = self.c.run(*cmd, check=True)
        entries = (json.loads(ln) for ln in p.stdout.splitlines() if ln.strip())
        return [e for e in entries if UNIT in (e.get("UNIT"), e.get("_SYSTEMD_UNIT")) or
                e.get("SYSLOG_IDENTIFIER") == "berthd"]

    def journal_text(self):
        return self.c.run("journalctl", "-u", UNIT, "--no-pager", "-n", "40").stdout

    def notified(self, entries, pid, state):
        """indexes of the entries where systemd logged a notification `state` from pid"""
        want = re.compile(rf"Got notification message from PID {pid} \({re.escape(state)}\b")
        return [i for i, e in enumerate(entries) if want.search(e.get("MESSAGE", ""))]

    def index(self, entries, text):
        hits = [i for i, e in enumerate(entries) if text in e.get("MESSAGE", "")]
        self.assertTrue(hits, f"no journal entry with {text!r}")
        return hits[0]

    def ctl(self, *args):
        return self.c.run(f"{self.prefix}/bin/berthctl", "--socket", "/var/lib/berth/berth.sock",
                          *args)

    def info(self):
        p = self.ctl("info", "--json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads(p.stdout)

    def wait_journal(self, after, pid, says):
        """the journal entries after the cursor once berthd (pid) has logged `says`: its lines
        reach journald through a stream, behind the notifications systemd logs itself"""
        def done():
            got = self.journal(after=after)
            return got if any(e.get("_PID") == pid and says in e.get("MESSAGE", "")
                              for e in got) else None
        return wait_until(done, 10, 0.05, what=f"berthd's {says!r} in the journal")

    def tenant(self, handle):
        p = self.ctl("tenant", "show", handle, "--json")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return json.loads(p.stdout)

    def reload_and_wait(self, pid, says):
        """systemctl reload; returns the journal entries once berthd said `says` after it"""
        mark = self.mark()
        self.systemctl("reload", UNIT)
        got = self.wait_journal(mark, pid, says)
        rel = self.notified(got, pid, "RELOADING=1")
        self.assertTrue(rel, "systemd got no RELOADING=1 from berthd")
        self.assertTrue(any(i > rel[0] for i in self.notified(got, pid, "READY=1")),
                        "systemd got no READY=1 after RELOADING=1")
        return got

    # the tests

    def test_start_is_active_only_after_ready_with_the_state_dir_and_socket(self):
        self.systemctl("stop", UNIT)
        mark = self.mark()
        self.systemctl("start", UNIT)   # Type=notify: returns once systemd has seen READY=1
        self.assertEqual([self.show(p) for p in ("ActiveState", "SubState", "Result")],
                         ["active", "running", "success"])
        self.assertEqual(self.show("FragmentPath"), f"/etc/systemd/system/{UNIT}")
        pid = self.show("MainPID")
        got = self.journal(after=mark)
        ready = self.notified(got, pid, "READY=1")
        self.assertTrue(ready, "systemd got no READY=1 from berthd's main PID")
        self.assertLess(ready[0], self.index(got, "Started berthd.service"))
        # StateDirectory= made /var/lib/berth 0750; berthd wrote its store and bound 0660
        p = self.c.run("stat", "-c", "%a %F %n", "/var/lib/berth", "/var/lib/berth/berth.sock",
                       "/var/lib/berth/berth.db")
        self.assertEqual(p.stdout.splitlines(), ["750 directory /var/lib/berth",
                                                 "660 socket /var/lib/berth/berth.sock",
                                                 "644 regular file /var/lib/berth/berth.db"])

    def test_an_exec_tenant_runs_delegated_and_outlives_a_restart(self):
        # ProtectSystem=, PrivateTmp= and the rest leave the exec driver what it needs, and
        # Delegate= + KillMode=process keep the tenant's process tree through a restart
        p = self.ctl("tenant", "add", "box", "--template", "plain", "--wait", "--timeout", "20s")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr + self.journal_text())
        try:
            tree = self.c.run("systemd-cgls", "--no-pager", "-u", UNIT).stdout
            workload = self.c.run("pgrep", "-f", "http.server").stdout.split()
            self.assertEqual(len(workload), 1, tree)
            self.assertIn(f"{workload[0]} python3 -m http.server", tree)
            old = self.show("MainPID")
            self.systemctl("restart", UNIT)
            self.assertNotEqual(self.show("MainPID"), old)
            wait_until(lambda: self.tenant("box")["observed"] == "ready", 10,
                       what="box ready again after the restart")
            self.assertEqual(self.c.run("pgrep", "-f", "http.server").stdout.split(), workload)
            self.assertEqual(self.tenant("box")["restarts"], 0)
        finally:
            p = self.ctl("tenant", "rm", "box")
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_reload_is_sighup_answered_with_reloading_then_ready(self):
        pid, gen = self.show("MainPID"), self.info()["config"]["generation"]
        got = self.reload_and_wait(pid, f"generation {gen + 1} is running")
        self.assertLess(self.index(got, "Reloading berthd.service"),
                        self.notified(got, pid, "RELOADING=1")[0])
        self.assertIn("SIGHUP: reloading", "\n".join(e["MESSAGE"] for e in got))
        self.assertEqual(self.info()["config"]["generation"], gen + 1)
        self.assertEqual([self.show(p) for p in ("MainPID", "ActiveState", "SubState")],
                         [pid, "active", "running"])

    def test_a_broken_reload_keeps_the_running_config_and_logs_an_error(self):
        pid, gen = self.show("MainPID"), self.info()["config"]["generation"]
        broken = os.path.join(self.conf, "99-broken.yaml")
        with open(broken, "w") as f:
            f.write("plugins:\n  exec: {ports: nope}\n")
        try:
            got = self.reload_and_wait(pid, f"generation {gen} keeps running")
        finally:
            os.unlink(broken)
        errors = [e for e in got if e.get("_PID") == pid and "99-broken.yaml" in e["MESSAGE"]]
        self.assertTrue(errors, [e["MESSAGE"] for e in got])
        self.assertEqual({e["PRIORITY"] for e in errors}, {"3"})
        info = self.info()
        self.assertEqual(info["config"]["generation"], gen)
        self.assertFalse(info["config"]["last_reload"]["ok"])
        self.assertEqual([self.show(p) for p in ("MainPID", "ActiveState", "SubState")],
                         [pid, "active", "running"])
        self.reload_and_wait(pid, "is running")   # the next good file set is taken
        self.assertGreater(self.info()["config"]["generation"], gen)

    def test_journal_holds_berthds_lines_with_their_priority_and_no_timestamp(self):
        self.systemctl("restart", UNIT)
        pid = self.show("MainPID")
        got = self.wait_journal(None, pid, "[plugin:lifecycle] loaded")
        lines = [e for e in got if e.get("_PID") == pid and e["_TRANSPORT"] == "stdout"]
        for e in lines:
            self.assertEqual(e["SYSLOG_IDENTIFIER"], "berthd")
            self.assertRegex(e["MESSAGE"], r"^\[[\w:.-]+\] ")   # no <N>, no second timestamp
            self.assertIn(e["PRIORITY"], {"3", "4", "6", "7"})
        starting = [e for e in lines if e["MESSAGE"].startswith("[core] berthd ")]
        self.assertEqual([e["PRIORITY"] for e in starting], ["6"])

    def test_the_watchdog_leaves_a_healthy_berthd_alone(self):
        sec = max(1, int(SLOW))
        self.write_dropin("10-watchdog.conf", f"[Service]\nWatchdogSec={sec}s\n")
        try:
            self.systemctl("daemon-reload")
            self.systemctl("restart", UNIT)
            self.assertEqual(self.show("WatchdogUSec"), f"{sec}s")
            pid, mark, t0 = self.show("MainPID"), self.mark(), time.monotonic()
            # pinged every half period: two full periods pass with four pings or more
            wait_until(lambda: time.monotonic() - t0 > 2 * sec and len(self.notified(
                self.journal(after=mark), pid, "WATCHDOG=1")) >= 4, 6 * sec, 0.2,
                what="two watchdog periods with berthd pinging")
            self.assertEqual([self.show(p) for p in ("MainPID", "ActiveState", "NRestarts")],
                             [pid, "active", "0"])
            self.assertNotIn("watchdog timeout", self.journal_text().lower())
        finally:
            os.unlink(os.path.join(self.dropins, "10-watchdog.conf"))
            self.systemctl("daemon-reload")
            self.systemctl("restart", UNIT)

    def test_stop_is_clean_and_says_stopping(self):
        pid, mark = self.show("MainPID"), self.mark()
        self.systemctl("stop", UNIT)
        self.assertEqual([self.show(p) for p in ("ActiveState", "Result")],
                         ["inactive", "success"])
        got = self.journal(after=mark)
        self.assertTrue(self.notified(got, pid, "STOPPING=1"), self.journal_text())
        self.index(got, "Main process exited, code=exited, status=0/SUCCESS")

if __name__ == "__main__":
    unittest.main()
