/* Crash-loop accounting: an unexpected stop of a tenant that should run is counted, and
 * restarts after the second crash in a row wait a doubling delay. */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

/* A crash loop's story (the reason, the count) stays visible, between crashes too, until the
 * workload has stayed up for crash_reset. */
bool crash_looping(const struct tenant *t)
{
    return t->crashes && wall_ms() - t->started_ms < C.gen->core.reconcile.crash_reset;
}

/* An unexpected stop of a tenant that should run: the first restart is immediate, then the
 * delay doubles per crash, as Kubernetes' CrashLoopBackOff; a long healthy run resets it. */
void crash_count(struct tenant *t, const char *msg)
{
    const struct core_cfg *c = &C.gen->core;
    int64_t now = wall_ms();
    t->crashes = now - t->started_ms < c->reconcile.crash_reset ? t->crashes + 1 : 1;
    t->recovering = true;
    str_set(&t->crash_msg, msg ? msg : "stopped");
    tenant_notify(t, BERTH_EIO, msg ? msg : "stopped before it was ready");
    if (t->crashes < 2) return;
    int64_t delay = c->reconcile.crash_backoff_base;
    for (int64_t i = 2; i < t->crashes && delay < c->reconcile.crash_backoff_max; i++) delay *= 2;
    if (delay > c->reconcile.crash_backoff_max) delay = c->reconcile.crash_backoff_max;
    char d[32];
    fmt_duration(delay, d, sizeof d);
    char *reason = xasprintf("crashed %" PRId64 " times in a row (last: %s); restarting in %s",
                             t->crashes, t->crash_msg, d);
    str_set(&t->reason, reason);
    free(reason);
    tenant_retry_in(t, delay);
    blog(BERTH_LOG_WARN, "core", "tenant %s: %s", t->handle, t->reason);
}

/* Ready again within a crash loop: the story stays (until crash_reset), told as what
 * happened; "restarting in 10s" no longer holds. */
void crash_ready(struct tenant *t)
{
    if (!crash_looping(t) || !t->crash_msg) return;
    char *reason = t->crashes > 1
        ? xasprintf("crashed %" PRId64 " times in a row (last: %s); ready again", t->crashes,
                    t->crash_msg)
        : xasprintf("crashed once (last: %s); ready again", t->crash_msg);
    str_set(&t->reason, reason);
    free(reason);
}

int tenant_restart_crash(const char *handle, const char *reason)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (t->desired != BERTH_DESIRED_RUNNING) return BERTH_EBUSY;
    t->restart_pending = true;      /* counted in restarts when the stop completes */
    crash_count(t, reason);
    if (reason && t->crashes < 2) str_set(&t->reason, reason);
    tenant_save(t);
    tenant_mark(t);
    return 0;
}

