"""The SDK as a third party uses it: install berth, build a plugin out of tree against the
installed headers with pkg-config alone, and have berthd load it."""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import BUILD, Berthd

HELLO = r"""
#include <berth/berth.h>
#include <stdio.h>

static const struct berth_host *H;
struct cfg { const char *word; };
static const struct berth_cfg_item schema[] = {
    {"word", BERTH_CFG_STR, "world", 0, 0, offsetof(struct cfg, word), "who to greet",
     BERTH_CFG_RELOAD, NULL, NULL},
    {0},
};
static struct cfg conf;

static void hello(berth_req *r, void *arg)
{
    (void)arg;
    char body[128];
    size_t n = (size_t)snprintf(body, sizeof body, "hello, %s\n", conf.word);
    H->respond(r, 200, "text/plain", body, n);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    *state = self;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    (void)state;
    conf = *(const struct cfg *)cfg;
    return 0;
}

static int start(void *state)
{
    return H->route(state, "GET", "/v1/hello", hello, NULL);
}

BERTH_PLUGIN(.name = "hello", .version = "0.1", .config = schema,
             .config_size = sizeof(struct cfg), .init = init, .configure = configure,
             .start = start);
"""


class OutOfTree(unittest.TestCase):
    def test_build_against_installed_sdk_and_load(self):
        dest = tempfile.mkdtemp(prefix="berth-sdk-")
        work = tempfile.mkdtemp(prefix="berth-oot-")
        b = None
        try:
            subprocess.run(["meson", "install", "-C", BUILD, "--destdir", dest, "--no-rebuild",
                            "--quiet"], check=True, capture_output=True)
            pcs = glob.glob(os.path.join(dest, "**", "berth-plugin.pc"), recursive=True)
            self.assertEqual(len(pcs), 1, pcs)
            headers = glob.glob(os.path.join(dest, "**", "berth", "berth.h"), recursive=True)
            self.assertEqual(len(headers), 1)
            env = {**os.environ, "PKG_CONFIG_PATH": os.path.dirname(pcs[0]),
                   "PKG_CONFIG_SYSROOT_DIR": dest}
            cflags = subprocess.run(["pkg-config", "--cflags", "berth-plugin"], env=env,
                                    check=True, capture_output=True, text=True).stdout.split()
            self.assertIn("-fvisibility=hidden", cflags)
            src = os.path.join(work, "hello.c")
            with open(src, "w") as f:
                f.write(HELLO)
            so = os.path.join(work, "hello.so")
            # nothing of the source tree is on the include path: only what was installed
            subprocess.run(["cc", "-std=c17", "-Wall", "-Wextra", "-Werror", "-shared", *cflags,
                            "-o", so, src], check=True, cwd=work)
            b = Berthd({"10-hello.yaml": "plugins:\n  hello: {word: outside}\n"}, plugins=())
            shutil.copy(so, os.path.join(b.plugin_dir, "hello.so"))
            os.chmod(os.path.join(b.plugin_dir, "hello.so"), 0o755)
            b.start()
            r = b.get("/v1/hello")
            self.assertEqual((r.status, r.body), (200, "hello, outside\n"))
            self.assertEqual(b.get("/v1/plugins").json["plugins"][0]["module"], "hello")
            self.assertEqual(b.stop(), 0)
        finally:
            if b:
                b.cleanup()
            shutil.rmtree(dest, ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
