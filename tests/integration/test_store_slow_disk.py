"""The store on a slow disk: the checkpointer's RESTART holds the WAL's write lock through
its syncs (strace makes each take 1.2 s here), and a loop commit that waits for it must not give
up and fail."""
import os
import shutil
import subprocess
import time
import unittest

from harness import wait_until
from test_store import StoreCase


class SlowDisk(StoreCase):
    def test_slow_syncs_fail_no_commit(self):
        # 28 MiB into the WAL: a PASSIVE checkpoint, then (past 16 MiB) a RESTART whose two
        # syncs under the lock take 2.4 s, longer than the loop waits for another process.
        # Before: a plain write failed with EBUSY about 9 s in.
        if not shutil.which("strace"):
            self.skipTest("needs strace")
        tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-e",
                                   "inject=fsync,fdatasync:delay_enter=1200000", "-o",
                                   os.devnull, "-p", str(self.b.proc.pid)],
                                  stderr=subprocess.DEVNULL)
        try:
            def traced():
                with open(f"/proc/{self.b.proc.pid}/status") as f:
                    return any(ln.startswith("TracerPid:") and ln.split()[1] != "0"
                               for ln in f)
            wait_until(traced, what="strace to attach")
            r = self.b.post("/v1/storetest/churn/14", timeout=120)
            self.assertEqual(r.json["rc"], 0, r)
            t0, n = time.monotonic(), 0
            while time.monotonic() - t0 < 14:
                n += 1
                j = self.sql(f"INSERT INTO storetest_kv VALUES('slow-{n}', {n})")
                self.assertEqual(j["rc"], 0, f"write {n} at {time.monotonic() - t0:.1f} s: {j}")
        finally:
            tracer.terminate()
            tracer.wait()


if __name__ == "__main__":
    unittest.main()
