"""A tenant that reports: posts a heartbeat with its provisioned token, then sleeps. With an
argument, it first writes the token it holds to that file (for tests of forged and old tokens)."""
import json
import os
import sys
import time
import urllib.request

url, token = os.environ["HEARTBEAT_URL"], os.environ["HEARTBEAT_TOKEN"]
if len(sys.argv) > 1:
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(token)
    os.rename(sys.argv[1] + ".tmp", sys.argv[1])
n = 0
while True:
    n += 1
    body = json.dumps({"progress": "from inside", "beat": n}).encode()
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=5).read()
    except Exception as e:      # berthd restarting: try again
        print("heartbeat failed:", e, file=sys.stderr, flush=True)
    time.sleep(float(os.environ.get("BEAT_EVERY", "0.2")))
