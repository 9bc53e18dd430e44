#!/usr/bin/env python3
"""berthd's memory and /health latency under a flood of unauthenticated TCP clients, against
the same berthd idle (issue 8 #7: 1,500 connections each sending a 1 MB body without a token).

    python3 bench/flood_rss.py BUILD [RUNS] [CONNECTIONS] [--baseline OTHER_BERTHD]

Each run starts a fresh berthd with a token-protected TCP control listener, reads its idle
VmRSS, floods it, and reads VmHWM (peak), the slowest of the /health calls made during the
flood, and VmRSS once the clients have gone. --authorized sends the token: the bodies are then read,
within berth.http.max_buffered (64 MiB by default; beyond it 503). --baseline runs another berthd binary (say, a
build of an older commit) the same way, interleaved, for comparison."""
import argparse
import http.client
import os
import selectors
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

BODY = 1000 * 1000
TOKEN = "bench-token"


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


REFUSED = []     # /health calls turned away by the listener's connection cap


def health_ms(port, tries=1):
    t = time.perf_counter()
    for i in range(tries):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            c.request("GET", "/health", headers={"Authorization": "Bearer " + TOKEN})
            c.getresponse().read()
            break
        except (ConnectionError, http.client.HTTPException):
            if i + 1 == tries:
                raise
        finally:
            c.close()
    return (time.perf_counter() - t) * 1000


def health_during(port):
    try:
        return health_ms(port)
    except (ConnectionError, http.client.HTTPException):
        REFUSED.append(1)
        return 0.0


def start(berthd, d):
    port = free_port()
    os.makedirs(f"{d}/conf")
    with open(f"{d}/conf/token", "w") as f:
        f.write(TOKEN + "\n")
    with open(f"{d}/conf/00.yaml", "w") as f:
        f.write(f"berth:\n  plugin_dir: {d}\n  log: {{level: warn}}\n"
                f"  tcp: {{listen: '127.0.0.1:{port}', token: {{file: token}}}}\n")
    p = subprocess.Popen([berthd, "--config", f"{d}/conf", "--state", f"{d}/state"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            health_ms(port, 1)
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise SystemExit(f"{berthd} did not start")


def flood(port, pid, n, token):
    auth = b"Authorization: Bearer %s\r\n" % TOKEN.encode() if token else b""
    head = (b"POST /v1/tenants HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"%sContent-Length: %d\r\n\r\n" % (auth, BODY))
    payload = head + b"{" * BODY
    sel = selectors.DefaultSelector()
    left = {}
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        left[s] = memoryview(payload)
        sel.register(s, selectors.EVENT_WRITE)
    slowest, rounds, deadline = 0.0, 0, time.time() + 120
    while left and time.time() < deadline:
        for key, _ in sel.select(timeout=0.5):
            s = key.fileobj
            try:
                sent = s.send(left[s][:65536])
                left[s] = left[s][sent:]
                done = not left[s]
            except OSError:
                done = True
            if done:
                sel.unregister(s)
                del left[s]
                s.close()
        rounds += 1
        if rounds % 100 == 0:
            slowest = max(slowest, health_during(port))
    for s in left:
        s.close()
    return max(slowest, health_during(port))


def run(berthd, n, token):
    d = tempfile.mkdtemp(prefix="berth-flood-")
    p, port = start(berthd, d)
    try:
        time.sleep(0.5)
        idle = status(p.pid, "VmRSS")
        slowest = flood(port, p.pid, n, token)
        time.sleep(1)
        return idle, status(p.pid, "VmHWM"), status(p.pid, "VmRSS"), slowest
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


def report(name, rows):
    idle, peak, after, slow = (statistics.median(c) for c in zip(*rows))
    ratios = sorted(r[1] / r[0] for r in rows)
    print(f"{name}: idle {idle / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB "
          f"(x{statistics.median(ratios):.2f} idle, runs {ratios[0]:.2f}-{ratios[-1]:.2f}), "
          f"after {after / 1024:.1f} MiB, slowest /health {slow:.0f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("runs", nargs="?", type=int, default=5)
    ap.add_argument("connections", nargs="?", type=int, default=1500)
    ap.add_argument("--baseline", help="another berthd binary, run the same way")
    ap.add_argument("--authorized", action="store_true",
                    help="send the token: bodies are read, within berth.http.max_buffered")
    a = ap.parse_args()
    subjects = [("berthd", os.path.join(a.build, "core", "berthd"))]
    if a.baseline:
        subjects.append(("baseline", a.baseline))
    rows = {name: [] for name, _ in subjects}
    for _ in range(a.runs):
        for name, path in subjects:
            rows[name].append(run(path, a.connections, a.authorized))
    print(f"{a.connections} connections x {BODY // 1000} kB "
          f"{'with' if a.authorized else 'without'} a token, "
          f"median of {a.runs} runs:")
    for name, _ in subjects:
        report(name, rows[name])
    if REFUSED:
        print(f"{len(REFUSED)} /health call(s) during floods were closed by a connection cap")


if __name__ == "__main__":
    main()
