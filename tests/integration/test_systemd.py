"""berthd under systemd: the notify protocol (READY, RELOADING, STOPPING, the watchdog) over a
socket this test listens on, and journald-style log lines when stderr is the journal."""
import os
import signal
import socket
import time
import unittest

from harness import SLOW, BerthTest


class Notify(BerthTest):
    start = False

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.b.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(10 * SLOW)
        self.saved = dict(os.environ)

    def tearDown(self):
        os.environ.clear()
        os.environ.update(self.saved)
        super().tearDown()
        self.sock.close()

    def recv_until(self, want):
        """the datagrams received up to and including the first one containing want"""
        got = []
        deadline = time.time() + 10 * SLOW
        while time.time() < deadline:
            msg = self.sock.recv(4096).decode()
            got.append(msg)
            if want in msg:
                return got
        raise AssertionError(f"no {want!r}; got {got}")

    def test_ready_reloading_watchdog_stopping(self):
        os.environ.update(NOTIFY_SOCKET=self.path, WATCHDOG_USEC="200000")
        os.environ.pop("WATCHDOG_PID", None)
        self.b.start()
        self.recv_until("READY=1")
        pings = [m for m in self.recv_until("WATCHDOG=1") + self.recv_until("WATCHDOG=1")
                 if m == "WATCHDOG=1"]
        self.assertGreaterEqual(len(pings), 2)
        self.b.signal(signal.SIGHUP)
        got = self.recv_until("RELOADING=1")
        self.assertRegex(got[-1], r"^RELOADING=1\nMONOTONIC_USEC=\d+$")
        self.recv_until("READY=1")
        self.assertEqual(self.b.stop(), 0)
        self.recv_until("STOPPING=1")

    def test_watchdog_for_another_pid_is_not_ours(self):
        os.environ.update(NOTIFY_SOCKET=self.path, WATCHDOG_USEC="100000", WATCHDOG_PID="1")
        self.b.start()
        self.recv_until("READY=1")
        self.sock.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            self.sock.recv(4096)

    def test_journal_lines_carry_a_priority(self):
        # JOURNAL_STREAM names the device and inode of berthd's stderr (its log file here)
        st = os.stat(os.path.join(self.b.dir, "berthd.log")) if os.path.exists(
            os.path.join(self.b.dir, "berthd.log")) else None
        if st is None:
            open(os.path.join(self.b.dir, "berthd.log"), "ab").close()
            st = os.stat(os.path.join(self.b.dir, "berthd.log"))
        os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        self.b.start()
        self.assertEqual(self.b.stop(), 0)
        lines = self.b.log().splitlines()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^<[3467]>\[[\w:.-]+\] ")
        self.assertTrue(any(line.startswith("<6>[core] berthd ") for line in lines), lines)


if __name__ == "__main__":
    unittest.main()
