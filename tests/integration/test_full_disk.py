"""A full state disk: a create the store could not keep is answered 507 and leaves nothing;
every 201 survives a restart; reads go on while the disk is full; writes work again once
there is room."""
import os
import shutil
import subprocess
import unittest
import uuid

from exec_util import marked, stop_and_clean
from harness import Berthd, TESTDRV, wait_until


def mount_tmpfs(path, size):
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
                          capture_output=True).returncode == 0


class FullDisk(unittest.TestCase):
    def setUp(self):
        self.b = Berthd({"10-test.yaml": TESTDRV})
        if os.geteuid() != 0 or not mount_tmpfs(self.b.state, "2m"):
            self.b.cleanup()
            self.skipTest("needs root to mount a small tmpfs as the state dir")
        self.b.start()

    def tearDown(self):
        b = self.b
        try:
            b.stop_checked(self)
        finally:
            subprocess.run(["umount", "-l", b.state], capture_output=True)
            b.cleanup()

    def fill(self, prefix, limit=600):
        """Creates tenants until the store refuses; returns (acknowledged, refused)."""
        ok, refused = [], []
        for i in range(limit):
            h = f"{prefix}{i}"
            r = self.b.post("/v1/tenants", {"handle": h, "template": "default"})
            if r.status == 201:
                ok.append(h)
            else:
                self.assertEqual(r.status, 507, r.body)
                self.assertEqual(r.json["error"]["code"], "insufficient_storage")
                refused.append(h)
                if len(refused) >= 5:
                    break
        return ok, refused

    def test_only_what_is_stored_is_acknowledged(self):
        b = self.b
        ok, refused = self.fill("t")
        self.assertTrue(ok and len(refused) == 5, (len(ok), len(refused)))
        print(len(ok), "acknowledged before the disk filled")
        # nothing half-made: a refused handle does not exist, reads still answer
        for h in refused:
            self.assertEqual(b.get(f"/v1/tenants/{h}").status, 404)
        self.assertEqual(b.get("/v1/tenants").status, 200)
        self.assertEqual(b.get("/health").status, 200)
        # room again: the same handle is created, and everything acknowledged is still there
        subprocess.run(["mount", "-o", "remount,size=64m", b.state], check=True)
        wait_until(lambda: b.post("/v1/tenants", {"handle": refused[0],
                                                  "template": "default"}).status == 201,
                   10, what="a create once the disk has room")
        ok.append(refused[0])
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        b.start()
        have = {t["handle"] for t in b.get("/v1/tenants").json["tenants"]}
        self.assertEqual(have, set(ok))


EXEC = """plugins:
  exec: {ports: %d-%d, cgroups: auto}
templates:
  default:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    env: {MARK: "%s"}
    stop_timeout: 300ms
"""


def handles_of(pids):
    """BERTH_HANDLE of each process (a handle twice is a tenant running twice)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        out += [e[13:].decode() for e in env if e.startswith(b"BERTH_HANDLE=")]
    return sorted(out)


def fill_up(path):
    """Takes every free byte of the filesystem at path; returns the file that holds them."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


