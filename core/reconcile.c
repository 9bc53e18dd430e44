/* The reconciler. Desired state is written by the API and by plugins; observed state comes
 * from the tenant's driver. reconcile() compares the two and issues at most one operation per
 * tenant at a time; every completion, report, config change or resync marks the tenant dirty
 * and it is looked at again (level-triggered: after a crash, listing what exists and
 * reconciling brings everything right). */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

static struct {
    struct list dirty;
    uv_timer_t kick, resync;
    bool up;
} R = {.dirty = {&R.dirty, &R.dirty}};

static void reconcile(struct tenant *t);

static void kick_run(uv_timer_t *h)
{
    (void)h;
    /* take the list: reconcile may mark tenants again, they go into the next round */
    struct list batch;
    list_init(&batch);
    if (!list_empty(&R.dirty)) {
        batch.next = R.dirty.next;
        batch.prev = R.dirty.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        list_init(&R.dirty);
    }
    list_each(it, &batch) {
        struct tenant *t = container_of(it, struct tenant, dirty_link);
        list_del(&t->dirty_link);
        t->dirty = false;
        reconcile(t);
    }
}

void tenant_mark(struct tenant *t)
{
    if (t->dirty || !R.up) return;
    t->dirty = true;
    list_add_tail(&R.dirty, &t->dirty_link);
    if (!uv_is_active((uv_handle_t *)&R.kick)) uv_timer_start(&R.kick, kick_run, 0, 0);
}

void tenants_reconcile_all(void)
{
    list_each(it, &tenant_all) tenant_mark(container_of(it, struct tenant, link));
}

static void issue(struct tenant *t, struct driver *d, enum op_kind k, const struct tmpl *tm)
{
    driver_issue(t, d, k, spec_build(t, tm, k == OP_CREATE));
}

static void retry_fire(uv_timer_t *h)
{
    struct tenant *t = h->data;
    /* the timer runs on loop time, retry_at is wall time: the timer is the authority, or a
     * timer firing a millisecond "early" would leave the tenant waiting for nothing */
    t->retry_at = 0;
    tenant_mark(t);
}

/* retry_base doubled per step after the first, capped at retry_max */
int64_t reconcile_backoff(int64_t steps)
{
    const struct core_cfg *c = &C.gen->core;
    int64_t delay = c->reconcile.retry_base;
    for (int64_t i = 1; i < steps && delay < c->reconcile.retry_max; i++) delay *= 2;
    return delay > c->reconcile.retry_max ? c->reconcile.retry_max : delay;
}

void tenant_retry_in(struct tenant *t, int64_t delay)
{
    t->retry_at = wall_ms() + delay;
    if (!t->retry) {
        t->retry = xcalloc(1, sizeof *t->retry);
        uv_timer_init(C.loop, t->retry);
        t->retry->data = t;
    }
    uv_timer_start(t->retry, retry_fire, (uint64_t)delay, 0);
}

static void fail(struct tenant *t, const char *what, const char *msg)
{
    t->attempts++;
    int64_t delay = reconcile_backoff(t->attempts);
    char *reason = xasprintf("%s failed: %s", what, msg && *msg ? msg : "unknown error");
    str_set(&t->reason, reason);
    free(reason);
    tenant_retry_in(t, delay);
    tenant_set_observed(t, BERTH_OBS_FAILED);
    tenant_save(t);
    blog(BERTH_LOG_WARN, "core", "tenant %s: %s (attempt %" PRId64 ", retry in %" PRId64 "ms)",
         t->handle, t->reason, t->attempts, delay);
    struct berth_ev_tenant_failed ev = {sizeof ev, t->reason, t->attempts, delay};
    bus_publish(BERTH_EV_TENANT_FAILED, t->handle, &ev);
    tenant_notify(t, BERTH_EIO, t->reason);
}

