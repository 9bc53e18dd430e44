"""meson install into a temporary tree: the installed berthd runs with the installed conf.d
and plugins, berthctl talks to it, the unit passes systemd-analyze verify, a plugin builds
against the installed headers through the installed .pc and loads, the man pages render
without a warning, and berth.conf(5) holds every key of the schemas."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import BUILD, SLOW, SRC, UnixHTTPConnection, die_with_parent, wait_until


def find(root, suffix):
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if p.endswith(suffix):
                return p
    raise AssertionError(f"{suffix} is not installed under {root}")


class Install(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dest = tempfile.mkdtemp(prefix="berth-install-")
        subprocess.run(["meson", "install", "-C", BUILD, "--destdir", cls.dest, "--no-rebuild",
                        "--quiet"], check=True, capture_output=True, timeout=120)
        cls.berthd = find(cls.dest, "/sbin/berthd")
        cls.berthctl = find(cls.dest, "/bin/berthctl")
        cls.conf = os.path.dirname(find(cls.dest, "/etc/berth/conf.d/00-berth.yaml"))
        cls.unit = find(cls.dest, "/systemd/system/berthd.service")
        cls.prefix = os.path.dirname(os.path.dirname(cls.berthd))[len(cls.dest):]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dest, ignore_errors=True)

    def test_everything_is_installed(self):
        for f in ("/include/berth/berth.h", "/include/berth/events.h", "/berth-plugin.pc",
                  "/berth/plugins/exec.so", "/berth/plugins/docker.so",
                  "/berth/plugins/lifecycle.so", "/man8/berthd.8", "/man1/berthctl.1",
                  "/man5/berth.conf.5"):
            find(self.dest, f)

    def test_installed_berthd_runs_with_installed_conf(self):
        p = subprocess.run([self.berthd, "--check", "--config", self.conf], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        state = tempfile.mkdtemp(prefix="berth-install-state-")
        log = open(os.path.join(state, "log"), "wb")
        d = subprocess.Popen([self.berthd, "--config", self.conf, "--state", state],
                             stdout=log, stderr=log, preexec_fn=die_with_parent)
        ctl = [self.berthctl, "--socket", os.path.join(state, "berth.sock")]
        try:
            wait_until(lambda: subprocess.run(ctl + ["health"], capture_output=True)
                       .returncode == 0, 15, what="the installed berthd")
            info = json.loads(subprocess.run(ctl + ["info", "--json"], capture_output=True,
                                             text=True, check=True).stdout)
            running = {p["name"]: p["state"] for p in info["plugins"]}
            self.assertEqual(running, {"exec": "running", "lifecycle": "running"})
            self.assertTrue(all(p["path"].startswith(self.dest) for p in info["plugins"]))
            d.send_signal(signal.SIGTERM)
            self.assertEqual(d.wait(20 * SLOW), 0)
        finally:
            if d.poll() is None:
                d.kill()
                d.wait()
            log.close()
            shutil.rmtree(state, ignore_errors=True)

    def test_unit_passes_systemd_analyze_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("systemd-analyze is not installed (Debian: systemd)")
        with open(self.unit) as f:
            text = f.read()
        self.assertIn("Type=notify", text)
        self.assertIn("ExecReload=/bin/kill -HUP $MAINPID", text)
        self.assertIn(f"ExecStart={self.prefix}/sbin/berthd --config ", text)
        # the unit names the final paths; verify checks them, so point it into the tree
        staged = os.path.join(self.dest, "berthd.service")
        with open(staged, "w") as f:
            f.write(text.replace(f"={self.prefix}/", f"={self.dest}{self.prefix}/"))
        env = dict(os.environ, MANPATH=os.path.dirname(os.path.dirname(
            find(self.dest, "/man8/berthd.8"))))
        p = subprocess.run(["systemd-analyze", "verify", staged], capture_output=True,
                           text=True, env=env)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertEqual(p.stderr.strip(), "")

    def test_pc_builds_a_plugin_that_the_installed_berthd_loads(self):
        pc = find(self.dest, "/pkgconfig/berth-plugin.pc")
        # the sysroot maps the .pc's final paths into the staged tree, as for a DESTDIR
        env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc),
                   PKG_CONFIG_SYSROOT_DIR=self.dest)
        flags = subprocess.run(["pkg-config", "--cflags", "berth-plugin"], env=env,
                               capture_output=True, text=True, check=True).stdout.split()
        self.assertIn(f"-I{self.dest}{self.prefix}/include", flags)
        plugdir = subprocess.run(["pkg-config", "--variable=plugindir", "berth-plugin"],
                                 env=env, capture_output=True, text=True,
                                 check=True).stdout.strip()
        self.assertEqual(os.path.realpath(plugdir), os.path.realpath(os.path.dirname(
            find(self.dest, "/berth/plugins/exec.so"))))
        with tempfile.TemporaryDirectory() as d:
            so = os.path.join(d, "echo.so")
            p = subprocess.run(["cc", "-std=c17", "-Wall", "-Werror", "-shared", *flags,
                                "-o", so, os.path.join(SRC, "tests", "abi", "echo.c")],
                               capture_output=True, text=True)
            self.assertEqual(p.returncode, 0, p.stderr)
            with open(os.path.join(d, "00.yaml"), "w") as f:
                f.write(f"berth:\n  plugin_dir: {d}\n")
            schema = json.loads(subprocess.run([self.berthd, "--dump-schema", "--config", d],
                                               capture_output=True, text=True,
                                               check=True).stdout)
        self.assertIn("echo", [m["module"] for m in schema["plugins"]])

    def test_man_pages_render_without_warnings(self):
        if not shutil.which("man"):
            self.skipTest("man is not installed (Debian: man-db)")
        for page, title in (("/man8/berthd.8", "BERTHD(8)"), ("/man1/berthctl.1", "BERTHCTL(1)"),
                            ("/man5/berth.conf.5", "BERTH.CONF(5)")):
            p = subprocess.run(["man", "--warnings", "-l", find(self.dest, page)],
                               capture_output=True, text=True,
                               env=dict(os.environ, MANPAGER="cat", MANWIDTH="100",
                                        LC_ALL="C.UTF-8"))
            self.assertEqual((p.returncode, p.stderr), (0, ""), page)
            self.assertTrue(p.stdout.startswith(title), p.stdout[:200])
            self.assertIn("NAME", p.stdout)
            self.assertGreater(len(p.stdout.splitlines()), 20, page)

    def test_berth_conf_5_has_every_schema_key(self):
        with open(find(self.dest, "/man5/berth.conf.5")) as f:
            page = f.read().replace("\\-", "-")
        plugin_dir = os.path.dirname(find(self.dest, "/berth/plugins/exec.so"))
        with tempfile.TemporaryDirectory() as conf:
            with open(os.path.join(conf, "00.yaml"), "w") as f:
                f.write(f"berth:\n  plugin_dir: {plugin_dir}\n")
            schema = json.loads(subprocess.run([self.berthd, "--dump-schema", "--config", conf],
                                               capture_output=True, text=True,
                                               check=True).stdout)

        def keys(items, prefix):
            for i in items:
                yield prefix + i["key"]
                yield from keys(i.get("keys", []), prefix + i["key"] + ".")
        for k in keys(schema["berth"], "berth."):
            self.assertIn(f"\\fB{k}\\fR", page)
        for m in schema["plugins"]:
            self.assertIn(f".SS {m['module']}", page)
            for k in keys(m.get("config", []), f"plugins.{m['module']}."):
                self.assertIn(f"\\fB{k}\\fR", page)


class SetupPackages(unittest.TestCase):
    """What the build needs is what the quickstart installs and the README names: every
    library meson found, mapped to the Debian package that holds its .pc (or header)."""

    def test_quickstart_and_readme_name_every_build_dependency(self):
        if not shutil.which("dpkg"):
            self.skipTest("not a Debian system (dpkg)")
        deps = json.loads(subprocess.run(["meson", "introspect", BUILD, "--dependencies"],
                                         capture_output=True, text=True, check=True).stdout)
        files = ["/usr/include/http_parser.h"]    # found by hand: Debian ships no .pc
        for dep in deps:
            d = subprocess.run(["pkg-config", "--variable=pcfiledir", dep["name"]],
                               capture_output=True, text=True)
            if d.returncode == 0:
                files.append(os.path.join(d.stdout.strip(), dep["name"] + ".pc"))
        owners = set()
        for f in files:
            p = subprocess.run(["dpkg", "-S", f], capture_output=True, text=True)
            if p.returncode == 0:       # not from a wrap's subproject
                owners.add(p.stdout.split(":")[0])
        self.assertIn("libssl-dev", owners)
        with open(os.path.join(SRC, "quickstart")) as f:
            quick = set(re.search(r"pkgs=\(([^)]*)\)", f.read()).group(1).split())
        with open(os.path.join(SRC, "README.md")) as f:
            readme = set(re.search(r"install `([^`]*)`", f.read().replace("\n", " "))
                         .group(1).split())
        self.assertEqual(owners - quick, set(), "missing from quickstart's pkgs")
        self.assertEqual(owners - readme, set(), "missing from the README's list")


def api(sock, method, path, body=None):
    c = UnixHTTPConnection(sock, timeout=10 * SLOW)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None)
        r = c.getresponse()
        data = r.read()
        return r.status, json.loads(data) if data else None
    finally:
        c.close()


class Quickstart(unittest.TestCase):
    """The README's first command ends in `berthd --config conf.d` from the checkout, run by
    whoever typed it: the quickstart conf.d must bring a tenant to ready for a user without
    root (no cgroups of its own), not only for root."""

    def test_quickstart_conf_runs_a_tenant_without_root(self):
        tree = tempfile.mkdtemp(prefix="berth-quickstart-")
        os.chmod(tree, 0o755)
        d = None
        try:
            shutil.copytree(os.path.join(SRC, "conf.d"), os.path.join(tree, "conf.d"))
            shutil.copytree(os.path.join(BUILD, "plugins"), os.path.join(tree, "build", "plugins"),
                            ignore=lambda _d, names: [n for n in names if not n.endswith(".so")])
            berthd = shutil.copy(os.path.join(BUILD, "core", "berthd"), tree)
            cmd = [berthd, "--config", "conf.d"]
            if os.geteuid() == 0:       # as the unprivileged user nobody
                subprocess.run(["chown", "-R", "nobody", tree], check=True)
                cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
            log = open(os.path.join(tree, "log"), "wb")
            d = subprocess.Popen(cmd, cwd=tree, stdout=log, stderr=log,
                                 preexec_fn=die_with_parent)
            sock = os.path.join(tree, "state", "berth.sock")
            wait_until(lambda: os.path.exists(sock), 15 * SLOW, what="berthd's socket")
            self.assertEqual(api(sock, "POST", "/v1/tenants", {"handle": "alice"})[0], 201)

            def state():
                t = api(sock, "GET", "/v1/tenants/alice")[1]
                return t["observed"] in ("ready", "failed") and t
            t = wait_until(state, 15 * SLOW, what="alice to be ready or failed")
            self.assertEqual((t["observed"], t["reason"]), ("ready", None))
            api(sock, "DELETE", "/v1/tenants/alice")
            wait_until(lambda: api(sock, "GET", "/v1/tenants/alice")[0] == 404, 15 * SLOW,
                       what="alice's deletion")
            d.send_signal(signal.SIGTERM)
            self.assertEqual(d.wait(20 * SLOW), 0)
        finally:
            if d and d.poll() is None:
                d.kill()
                d.wait()
            shutil.rmtree(tree, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
