#!/usr/bin/env python3
"""Docker driver benchmarks against a private dockerd, baselines in the same run.

  python3 bench/docker_bench.py [build-dir] [tenants] [adopt] [adopt-runs]

1. create+start of N tenants through berthd (POST /v1/tenants, until all are ready)
   against `docker run -d` of the same N containers with the same limits, one after another
   as a provisioning script would;
2. berthd's start-up with M existing berth containers until every one is adopted, against
   one `docker ps -a` listing of the same containers, adopt-runs times (default 1) over the
   same containers, each run a fresh berthd with an empty store.

tenants=0 skips the first part (to iterate on adoption alone). BERTH_BENCH_WRAP, if set, is
a command berthd runs under (e.g. "strace -c -f -o FILE"), for profiling.
"""
import atexit
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
build = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
os.environ["BERTH_BUILD"] = build
N = int(sys.argv[2]) if len(sys.argv) > 2 else 50
M = int(sys.argv[3]) if len(sys.argv) > 3 else 500
RUNS = int(sys.argv[4]) if len(sys.argv) > 4 else 1

from dockerd import Dockerd  # noqa: E402
import harness  # noqa: E402
from harness import Berthd, wait_until  # noqa: E402

CLI = "/usr/bin/docker"
CMD = ["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]


def conf(sock):
    return f"""berth: {{log: {{level: warn}}}}
plugins:
  docker: {{socket: {sock}}}
templates:
  default:
    driver: docker
    image: berth-test:latest
    pull: never
    command: [{", ".join(CMD)}]
    port: 8080
    memory: 64m
    cpus: 0.5
    pids: 64
    stop_timeout: 1s
"""


def create_start(d, env):
    t0 = time.time()
    for i in range(N):
        subprocess.run([CLI, "run", "-d", "--name", f"base-{i}", "-m", "64m", "--cpus",
                        "0.5", "--pids-limit", "64", "-p", "127.0.0.1::8080",
                        "berth-test:latest", *CMD], env=env, check=True,
                       capture_output=True)
    base = time.time() - t0
    subprocess.run(f"{CLI} rm -f $({CLI} ps -aq)", shell=True, env=env,
                   capture_output=True)

    b = Berthd({"10.yaml": conf(d.sock)}, plugins=())
    b.install_plugin_from_build("docker")
    b.start()
    t0 = time.time()
    for i in range(N):
        assert b.post("/v1/tenants", {"handle": f"t{i}"}).status == 201
    wait_until(lambda: b.get("/v1/system/info").json["tenants"]["ready"] == N, 600, 0.05,
               what="all tenants ready")
    berth = time.time() - t0
    print(f"create+start {N} containers: docker run {base:.2f}s, berth {berth:.2f}s, "
          f"ratio {berth / base:.2f}")
    b.stop()
    b.cleanup()
    subprocess.run(f"{CLI} rm -f $({CLI} ps -aq)", shell=True, env=env,
                   capture_output=True)


def adopt_once(d, env):
    t0 = time.time()
    subprocess.run([CLI, "ps", "-a", "--filter", "label=berth.managed=true"], env=env,
                   check=True, capture_output=True)
    ps = time.time() - t0
    b = Berthd({"10.yaml": conf(d.sock)}, plugins=())
    b.install_plugin_from_build("docker")
    t0 = time.time()
    b.start()
    up = time.time() - t0
    wait_until(lambda: b.get("/v1/system/info").json["tenants"]["total"] == M, 600, 0.02,
               what="all adopted")
    adopt = time.time() - t0
    print(f"adoption of {M} existing containers at start-up: {adopt:.2f}s "
          f"(answering after {up:.2f}s; docker ps -a of the same: {ps:.2f}s, "
          f"ratio {adopt / ps:.1f}; load {os.getloadavg()[0]:.1f})", flush=True)
    rc = b.stop()
    assert rc == 0 or os.environ.get("BERTH_BENCH_WRAP"), b.log()
    b.cleanup()
    return ps, adopt


def spread(xs, fmt):
    xs = sorted(xs)
    return f"{fmt(statistics.median(xs))} ({fmt(xs[0])}-{fmt(xs[-1])})"


def main():
    wrap = os.environ.get("BERTH_BENCH_WRAP")
    if wrap:
        w = os.path.join(tempfile.mkdtemp(prefix="berth-wrap-"), "berthd")
        with open(w, "w") as f:
            f.write(f"#!/bin/sh\nexec {wrap} {harness.BERTHD} \"$@\"\n")
        os.chmod(w, 0o755)
        harness.BERTHD = w
        atexit.register(shutil.rmtree, os.path.dirname(w), True)
    d = Dockerd().start()
    env = {**os.environ, "DOCKER_HOST": "unix://" + d.sock}
    try:
        d.import_image()
        if N:
            create_start(d, env)
        # adoption: M labelled containers exist, berthd has no record of them
        for i in range(M):
            st, body = d.api("POST", f"/containers/create?name=berth-a{i}", {
                "Image": "berth-test:latest", "Cmd": CMD,
                "Labels": {"berth.managed": "true", "berth.tenant": f"a{i}",
                           "berth.template": "default", "berth.instance": "docker"}})
            assert st == 201, body
        runs = [adopt_once(d, env) for _ in range(RUNS)]
        if RUNS > 1:
            def sec(x):
                return f"{x:.2f}s"
            print(f"adoption, {RUNS} runs, median (min-max): berth "
                  f"{spread([a for _, a in runs], sec)}, docker ps -a "
                  f"{spread([p for p, _ in runs], sec)}, ratio "
                  f"{spread([a / p for p, a in runs], lambda x: f'{x:.1f}')}")
    finally:
        subprocess.run(f"{CLI} rm -f $({CLI} ps -aq)", shell=True, env=env,
                       capture_output=True)
        d.cleanup()


if __name__ == "__main__":
    main()
