"""SIGKILL of berthd at random moments of create and delete bursts, with exec workloads and a
provisioner (issue 8): nothing the API acknowledged is lost, a deletion it acknowledged never
comes back, no tenant runs twice and no process is left without a tenant. Processes are
counted from /proc by a marker in their environment; the seed is printed so a failure can be
replayed (BERTH_BURST_SEED)."""
import http.client
import os
import random
import threading
import unittest
import uuid

from exec_util import marked, stop_and_clean
from harness import Berthd, wait_until

CONF = """berth:
  reconcile: {retry_base: 50ms, retry_max: 200ms}
plugins:
  exec: {ports: %d-%d, cgroups: %s}
  keys: {module: testprov, order: 100, delay: 20ms}
templates:
  default:
    driver: exec
    command: [sh, -c, "exec sleep 600"]
    env: {MARK: "%s"}
    stop_timeout: 300ms
    keys: {env: API_KEY, value: k}
"""


def handles_of(pids):
    """BERTH_HANDLE of each process, as a list (a handle twice is a duplicate)."""
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        out += [e[13:].decode() for e in env if e.startswith(b"BERTH_HANDLE=")]
    return out


class CrashBursts(unittest.TestCase):
    cgroups = "auto"
    rounds = 4

    def setUp(self):
        base = 25000 + (os.getpid() % 100) * 100 + (50 if self.cgroups == "off" else 0)
        self.mark = "berth-burst-" + uuid.uuid4().hex
        self.b = Berthd({"10-exec.yaml": CONF % (base, base + 49, self.cgroups, self.mark)},
                        plugins=("testprov",))
        self.b.install_plugin_from_build("exec")
        self.seed = int(os.environ.get("BERTH_BURST_SEED", random.randrange(1 << 30)))
        print(f"{type(self).__name__} seed {self.seed}")
        self.rng = random.Random(self.seed)
        self.b.start()

    def tearDown(self):
        rc, log = stop_and_clean(self.b, self.mark)
        self.assertEqual(rc, 0, log[-3000:])

    def burst(self, state, n):
        """Creates and deletes at random, with berthd SIGKILLed at a random moment of one of
        them; records what each answer acknowledged: True (to exist), False (deleted) or
        None (no answer: either may be true)."""
        b, rng = self.b, self.rng
        count = rng.randrange(5, 25)
        kill_at, delay = rng.randrange(count), rng.random() * 0.004
        killer = None
        for i in range(count):
            if i == kill_at:      # lands before, during or just after this request
                killer = threading.Timer(delay, b.proc.kill)
                killer.start()
            live = [h for h, s in state.items() if s is not False]
            if live and rng.random() < 0.35:
                h = rng.choice(live)
                try:
                    st = b.req("DELETE", f"/v1/tenants/{h}", timeout=3).status
                    self.assertIn(st, (202, 204, 404))
                    state[h] = False if st in (202, 204) else state[h]
                except (OSError, http.client.HTTPException):
                    state[h] = None
                    self.unanswered += 1
                    break       # killed: the rest would only be refused
            else:
                h = f"b{n:03d}"
                n += 1
                try:
                    st = b.post("/v1/tenants", {"handle": h}, timeout=3).status
                    self.assertEqual(st, 201)
                    state[h] = True
                except (OSError, http.client.HTTPException):
                    state[h] = None
                    self.unanswered += 1
                    break       # killed: the rest would only be refused
        killer.join()
        b.proc.wait()
        return n

    def check_after_restart(self, state):
        tenants = {t["handle"]: t for t in self.b.get("/v1/tenants").json["tenants"]}
        for h, s in list(state.items()):
            t = tenants.get(h)
            if s is True:
                self.assertIsNotNone(t, f"acknowledged create of {h} lost (seed {self.seed})")
            if s is False and t:
                self.assertEqual(t["desired"], "deleted", f"{h} came back (seed {self.seed})")
            if s is None:     # settle what an unanswered request did
                state[h] = bool(t) and t["desired"] != "deleted"
            elif t and t["desired"] == "deleted":
                state[h] = False
        self.assertLessEqual(set(tenants), set(state))

    def test_sigkill_in_create_and_delete_bursts(self):
        b, state, n = self.b, {}, 0
        self.unanswered = 0
        for _ in range(self.rounds):
            n = self.burst(state, n)
            b.start()
            self.check_after_restart(state)
        print(f"{self.unanswered} requests unanswered (berthd killed before or during them)")
        want = sorted(h for h, s in state.items() if s)

        def settled():
            ts = b.get("/v1/tenants").json["tenants"]
            return (sorted(t["handle"] for t in ts) == want and
                    all(t["observed"] == "ready" for t in ts) and
                    sorted(handles_of(marked(self.mark, "sleep"))) == want)
        wait_until(settled, 30, what=f"one process per tenant (seed {self.seed}: "
                   f"{sorted(handles_of(marked(self.mark)))} for {want})")
        # and every one of them ends with its tenant
        for h in want:
            b.req("DELETE", f"/v1/tenants/{h}")
        wait_until(lambda: not b.get("/v1/tenants").json["tenants"], 30, what="deletions")
        wait_until(lambda: marked(self.mark) == [], 10, what="no process left")


class CrashBurstsSupervised(CrashBursts):
    """The same without cgroups: each tree held by a subreaper supervisor."""
    cgroups = "off"


if __name__ == "__main__":
    unittest.main()