static void apply_ok(struct tenant *t, enum op_kind k, const struct berth_observed *obs,
                     const struct tmpl *tm)
{
    t->attempts = 0;
    /* a stop is never delayed, so it cancels no backoff: the stop of a crash-loop restart
     * must leave the restart waiting its turn */
    if (k != OP_STOP) t->retry_at = 0;
    if (!crash_looping(t)) str_set(&t->reason, NULL);
    if (obs && obs->id) str_set(&t->id, obs->id);
    if (obs && obs->address) str_set(&t->address, obs->address);
    enum berth_observed_state st = obs && obs->state ? obs->state
        : k == OP_CREATE ? BERTH_OBS_STOPPED : k == OP_START ? BERTH_OBS_RUNNING
        : k == OP_STOP ? BERTH_OBS_STOPPED : BERTH_OBS_ABSENT;
    bool no_health = !tmpl_gates_ready(tm);
    if (st == BERTH_OBS_RUNNING && no_health) st = BERTH_OBS_READY;
    if (k == OP_REMOVE) {
        st = BERTH_OBS_ABSENT;
        str_set(&t->address, NULL);
    }
    if (k == OP_START) {
        t->started_ms = wall_ms();
        t->health = 0;
        if (t->recovering) t->restarts++;   /* brought up again after a crash or restart */
        t->recovering = false;
    }
    switch (k) {
    case OP_CREATE: {
        provision_applied(t);   /* the workload has what the provisioners returned */
        struct berth_ev_container_created ev = {sizeof ev, t->id};
        bus_publish(BERTH_EV_CONTAINER_CREATED, t->handle, &ev);
        break;
    }
    case OP_START: {
        struct berth_ev_container_started ev = {sizeof ev, t->id, t->address};
        bus_publish(BERTH_EV_CONTAINER_STARTED, t->handle, &ev);
        break;
    }
    case OP_STOP: {
        struct berth_ev_container_stopped ev = {sizeof ev, t->id, obs ? obs->exit_code : -1,
                                                obs && obs->oom, true, NULL};
        bus_publish(BERTH_EV_CONTAINER_STOPPED, t->handle, &ev);
        break;
    }
    case OP_REMOVE: {
        struct berth_ev_container_removed ev = {sizeof ev, t->id};
        bus_publish(BERTH_EV_CONTAINER_REMOVED, t->handle, &ev);
        str_set(&t->id, NULL);
        break;
    }
    default: break;
    }
    tenant_set_observed(t, st);
    tenant_save(t);
}

void reconcile_op_finished(struct tenant *t, berth_op *op, int status,
                           const struct berth_observed *obs, const char *msg)
{
    enum op_kind k = op->kind;
    t->op = NULL;
    if (status == BERTH_ECANCELED) {
        str_set(&t->reason, msg);
    } else if (status) {
        fail(t, op_names[k], msg ? msg : berth_strerror(status));
    } else {
        apply_ok(t, k, obs, tmpl_find(t->tmpl));
        if (k == OP_STOP && t->restart_pending) {
            t->restart_pending = false;
            t->recovering = true;       /* counted in restarts once it starts again */
        }
    }
    tenant_mark(t);
}

/* ---- the reconciler ---- */

static void wait_reason(struct tenant *t, const char *fmt, const char *arg)
{
    char *r = xasprintf(fmt, arg);
    if (!t->reason || strcmp(t->reason, r)) {
        str_set(&t->reason, r);
        tenant_save(t);
    }
    free(r);
}

static void finish_delete(struct tenant *t)
{
    if (t->dirty) list_del(&t->dirty_link);
    tenant_forget(t);
}

static void reconcile_delete(struct tenant *t, const struct tmpl *tm, struct driver *d,
                             const char *dname)
{
    if (t->observed != BERTH_OBS_ABSENT && t->id) {
        if (!d) wait_reason(t, "deleting: driver '%s' is not loaded", dname);
        else if (d->listed && t->retry_at <= wall_ms()) issue(t, d, OP_REMOVE, tm);
        return;
    }
    if (t->observed != BERTH_OBS_ABSENT) {
        tenant_set_observed(t, BERTH_OBS_ABSENT);
        tenant_save(t);
    }
    /* the workload is gone: its provisioners undo their work, in reverse order */
    if (!deprovision_step(t, tm)) return;
    if (t->nfin) wait_reason(t, "deleting: waiting for finalizer %s", t->fin[0]);
    else finish_delete(t);
}

