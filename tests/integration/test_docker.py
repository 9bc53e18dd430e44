"""The docker driver against a real, private dockerd, end to end through berthd."""
import os
import signal
import time
import unittest

from dockerd import Dockerd, Registry
from harness import DRAIN_LATE, Berthd, http_get, wait_until

D = None
REG = None


def setUpModule():
    global D, REG
    D = Dockerd()
    try:
        D.start()
        D.import_image()
        REG = Registry(D.dir)
    except BaseException:
        D.cleanup()         # tearDownModule does not run when this fails
        raise


def tearDownModule():
    REG.stop()
    D.cleanup()


def conf(vol):
    return f"""plugins:
  docker: {{socket: {D.sock}}}
  echo: {{greeting: from-echo}}
  keys: {{module: testprov}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/httpd, -f, -p, "8080", -h, /www]
    port: 8080
    env: {{TZ: UTC}}
    volumes: ["{vol}/{{handle}}:/www"]
    memory: 64m
    cpus: 0.5
    pids: 64
    labels: {{team: qa}}
    keys: {{env: API_KEY, value: k, label: web}}
    cap_drop: [NET_RAW]
    network: berth-test-net
    stop_timeout: 1500ms        # the Engine takes seconds: rounded up to 2
  missing:
    driver: docker
    image: nope-not-here:latest
    pull: never
  hog:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/sh, -c, "sleep 0.3; x=$(head -c 300000000 /dev/zero | tr '\\\\0' a); sleep 100"]
    memory: 32m
berth:
  reconcile: {{retry_base: 200ms, retry_max: 1s, crash_backoff_base: 500ms}}
"""


