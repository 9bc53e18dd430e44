"""What the matrix test modules share: a berthd with the plugin pointed at the module's
Synapse (directly, or through the recording proxy of proxy.py), names of its own per test on
that shared homeserver, and reads of berthd's store."""
import hashlib
import os
import shutil
import sqlite3
import tempfile
import unittest

from harness import Berthd, free_port
from proxy import Proxy
from synapse_fixture import Synapse, synapse_dir

CONF = """berth:
  reconcile: {{retry_base: 50ms, retry_max: 500ms}}
plugins:
  testdrv: {{delay: 5ms}}
  matrix:
    homeserver: {url}
    server_name: test.local
    registration: {{shared_secret: {{file: {secret}}}}}
    admin: {{user: {admin}}}
    rooms:
      - {{alias: {prefix}fleet, name: Fleet, space: true}}
      - {{alias: {prefix}lobby, name: Lobby, topic: everyone, in_space: {prefix}fleet,
          join: ["{{handle}}_ai"]}}
templates:
  default:
    driver: testdrv
    matrix:
      accounts: [{{localpart: "{{handle}}", display_name: "{{handle}}"}},
                 {{localpart: "{{handle}}_ai", display_name: "{{handle}}'s AI"}}]
      env_account: "{{handle}}_ai"
"""


def read(path):
    with open(path) as f:
        return f.read()


def env_of(b, handle):
    r = b.get(f"/v1/testdrv/{handle}")
    if r.status != 200:
        return None
    return dict(kv.split("=", 1) for kv in r.json["env"].split(";") if "=" in kv)


def setUpModule():
    """Imported by each matrix test module, so unittest runs it once per module: the module's
    Synapse (MatrixCase.hs), started, or SkipTest where none is installed."""
    if not synapse_dir():
        raise unittest.SkipTest("no Synapse: set BERTH_SYNAPSE_DIR or provide ../shared/synapse")
    MatrixCase.hs = Synapse(free_port()).start()


def tearDownModule():
    if MatrixCase.hs:
        MatrixCase.hs.stop(wipe=True)
    MatrixCase.hs = None


class MatrixCase(unittest.TestCase):
    hs = None           # the module's Synapse (synapse_fixture.Synapse), set by setUpModule

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="berth-mx-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        # names of its own on the shared homeserver: user ids and aliases are never reused
        tag = hashlib.sha1(self._testMethodName.encode()).hexdigest()[:8]
        self.admin = "berth" + tag
        self.prefix = "r" + tag + "-"

    def berthd(self, files=None, registration=None, proxied=False, extra="", plugins=()):
        """proxied: berthd talks to the homeserver through self.proxy, which records every
        call; extra: lines added to the plugin's configuration"""
        url = self.hs.url
        if proxied:
            self.proxy = Proxy(self.hs.url)
            self.addCleanup(self.proxy.stop)
            url = self.proxy.url
        conf = CONF.format(url=url, secret=self.hs.secret_file(self.tmp), admin=self.admin,
                           prefix=self.prefix)
        if registration:
            conf = conf.replace(conf.split("registration: ")[1].split("\n")[0], registration)
        conf = conf.replace("    rooms:\n", extra + "    rooms:\n")
        self.b = Berthd(dict({"10-matrix.yaml": conf}, **(files or {})),
                        plugins=("testdrv",) + plugins)
        self.b.install_plugin_from_build("matrix")
        if files:
            self.b.install_plugin_from_build("exec")
        self.addCleanup(self.b.cleanup)
        return self.b.start()

    def stop_ok(self):
        self.assertEqual(self.b.stop(), 0, self.b.log()[-4000:])

    def db(self, b, sql):
        db = sqlite3.connect(os.path.join(b.state, "berth.db"))
        try:
            return db.execute(sql).fetchall()
        finally:
            db.close()

    def admin_token(self, b):
        return self.db(b, "SELECT token FROM matrix_accounts WHERE tenant=''")[0][0]
