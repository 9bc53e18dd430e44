"""Bad files: a plugin .so that is truncated or not ELF at all is refused with a clear error by
reload (the running instance is kept), --check and --dump-schema; berthd never dies of it."""
import json
import os
import signal
import subprocess
import threading
import time
import unittest

from harness import ABI, BERTHD, BUILD, BerthTest, TESTDRV, free_port, wait_until

SIGBUS_EXIT = 128 + signal.SIGBUS


def truncated(src, n=12000):
    with open(src, "rb") as f:
        return f.read(n)


def write_in_place(path, data):
    """Overwrite the file without a rename, as a plain `cp` or `head >` does."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)


def patched(offset, value):
    """echo.so with bytes changed at offset: a complete file with a header for elsewhere."""
    with open(os.path.join(ABI, "echo.so"), "rb") as f:
        data = bytearray(f.read())
    data[offset:offset + len(value)] = value
    return bytes(data)


BAD_FILES = {
    "truncated": lambda: truncated(os.path.join(BUILD, "plugins", "lifecycle.so")),
    "truncated_echo": lambda: truncated(os.path.join(ABI, "echo.so"), 20000),
    "not_elf": lambda: b"#!/bin/sh\necho this is not a shared object\n" * 50,
    "empty": lambda: b"",
    "header_only": lambda: truncated(os.path.join(ABI, "echo.so"), 64),
    "other_word_size": lambda: patched(4, b"\x01"),          # EI_CLASS: ELFCLASS32
    "other_machine": lambda: patched(18, b"\xb7\x00"),     # e_machine: EM_AARCH64
    "segment_past_end": lambda: patched(32, b"\xff\xff\xff\x7f"),   # e_phoff far away
}


class BadPluginOnReload(BerthTest):
    def test_reload_refuses_and_keeps_the_running_instance(self):
        b = self.b
        echo = os.path.join(b.plugin_dir, "echo.so")
        with open(echo, "rb") as f:
            good = f.read()
        for what, make in BAD_FILES.items():
            with self.subTest(what):
                write_in_place(echo, make())
                r = b.post("/v1/reload")
                self.assertEqual(r.status, 422, r.body)
                details = " ".join(r.json["error"]["details"])
                self.assertIn(f"refusing to load {echo}:", details)
                self.assertEqual(b.get("/v1/echo/info").status, 200)
                plugins = {p["name"]: p for p in b.get("/v1/plugins").json["plugins"]}
                self.assertEqual(plugins["echo"]["state"], "running")
        # SIGHUP takes the same path
        write_in_place(echo, BAD_FILES["truncated_echo"]())
        before = b.log().count("reload failed")
        b.signal(signal.SIGHUP)
        wait_until(lambda: b.log().count("reload failed") > before, what="SIGHUP reload")
        self.assertIn("truncated", b.log())
        self.assertEqual(b.get("/health").status, 200)
        write_in_place(echo, good)
        self.assertEqual(b.post("/v1/reload").status, 200)
        self.assertEqual(b.get("/v1/echo/info").status, 200)


class RewrittenDuringReload(BerthTest):
    """The issue's own reproduction: a non-atomic copy over a plugin while reloads run. Each
    reload either loads a complete file or refuses what it read; berthd never dies."""

    def test_reloads_racing_an_in_place_copy(self):
        b = self.b
        echo = os.path.join(b.plugin_dir, "echo.so")
        with open(echo, "rb") as f:
            good = f.read()
        stop = threading.Event()

        def copier():       # what `cp` does: truncate, then write a block at a time
            while not stop.is_set():
                with open(echo, "r+b") as f:
                    f.truncate(0)
                    for off in range(0, len(good), 4096):
                        f.write(good[off:off + 4096])
                        f.flush()
                        time.sleep(0.0005)
        t = threading.Thread(target=copier)
        t.start()
        said = set()
        try:
            deadline = time.time() + 3
            while time.time() < deadline:
                r = b.post("/v1/reload")
                self.assertIn(r.status, (200, 422), r.body)
                if r.status == 422:
                    details = " ".join(r.json["error"]["details"])
                    self.assertIn(f"refusing to load {echo}:", details)
                    said.add(details.split(f"refusing to load {echo}: ")[1][:24])
                self.assertEqual(b.get("/v1/echo/info").status, 200)
        finally:
            stop.set()
            t.join()
        print("\nrefusals seen:", sorted(said))
        self.assertTrue(said, "no reload read the file half-written: the race was not run")
        self.assertEqual(b.post("/v1/reload").status, 200)
        self.assertEqual(b.get("/v1/echo/info").status, 200)


class NotRegularFiles(BerthTest):
    """A FIFO where a plugin, a conf.d file or a secret file belongs used to hold the loop
    in open() until a writer came (forever: /health no longer answered); /dev/zero as a
    conf.d file was read without end. Each is refused without being read."""

    def reload_refused(self, what):
        r = self.b.req("POST", "/v1/reload", body={}, timeout=5)
        self.assertEqual(r.status, 422, r.body)
        details = " ".join(r.json["error"]["details"])
        self.assertIn(what, details)
        self.assertIn("not a regular file", details)
        self.assertEqual(self.b.get("/v1/echo/info").status, 200)
        return details

    def test_plugin_conf_and_secret_fifos_are_refused(self):
        b = self.b
        echo = os.path.join(b.plugin_dir, "echo.so")
        os.rename(echo, echo + ".good")
        os.mkfifo(echo, 0o755)
        self.assertIn(f"refusing to load {echo}:", self.reload_refused(echo))
        p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("not a regular file", p.stderr)
        os.unlink(echo)
        os.rename(echo + ".good", echo)
        fifo = os.path.join(b.conf, "30-fifo.yaml")
        os.mkfifo(fifo)
        self.reload_refused(fifo)
        os.unlink(fifo)
        os.symlink("/dev/zero", fifo)
        self.reload_refused(fifo)
        os.unlink(fifo)
        token = os.path.join(b.conf, "token")
        os.mkfifo(token)
        b.write("20-tcp.yaml", f"berth:\n  tcp: {{listen: '127.0.0.1:{free_port()}', "
                "token: {file: token}}\n")
        p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                           text=True, timeout=10)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"cannot read secret file {token}: it is not a regular file", p.stderr)
        os.unlink(token)
        b.remove("20-tcp.yaml")
        r = b.post("/v1/reload")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(b.get("/v1/echo/info").status, 200)


class SecretWithNul(unittest.TestCase):
    """A NUL in a secret file cut the secret short (`t0k\\0...` became the token `t0k`): like
    a NUL in any string from outside (issue 8 #5), it is refused whole."""

    def test_a_nul_in_a_secret_file_is_refused(self):
        from harness import Berthd
        b = Berthd({"10-test.yaml": TESTDRV,
                    "20-tcp.yaml": f"berth:\n  tcp: {{listen: '127.0.0.1:{free_port()}', "
                                   "token: {file: token}}\n"})
        self.addCleanup(b.cleanup)
        token = os.path.join(b.conf, "token")
        for data, rc in ((b"t0k\0the rest of a long token\n", 1), (b"t0k-whole\n", 0)):
            with open(token, "wb") as f:
                f.write(data)
            p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                               text=True, timeout=30)
            self.assertEqual(p.returncode, rc, p.stderr)
        self.assertNotIn("NUL", p.stderr)
        with open(token, "wb") as f:
            f.write(b"t0k\0the rest\n")
        p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True,
                           text=True, timeout=30)
        self.assertIn(f"secret file {token} holds a NUL byte", p.stderr)


