"""A real Synapse for the matrix tests: the shared start.sh/stop.sh on a free loopback port with
a private data dir, plus a small admin client (its own admin account, registered with the shared
secret) to observe what berth did."""
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("BERTH_SRC", os.path.join(HERE, "..", ".."))


def synapse_dir():
    """Where start.sh lives, or None: $BERTH_SYNAPSE_DIR, else <repo>/../shared/synapse."""
    for d in (os.environ.get("BERTH_SYNAPSE_DIR"),
              os.path.join(os.path.abspath(SRC), "..", "shared", "synapse")):
        if d and os.path.exists(os.path.join(d, "start.sh")):
            return os.path.abspath(d)
    return None


def q(s):
    return urllib.parse.quote(s, safe="")


class Synapse:
    def __init__(self, port, rate_limits="off"):
        self.dir = synapse_dir()
        self.port = port
        self.data = tempfile.mkdtemp(prefix="berth-synapse-")
        self.env = dict(os.environ, SYNAPSE_DATA=self.data, SYNAPSE_RATE_LIMITS=rate_limits)
        self.url = f"http://127.0.0.1:{port}"
        self.secret = None
        self.admin_token = None
        self.server_name = "test.local"

    def start(self):
        p = subprocess.run([os.path.join(self.dir, "start.sh"), str(self.port)], env=self.env,
                           capture_output=True, text=True, timeout=240)
        if p.returncode != 0:
            raise RuntimeError(f"start.sh failed: {p.stderr[-3000:]}")
        for line in p.stdout.splitlines():
            k, _, v = line.replace("export ", "").partition("=")
            if k == "SYNAPSE_SHARED_SECRET":
                self.secret = v
            elif k == "SYNAPSE_SERVER_NAME":
                self.server_name = v
        return self

    def stop(self, wipe=False):
        env = dict(self.env, SYNAPSE_WIPE="1" if wipe else "0")
        subprocess.run([os.path.join(self.dir, "stop.sh"), str(self.port)], env=env,
                       capture_output=True, timeout=60)
        if wipe:
            shutil.rmtree(self.data, ignore_errors=True)

    def secret_file(self, where):
        path = os.path.join(where, "synapse-secret")
        with open(path, "w") as f:
            f.write(self.secret)
        return path

    def call(self, method, path, body=None, token=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", "Bearer " + token)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def register(self, user, password="pw-test-1", admin=False, displayname=None):
        """shared-secret registration; returns (status, body)"""
        _, n = self.call("GET", "/_synapse/admin/v1/register")
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([n["nonce"].encode(), user.encode(), password.encode(),
                                 b"admin" if admin else b"notadmin"]))
        body = {"nonce": n["nonce"], "username": user, "password": password, "admin": admin,
                "mac": mac.hexdigest()}
        if displayname:
            body["displayname"] = displayname
        return self.call("POST", "/_synapse/admin/v1/register", body)

    def admin(self):
        if not self.admin_token:
            st, b = self.register("testadmin", admin=True)
            assert st == 200, b
            self.admin_token = b["access_token"]
        return self.admin_token

    def acall(self, method, path, body=None):
        return self.call(method, path, body, self.admin())

    def user(self, uid):
        return self.acall("GET", f"/_synapse/admin/v2/users/{q(uid)}")

    def devices(self, uid):
        st, b = self.acall("GET", f"/_synapse/admin/v2/users/{q(uid)}/devices")
        assert st == 200, b
        return [d["device_id"] for d in b["devices"]]

    def joined_rooms(self, uid):
        st, b = self.acall("GET", f"/_synapse/admin/v1/users/{q(uid)}/joined_rooms")
        assert st == 200, b
        return b["joined_rooms"]

    def room_of(self, alias):
        st, b = self.call("GET", f"/_matrix/client/v3/directory/room/{q(alias)}",
                          token=self.admin())
        return b.get("room_id") if st == 200 else None

    def state(self, room_id):
        st, b = self.acall("GET", f"/_synapse/admin/v1/rooms/{q(room_id)}/state")
        assert st == 200, b
        return b["state"]

    def register_with_token(self, user, token, password="pw-test-2"):
        """the two-stage UIA registration a person runs with an invite token"""
        body = {"username": user, "password": password}
        st, b = self.call("POST", "/_matrix/client/v3/register", body)
        if st != 401:
            return st, b
        sess = b["session"]
        st, b = self.call("POST", "/_matrix/client/v3/register", dict(
            body, auth={"type": "m.login.registration_token", "token": token, "session": sess}))
        if st != 401:
            return st, b
        return self.call("POST", "/_matrix/client/v3/register", dict(
            body, auth={"type": "m.login.dummy", "session": sess}))
