"""A private dockerd for tests: its own socket, --data-root and --exec-root under a temp dir,
and a tiny image imported from a busybox-static root filesystem (busybox httpd serves as a
tenant's web server). Needs Debian's docker.io and busybox-static, as installed by .ci/run."""
import fcntl
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time

from harness import UnixHTTPConnection, die_with_parent, free_port, wait_until

IMAGE = "berth-test:latest"
BUSYBOX = "/bin/busybox"
# Networks of the private dockerds come from a pool of their own. Bridges outlive a dockerd
# whose data root is gone, and Docker's default pools hold only 31 networks: a few leaked
# runs would exhaust them for every later run, and for any other dockerd on the machine.
POOL = "10.231.0.0/16"


def sweep_stale_bridges():
    """Deletes bridges left in POOL by an earlier private dockerd that died uncleanly."""
    out = subprocess.run(["ip", "-j", "addr", "show", "type", "bridge"], capture_output=True,
                         text=True)
    if out.returncode != 0:
        return
    prefix = POOL.split(".0.0/")[0] + "."
    for link in json.loads(out.stdout or "[]"):
        if any(a.get("local", "").startswith(prefix) for a in link.get("addr_info", [])):
            subprocess.run(["ip", "link", "delete", link["ifname"]], capture_output=True)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, with openssl."""
    os.makedirs(d)

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=berth-test-ca")
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
            f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext.replace("\\n", "\n") + "\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext")
    return {k: os.path.join(d, v) for k, v in (
        ("ca", "ca.pem"), ("server", "server.pem"), ("server_key", "server.key"),
        ("client", "client.pem"), ("client_key", "client.key"))}


class Registry:
    """Debian's docker-registry (the CNCF distribution registry) on loopback: a real pull."""

    def __init__(self, base):
        self.dir = os.path.join(base, "registry")
        os.makedirs(self.dir)
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(f"version: 0.1\nlog: {{level: warn}}\nstorage:\n  filesystem:\n"
                    f"    rootdirectory: {self.dir}/data\nhttp:\n  addr: {self.addr}\n")
        self.logf = open(os.path.join(self.dir, "registry.log"), "ab")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=self.logf,
                                     stderr=self.logf, preexec_fn=die_with_parent)

    def push(self, d, image):
        """Tags a local image into this registry and pushes it (127.0.0.0/8 is insecure-ok)."""
        repo = f"{self.addr}/berth-test"
        st, body = d.api("POST", f"/images/{image}/tag?repo={repo}&tag=latest")
        assert st == 201, body
        import base64
        auth = base64.b64encode(b"{}").decode()
        wait_until(lambda: d.api("GET", "/_ping")[0] == 200, 10)
        def pushed():
            st, body = d.api("POST", f"/images/{repo}/push?tag=latest",
                             headers={"X-Registry-Auth": auth})
            return st == 200 and "error" not in str(body)
        wait_until(pushed, 30, 0.5, what="the push to the registry")
        st, body = d.api("DELETE", f"/images/{repo}:latest")
        assert st == 200, body
        return f"{repo}:latest"

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.logf.close()


class Dockerd:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="berth-dk-")
        self.sock = os.path.join(self.dir, "docker.sock")
        self.proc = None
        self.logf = None
        self.tls_port = free_port()
        self.pki = make_pki(os.path.join(self.dir, "pki"))

    def start(self):
        # One private dockerd on the machine at a time: the sweep below would delete the
        # bridges of another one that is running (test runs side by side on one machine).
        if not getattr(self, "lock", None):
            self.lock = open(os.path.join(tempfile.gettempdir(), "berth-test-dockerd.lock"), "w")
            fcntl.flock(self.lock, fcntl.LOCK_EX)
        sweep_stale_bridges()
        self.logf = open(os.path.join(self.dir, "dockerd.log"), "ab")
        p = self.pki
        self.proc = subprocess.Popen(
            ["dockerd", "--host", "unix://" + self.sock,
             "--host", f"tcp://127.0.0.1:{self.tls_port}", "--tlsverify",
             "--tlscacert", p["ca"], "--tlscert", p["server"], "--tlskey", p["server_key"],
             "--data-root", os.path.join(self.dir, "data"),
             "--exec-root", os.path.join(self.dir, "exec"),
             "--pidfile", os.path.join(self.dir, "docker.pid"),
             "--default-address-pool", f"base={POOL},size=24"],
            stdout=self.logf, stderr=self.logf, preexec_fn=die_with_parent)
        wait_until(self.ping, 60, 0.2, what="dockerd to answer /_ping")
        return self

    def ping(self):
        if self.proc.poll() is not None:
            raise AssertionError("dockerd exited:\n" + self.log()[-3000:])
        try:
            return self.api("GET", "/_ping")[0] == 200
        except OSError:
            return False

    def log(self):
        with open(os.path.join(self.dir, "dockerd.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def api(self, method, path, body=None, headers=None, timeout=60):
        c = UnixHTTPConnection(self.sock, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
                headers = {"Content-Type": "application/json", **(headers or {})}
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data) if data else None
            except ValueError:
                return r.status, data.decode(errors="replace")
        finally:
            c.close()

    def import_image(self):
        """docker import of a root filesystem holding busybox and a /www to serve."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "www", "tmp", "etc"):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            for cmd in ("sh", "httpd", "sleep", "cat", "head", "ls", "env", "true"):
                info = tarfile.TarInfo("bin/" + cmd)
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox"
                tar.addfile(info)
            page = b"berth test image\n"
            info = tarfile.TarInfo("www/index.html")
            info.size = len(page)
            tar.addfile(info, io.BytesIO(page))
            passwd = b"root:x:0:0:root:/root:/bin/sh\n"
            info = tarfile.TarInfo("etc/passwd")
            info.size = len(passwd)
            tar.addfile(info, io.BytesIO(passwd))
        status, body = self.api("POST", "/images/create?fromSrc=-&repo=berth-test&tag=latest",
                                buf.getvalue(), {"Content-Type": "application/x-tar"})
        assert status == 200, body
        return IMAGE

    def containers(self):
        status, body = self.api("GET", "/containers/json?all=1&filters=" +
                                "%7B%22label%22%3A%5B%22berth.managed%3Dtrue%22%5D%7D")
        assert status == 200, body
        return body

    def inspect(self, name):
        status, body = self.api("GET", f"/containers/{name}/json")
        return body if status == 200 else None

    def remove_networks(self):
        """Removes the networks tests made, so that their bridges go with them."""
        status, nets = self.api("GET", "/networks")
        for n in nets if status == 200 else []:
            if n["Name"] not in ("bridge", "host", "none"):
                self.api("DELETE", f"/networks/{n['Id']}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.logf:
            self.logf.close()
            self.logf = None

    def cleanup(self):
        for c in (self.containers() if self.proc and self.proc.poll() is None else []):
            self.api("DELETE", f"/containers/{c['Id']}?force=true")
        if self.proc and self.proc.poll() is None:
            self.remove_networks()
        self.stop()
        subprocess.run(["umount", "-R", "-l", os.path.join(self.dir, "data")],
                       capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        if getattr(self, "lock", None):
            self.lock.close()       # releases the flock
            self.lock = None