class BadConfigShapes(BerthTest):
    """A list where a mapping belongs crashed a reload (found by fuzz_conf)."""

    def test_lists_for_mappings_are_refused_on_reload(self):
        b = self.b
        for bad, msg in (("berth:\n- x\n", "'berth' must be a mapping"),
                         ("plugins:\n  echo: [a]\n",
                          "plugin 'echo' takes a mapping (or nothing), not a list")):
            with self.subTest(bad=bad):
                b.write("20-bad.yaml", bad)
                r = b.post("/v1/reload")
                self.assertEqual(r.status, 422, r.body)
                self.assertIn(msg, " ".join(r.json["error"]["details"]))
                self.assertEqual(b.get("/v1/echo/info").status, 200)
        b.remove("20-bad.yaml")
        self.assertEqual(b.post("/v1/reload").status, 200)


class BadPluginOffline(unittest.TestCase):
    def setUp(self):
        from harness import Berthd
        self.b = Berthd({"10-test.yaml": TESTDRV})

    def tearDown(self):
        self.b.cleanup()

    def run_berthd(self, flag):
        p = subprocess.run([BERTHD, "--config", self.b.conf, flag], capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stderr

    def test_check_and_dump_schema_refuse_bad_files(self):
        echo = os.path.join(self.b.plugin_dir, "echo.so")
        for what, make in BAD_FILES.items():
            with self.subTest(what):
                write_in_place(echo, make())
                for flag in ("--check", "--dump-schema"):
                    rc, err = self.run_berthd(flag)
                    self.assertNotEqual(rc, SIGBUS_EXIT, err)
                    self.assertEqual(rc, 1, err)
                    self.assertIn(f"refusing to load {echo}:", err)

    def test_dump_schema_reports_a_bad_file_beside_good_ones(self):
        for what, make in BAD_FILES.items():
            with self.subTest(what):
                x = os.path.join(self.b.plugin_dir, "x.so")
                with open(x, "wb") as f:
                    f.write(make())
                os.chmod(x, 0o755)
                p = subprocess.run([BERTHD, "--config", self.b.conf, "--dump-schema"],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 1, p.stderr)
                self.assertIn(f"refusing to load {x}:", p.stderr)
                mods = {m["module"] for m in json.loads(p.stdout)["plugins"]}
                self.assertEqual(mods, {"echo", "testdrv"})


if __name__ == "__main__":
    unittest.main()