static void reconcile(struct tenant *t)
{
    if (t->op || C.stopping) return;
    const struct tmpl *tm = tmpl_find(t->tmpl);
    const char *dname = t->driver ? t->driver : tm ? tm->core.driver : NULL;
    struct driver *d = dname ? driver_find(dname) : NULL;
    if (t->desired == BERTH_DESIRED_DELETED) {
        reconcile_delete(t, tm, d, dname);
        return;
    }
    if (!tm) {
        wait_reason(t, "template '%s' is not defined", t->tmpl);
        return;
    }
    /* provisioners run before the workload exists, and again when their block changes or
     * someone asks; a driver that is not loaded (yet) does not hold them up */
    bool provisioned = provision_step(t, tm);
    if (!d) {
        wait_reason(t, "driver '%s' is not loaded", dname);
        return;
    }
    /* nothing is created before the driver has said what already exists */
    if (!d->listed || d->list_error) {
        if (d->list_error) wait_reason(t, "%s", d->list_error);
        return;
    }
    if (!t->driver) str_set(&t->driver, dname);
    enum berth_observed_state o = t->observed;
    const char *who;
    if (provisioned && t->id && o != BERTH_OBS_ABSENT && provision_stale(t, tm, &who)) {
        /* a container's environment is fixed at its creation: what a provisioner returned
         * anew reaches the workload only by creating it again */
        wait_reason(t, "re-creating the workload: provisioner '%s' returned new environment "
                    "or labels", who);
        issue(t, d, OP_REMOVE, tm);
        return;
    }
    bool up = o == BERTH_OBS_RUNNING || o == BERTH_OBS_READY || o == BERTH_OBS_STARTING;
    enum op_kind next = OP_INSPECT;     /* none */
    if (t->desired == BERTH_DESIRED_RUNNING) {
        if (t->restart_pending && up) next = OP_STOP;
        else if (o == BERTH_OBS_ABSENT || (o == BERTH_OBS_FAILED && !t->id)) next = OP_CREATE;
        else if (o == BERTH_OBS_STOPPED || o == BERTH_OBS_FAILED) next = OP_START;
    } else {
        t->restart_pending = t->recovering = false;
        if (up) next = OP_STOP;
    }
    /* a backoff delays bringing the workload up, never taking it down */
    if ((next == OP_CREATE || next == OP_START) && t->retry_at > wall_ms()) return;
    if (next == OP_CREATE && !provisioned) return;
    if (next != OP_INSPECT) {
        issue(t, d, next, tm);
    } else if (provisioned && t->reason && !t->attempts && o != BERTH_OBS_FAILED) {
        if (crash_looping(t)) return;
        t->crashes = 0;     /* converged: the last complaint no longer holds */
        str_set(&t->reason, NULL);
        tenant_save(t);
    }
}


static void resync(uv_timer_t *h)
{
    (void)h;
    drivers_list_all();
}

/* from here on marked tenants are reconciled; all of them now */
void reconcile_start(void)
{
    uv_timer_init(C.loop, &R.kick);
    uv_timer_init(C.loop, &R.resync);
    uint64_t every = (uint64_t)C.gen->core.reconcile.resync_interval;
    uv_timer_start(&R.resync, resync, every, every);
    R.up = true;
    tenants_reconcile_all();
}

void reconcile_stop(void)
{
    if (!R.up) return;
    R.up = false;
    uv_close((uv_handle_t *)&R.kick, NULL);
    uv_close((uv_handle_t *)&R.resync, NULL);
    list_each(it, &R.dirty) {
        struct tenant *t = container_of(it, struct tenant, dirty_link);
        list_del(&t->dirty_link);
        t->dirty = false;
    }
}