class FullDiskExec(unittest.TestCase):
    """Issue 8's reproduction: exec tenants (with working directories, logs and records in
    the same state dir) created until the disk is full."""

    def setUp(self):
        base = 26000 + (os.getpid() % 100) * 100
        self.mark = "berth-full-" + uuid.uuid4().hex
        self.b = Berthd({"10-exec.yaml": EXEC % (base, base + 99, self.mark)}, plugins=())
        if os.geteuid() != 0 or not mount_tmpfs(self.b.state, "2m"):
            self.b.cleanup()
            self.skipTest("needs root to mount a small tmpfs as the state dir")
        self.b.install_plugin_from_build("exec")
        self.b.start()

    def tearDown(self):
        b = self.b
        try:
            rc, log = stop_and_clean(b, self.mark)
            self.assertEqual(rc, 0, log[-3000:])
        finally:
            subprocess.run(["umount", "-l", b.state], capture_output=True)
            b.cleanup()

    def settled(self, want):
        """Every tenant of want ready, one process each, and nothing else running."""
        ts = self.b.get("/v1/tenants").json["tenants"]
        return (sorted(t["handle"] for t in ts) == want and
                all(t["observed"] == "ready" for t in ts) and
                handles_of(marked(self.mark, "sleep")) == want)

    def test_only_what_is_stored_is_acknowledged_and_nothing_is_left_half_made(self):
        b = self.b
        ok, refused = [], []
        for i in range(400):
            r = b.post("/v1/tenants", {"handle": f"x{i}"})
            if r.status == 201:
                ok.append(f"x{i}")
                continue
            self.assertEqual(r.status, 507, r.body)
            refused.append(f"x{i}")
            if len(refused) >= 5:
                break
        self.assertTrue(ok and len(refused) == 5, (len(ok), len(refused)))
        print(len(ok), "exec tenants acknowledged before the disk filled")
        exec_dir = os.path.join(b.state, "exec")
        for h in refused:
            self.assertEqual(b.get(f"/v1/tenants/{h}").status, 404)
            self.assertFalse(os.path.exists(os.path.join(exec_dir, h)), h)
        self.assertEqual(b.get("/health").status, 200)
        subprocess.run(["mount", "-o", "remount,size=64m", b.state], check=True)
        want = sorted(ok)
        wait_until(lambda: self.settled(want), 30, what="every acknowledged tenant running once")
        self.assertEqual(b.stop(), 0, b.log()[-3000:])
        b.start()
        wait_until(lambda: self.settled(want), 30, what="the same after a restart")
        # a full disk again, now with nothing free at all: a state change and a deletion
        # are refused whole, and done once there is room
        filler = fill_up(b.state)
        h = ok[0]
        r = b.post(f"/v1/tenants/{h}/sleep")
        self.assertEqual(r.status, 507, r.body)
        self.assertEqual(b.tenant(h)["desired"], "running")
        r = b.req("DELETE", f"/v1/tenants/{h}")
        self.assertEqual(r.status, 507, r.body)
        self.assertEqual(b.tenant(h)["desired"], "running")
        os.unlink(filler)
        self.assertEqual(b.post(f"/v1/tenants/{h}/sleep").status, 202)
        b.wait_tenant(h, "stopped")
        for t in ok:
            self.assertIn(b.req("DELETE", f"/v1/tenants/{t}").status, (202, 204))
        wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 30, what="deletions")
        self.assertEqual(marked(self.mark), [])
        left = sorted(n for n in os.listdir(exec_dir) if not n.startswith("."))
        self.assertEqual(left, [], "working directories, logs or records left behind")


class Durable(unittest.TestCase):
    """What the API acknowledges is synced to disk before the answer, not only ordered in the
    WAL: a create and a desired-state change each cost an fsync of the WAL."""

    def setUp(self):
        if not shutil.which("strace"):
            self.skipTest("needs strace")
        self.b = Berthd({"10-test.yaml": TESTDRV}).start()

    def tearDown(self):
        try:
            self.assertEqual(self.b.stop(), 0, self.b.log()[-3000:])
        finally:
            self.b.cleanup()

    def traced(self):
        with open(f"/proc/{self.b.proc.pid}/status") as f:
            return any(ln.startswith("TracerPid:") and ln.split()[1] != "0" for ln in f)

    def syncs_during(self, fn):
        """The fsyncs berthd made before it wrote the answer to what fn sent: a sync after the
        answer (a checkpoint, the reconciler's next write) proves nothing."""
        out = os.path.join(self.b.dir, "strace.out")
        tracer = subprocess.Popen(["strace", "-f", "-s", "16", "-e",
                                   "trace=fsync,fdatasync,write,writev,sendmsg", "-o", out,
                                   "-p", str(self.b.proc.pid)], stderr=subprocess.DEVNULL)
        wait_until(self.traced, what="strace to attach")
        fn()
        tracer.terminate()
        tracer.wait()
        with open(out) as f:
            lines = f.readlines()
        answer = next(i for i, ln in enumerate(lines) if "HTTP/1.1 20" in ln)
        return [ln for ln in lines[:answer] if "sync(" in ln]

    def test_acknowledged_writes_are_synced(self):
        b = self.b
        syncs = self.syncs_during(lambda: self.assertEqual(
            b.post("/v1/tenants", {"handle": "dura", "template": "default"}).status, 201))
        self.assertTrue(syncs, "a create was answered without an fsync")
        syncs = self.syncs_during(lambda: self.assertEqual(
            b.post("/v1/tenants/dura/sleep").status, 202))
        self.assertTrue(syncs, "a sleep was answered without an fsync")


if __name__ == "__main__":
    unittest.main()
