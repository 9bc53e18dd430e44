"""conf.d loading and validation: berthd --check, error positions, merge order, secrets."""
import json
import os
import socket
import subprocess
import time
import unittest

from harness import BERTHD, Berthd, TESTDRV, wait_until


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

    def test_lists_and_maps_of_structs_with_secrets_inside(self):
        """echo's peers (a list of structs) and zones (a map of name -> struct), each element
        with a secret: errors point at the element, a secret inside one is resolved like any
        other ({file:} relative to the file that names it) and never logged."""
        os.mkdir(self.path("secrets"))
        with open(self.path("secrets/peer.txt"), "w") as f:
            f.write("peer-token-1\n")
        self.b.write("20-lists.yaml", "plugins:\n  echo:\n    peers:\n"
                     "      - {name: a, token: {file: secrets/peer.txt}}\n"
                     "      - name: b\n        port: 8080\n"
                     "    zones: {eu: {weight: 3, key: {env: ECHO_ZONE_KEY}}, us: {}}\n")
        # zones merge key by key with a later file: each error against its own file
        self.b.write("30-bad.yaml", "plugins:\n  echo:\n    zones:\n"
                     "      eu: {weight: many}\n      ap: [x]\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        good, bad = self.path("20-lists.yaml"), self.path("30-bad.yaml")
        self.assertEqual(err.splitlines(), [
            f"{good}:7:34: 'key': environment variable ECHO_ZONE_KEY is not set",
            f"{bad}:4:20: 'weight' must be an integer, not 'many'",
            f"{bad}:5:11: 'zones.ap' must be a mapping",
            f"berthd: {self.b.conf}: 3 error(s)"])
        # a list is replaced whole by a later file's: its elements' errors are that file's
        self.b.write("30-bad.yaml", "plugins:\n  echo:\n    peers:\n"
                     "      - {name: a, prt: 1}\n      - {port: 0}\n      - [x]\n")
        rc, out, err = check(self.b, {"ECHO_ZONE_KEY": "zk"})
        self.assertEqual(rc, 1)
        self.assertEqual(err.splitlines(), [
            f"{bad}:4:19: unknown key 'prt' in peers[0]; did you mean 'port'?",
            f"{bad}:5:9: peers[1]: required key 'name' is missing",
            f"{bad}:5:16: 'port' must be between 1 and 65535, not 0",
            f"{bad}:6:9: 'peers[2]' must be a mapping",
            f"berthd: {self.b.conf}: 4 error(s)"])
        self.b.remove("30-bad.yaml")
        os.environ["ECHO_ZONE_KEY"] = "zone-key-12345"
        self.addCleanup(os.environ.pop, "ECHO_ZONE_KEY")
        self.b.start()
        try:
            self.assertEqual(self.b.get("/v1/echo/lists").json, {
                "peers": [{"name": "a", "port": 80, "token_len": 12},
                          {"name": "b", "port": 8080, "token_len": 0}],
                "zones": {"eu": {"weight": 3, "key_len": 14},
                          "us": {"weight": 1, "key_len": 0}}})
        finally:
            self.assertEqual(self.b.stop(), 0)
        self.assertNotIn("peer-token-1", self.b.log())
        self.assertNotIn("zone-key-12345", self.b.log())

    def test_plugin_validate_hook(self):
        self.b.write("40-v.yaml", "plugins:\n  echo: {greeting: forbidden}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        # echo's block opens in 10-test.yaml: the bad value is 40-v.yaml's, and blamed there
        self.assertIn(f"{self.path('40-v.yaml')}:2:20: plugin 'echo': greeting must not be "
                      "'forbidden'", err)

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

    def test_errors_in_several_files_each_against_its_own_file(self):
        """No error hides the next, each is reported against the file that holds the value
        (also when maps from several files merge), in file and line order."""
        self.b.write("20-a.yaml", "plugins:\n  echo: {drain_delay: soon, bogus: 1}\n"
                     "  testdrv: {delay: 10ms, dely: 1}\n")
        self.b.write("30-b.yaml", "templates:\n  default:\n    port: 99999\n"
                     "    memory: 12q\n    memmory: 1g\n")
        self.b.write("40-c.yaml", "berth:\n  tcp:\n    listen: 1.2.3.4.5:80\n"
                     "    token: {env: HOME}\n  log: {levl: x}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        a, b, c = (self.path(n) for n in ("20-a.yaml", "30-b.yaml", "40-c.yaml"))
        want = [f"{a}:2:23: 'drain_delay' must be a duration",
                f"{a}:2:29: unknown key 'bogus' in plugin 'echo'",
                f"{a}:3:26: unknown key 'dely' in plugin 'testdrv'; did you mean 'delay'?",
                f"{b}:3:11: 'port' must be between 0 and 65535, not 99999",
                f"{b}:4:13: 'memory' must be a size like",
                f"{b}:5:5: unknown key 'memmory' in template 'default'; did you mean 'memory'?",
                f"{c}:3:13: berth.tcp.listen: '1.2.3.4.5:80' is not a valid listen address",
                f"{c}:5:9: unknown key 'levl' in log; did you mean 'level'?"]
        lines = err.splitlines()
        self.assertEqual(len(lines), len(want) + 1, err)
        for line, w in zip(lines, want):
            self.assertTrue(line.startswith(w), f"{line!r} does not start with {w!r}")
        self.assertEqual(lines[-1], f"berthd: {self.b.conf}: {len(want)} error(s)")

    def test_tcp_listen_address_is_checked(self):
        for bad in ("1.2.3.4.5:7700", "127.0.0.1:", "127.0.0.1:0", "[::1:80", "host:80"):
            self.b.write("40-tcp.yaml", f"berth:\n  tcp: {{listen: '{bad}', "
                         "token: {env: HOME}}\n")
            rc, out, err = check(self.b)
            self.assertEqual(rc, 1, bad)
            self.assertIn(f"{self.path('40-tcp.yaml')}:2:17: berth.tcp.listen: '{bad}' is not "
                          "a valid listen address", err)
        for good in ("127.0.0.1:7700", "[::1]:7700", "localhost:7700"):
            self.b.write("40-tcp.yaml", f"berth:\n  tcp: {{listen: '{good}', "
                         "token: {env: HOME}}\n")
            rc, out, err = check(self.b)
            self.assertEqual(rc, 0, err)

    def test_exec_bind_address_is_checked(self):
        self.b.install_plugin_from_build("exec")
        self.b.write("40-exec.yaml", "plugins:\n  exec: {ports: 20000-20001}\n")
        self.b.write("50-exec.yaml", "plugins:\n  exec: {bind: 1.2.3.4.5}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 1)
        self.assertIn(f"{self.path('50-exec.yaml')}:2:16: plugin 'exec': bind must be an IPv4 "
                      "address, not '1.2.3.4.5'", err)
        self.b.write("50-exec.yaml", "plugins:\n  exec: {bind: 127.0.0.2}\n")
        rc, out, err = check(self.b)
        self.assertEqual(rc, 0, err)

    def test_schema_dump_without_a_conf_d_and_with_template_blocks(self):
        p = subprocess.run([os.path.abspath(BERTHD), "--dump-schema"], capture_output=True,
                           text=True, cwd=self.b.dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        keys = [k["key"] for k in json.loads(p.stdout)["template"]]
        self.assertEqual(keys[:3], ["driver", "port", "env"])
        self.b.install_plugin_from_build("lifecycle")
        self.b.write("20-lc.yaml", "plugins:\n  lc: {module: lifecycle}\n")
        p = subprocess.run([BERTHD, "--config", self.b.conf, "--dump-schema"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        blocks = {k["key"]: k for k in json.loads(p.stdout)["template"]}
        self.assertNotIn("idle_timeout", blocks)
        lc = {k["key"]: k for k in blocks["lc"]["keys"]}
        self.assertEqual((lc["idle_timeout"]["type"], lc["idle_timeout"]["default"]),
                         ("duration", "30m"))
        self.assertIn("retries", [k["key"] for k in lc["health"]["keys"]])
        self.assertNotIn("echo", blocks)        # echo reads no template keys

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


class BlocksAtRunTime(unittest.TestCase):
    """lifecycle reads each tenant's template block through host->template_config; a reload
    swaps the blocks it reads."""

    BLOCKS = ("templates:\n"
              "  nap: {driver: testdrv, lifecycle: {idle_timeout: %s}}\n"
              "  awake: {driver: testdrv, lifecycle: {idle_timeout: %s}}\n"
              "  plain: {driver: testdrv}\n")

    def test_each_template_block_applies_and_a_reload_swaps_them(self):
        b = Berthd({"10-test.yaml": TESTDRV.replace("echo: {}", "lifecycle: {check_interval: 1h}"),
                    "20-blocks.yaml": self.BLOCKS % ("100ms", "0")}, plugins=("testdrv",))
        b.install_plugin_from_build("lifecycle")
        try:
            b.start()
            # interleaved, so a sweep meets the templates in turn
            tenants = {"a1": "awake", "n1": "nap", "a2": "awake", "n2": "nap", "p1": "plain"}
            for h, t in tenants.items():
                b.post("/v1/tenants", {"handle": h, "template": t})
            for h in tenants:
                b.wait_tenant(h, "ready")

            def sweep_until_asleep(want):
                def done():
                    b.post("/v1/lifecycle/sweep")
                    return {h for h in tenants if b.tenant(h)["desired"] == "asleep"} == want
                wait_until(done, 5, 0.05, what=f"{sorted(want)} asleep")
                time.sleep(0.3)     # past every short idle_timeout: nothing else may sleep
                b.post("/v1/lifecycle/sweep")
                self.assertEqual({h for h in tenants if b.tenant(h)["desired"] == "asleep"},
                                 want)
            sweep_until_asleep({"n1", "n2"})
            b.write("20-blocks.yaml", self.BLOCKS % ("0", "100ms"))
            self.assertEqual(b.post("/v1/reload").status, 200)
            for h in ("n1", "n2"):
                b.post(f"/v1/tenants/{h}/wake")
            sweep_until_asleep({"a1", "a2"})
        finally:
            self.assertEqual(b.stop(), 0)
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
