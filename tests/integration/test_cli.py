"""berthctl says what is true: help, versions, unknown commands and options named, options
after the command, bad values refused, --wait that waits, the server's reasons shown."""
import json
import os
import re
import subprocess
import unittest

from harness import BERTHCTL, BUILD, SLOW, BerthTest, TESTDRV, wait_until

SLOW_START = TESTDRV.replace("testdrv: {delay: 10ms}", "testdrv: {delay: 700ms}")


def ctl(*args, env=None):
    return subprocess.run([BERTHCTL, *args], capture_output=True, text=True, timeout=30 * SLOW,
                          env=env)


class Help(unittest.TestCase):
    """what needs no berthd"""

    def test_help_version_and_every_commands_help(self):
        for args in (["help"], ["--help"], ["-h"]):
            p = ctl(*args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("usage: berthctl", p.stdout)
        commands = re.findall(r"^  (\w+)", ctl("help").stdout, re.M)
        self.assertIn("tenant", commands)
        self.assertIn("events", commands)
        for c in (c for c in commands if c != "help"):
            for args in ([c, "--help"], ["help", c]):
                p = ctl(*args)
                self.assertEqual(p.returncode, 0, f"{args}: {p.stderr}")
                self.assertIn(f"usage: berthctl {c}", p.stdout, args)
        subs = re.findall(r"^  tenant (\w+)", ctl("tenant", "--help").stdout, re.M)
        self.assertIn("add", subs)
        for s in subs + ["sleep", "restart", "touch"]:
            p = ctl("tenant", s, "--help")
            self.assertEqual(p.returncode, 0, f"tenant {s}: {p.stderr}")
            self.assertIn(f"usage: berthctl tenant {s}", p.stdout)
        for args in (["--version"], ["version"]):
            p = ctl(*args)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertRegex(p.stdout, r"^berthctl \d+\.\d+\.\d+\n$")

    # every command berthctl dispatches, the plugins' too, written out here rather than read
    # from berthctl: a command the table lacks is missed by help and dispatch alike
    COMMANDS = ["health", "info", "tenant add", "tenant ls", "tenant show", "tenant rm",
                "tenant wake", "tenant sleep", "tenant restart", "tenant touch",
                "tenant reprovision", "tenant key rotate", "events", "plugins", "reload",
                "backup", "usage", "routes", "matrix plan", "matrix apply", "matrix invite",
                "matrix invites", "matrix revoke", "version", "help"]

    def listed(self, text):
        """the commands `berthctl help` lists: the words before the arguments"""
        return set(re.findall(r"^  ([a-z]+(?: [a-z]+)*)", text, re.M))

    def test_help_and_man_page_list_every_command(self):
        helped = ctl("help").stdout
        shown = self.listed(helped)
        for c in self.COMMANDS:
            p = ctl(*c.split(), "--help")       # dispatchable...
            self.assertEqual(p.returncode, 0, f"{c}: {p.stderr}")
            self.assertIn(f"usage: berthctl {c}", p.stdout)
            self.assertRegex(helped, rf"(?m)^  {c}( |$)")      # ...and listed
            self.assertEqual(ctl("help", *c.split()).stdout, p.stdout)
        for c in shown:                         # and nothing listed fails to dispatch
            p = ctl(*c.split(), "--help")
            self.assertEqual(p.returncode, 0, f"help lists '{c}': {p.stderr}")
        man = subprocess.run(["man", "-l", os.path.join(BUILD, "dist", "berthctl.1")],
                             capture_output=True, text=True, env=dict(
                                 os.environ, MANPAGER="cat", MANWIDTH="200", LC_ALL="C"))
        self.assertEqual(man.returncode, 0, man.stderr)
        page = re.sub(".\b", "", man.stdout)
        section = page[page.index("\nCOMMANDS\n"):page.index("\nENVIRONMENT\n")]
        for c in set(self.COMMANDS) | shown:
            self.assertRegex(section, rf"(?m)^ +{c}( |$)")

    def test_unknown_commands_and_options_are_named(self):
        cases = [(["frobnicate"], "unknown command 'frobnicate'"),
                 (["tenant", "lst"], "unknown tenant command 'lst'"),
                 (["tenant", "lst", "x"], "unknown tenant command 'lst'"),
                 (["tenant", "key", "rot", "x"], "unknown tenant key command 'rot'"),
                 (["matrix", "plans"], "unknown matrix command 'plans'"),
                 (["help", "tenant", "lst"], "unknown command 'tenant lst'"),
                 (["tenant", "ls", "--bogus"], "unknown option --bogus"),
                 (["tenant", "rm", "x", "--wait"], "unknown option --wait"),
                 (["tenant", "show"], "tenant show needs a HANDLE"),
                 (["tenant", "show", "a", "b"], "unexpected argument 'b'"),
                 (["events", "--since"], "option --since needs a value"),
                 (["info", "extra"], "unexpected argument 'extra'"),
                 (["--bogus", "info"], "unknown option --bogus")]
        for args, msg in cases:
            p = ctl("--socket", "/nonexistent/berth.sock", *args)
            self.assertEqual(p.returncode, 2, f"{args}: {p.stderr}")
            self.assertIn(msg, p.stderr, args)

    def test_empty_berth_socket_is_named(self):
        env = dict(os.environ, BERTH_SOCKET="")
        p = ctl("tenant", "ls", env=env)
        self.assertEqual(p.returncode, 2)
        self.assertIn("BERTH_SOCKET is set but empty", p.stderr)
        self.assertEqual(ctl("version", env=env).returncode, 0)


class Health(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("  echo: {}\n", "  echo: {}\n  meter: {}\n"
                                            "  meter-two: {module: meter}\n")}
    plugins = ("testdrv", "echo", "meter")

    def test_health_is_200_only_when_usable(self):
        b = self.b
        j = json.loads(b.ctl("health", "--json").stdout)
        self.assertEqual(j["status"], "ok")
        self.assertTrue(j["checks"]["store"]["ok"])
        self.assertEqual(j["checks"]["drivers"]["testdrv"]["ok"], True)
        self.assertEqual(j["checks"]["plugins"]["meter"], {"ok": True, "state": "running"})
        # meter_two renders metrics under meter-two's names: refused, it fails to start
        b.write("20-two.yaml", "plugins:\n  meter_two: {module: meter}\n")
        b.ctl("reload")
        p = b.ctl("health", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("plugin instance 'meter_two' failed (error, HTTP 503)", p.stderr)
        r = b.get("/health")
        self.assertEqual(r.status, 503)
        self.assertFalse(r.json["checks"]["plugins"]["meter_two"]["ok"])


class AgainstBerthd(BerthTest):
    conf = {"10-test.yaml": SLOW_START}

    def test_options_after_the_command(self):
        b = self.b
        p = ctl("tenant", "add", "zed", "--kind", "agent", "--socket", b.sock)
        self.assertEqual(p.returncode, 0, p.stderr)
        ls = json.loads(ctl("tenant", "ls", "--json", "--socket", b.sock).stdout)
        self.assertEqual([t["handle"] for t in ls["tenants"]], ["zed"])
        self.assertEqual(ls["tenants"][0]["kind"], "agent")
        show = json.loads(ctl("tenant", "show", "zed", "--socket=" + b.sock, "-j").stdout)
        self.assertEqual(show["handle"], "zed")

    def test_bad_values_are_refused_and_nothing_is_done(self):
        b = self.b
        for args, msg in [(["--wait", "--timeout", "abc"], "--timeout 'abc' is not a duration"),
                          (["--wait", "--timeout", "0"], "--timeout '0' is not a duration"),
                          (["--timeout", "5s"], "--timeout only applies with --wait"),
                          (["--kind", "robot"], "--kind must be human or agent")]:
            p = b.ctl("tenant", "add", "bad", *args, check=False)
            self.assertEqual(p.returncode, 2, f"{args}: {p.stderr}")
            self.assertIn(msg, p.stderr)
        self.assertEqual(b.get("/v1/tenants/bad").status, 404)
        p = b.ctl("tenant", "wake", "bad", "--wait", "--timeout", "abc", check=False)
        self.assertEqual(p.returncode, 2)

    def test_wake_wait_returns_once_ready(self):
        b = self.b
        p = b.ctl("tenant", "add", "sam", "--asleep")
        self.assertIn("desired asleep", p.stdout)
        p = b.ctl("tenant", "wake", "sam", "--wait", "--timeout", "30s")
        self.assertIn("sam: ready", p.stdout)
        self.assertEqual(b.tenant("sam")["observed"], "ready")
        # already ready: returns at once instead of waiting for a tenant.ready that won't come
        p = b.ctl("tenant", "wake", "sam", "--wait", "--timeout", "5")
        self.assertIn("sam: ready", p.stdout)
        p = b.ctl("tenant", "add", "tim", "--wait")
        self.assertIn("tim: ready", p.stdout)
        self.assertEqual(b.tenant("tim")["observed"], "ready")

    def test_wait_times_out_with_exit_1(self):
        b = self.b
        b.ctl("tenant", "add", "slow", "--asleep")
        p = b.ctl("tenant", "wake", "slow", "--wait", "--timeout", "100ms", check=False)
        self.assertEqual(p.returncode, 1, p.stdout)
        self.assertIn("slow is not ready after 100ms", p.stderr)

    def test_server_reasons_are_shown(self):
        b = self.b
        p = b.ctl("events", "--since", "x", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("since / Last-Event-ID must be a sequence number", p.stderr)
        p = b.ctl("events", "--type", "tenant.readyy", check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("unknown event type 'tenant.readyy'", p.stderr)
        b.ctl("tenant", "add", "eve")
        self.assertIn("tenant.created", b.ctl("events", "--type", "tenant.created").stdout)
        self.assertIn("tenant.created", b.ctl("events", "--type", "tenant.*").stdout)

    def test_control_characters_from_the_server_never_reach_the_terminal(self):
        """a server string (here the API echoing a bad handle) holding an escape sequence is
        shown with '?' for people; --json keeps the API's JSON, escaped as JSON does"""
        b = self.b
        bad = "x\x1b]0;owned\x07\x7f\u009b2J"
        for cmd in (["tenant", "add", bad], ["tenant", "show", bad]):
            p = b.ctl(*cmd, check=False)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertIn("x?]0;owned??", p.stderr)
            for c in "\x1b\x07\x7f\u009b":
                self.assertNotIn(c, p.stdout + p.stderr, cmd)
        p = b.ctl("tenant", "show", bad, "--json", check=False)
        self.assertIn("\\u001b", p.stdout)
        self.assertEqual(b.get("/v1/tenants").json["tenants"], [])

    def test_follow_exits_1_when_berthd_goes(self):
        b = self.b
        p = subprocess.Popen([BERTHCTL, "--socket", b.sock, "events", "-f", "--since", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(p.stdout.readline())     # connected: the journal is printed
            self.assertEqual(b.stop(), 0)
            rc = p.wait(10 * SLOW)
            err = p.stderr.read()
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
            p.stdout.close()
            p.stderr.close()
        self.assertEqual(rc, 1, err)
        self.assertIn("berthd went away", err)

    def test_info_is_for_people_and_json_for_scripts(self):
        b = self.b
        b.ctl("tenant", "add", "ann")
        b.ctl("tenant", "add", "bob", "--asleep")
        b.wait_tenant("ann", "ready")
        out = b.ctl("info").stdout
        self.assertRegex(out, r"^berthd \d+\.\d+\.\d+ \(plugin ABI 1\.\d+\), pid \d+, up (\d+[hms])+\n")
        self.assertRegex(out, r"tenants:\s+2: .*1 ready")
        self.assertRegex(out, r"memory:\s+host [\d.]+ [KMGT]iB available of [\d.]+ [KMGT]iB")
        self.assertRegex(out, r"state:\s+\S+ uses [\d.]+ [KMG]?i?B; ")
        self.assertRegex(out, r"plugins:\n\s+testdrv\s+testdrv\s+\S+\s+running")
        self.assertIn("driver:    testdrv ok\n", out)
        j = json.loads(b.ctl("info", "--json").stdout)
        self.assertGreater(j["memory"]["total_bytes"], j["memory"]["available_bytes"])
        self.assertGreater(j["disk"]["state_dir_bytes"], 0)
        self.assertEqual(j["tenants"]["total"], 2)
        self.assertEqual(j["dependencies"]["testdrv"], {"ok": True, "listed": True})
        self.assertEqual(b.get("/v1/system").json["version"], j["version"])


if __name__ == "__main__":
    unittest.main()
