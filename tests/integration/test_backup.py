"""berthctl backup: a consistent copy of the state taken while berthd runs and writes."""
import os
import sqlite3
import threading

from harness import BerthTest, SLOW, wait_until


class Backup(BerthTest):
    def test_backup_during_a_create_burst_holds_every_acknowledged_tenant(self):
        b = self.b
        acked, stop = [], threading.Event()

        def burst():
            i = 0
            while not stop.is_set() and i < 2000:
                h = f"t{i:04d}"
                if b.post("/v1/tenants", {"handle": h, "desired": "asleep"}).status == 201:
                    acked.append(h)
                i += 1
        t = threading.Thread(target=burst)
        t.start()
        try:
            wait_until(lambda: len(acked) >= 50, 20, what="a burst under way")
            before = list(acked)
            out = os.path.join(b.dir, "backup.db")
            p = b.ctl("backup", out)
            after = len(acked)
        finally:
            stop.set()
            t.join(30 * SLOW)
        self.assertIn(f"backup written to {out}", p.stdout)
        self.assertGreater(after, len(before), "the burst ran on while the backup was taken")
        self.assertEqual(os.stat(out).st_mode & 0o777, 0o600)
        db = sqlite3.connect(f"file:{out}?mode=ro", uri=True)
        try:
            self.assertEqual(db.execute("PRAGMA integrity_check").fetchone()[0], "ok")
            have = {r[0] for r in db.execute("SELECT handle FROM tenants")}
        finally:
            db.close()
        self.assertEqual(set(before) - have, set())
        self.assertLessEqual(have, set(acked))
        self.assertFalse([f for f in os.listdir(b.state) if f.startswith(".backup-")])

    def test_restore_from_a_backup(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "keep", "desired": "asleep"})
        out = os.path.join(b.dir, "backup.db")
        b.ctl("backup", out)
        b.post("/v1/tenants", {"handle": "later", "desired": "asleep"})
        self.assertEqual(b.stop(), 0)
        # the README's restore: the copy as berth.db, without the old WAL beside it
        for suffix in ("", "-wal", "-shm"):
            path = os.path.join(b.state, "berth.db" + suffix)
            if os.path.exists(path):
                os.unlink(path)
        os.rename(out, os.path.join(b.state, "berth.db"))
        b.start()
        self.assertIsNotNone(b.tenant("keep"))
        self.assertIsNone(b.tenant("later"))

    def test_backup_errors_are_named(self):
        p = self.b.ctl("backup", "/nonexistent-dir/x.db", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot write /nonexistent-dir/x.db", p.stderr)
        p = self.b.ctl("backup", check=False)
        self.assertEqual(p.returncode, 2)
        self.assertIn("backup needs a FILE", p.stderr)
