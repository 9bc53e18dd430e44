"""Per-model usage comes from quota_models, a row per (tenant, model) written once per
batch: through a real berthd and the fake upstream of test_quota, the per-model sums after
calls of two models, after a SIGKILL mid-call (the recovered call counted at its
reservation), and after the schema step that builds the table from an older ledger."""
import os
import sqlite3

from harness import wait_until
from test_quota import QuotaBase


def rows(u):
    return {m["model"]: (m["calls"], m["input_tokens"], m["output_tokens"], m["cost"])
            for m in u["models"]}


class Models(QuotaBase):
    def db(self):
        return sqlite3.connect(os.path.join(self.b.state, "berth.db"))

    def ledger_sums(self, handle):
        """what the call rows say, summed per model (settled calls only)"""
        db = self.db()
        got = {m: (n, i, o, c / 1e6) for m, n, i, o, c in db.execute(
            "SELECT model, count(*), sum(input), sum(output), sum(cost) FROM quota_calls"
            " WHERE tenant = ? AND state != 'open' GROUP BY model", (handle,))}
        db.close()
        return got

    def test_models_summed_per_batch_and_at_recovery(self):
        self.add("mix")
        env = self.env("mix")
        for _ in range(3):
            self.assertEqual(self.call(env["ANTHROPIC_API_KEY"])[0], 200)
        body = {"model": "gpt-test", "max_completion_tokens": 50,
                "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(2):
            self.assertEqual(self.call(env["OPENAI_API_KEY"], "/v1/chat/completions",
                                       body)[0], 200)
        wait_until(lambda: self.usage("mix")["calls"] == 5, 10, what="five calls settled")
        got = rows(self.usage("mix"))
        self.assertEqual(set(got), {"claude-test", "gpt-test"})
        self.assertEqual((got["claude-test"][0], got["gpt-test"][0]), (3, 2))
        self.assertEqual(got, self.ledger_sums("mix"))
        # a call open when berthd is killed is settled at its reservation at restart, and
        # its model's row counts it
        c, _ = self.open_stream(env["ANTHROPIC_API_KEY"], "[hold:models]")
        reserved = self.usage("mix")["reserved_micro"]
        self.assertGreater(reserved, 0)
        self.b.kill()
        c.close()
        self.fake.release("models")
        self.b.start()
        got = rows(self.usage("mix"))
        self.assertEqual(got["claude-test"][0], 4)
        self.assertEqual(got, self.ledger_sums("mix"))

    def test_the_schema_step_sums_an_older_ledger(self):
        self.add("old")
        key = self.env("old")["ANTHROPIC_API_KEY"]
        for _ in range(2):
            self.assertEqual(self.call(key)[0], 200)
        wait_until(lambda: self.usage("old")["calls"] == 2, 10, what="two calls settled")
        self.assertEqual(self.b.stop(), 0)
        # the ledger as the step before made it: no quota_models, the (tenant, model) index,
        # and history it never summed
        db = self.db()
        db.executescript(
            "DROP TABLE quota_models;"
            "CREATE INDEX quota_calls_tenant ON quota_calls(tenant, model);"
            "UPDATE plugin_schema SET version = 2 WHERE owner = 'quota';")
        db.executemany(
            "INSERT INTO quota_calls(tenant, api, model, owner, state, started_ms, reserved,"
            " cost, input, output) VALUES('old', 'messages', ?, 'gone', 'done', 0, 0, ?, ?, ?)",
            [("claude-older", 7, 10, 1)] * 5000)
        db.commit()
        db.close()
        self.b.start()
        got = rows(self.usage("old"))
        self.assertEqual(got["claude-older"], (5000, 50000, 5000, 5000 * 7 / 1e6))
        self.assertEqual(got["claude-test"][0], 2)
        self.assertEqual(got, self.ledger_sums("old"))
        db = self.db()
        index = db.execute("SELECT name FROM sqlite_master WHERE name = 'quota_calls_tenant'")
        self.assertIsNone(index.fetchone())
        db.close()
        # and calls after the step add to the same rows
        self.assertEqual(self.call(key)[0], 200)
        wait_until(lambda: self.usage("old")["calls"] == 3, 10, what="the third call settled")
        self.assertEqual(rows(self.usage("old"))["claude-test"][0], 3)


if __name__ == "__main__":
    import unittest
    unittest.main()
