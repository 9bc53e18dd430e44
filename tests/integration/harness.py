"""Starts a real berthd on a private conf.d and state dir, and talks to it over its socket."""
import http.client
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import unittest

BUILD = os.environ.get("BERTH_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SRC = os.environ.get("BERTH_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
BERTHD = os.path.join(BUILD, "core", "berthd")
BERTHCTL = os.path.join(BUILD, "berthctl", "berthctl")
ABI = os.path.join(BUILD, "tests", "abi")
DRAIN_LATE = "drain deadline passed"   # a plugin that never finished draining on its own
SLOW = float(os.environ.get("BERTH_TEST_SLOW", "1"))   # sanitizer builds run slower


def die_with_parent():
    """preexec_fn: a server started by a test ends with the test, even when the test runner is
    killed on a timeout (no orphaned dockerd or berthd disturbing the next run)."""
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG


def wait_until(fn, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.time() + timeout * SLOW
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def http_get(address, path, timeout=10.0):
    """GETs http://address/path until it answers (a workload may still be starting)."""
    import urllib.request

    def go():
        try:
            with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as r:
                return r.read().decode()
        except OSError:
            return None
    return wait_until(go, timeout, 0.05, what=f"GET http://{address}{path}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        try:
            s.connect(self.unix_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Berthd:
    """One berthd with its own directory: conf/, state/, plugins/ and a log file."""

    def __init__(self, conf=None, plugins=("testdrv", "echo"), base_conf=True):
        self.dir = tempfile.mkdtemp(prefix="berth-test-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.state = os.path.join(self.dir, "state")
        self.plugin_dir = os.path.join(self.dir, "plugins")
        os.makedirs(self.conf)
        os.makedirs(self.plugin_dir)
        os.chmod(self.plugin_dir, 0o755)
        for p in plugins:
            self.install_plugin(p)
        if base_conf:
            self.write("00-berth.yaml", f"berth:\n  plugin_dir: {self.plugin_dir}\n"
                       "  log: {level: debug}\n")
        for name, text in (conf or {}).items():
            self.write(name, text)
        self.proc = None
        self.logf = None
        self.sock = os.path.join(self.state, "berth.sock")

    def install_plugin(self, module, as_name=None):
        dst = os.path.join(self.plugin_dir, (as_name or module) + ".so")
        tmp = dst + ".tmp"
        shutil.copyfile(os.path.join(ABI, module + ".so"), tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, dst)     # atomic, as a package manager replaces a file
        return dst

    def install_plugin_from_build(self, module):
        dst = os.path.join(self.plugin_dir, module + ".so")
        shutil.copyfile(os.path.join(BUILD, "plugins", module + ".so"), dst)
        os.chmod(dst, 0o755)
        return dst

    def write(self, name, text):
        with open(os.path.join(self.conf, name), "w") as f:
            f.write(text)

    def remove(self, name):
        os.unlink(os.path.join(self.conf, name))

    def start(self, wait=True, extra=()):
        if self.logf:
            self.logf.close()
        self.logf = open(os.path.join(self.dir, "berthd.log"), "ab")
        self.proc = subprocess.Popen([BERTHD, "--config", self.conf, "--state", self.state,
                                      *extra], stdout=self.logf, stderr=self.logf,
                                     preexec_fn=die_with_parent)
        if wait:
            wait_until(self.healthy, 15, what="berthd to answer /health")
        return self

    def healthy(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"berthd exited with {self.proc.returncode}:\n{self.log()}")
        try:
            r = self.get("/health")
        except OSError:
            return False
        # up and answering: 200, or a 503 that says which check fails (a failed plugin)
        return r.status == 200 or (r.status == 503 and "checks" in (r.json or {}))

    def req(self, method, path, body=None, headers=None, timeout=10):
        c = UnixHTTPConnection(self.sock, timeout=timeout * SLOW)
        try:
            data = json.dumps(body) if isinstance(body, (dict, list)) else body
            c.request(method, path, body=data, headers=headers or {})
            r = c.getresponse()
            return Response(r.status, dict(r.getheaders()), r.read().decode())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.req("POST", path, body if body is not None else {}, **kw)

    def tenant(self, handle):
        r = self.get(f"/v1/tenants/{handle}")
        return r.json if r.status == 200 else None

    def wait_tenant(self, handle, observed, timeout=10):
        seen = [None]

        def check():
            seen[0] = self.tenant(handle)
            return (seen[0] or {}).get("observed") == observed and seen[0]
        try:
            return wait_until(check, timeout, what=f"{handle} to be {observed}")
        except AssertionError as e:
            raise AssertionError(f"{e}; the tenant: {json.dumps(seen[0])}") from None

    def events(self, since=0, **params):
        q = "&".join([f"since={since}", "follow=0"] + [f"{k}={v}" for k, v in params.items()])
        r = self.get(f"/v1/events?{q}")
        out = []
        for block in r.body.split("\n\n"):
            for line in block.split("\n"):
                if line.startswith("data: "):
                    out.append(json.loads(line[6:]))
        return out

    def ctl(self, *args, check=True):
        p = subprocess.run([BERTHCTL, "--socket", self.sock, *args], capture_output=True,
                           text=True, timeout=30 * SLOW)
        if check and p.returncode != 0:
            raise AssertionError(f"berthctl {args} failed {p.returncode}: {p.stderr}")
        return p

    def log(self):
        with open(os.path.join(self.dir, "berthd.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=20):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout * SLOW)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("berthd did not stop on SIGTERM:\n" + self.log())

    def stop_checked(self, test):
        """stops berthd if it still runs and fails `test` unless it exited 0; True if it ran"""
        if not self.proc or self.proc.poll() is not None:
            return False
        rc = self.stop()
        test.assertEqual(rc, 0, "berthd did not exit cleanly:\n" + self.log()[-5000:])
        return True

    def keep_or_cleanup(self, *also):
        """BERTH_KEEP=1 keeps the state dir (and `also`) to look at; otherwise all goes"""
        if os.environ.get("BERTH_KEEP"):
            print("kept", self.dir, *also)
            return
        self.cleanup()
        for d in also:
            shutil.rmtree(d, ignore_errors=True)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.logf:
            self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


TESTDRV = """plugins:
  testdrv: {delay: 10ms}
  echo: {}
templates:
  default:
    driver: testdrv
    port: 8080
    env: {TZ: UTC}
    memory: 128m
"""


class BerthTest(unittest.TestCase):
    """A test case with one berthd; stopping it cleanly (exit 0) is part of every test."""

    conf = {"10-test.yaml": TESTDRV}
    plugins = ("testdrv", "echo")
    start = True

    def setUp(self):
        self.b = Berthd(self.conf, self.plugins)
        if self.start:
            self.b.start()

    def tearDown(self):
        try:
            if self.b.stop_checked(self):
                self.assertNotIn(DRAIN_LATE, self.b.log())
        finally:
            self.b.keep_or_cleanup()
