"""conf.d loading and validation: berthd --check, error positions, merge order, secrets."""
import json
import os
import socket
import subprocess
import unittest

from harness import BERTHD, Berthd, TESTDRV


def check(b, env=None):
    p = subprocess.run([BERTHD, "--config", b.conf, "--check"], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    return p.returncode, p.stdout, p.stderr


class Check(unittest.TestCase):
    def setUp(self):
        self.b = Berthd({"10-test.yaml": TESTDRV})

    def tearDown(self):
        self.b.cleanup()

    def path(self, name):
        return os.path.join(self.b.conf, name)

    def test_valid_tree(self):
        rc, out, err = check(self.b)
        self.assertEqual(rc, 0, err)
        self.assertIn("configuration OK (2 plugin instance(s), 1 template(s))", out)

    def test_empty_directory_is_a_valid_config(self):
        self.b.remove("10-test.yaml")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 0, err)        # the sanitizer build fails on qsort(NULL, 0)
        self.assertIn("configuration OK (0 plugin instance(s), 0 template(s))", out)

    def test_every_error_with_file_line_column(self):
        self.b.write("20-bad.yaml", "berth:\n"
                     "  log: {levl: info}\n"
                     "  drain_timeout: soon\n"
                     "  http:\n"
                     "    max_body: 12q\n"
                     "plugins:\n"
                     "  echo: {drain_delay: 5}\n"
                     "templates:\n"
                     "  default:\n"
                     "    port: 99999\n"
                     "    memmory: 1g\n"
                     "tempaltes: {}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        f = self.path("20-bad.yaml")
        for line in (f"{f}:2:9: unknown key 'levl' in log; did you mean 'level'?",
                     f"{f}:3:18: 'drain_timeout' must be a duration like 500ms, 10s, 5m, 2h, "
                     "not 'soon'",
                     f"{f}:5:15: 'max_body' must be a size like 512, 64k, 256m, 2g, not '12q'",
                     f"{f}:7:23: 'drain_delay' must be a "
                     "duration",
                     f"{f}:10:11: 'port' must be between 0 and 65535, not 99999",
                     f"{f}:11:5: unknown key 'memmory' in template 'default'; did you mean "
                     "'memory'?",
                     f"{f}:12:1: unknown top-level key 'tempaltes'; did you mean 'templates'?"):
            self.assertIn(line, err)
        self.assertIn("error(s)", err)

    def test_malformed_yaml(self):
        self.b.write("30-broken.yaml", "berth:\n  log: {level: info\nplugins: [\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertRegex(err, self.path("30-broken.yaml").replace(".", r"\.") + r":\d+:\d+: ")

    def test_duplicate_keys_and_instance_names(self):
        self.b.write("30-dup.yaml", "plugins:\n  echo: {}\n  echo: {greeting: hi}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertIn(f"{self.path('30-dup.yaml')}:3:3: duplicate key 'echo' (first at line 2)",
                      err)

    def test_wrong_types(self):
        self.b.write("30-types.yaml", "berth:\n  log: text\nplugins:\n  echo: {finalize: maybe}\n"
                     "templates:\n  default: {env: [a, b]}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertIn("'log' must be a mapping", err)
        self.assertIn("'finalize' must be true or false", err)
        self.assertIn("'env' must be a mapping of names to strings", err)

    def test_later_files_override_and_maps_merge(self):
        self.b.write("50-override.yaml", "plugins:\n  echo: {greeting: from-50}\n"
                     "templates:\n  default: {port: 9000}\n")
        self.b.start()
        try:
            info = self.b.get("/v1/echo/info").json
            self.assertEqual(info["greeting"], "from-50")
            self.b.post("/v1/tenants", {"handle": "merge"})
            t = self.b.wait_tenant("merge", "ready")
            self.assertEqual(t["template"], "default")   # driver from 10-, port from 50-
        finally:
            self.assertEqual(self.b.stop(), 0)

    def test_secrets_from_file_and_env_never_logged(self):
        with open(self.path("secret.txt"), "w") as f:
            f.write("file-secret-123\n")
        self.b.write("40-secret.yaml", "plugins:\n  echo: {secret: {file: secret.txt}}\n")
        self.b.start()
        try:
            self.assertEqual(self.b.get("/v1/echo/info").json["secret_len"], 15)
        finally:
            self.b.stop()
        self.assertNotIn("file-secret-123", self.b.log())
        self.b.write("40-secret.yaml", "plugins:\n  echo: {secret: {env: ECHO_TEST_SECRET}}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertIn("environment variable ECHO_TEST_SECRET is not set", err)
        rc, out, err = check(self.b, {"ECHO_TEST_SECRET": "from-env"})
        self.assertEqual(rc, 0, err)
        self.b.write("40-secret.yaml", "plugins:\n  echo: {secret: plain-text}\n")
        rc, out, err = check(self.b)
        self.assertIn("'secret' is a secret: write {file: PATH} or {env: NAME}", err)
        self.assertNotIn("plain-text", err)

    def test_plugin_validate_hook(self):
        self.b.write("40-v.yaml", "plugins:\n  echo: {greeting: forbidden}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertIn("plugin 'echo': greeting must not be 'forbidden'", err)

    def test_template_driver_must_exist(self):
        self.b.write("40-t.yaml", "templates:\n  other: {driver: nosuch}\n  e: {driver: echo}\n")
        rc, out, err = check(self.b)
        self.assertIn("driver 'nosuch' is not a configured plugin instance", err)
        self.assertIn("plugin 'echo' is not a driver", err)

    def test_plugin_template_blocks_are_validated(self):
        self.b.install_plugin_from_build("lifecycle")
        self.b.write("20-lc.yaml", "plugins:\n  lifecycle: {}\n"
                     "templates:\n"
                     "  default:\n"
                     "    lifecycle:\n"
                     "      idle_timeout: soon\n"
                     "      helth: {http: /}\n"
                     "      health: {retries: 0}\n"
                     "    echo: {x: 1}\n"
                     "    lifecycl: {}\n"
                     "  other:\n"
                     "    driver: testdrv\n"
                     "    lifecycle: [a]\n"
                     "    testdrv: {memory: 1g}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        f = self.path("20-lc.yaml")
        for line in (f"{f}:6:21: 'idle_timeout' must be a duration like 500ms, 10s, 5m, 2h, "
                     "not 'soon'",
                     f"{f}:7:7: unknown key 'helth' in templates.default.lifecycle; did you "
                     "mean 'health'?",
                     f"{f}:8:25: 'retries' must be between 1 and 100, not 0",
                     f"{f}:9:5: template 'default': plugin instance 'echo' (module echo) reads "
                     "no template keys",
                     f"{f}:10:5: unknown key 'lifecycl' in template 'default'; did you mean "
                     "'lifecycle'?",
                     f"{f}:13:16: 'templates.other.lifecycle' must be a mapping",
                     f"{f}:14:5: 'testdrv' is the driver of template 'other': write its keys "
                     "at the template's top level"):
            self.assertIn(line, err)
        self.assertIn("berthd: " + self.b.conf + ": 7 error(s)", err)

    def test_old_lifecycle_spelling_says_where_it_moved(self):
        self.b.install_plugin_from_build("lifecycle")
        self.b.write("20-lc.yaml", "plugins:\n  lc: {module: lifecycle}\n"
                     "templates:\n  default:\n    idle_timeout: 5m\n"
                     "    health: {http: /}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        f = self.path("20-lc.yaml")
        self.assertIn(f"{f}:5:5: idle_timeout moved: write it as "
                      "templates.default.lc.idle_timeout", err)
        self.assertIn(f"{f}:6:5: health moved: write it as templates.default.lc.health", err)

    def test_empty_and_absent_blocks_are_valid(self):
        self.b.install_plugin_from_build("lifecycle")
        self.b.write("20-lc.yaml", "plugins:\n  lifecycle: {}\n"
                     "templates:\n  default: {lifecycle: {}}\n"
                     "  bare:\n    driver: testdrv\n    lifecycle:\n"
                     "  none: {driver: testdrv}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 0, err)
        self.assertIn("configuration OK (3 plugin instance(s), 3 template(s))", out)

    def test_a_blocks_health_check_gates_readiness(self):
        """lifecycle's block with a health check makes the core wait for its report; the
        port testdrv gives a handle is closed until the test listens on it."""
        self.b.install_plugin_from_build("lifecycle")
        self.b.write("20-lc.yaml", "plugins:\n  lifecycle: {}\n"
                     "templates:\n  gated:\n    driver: testdrv\n    lifecycle:\n"
                     "      health: {tcp: true, interval: 1h, retries: 100}\n"
                     "  open: {driver: testdrv, lifecycle: {}}\n")
        self.b.start()
        lsock = socket.socket()
        try:
            self.b.post("/v1/tenants", {"handle": "open1", "template": "open"})
            self.b.post("/v1/tenants", {"handle": "gated", "template": "gated"})
            self.b.wait_tenant("open1", "ready")
            t = self.b.wait_tenant("gated", "running")
            self.assertEqual(t["plugins"]["lifecycle"]["probe"], "tcp")
            self.assertEqual(t["plugins"]["lifecycle"]["health"], "starting")
            lsock.bind(("127.0.0.1", 40000 + len("gated") * 7))
            lsock.listen()
            self.b.wait_tenant("gated", "ready")
            self.assertEqual(self.b.tenant("gated")["plugins"]["lifecycle"]["health"],
                             "healthy")
        finally:
            lsock.close()
            for h in ("open1", "gated"):
                self.b.req("DELETE", f"/v1/tenants/{h}")
            self.assertEqual(self.b.stop(), 0)

    def test_version_and_schema_dump(self):
        p = subprocess.run([BERTHD, "--version"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0)
        self.assertIn("berthd 0.1.0 (plugin ABI 1.1)", p.stdout)
        p = subprocess.run([BERTHD, "--config", self.b.conf, "--dump-schema"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        schema = json.loads(p.stdout)
        keys = {k["key"]: k for k in schema["berth"]}
        self.assertFalse(keys["state_dir"]["reloadable"])
        self.assertTrue(keys["log"]["reloadable"])
        mods = {m["module"]: m for m in schema["plugins"]}
        greeting = [k for k in mods["echo"]["config"] if k["key"] == "greeting"][0]
        self.assertEqual(greeting["default"], "hello")
        self.assertEqual(greeting["type"], "string")
        self.assertIn("template", mods["testdrv"])


if __name__ == "__main__":
    unittest.main()