class Docker(unittest.TestCase):
    def setUp(self):
        self.vol = os.path.join(D.dir, "vol-" + self._testMethodName[-12:])
        self.b = Berthd({"10-docker.yaml": conf(self.vol)}, plugins=("echo", "testprov"))
        self.b.install_plugin_from_build("docker")
        self.b.start()

    def tearDown(self):
        rc = self.b.stop()
        log = self.b.log()
        self.b.cleanup()
        for c in D.containers():
            D.api("DELETE", f"/containers/{c['Id']}?force=true")
        self.assertEqual(rc, 0, log[-3000:])
        self.assertNotIn(DRAIN_LATE, log)

    def test_life_cycle_limits_and_data(self):
        b = self.b
        self.assertEqual(b.post("/v1/tenants", {"handle": "alice"}).status, 201)
        t = b.wait_tenant("alice", "ready", timeout=30)
        c = D.inspect("berth-alice")
        hc = c["HostConfig"]
        self.assertEqual(hc["Memory"], 64 << 20)
        self.assertEqual(hc["NanoCpus"], 500000000)
        self.assertEqual(hc["PidsLimit"], 64)
        self.assertEqual(hc["Binds"], [f"{self.vol}/alice:/www"])
        self.assertEqual(hc["CapDrop"], ["NET_RAW"])
        self.assertEqual(hc["SecurityOpt"], ["no-new-privileges"])
        self.assertEqual(hc["RestartPolicy"]["Name"], "no")
        labels = c["Config"]["Labels"]
        self.assertEqual((labels["berth.managed"], labels["berth.tenant"],
                          labels["berth.template"], labels["team"], labels["testprov.keys"]),
                         ("true", "alice", "default", "qa", "web"))   # a provisioner's too
        env = c["Config"]["Env"]
        for kv in ("TZ=UTC", "BERTH_HANDLE=alice", "BERTH_KIND=human", "PORT=8080",
                   "API_KEY=k-alice",                 # from the provisioner
                   "ECHO_GREETING=from-echo"):        # the last one: a spec contribution
            self.assertIn(kv, env)
        self.assertEqual(c["Config"]["StopTimeout"], 2)
        self.assertEqual(hc["NetworkMode"], "berth-test-net")
        st, net = D.api("GET", "/networks/berth-test-net")      # created for the tenant
        self.assertEqual((st, net["Labels"].get("berth.managed")), (200, "true"))
        self.assertEqual(t["id"], c["Id"])
        self.assertEqual(oct(os.stat(f"{self.vol}/alice").st_mode & 0o777), "0o750")
        with open(f"{self.vol}/alice/hello.txt", "w") as f:
            f.write("alice was here\n")
        self.assertEqual(http_get(t["address"], "/hello.txt"), "alice was here\n")

        b.post("/v1/tenants/alice/sleep")
        b.wait_tenant("alice", "stopped", timeout=30)
        self.assertFalse(D.inspect("berth-alice")["State"]["Running"])
        b.post("/v1/tenants/alice/wake")
        t = b.wait_tenant("alice", "ready", timeout=30)
        self.assertEqual(D.inspect("berth-alice")["Id"], c["Id"])      # the same container
        self.assertEqual(http_get(t["address"], "/hello.txt"), "alice was here\n")

        b.req("DELETE", "/v1/tenants/alice")
        wait_until(lambda: b.get("/v1/tenants/alice").status == 404, 30, what="deletion")
        self.assertIsNone(D.inspect("berth-alice"))
        self.assertTrue(os.path.exists(f"{self.vol}/alice/hello.txt"))    # data is kept

    def test_adopted_after_sigkill_never_duplicated(self):
        b = self.b
        for h in ("ann", "ben"):
            b.post("/v1/tenants", {"handle": h})
        ids = {h: b.wait_tenant(h, "ready", timeout=30)["id"] for h in ("ann", "ben")}
        b.kill()
        b.start()
        for h in ("ann", "ben"):
            self.assertEqual(b.wait_tenant(h, "ready", timeout=30)["id"], ids[h])
        time.sleep(0.5)
        self.assertEqual(len(D.containers()), 2)

    def test_killed_or_removed_behind_our_back(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "bob"})
        first = b.wait_tenant("bob", "ready", timeout=30)
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        t0 = time.time()
        self.assertEqual(D.api("POST", "/containers/berth-bob/kill")[0], 204)
        ev = wait_until(lambda: b.events(since=seq, type="container.stopped", tenant="bob"),
                        5, what="container.stopped")[0]["payload"]
        self.assertLess(time.time() - t0, 2.0)
        self.assertEqual(ev["exit_code"], 137)
        self.assertFalse(ev["expected"])
        wait_until(lambda: D.inspect("berth-bob")["State"]["Running"], 30,
                   what="the reconciler to start it again")
        # removed outright: recreated
        seq = b.get("/v1/system/info").json["events"]["last_seq"]
        D.api("DELETE", "/containers/berth-bob?force=true")
        wait_until(lambda: (D.inspect("berth-bob") or {}).get("Id") not in (None, first["id"]),
                   30, what="a new container")
        b.wait_tenant("bob", "ready", timeout=30)

    def test_a_stop_across_a_reload_is_not_a_crash(self):
        # sleep as PID 1 ignores SIGTERM: the stop takes its 2s, and meanwhile a reload
        # replaces the docker instance (the same socket, written differently)
        b = self.b
        b.write("20-slow.yaml", "templates:\n  slowstop: {driver: docker, image: "
                "berth-test:latest, pull: never, command: [/bin/sleep, '1000'], "
                "stop_timeout: 2s}\n")
        self.assertEqual(b.post("/v1/reload").status, 200)
        b.post("/v1/tenants", {"handle": "ss", "template": "slowstop"})
        b.wait_tenant("ss", "ready", timeout=30)
        self.assertEqual(b.post("/v1/tenants/ss/sleep").status, 202)
        b.write("10-docker.yaml", conf(self.vol).replace(
            f"socket: {D.sock}", f"socket: {os.path.dirname(D.sock)}/./"
                                 f"{os.path.basename(D.sock)}"))
        r = b.post("/v1/reload")
        self.assertEqual(r.status, 200, r.body)
        t = b.wait_tenant("ss", "stopped", timeout=30)
        time.sleep(0.5)         # dockerd's die event, should it be taken for a crash
        t = b.tenant("ss")
        self.assertEqual((t["observed"], t["crashes"]), ("stopped", 0), t)
        self.assertNotIn("tenant ss: container died", b.log())

    def test_concurrent_creates_make_one_network(self):
        b = self.b
        b.write("20-race.yaml", "templates:\n  racer: {driver: docker, image: berth-test:latest,"
                " pull: never, network: berth-race-net, command: [/bin/sleep, '1000']}\n")
        self.assertEqual(b.post("/v1/reload").status, 200)
        for i in range(6):
            b.post("/v1/tenants", {"handle": f"racer{i}", "template": "racer"})
        for i in range(6):
            b.wait_tenant(f"racer{i}", "ready", timeout=60)
        st, nets = D.api("GET", "/networks?filters=%7B%22name%22%3A%5B%22berth-race-net%22%5D%7D")
        self.assertEqual([n["Name"] for n in nets], ["berth-race-net"])

    def test_oom_kill_is_reported(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "hog", "template": "hog"})
        ev = wait_until(lambda: b.events(type="container.stopped", tenant="hog"), 30,
                        what="the OOM kill")[0]["payload"]
        self.assertTrue(ev["oom"], ev)
        self.assertIn("OOM", ev["message"])

    def test_docker_errors_land_on_the_tenant(self):
        b = self.b
        b.post("/v1/tenants", {"handle": "lost", "template": "missing"})
        t = wait_until(lambda: (b.tenant("lost") or {}).get("observed") == "failed" and
                       b.tenant("lost"), 30, what="a failure")
        self.assertIn("create: dockerd: No such image: nope-not-here:latest", t["reason"])
        # a foreign container holding the name
        st, _ = D.api("POST", "/containers/create?name=berth-zed",
                      {"Image": "berth-test:latest", "Cmd": ["/bin/sleep", "100"]})
        self.assertEqual(st, 201)
        b.post("/v1/tenants", {"handle": "zed"})
        t = wait_until(lambda: (b.tenant("zed") or {}).get("observed") == "failed" and
                       b.tenant("zed"), 30, what="a name conflict")
        self.assertIn("a container named berth-zed exists and is not this tenant's",
                      t["reason"])
        D.api("DELETE", "/containers/berth-zed?force=true")
        b.wait_tenant("zed", "ready", timeout=60)       # retried with backoff, then fine


