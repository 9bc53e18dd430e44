"""What the host enforces on plugins (a plugin cannot publish the core's events or another
plugin's, nor shadow a core route) and plugin metrics in /metrics."""
import re
import unittest
import urllib.parse

from harness import BerthTest, TESTDRV, wait_until


class Ownership(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("  echo: {}\n", "  echo: {}\n  rogue: {}\n")}
    plugins = ("testdrv", "echo", "rogue", "echo_v2")

    def test_events_the_plugin_does_not_own_are_refused(self):
        b = self.b
        res = b.get("/v1/rogue/results").json
        EPERM = -1
        self.assertEqual(res["publish tenant.deleted"], EPERM)
        self.assertEqual(res["publish plugin.loaded"], EPERM)
        self.assertEqual(res["lookup echo.pinged"], 1)
        self.assertEqual(res["publish echo.pinged"], EPERM)
        self.assertEqual(res["register echo.pinged"], 0)
        self.assertEqual(res["register tenant.created"], 0)
        self.assertEqual(res["register rogue.did"], 1)
        self.assertEqual(res["publish rogue.did"], 0)
        log = b.log()
        self.assertIn("[plugin:rogue] may not publish tenant.deleted: it belongs to the core", log)
        self.assertIn("may not publish echo.pinged: it belongs to echo", log)
        self.assertIn("may not register event echo.pinged: it belongs to echo", log)
        wait_until(lambda: b.events(type="rogue.did"), what="rogue.did")
        self.assertEqual(b.events(type="tenant.deleted"), [])
        self.assertEqual(b.events(type="echo.pinged"), [])
        self.assertNotIn("fake", [e["payload"]["name"] for e in b.events(type="plugin.loaded")])
        # the owner's module may publish, and so may its new instance after a reload
        self.assertEqual(b.post("/v1/echo/ping").status, 202)
        b.install_plugin("echo_v2", "echo")
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: b.get("/v1/echo/info").json["version"] == 2, what="echo v2")
        self.assertEqual(b.post("/v1/echo/ping").status, 202)
        wait_until(lambda: len(b.events(type="echo.pinged")) == 2, what="two pings")

    def test_routes_that_shadow_the_core_are_refused(self):
        b = self.b
        res = b.get("/v1/rogue/results").json
        for route in ("GET /v1/tenants/{handle}", "DELETE /v1/tenants/{name}",
                      "POST /v1/tenants/{handle}/wake", "POST /v1/tenants/{h}/{verb}",
                      "HEAD /health", "GET /v1/*", "POST /v1/tenants", "GET /metrics"):
            self.assertEqual(res["route " + route], -1, route)
        for route in ("POST /v1/tenants/{handle}/quota", "GET /v1/tenants/{handle}/quota",
                      "PUT /v1/tenants/{handle}", "GET /v1/rogue/results"):
            self.assertEqual(res["route " + route], 0, route)
        self.assertIn("may not route GET /v1/tenants/{handle}: it would shadow the core's",
                      b.log())
        # the core still answers its own routes
        self.assertEqual(b.get("/v1/tenants/nobody").json["error"]["code"], "not_found")
        self.assertEqual(b.req("HEAD", "/health").status, 200)
        self.assertIn("berth_info", b.get("/metrics").body)
        self.assertEqual(b.post("/v1/tenants", {"handle": "abc"}).status, 201)
        self.assertEqual(b.post("/v1/tenants/abc/wake").status, 202)
        self.assertEqual(b.post("/v1/tenants/abc/quota").json, {"rogue": True})


SERIES = re.compile(r'^[a-z_][a-z0-9_]*(\{([a-z_][a-z0-9_]*="([^"\\]|\\.)*",?)*\})? \S+$')


def parse_metrics(text):
    """Checks every line of the text format and returns {series: value}."""
    out = {}
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            continue
        assert SERIES.match(line), f"bad metrics line: {line!r}"
        k, v = line.rsplit(" ", 1)
        out[k] = float(v)
    return out


