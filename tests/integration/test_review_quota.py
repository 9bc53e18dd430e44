"""Review findings in the quota proxy, each reproduced here (fixed since)."""
import http.client
import json
import unittest

from harness import wait_until
from test_quota import QuotaBase


def sse_events(raw):
    """(event, data) of each complete event, parsed as an SSE client does"""
    out = []
    for block in raw.split("\n\n")[:-1]:
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        out.append((name, "\n".join(data)))
    return out


class StreamError(QuotaBase):
    def test_error_event_after_a_cut_inside_an_event_is_readable(self):
        # An upstream cut inside an event: the relay passed its first half on, and the
        # error event written after it joins that half line, so the client's SDK reads
        # neither an error nor valid JSON.
        self.add("half")
        key = self.env("half")["ANTHROPIC_API_KEY"]
        c, r = self.open_stream(key, "[halfdie] [long:20]")
        try:
            rest = r.read()
        except http.client.IncompleteRead as e:
            rest = e.partial
        c.close()
        wait_until(lambda: self.usage("half")["calls"] == 1, 10, what="the call settled")
        name, data = sse_events(rest.decode())[-1]
        self.assertEqual(name, "error", rest)
        self.assertEqual(json.loads(data)["type"], "error")


if __name__ == "__main__":
    unittest.main()