class PullAndTLS(unittest.TestCase):
    def test_pull_progress_shown_by_berthctl(self):
        image = REG.push(D, "berth-test:latest")
        self.assertEqual(D.api("GET", f"/images/{image}/json")[0], 404)   # not local now
        b = Berthd({"10-docker.yaml": f"""plugins:
  docker: {{socket: {D.sock}}}
templates:
  pulled:
    driver: docker
    image: {image}
    pull: if-missing
    command: [/bin/sleep, "1000"]
"""}, plugins=())
        b.install_plugin_from_build("docker")
        try:
            b.start()
            p = b.ctl("tenant", "add", "puller", "--template", "pulled", "--wait",
                      "--timeout", "120")
            self.assertIn(f"pull {image}: Pulling from berth-test", p.stdout)
            self.assertIn(f"pull {image}: Status: Downloaded newer image", p.stdout)
            self.assertIn("puller: ready", p.stdout)
            pulls = b.events(type="image.pull_progress", tenant="puller")
            self.assertTrue(any(e["payload"]["status"].startswith("Status: Downloaded")
                                for e in pulls), pulls[-3:])
            self.assertEqual(D.api("GET", f"/images/{image}/json")[0], 200)
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()

    def test_a_refused_pull_says_what_dockerd_said(self):
        image = REG.push(D, "berth-test:latest").replace("berth-test", "nope-not-pushed")
        b = Berthd({"10-docker.yaml": f"""plugins:
  docker: {{socket: {D.sock}}}
templates:
  default:
    driver: docker
    image: {image}
    pull: always
"""}, plugins=())
        b.install_plugin_from_build("docker")
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "nopull"})
            t = wait_until(lambda: "pulling" in ((b.tenant("nopull") or {}).get("reason") or "")
                           and b.tenant("nopull"), 60, what="the pull's failure")
            self.assertIn(f"pulling {image}: dockerd: ", t["reason"])
            self.assertIn("not found", t["reason"])
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()

    def test_tcp_with_tls_client_certificates(self):
        p = D.pki
        base = f"""plugins:
  docker:
    host: tcp://127.0.0.1:{D.tls_port}
    tls_ca: {p["ca"]}
    {{cert}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/sleep, "1000"]
berth: {{reconcile: {{retry_base: 200ms, retry_max: 1s}}}}
"""
        good = base.replace("{cert}", f"tls_cert: {p['client']}\n    tls_key: {p['client_key']}")
        b = Berthd({"10-docker.yaml": good}, plugins=())
        b.install_plugin_from_build("docker")
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "tls"})
            t = b.wait_tenant("tls", "ready", timeout=30)
            self.assertEqual(D.inspect("berth-tls")["Id"], t["id"])
            self.assertEqual(b.stop(), 0)
            # without a client certificate dockerd refuses, and the tenant says why
            b.write("10-docker.yaml", base.replace("{cert}", ""))
            b.start()
            b.post("/v1/tenants", {"handle": "notls"})
            t = wait_until(lambda: (b.tenant("notls") or {}).get("reason"), 30,
                           what="the reason")
            self.assertIn("driver 'docker' cannot list its workloads: GET /version: cannot "
                          "reach dockerd", t)
            self.assertIn("bad certificate", t)
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()