class Metrics(BerthTest):
    conf = {"10-test.yaml": TESTDRV.replace("  echo: {}\n", "  echo: {}\n  meter: {}\n"
                                            "  meter-two: {module: meter}\n"
                                            "  meter_two: {module: meter}\n")}
    plugins = ("testdrv", "echo", "meter")

    def op(self, metric, inst="meter", **q):
        path = f"/v1/{inst}/{metric}?" + urllib.parse.urlencode(q)
        return self.b.post(path).json["rc"]

    def metrics(self):
        r = self.b.get("/metrics")
        self.assertEqual(r.status, 200)
        return r.body, parse_metrics(r.body)

    def test_counters_gauges_labels_rendered(self):
        self.assertEqual(self.op("hits_total", l1="/a", l2="200"), 0)
        self.assertEqual(self.op("hits_total", l1="/a", l2="200", v=2), 0)
        self.assertEqual(self.op("hits_total", l1='q"\\\n', l2="500"), 0)
        self.assertEqual(self.op("hits_total", l1="/a", l2="200", v=-1), -22)
        self.assertEqual(self.op("hits_total", l1="/a", l2="200", op="set", v=0), -22)
        self.assertEqual(self.op("hits_total", l1="/a"), -22)      # a label value missing
        self.assertEqual(self.op("level", op="set", v=5.5), 0)
        self.assertEqual(self.op("level", v=-1), 0)
        text, m = self.metrics()
        self.assertIn("# HELP berth_meter_hits_total Hits by path and code.\\nSecond line "
                      "with a \\\\.\n# TYPE berth_meter_hits_total counter\n", text)
        self.assertIn("# TYPE berth_meter_level gauge\n", text)
        self.assertEqual(m['berth_meter_hits_total{path="/a",code="200"}'], 3)
        self.assertEqual(m['berth_meter_hits_total{path="q\\"\\\\\\n",code="500"}'], 1)
        self.assertEqual(m["berth_meter_level"], 4.5)
        self.assertEqual(m["berth_meter_two_level"], 0)       # '-' in the instance name
        self.assertEqual(self.op("level", inst="meter-two", op="set", v=2), 0)
        self.assertEqual(self.metrics()[1]["berth_meter_two_level"], 2)
        # meter_two renders to the same names: its registrations are refused, so it fails
        plugins = {p["name"]: p for p in self.b.get("/v1/plugins").json["plugins"]}
        self.assertEqual(plugins["meter_two"]["state"], "failed")
        self.assertIn("metric hits_total refused: another instance's metric", self.b.log())
        self.assertIn("counter berth_meter_hits_total refused a negative delta", self.b.log())
        reg = self.b.get("/v1/meter/registered").json
        self.assertEqual(set(reg.values()), {False}, reg)
        self.assertEqual(set(reg), {"upper", "dash", "digit", "again", "bad_label", "dup_label",
                                    "kind", "bad_help"})
        self.assertIn("metric Hits refused: its name must match [a-z_][a-z0-9_]*", self.b.log())

    def test_reload_keeps_values_and_unload_removes_them(self):
        b = self.b
        self.assertEqual(self.op("level", op="set", v=7), 0)
        b.install_plugin("meter")           # a new file: the instance is replaced
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: b.log().count("loaded meter 1.0") >= 4, what="meter replaced")
        self.assertEqual(self.metrics()[1]["berth_meter_level"], 7)
        b.write("10-test.yaml", TESTDRV)
        self.assertEqual(b.post("/v1/reload").status, 200)
        wait_until(lambda: "berth_meter" not in b.get("/metrics").body, what="metrics gone")
        self.assertEqual({p["name"] for p in b.get("/v1/plugins").json["plugins"]},
                         {"testdrv", "echo"})


if __name__ == "__main__":
    unittest.main()