class IdleDocker(unittest.TestCase):
    def test_idle_sleep_and_wake_keep_the_container_and_its_data(self):
        vol = os.path.join(D.dir, "vol-idle")
        b = Berthd({"10-docker.yaml": f"""plugins:
  docker: {{socket: {D.sock}}}
  lifecycle: {{check_interval: 200ms}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [/bin/httpd, -f, -p, "8080", -h, /www]
    port: 8080
    volumes: ["{vol}/{{handle}}:/www"]
    lifecycle:
      idle_timeout: 2s
      health: {{http: /, interval: 200ms, timeout: 1s, retries: 3}}
    stop_timeout: 1s
"""}, plugins=())
        b.install_plugin_from_build("docker")
        b.install_plugin_from_build("lifecycle")
        try:
            b.start()
            os.makedirs(f"{vol}/dora")
            with open(f"{vol}/dora/index.html", "w") as f:
                f.write("dora's page\n")
            b.post("/v1/tenants", {"handle": "dora"})
            t = b.wait_tenant("dora", "ready", timeout=30)
            self.assertEqual(http_get(t["address"], "/"), "dora's page\n")
            b.wait_tenant("dora", "stopped", timeout=15)
            self.assertFalse(D.inspect("berth-dora")["State"]["Running"])
            r = b.post("/v1/tenants/dora/wake?wait=30s", timeout=40)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json["id"], t["id"])           # the same container
            self.assertTrue(D.inspect("berth-dora")["State"]["Running"])
            self.assertEqual(http_get(r.json["address"], "/"), "dora's page\n")
            b.req("DELETE", "/v1/tenants/dora")
            wait_until(lambda: b.get("/v1/tenants/dora").status == 404, 30, what="deletion")
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()


class DockerdRestart(unittest.TestCase):
    def test_reconnects_and_converges(self):
        vol = os.path.join(D.dir, "vol-restart")
        b = Berthd({"10-docker.yaml": conf(vol)}, plugins=("echo", "testprov"))
        b.install_plugin_from_build("docker")
        try:
            b.start()
            b.post("/v1/tenants", {"handle": "cora"})
            b.wait_tenant("cora", "ready", timeout=30)
            D.stop()                    # containers stop with it (no live-restore)
            wait_until(lambda: "event stream ended" in b.log(), 15, what="the stream to end")
            self.assertEqual(b.get("/health").status, 200)
            D.start()
            wait_until(lambda: "following dockerd events; re-listing" in b.log(), 60,
                       what="the reconnection")
            wait_until(lambda: D.inspect("berth-cora")["State"]["Running"], 60,
                       what="cora running again")
            b.wait_tenant("cora", "ready", timeout=30)
            self.assertEqual(b.stop(), 0)
        finally:
            b.cleanup()


if __name__ == "__main__":
    unittest.main()
