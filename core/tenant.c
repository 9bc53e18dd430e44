/* Tenants and the reconciler. Desired state is written by the API and by plugins; observed
 * state comes from the tenant's driver. reconcile() compares the two and issues at most one
 * driver operation per tenant at a time; every completion, report, config change or resync
 * marks the tenant dirty and it is looked at again (level-triggered: after a crash, listing
 * what exists and reconciling brings everything right). */
#include "core.h"

#include <stdlib.h>
#include <string.h>

enum op_kind { OP_CREATE, OP_START, OP_STOP, OP_REMOVE, OP_INSPECT, OP_LIST };
static const char *const op_names[] = {"create", "start", "stop", "remove", "inspect", "list"};

struct driver {
    struct res res;             /* first: the owner's resource list points here */
    struct list link;
    const struct berth_driver *d;
    void *state;
    bool listed;
    berth_op *listing;
    int64_t list_failures;
    char *list_error;           /* why the last list() failed, shown on waiting tenants */
    uv_timer_t *relist;         /* retry of a failed list(), with backoff */
};

struct listed { char *handle, *tmpl, *id, *address; enum berth_observed_state st; };

struct berth_op {
    struct res res;
    struct list link;           /* ops of all drivers, for cancellation */
    struct driver *drv;
    enum op_kind kind;
    char handle[40];
    berth_spec *spec;
    struct listed *items; size_t nitems;
};

struct berth_spec {
    char *handle, *tmpl;
    struct gen *gen;
    const void *cfg;
    int port;
    char **names, **vals; size_t nenv;
};

struct contrib { struct res res; struct list link; berth_spec_fn fn; void *arg; };

struct tenant {
    struct list link;
    struct tenant *hnext;
    char handle[40];
    char *kind, *tmpl, *driver;
    enum berth_desired desired;
    enum berth_observed_state observed;
    char *id, *address, *reason;
    int64_t created_ms, updated_ms, last_activity_ms, restarts;
    char **fin; size_t nfin;
    /* runtime only */
    bool dirty, restart_pending, activity_dirty;
    struct list dirty_link;
    berth_op *op;
    int64_t attempts, retry_at;
    int64_t started_ms, crashes;    /* crash-loop backoff */
    uv_timer_t *retry;
    int64_t busy;
    int health;                     /* 0 unknown, 1 healthy, 2 unhealthy */
    cJSON *plugins;                 /* status objects set by plugins, by instance name */
    struct list waiters;            /* tenant_wait_ready() callers */
};

/* someone waiting for a tenant to become ready */
struct waiter {
    struct res res;                 /* first: linked into its instance, if a plugin waits */
    struct list link;
    uv_timer_t timer;
    berth_ready_cb cb;
    void *arg;
    char handle[40];
};

/* one busy hold taken by a plugin instance */
struct busy { struct res res; struct list link; char handle[40]; };



static struct {
    struct list all, dirty, drivers, ops, contribs, busy;
    struct tenant **tab; size_t cap, count;
    uv_timer_t kick, resync, flush;
    struct bus_sub *activity;
    bool up;
} T;

static void waiter_finish(struct waiter *w, int status, const char *msg);
static void crashed(struct tenant *t, const char *msg);

const char *desired_name(enum berth_desired d)
{
    static const char *const n[] = {"?", "running", "asleep", "deleted"};
    return d >= 1 && d <= 3 ? n[d] : "?";
}

const char *observed_name(enum berth_observed_state s)
{
    static const char *const n[] = {"?", "absent", "creating", "starting", "running",
                                    "ready", "stopping", "stopped", "failed"};
    return s >= 1 && s <= 8 ? n[s] : "?";
}

static int parse_desired(const char *s)
{
    for (int i = 1; i <= 3; i++)
        if (s && !strcmp(s, desired_name((enum berth_desired)i))) return i;
    return 0;
}

static int parse_observed(const char *s)
{
    for (int i = 1; i <= 8; i++)
        if (s && !strcmp(s, observed_name((enum berth_observed_state)i))) return i;
    return 0;
}

/* ---- the handle index ---- */

static size_t hash(const char *s)
{
    size_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void index_grow(void)
{
    size_t cap = T.cap ? T.cap * 2 : 1024;
    struct tenant **tab = xcalloc(cap, sizeof *tab);
    list_each(it, &T.all) {
        struct tenant *t = container_of(it, struct tenant, link);
        size_t b = hash(t->handle) & (cap - 1);
        t->hnext = tab[b];
        tab[b] = t;
    }
    free(T.tab);
    T.tab = tab;
    T.cap = cap;
}

struct tenant *tenant_find(const char *handle)
{
    if (!T.cap) return NULL;
    for (struct tenant *t = T.tab[hash(handle) & (T.cap - 1)]; t; t = t->hnext)
        if (!strcmp(t->handle, handle)) return t;
    return NULL;
}

static void index_add(struct tenant *t)
{
    list_add_tail(&T.all, &t->link);
    T.count++;
    if (T.count > T.cap / 2) {
        index_grow();
        return;
    }
    size_t b = hash(t->handle) & (T.cap - 1);
    t->hnext = T.tab[b];
    T.tab[b] = t;
}

static void index_del(struct tenant *t)
{
    struct tenant **pp = &T.tab[hash(t->handle) & (T.cap - 1)];
    while (*pp != t) pp = &(*pp)->hnext;
    *pp = t->hnext;
    list_del(&t->link);
    T.count--;
}

size_t tenants_total(void) { return T.count; }

/* ---- persistence ---- */

static char *fin_json(const struct tenant *t)
{
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < t->nfin; i++) cJSON_AddItemToArray(a, cJSON_CreateString(t->fin[i]));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

static void save(struct tenant *t)
{
    t->updated_ms = wall_ms();
    char *fin = fin_json(t);
    char created[24], updated[24], act[24], restarts[24];
    snprintf(created, sizeof created, "%" PRId64, t->created_ms);
    snprintf(updated, sizeof updated, "%" PRId64, t->updated_ms);
    snprintf(act, sizeof act, "%" PRId64, t->last_activity_ms);
    snprintf(restarts, sizeof restarts, "%" PRId64, t->restarts);
    const char *p[] = {t->handle, t->kind, t->tmpl, t->driver, desired_name(t->desired),
                       observed_name(t->observed), t->reason, t->id, t->address, fin,
                       created, updated, act, restarts};
    char *err = NULL;
    if (store_exec_params(C.store,
                          "INSERT OR REPLACE INTO tenants(handle,kind,template,driver,desired,"
                          "observed,reason,driver_id,address,finalizers,created_ms,updated_ms,"
                          "last_activity_ms,restarts) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,"
                          "?11,?12,?13,?14)", p, ARRAY_LEN(p), NULL, NULL, &err) < 0) {
        log_error("saving tenant %s: %s", t->handle, err);
        free(err);
    }
    cJSON_free(fin);
    t->activity_dirty = false;
}

static void set_str(char **dst, const char *v)
{
    if (*dst == v || (*dst && v && !strcmp(*dst, v))) return;
    free(*dst);
    *dst = xstrdup(v);
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

static void free_tenant(struct tenant *t)
{
    free(t->kind);
    free(t->tmpl);
    free(t->driver);
    free(t->id);
    free(t->address);
    free(t->reason);
    for (size_t i = 0; i < t->nfin; i++) free(t->fin[i]);
    free(t->fin);
    cJSON_Delete(t->plugins);
    list_each(it, &t->waiters) waiter_finish(container_of(it, struct waiter, link),
                                             BERTH_ECANCELED, "berthd is stopping");
    if (t->retry) uv_close((uv_handle_t *)t->retry, free_handle);
    free(t);
}

static bool load_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names; (void)arg;
    struct tenant *t = xcalloc(1, sizeof *t);
    snprintf(t->handle, sizeof t->handle, "%s", v[0]);
    t->kind = xstrdup(v[1]);
    t->tmpl = xstrdup(v[2]);
    t->driver = xstrdup(v[3]);
    t->desired = (enum berth_desired)parse_desired(v[4]);
    t->observed = (enum berth_observed_state)parse_observed(v[5]);
    t->reason = xstrdup(v[6]);
    t->id = xstrdup(v[7]);
    t->address = xstrdup(v[8]);
    cJSON *fin = cJSON_Parse(v[9] ? v[9] : "[]");
    cJSON *f;
    cJSON_ArrayForEach(f, fin) {
        if (!cJSON_IsString(f)) continue;
        t->fin = xrealloc(t->fin, (t->nfin + 1) * sizeof *t->fin);
        t->fin[t->nfin++] = xstrdup(f->valuestring);
    }
    cJSON_Delete(fin);
    t->created_ms = v[10] ? atoll(v[10]) : 0;
    t->updated_ms = v[11] ? atoll(v[11]) : 0;
    t->last_activity_ms = v[12] ? atoll(v[12]) : 0;
    t->restarts = v[13] ? atoll(v[13]) : 0;
    list_init(&t->dirty_link);
    list_init(&t->waiters);
    if (!handle_valid(t->handle) || !t->desired) {
        log_error("tenant row '%s' is corrupt; skipping it", v[0]);
        free_tenant(t);
        return true;
    }
    index_add(t);
    return true;
}

/* ---- readiness waiters ---- */

static void waiter_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct waiter, timer));
}

static void waiter_finish(struct waiter *w, int status, const char *msg)
{
    list_del(&w->link);
    if (w->res.owner) res_detach(&w->res);
    uv_timer_stop(&w->timer);
    char handle[40];
    snprintf(handle, sizeof handle, "%s", w->handle);
    berth_ready_cb cb = w->cb;
    void *arg = w->arg;
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
    cb(handle, status, msg, arg);
}

static void notify(struct tenant *t, int status, const char *msg)
{
    list_each(it, &t->waiters) waiter_finish(container_of(it, struct waiter, link), status, msg);
}

static void waiter_timeout(uv_timer_t *h)
{
    waiter_finish(container_of(h, struct waiter, timer), BERTH_ETIMEDOUT, "not ready in time");
}

int tenant_wait_ready(berth_instance *owner, const char *handle, int64_t timeout_ms,
                      berth_ready_cb cb, void *arg)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!cb || timeout_ms < 0) return BERTH_EINVAL;
    if (!t) return BERTH_ENOENT;
    struct waiter *w = xcalloc(1, sizeof *w);
    snprintf(w->handle, sizeof w->handle, "%s", handle);
    w->cb = cb;
    w->arg = arg;
    uv_timer_init(C.loop, &w->timer);
    list_add_tail(&t->waiters, &w->link);
    if (owner) res_attach(owner, &w->res, RES_WAIT);
    if (t->observed == BERTH_OBS_READY && t->desired == BERTH_DESIRED_RUNNING) {
        waiter_finish(w, 0, NULL);        /* already there: answered now, never twice */
        return 0;
    }
    uv_timer_start(&w->timer, waiter_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* an unloading instance's waiters go without a callback into its code */
void waiter_drop(struct res *r)
{
    struct waiter *w = (struct waiter *)r;
    list_del(&w->link);
    res_detach(r);
    uv_timer_stop(&w->timer);
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
}

/* ---- events ---- */

static void changed(struct tenant *t)
{
    struct berth_ev_tenant_changed ev = {sizeof ev, desired_name(t->desired),
                                         observed_name(t->observed)};
    bus_publish(BERTH_EV_TENANT_CHANGED, t->handle, &ev);
}

static void set_observed(struct tenant *t, enum berth_observed_state s)
{
    if (t->observed == s) return;
    t->observed = s;
    changed(t);
    if (s == BERTH_OBS_READY) {
        struct berth_ev_tenant_ready r = {sizeof r, t->address};
        bus_publish(BERTH_EV_TENANT_READY, t->handle, &r);
        notify(t, 0, NULL);
    }
}

/* ---- drivers ---- */

static struct driver *driver_find(const char *name)
{
    struct driver *found = NULL;
    list_each(it, &T.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (!strcmp(inst_name(d->res.owner), name)) found = d;   /* the newest wins */
    }
    return found;
}

static void mark(struct tenant *t);
static void reconcile(struct tenant *t);
static void list_driver(struct driver *d);

static void kick_run(uv_timer_t *h)
{
    (void)h;
    /* take the list: reconcile may mark tenants again, they go into the next round */
    struct list batch;
    list_init(&batch);
    if (!list_empty(&T.dirty)) {
        batch.next = T.dirty.next;
        batch.prev = T.dirty.prev;
        batch.next->prev = &batch;
        batch.prev->next = &batch;
        list_init(&T.dirty);
    }
    list_each(it, &batch) {
        struct tenant *t = container_of(it, struct tenant, dirty_link);
        list_del(&t->dirty_link);
        t->dirty = false;
        reconcile(t);
    }
}

static void mark(struct tenant *t)
{
    if (t->dirty || !T.up) return;
    t->dirty = true;
    list_add_tail(&T.dirty, &t->dirty_link);
    if (!uv_is_active((uv_handle_t *)&T.kick)) uv_timer_start(&T.kick, kick_run, 0, 0);
}

void tenants_reconcile_all(void)
{
    list_each(it, &T.all) mark(container_of(it, struct tenant, link));
}

int driver_add(berth_instance *owner, const struct berth_driver *d, void *state)
{
    if (!d || d->size < sizeof(struct berth_driver) || !d->create || !d->start || !d->stop ||
        !d->remove || !d->list)
        return BERTH_EINVAL;
    struct driver *drv = xcalloc(1, sizeof *drv);
    drv->d = d;
    drv->state = state;
    res_attach(owner, &drv->res, RES_DRIVER);
    list_add_tail(&T.drivers, &drv->link);
    blog(BERTH_LOG_INFO, "core", "driver '%s' registered by %s", d->name, inst_name(owner));
    list_driver(drv);
    return 0;
}

static void op_free(berth_op *op);
static int64_t backoff(int64_t steps);
static void op_finish(berth_op *op, int status, const struct berth_observed *obs,
                      const char *msg);

void drivers_drop_owner(berth_instance *owner)
{
    list_each(it, &T.ops) {
        berth_op *op = container_of(it, berth_op, link);
        if (op->drv->res.owner == owner)
            op_finish(op, BERTH_ECANCELED, NULL, "the driver was unloaded");
    }
    list_each(it, &T.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (d->res.owner != owner) continue;
        list_del(&d->link);
        res_detach(&d->res);
        free(d->list_error);
        if (d->relist) uv_close((uv_handle_t *)d->relist, free_handle);
        free(d);
    }
    list_each(it, &T.contribs) {
        struct contrib *c = container_of(it, struct contrib, link);
        if (c->res.owner != owner) continue;
        list_del(&c->link);
        res_detach(&c->res);
        free(c);
    }
    /* tenants served by another instance of this name continue there */
    tenants_reconcile_all();
}

/* ---- specs ---- */

int spec_setenv(berth_spec *s, const char *name, const char *value)
{
    if (!s || !name || !*name || strchr(name, '=') || !value) return BERTH_EINVAL;
    for (size_t i = 0; i < s->nenv; i++)
        if (!strcmp(s->names[i], name)) {
            free(s->vals[i]);
            s->vals[i] = xstrdup(value);
            return 0;
        }
    s->names = xrealloc(s->names, (s->nenv + 1) * sizeof *s->names);
    s->vals = xrealloc(s->vals, (s->nenv + 1) * sizeof *s->vals);
    s->names[s->nenv] = xstrdup(name);
    s->vals[s->nenv++] = xstrdup(value);
    return 0;
}

const char *spec_handle(const berth_spec *s) { return s->handle; }
const char *spec_template(const berth_spec *s) { return s->tmpl; }
const void *spec_config(const berth_spec *s) { return s->cfg; }
int spec_port(const berth_spec *s) { return s->port; }
size_t spec_env_count(const berth_spec *s) { return s->nenv; }

const char *spec_env(const berth_spec *s, size_t i, const char **value)
{
    if (i >= s->nenv) return NULL;
    if (value) *value = s->vals[i];
    return s->names[i];
}

int spec_contrib_add(berth_instance *owner, berth_spec_fn fn, void *arg)
{
    if (!fn) return BERTH_EINVAL;
    struct contrib *c = xcalloc(1, sizeof *c);
    c->fn = fn;
    c->arg = arg;
    res_attach(owner, &c->res, RES_CONTRIB);
    list_add_tail(&T.contribs, &c->link);
    return 0;
}

static berth_spec *spec_build(const struct tenant *t, const struct tmpl *tm, bool contribute)
{
    berth_spec *s = xcalloc(1, sizeof *s);
    s->handle = xstrdup(t->handle);
    s->tmpl = xstrdup(t->tmpl);
    s->gen = gen_ref(C.gen);
    s->cfg = tm->driver_cfg;
    s->port = (int)tm->core.port;
    for (size_t i = 0; i < tm->core.env.n; i++)
        spec_setenv(s, tm->core.env.keys[i], tm->core.env.vals[i]);
    spec_setenv(s, "BERTH_HANDLE", t->handle);
    spec_setenv(s, "BERTH_KIND", t->kind);
    if (contribute) {
        list_each(it, &T.contribs) {
            struct contrib *c = container_of(it, struct contrib, link);
            c->fn(s, c->arg);
        }
    }
    return s;
}

static void spec_free(berth_spec *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nenv; i++) free(s->names[i]), free(s->vals[i]);
    free(s->names);
    free(s->vals);
    free(s->handle);
    free(s->tmpl);
    gen_unref(s->gen);
    free(s);
}

/* ---- operations ---- */

static berth_op *op_new(struct driver *d, enum op_kind k, const char *handle)
{
    berth_op *op = xcalloc(1, sizeof *op);
    op->drv = d;
    op->kind = k;
    if (handle) snprintf(op->handle, sizeof op->handle, "%s", handle);
    res_attach(d->res.owner, &op->res, RES_OP);
    inst_pending(d->res.owner, 1);
    list_add_tail(&T.ops, &op->link);
    return op;
}

static void op_free(berth_op *op)
{
    list_del(&op->link);
    res_detach(&op->res);
    inst_pending(op->res.owner, -1);
    spec_free(op->spec);
    for (size_t i = 0; i < op->nitems; i++) {
        free(op->items[i].handle);
        free(op->items[i].tmpl);
        free(op->items[i].id);
        free(op->items[i].address);
    }
    free(op->items);
    free(op);
}

static void issue(struct tenant *t, struct driver *d, enum op_kind k, const struct tmpl *tm)
{
    berth_op *op = op_new(d, k, t->handle);
    op->spec = spec_build(t, tm, k == OP_CREATE);
    t->op = op;
    static const enum berth_observed_state during[] = {
        BERTH_OBS_CREATING, BERTH_OBS_STARTING, BERTH_OBS_STOPPING, BERTH_OBS_STOPPING};
    if (k <= OP_REMOVE) set_observed(t, during[k]);
    save(t);
    void (*fn)(void *, const berth_spec *, berth_op *) =
        k == OP_CREATE ? d->d->create : k == OP_START ? d->d->start
        : k == OP_STOP ? d->d->stop : d->d->remove;
    fn(d->state, op->spec, op);
}

static void retry_fire(uv_timer_t *h)
{
    struct tenant *t = h->data;
    /* the timer runs on loop time, retry_at is wall time: the timer is the authority, or a
     * timer firing a millisecond "early" would leave the tenant waiting for nothing */
    t->retry_at = 0;
    mark(t);
}

/* retry_base doubled per step after the first, capped at retry_max */
static int64_t backoff(int64_t steps)
{
    const struct core_cfg *c = &C.gen->core;
    int64_t delay = c->reconcile.retry_base;
    for (int64_t i = 1; i < steps && delay < c->reconcile.retry_max; i++) delay *= 2;
    return delay > c->reconcile.retry_max ? c->reconcile.retry_max : delay;
}

static void retry_in(struct tenant *t, int64_t delay)
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
    int64_t delay = backoff(t->attempts);
    char *reason = xasprintf("%s failed: %s", what, msg && *msg ? msg : "unknown error");
    set_str(&t->reason, reason);
    free(reason);
    retry_in(t, delay);
    set_observed(t, BERTH_OBS_FAILED);
    save(t);
    blog(BERTH_LOG_WARN, "core", "tenant %s: %s (attempt %" PRId64 ", retry in %" PRId64 "ms)",
         t->handle, t->reason, t->attempts, delay);
    struct berth_ev_tenant_failed ev = {sizeof ev, t->reason, t->attempts, delay};
    bus_publish(BERTH_EV_TENANT_FAILED, t->handle, &ev);
    notify(t, BERTH_EIO, t->reason);
}

/* A crash loop's story (the reason, the count) stays visible, between crashes too, until the
 * workload has stayed up for crash_reset. */
static bool in_crash_loop(const struct tenant *t)
{
    return t->crashes && wall_ms() - t->started_ms < C.gen->core.reconcile.crash_reset;
}

static void apply_ok(struct tenant *t, enum op_kind k, const struct berth_observed *obs,
                     const struct tmpl *tm)
{
    t->attempts = 0;
    t->retry_at = 0;
    if (!in_crash_loop(t)) set_str(&t->reason, NULL);
    if (obs && obs->id) set_str(&t->id, obs->id);
    if (obs && obs->address) set_str(&t->address, obs->address);
    enum berth_observed_state st = obs && obs->state ? obs->state
        : k == OP_CREATE ? BERTH_OBS_STOPPED : k == OP_START ? BERTH_OBS_RUNNING
        : k == OP_STOP ? BERTH_OBS_STOPPED : BERTH_OBS_ABSENT;
    bool no_health = !tmpl_gates_ready(tm);
    if (st == BERTH_OBS_RUNNING && no_health) st = BERTH_OBS_READY;
    if (k == OP_REMOVE) {
        st = BERTH_OBS_ABSENT;
        set_str(&t->address, NULL);
    }
    if (k == OP_START) {
        t->started_ms = wall_ms();
        t->health = 0;
    }
    switch (k) {
    case OP_CREATE: {
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
        set_str(&t->id, NULL);
        break;
    }
    default: break;
    }
    set_observed(t, st);
    save(t);
}

static void adopt(berth_op *op)
{
    struct driver *d = op->drv;
    const char *dname = inst_name(d->res.owner);
    for (size_t i = 0; i < op->nitems; i++) {
        struct listed *l = &op->items[i];
        struct tenant *t = tenant_find(l->handle);
        if (!t) {
            /* a workload labelled as ours with no record: the store was lost or restored
             * from an older copy. Adopt it rather than leave an orphan. */
            char err[256];
            if (tenant_create(l->handle, "human", l->tmpl ? l->tmpl : "default", err,
                              sizeof err) < 0) {
                blog(BERTH_LOG_WARN, "core", "cannot adopt %s: %s", l->handle, err);
                continue;
            }
            t = tenant_find(l->handle);
            set_str(&t->driver, dname);
            if (l->st != BERTH_OBS_RUNNING && l->st != BERTH_OBS_READY)
                t->desired = BERTH_DESIRED_ASLEEP;
            blog(BERTH_LOG_INFO, "core", "adopted %s found by driver %s", l->handle, dname);
        }
        if (t->op) continue;
        if (!t->driver) set_str(&t->driver, dname);
        const struct tmpl *tm = tmpl_find(t->tmpl);
        if (l->st == BERTH_OBS_RUNNING && tm && !tmpl_gates_ready(tm))
            l->st = BERTH_OBS_READY;    /* nothing to probe: running is ready */
        set_str(&t->id, l->id);
        if (l->address) set_str(&t->address, l->address);
        if (t->observed != l->st &&
            !(t->observed == BERTH_OBS_READY && l->st == BERTH_OBS_RUNNING) &&
            !(t->observed == BERTH_OBS_FAILED && t->retry_at > wall_ms()))
            set_observed(t, l->st);
        save(t);
    }
    /* what the driver no longer has is absent, and will be recreated if it should run */
    list_each(it, &T.all) {
        struct tenant *t = container_of(it, struct tenant, link);
        if (t->op || !t->driver || strcmp(t->driver, dname)) continue;
        bool seen = false;
        for (size_t i = 0; i < op->nitems && !seen; i++) seen = !strcmp(op->items[i].handle,
                                                                        t->handle);
        if (!seen && t->observed != BERTH_OBS_ABSENT) {
            set_str(&t->id, NULL);
            set_str(&t->address, NULL);
            set_observed(t, BERTH_OBS_ABSENT);
            save(t);
        }
    }
    d->listed = true;
}

static void relist_fire(uv_timer_t *h)
{
    list_driver(h->data);
}

/* Until a driver has listed what exists nothing of its tenants moves: retry soon, say why. */
static void list_failed(struct driver *d, int status, const char *msg)
{
    d->list_failures++;
    free(d->list_error);
    d->list_error = xasprintf("driver '%s' cannot list its workloads: %s",
                              inst_name(d->res.owner), msg ? msg : berth_strerror(status));
    int64_t delay = backoff(d->list_failures);
    blog(BERTH_LOG_WARN, "core", "%s (retry in %" PRId64 "ms)", d->list_error, delay);
    if (!d->relist) {
        d->relist = xcalloc(1, sizeof *d->relist);
        uv_timer_init(C.loop, d->relist);
        d->relist->data = d;
    }
    uv_timer_start(d->relist, relist_fire, (uint64_t)delay, 0);
}

static void op_finish(berth_op *op, int status, const struct berth_observed *obs,
                      const char *msg)
{
    if (op->kind == OP_LIST) {
        struct driver *d = op->drv;
        d->listing = NULL;
        if (status == 0) {
            adopt(op);
            d->list_failures = 0;
            free(d->list_error);
            d->list_error = NULL;
        } else if (status != BERTH_ECANCELED) {
            list_failed(d, status, msg);
        }
        op_free(op);
        tenants_reconcile_all();
        return;
    }
    struct tenant *t = tenant_find(op->handle);
    enum op_kind k = op->kind;
    const struct tmpl *tm = t ? tmpl_find(t->tmpl) : NULL;
    if (t && t->op == op) {
        t->op = NULL;
        if (status == BERTH_ECANCELED) {
            set_str(&t->reason, msg);
        } else if (status) {
            fail(t, op_names[k], msg ? msg : berth_strerror(status));
        } else {
            apply_ok(t, k, obs, tm);
            if (k == OP_STOP && t->restart_pending) {
                t->restart_pending = false;
                t->restarts++;
                save(t);
            }
        }
        mark(t);
    }
    op_free(op);
}

void op_done(berth_op *op, int status, const struct berth_observed *obs, const char *msg)
{
    if (!op) return;
    if (obs && obs->size < sizeof(size_t) * 2) obs = NULL;
    op_finish(op, status, obs, msg);
}

void op_list_add(berth_op *op, const char *handle, const char *tmpl,
                 const struct berth_observed *obs)
{
    if (!op || op->kind != OP_LIST || !handle_valid(handle) || !obs) return;
    op->items = xrealloc(op->items, (op->nitems + 1) * sizeof *op->items);
    op->items[op->nitems++] = (struct listed){xstrdup(handle), xstrdup(tmpl), xstrdup(obs->id),
                                              xstrdup(obs->address), obs->state};
}

static void list_driver(struct driver *d)
{
    if (d->listing) return;
    d->listing = op_new(d, OP_LIST, NULL);
    d->d->list(d->state, d->listing);
}

void driver_relist(berth_instance *owner)
{
    list_each(it, &T.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (d->res.owner == owner) list_driver(d);
    }
}

static void resync(uv_timer_t *h)
{
    (void)h;
    list_each(it, &T.drivers) list_driver(container_of(it, struct driver, link));
}

/* An unexpected stop of a tenant that should run: the first restart is immediate, then the
 * delay doubles per crash, as Kubernetes' CrashLoopBackOff; a long healthy run resets it. */
static void crashed(struct tenant *t, const char *msg)
{
    const struct core_cfg *c = &C.gen->core;
    int64_t now = wall_ms();
    t->crashes = now - t->started_ms < c->reconcile.crash_reset ? t->crashes + 1 : 1;
    notify(t, BERTH_EIO, msg ? msg : "stopped before it was ready");
    if (t->crashes < 2) return;
    int64_t delay = c->reconcile.crash_backoff_base;
    for (int64_t i = 2; i < t->crashes && delay < c->reconcile.crash_backoff_max; i++) delay *= 2;
    if (delay > c->reconcile.crash_backoff_max) delay = c->reconcile.crash_backoff_max;
    char *reason = xasprintf("crashed %" PRId64 " times in a row (last: %s); restarting in "
                             "%" PRId64 "ms", t->crashes, msg ? msg : "stopped", delay);
    set_str(&t->reason, reason);
    free(reason);
    retry_in(t, delay);
    blog(BERTH_LOG_WARN, "core", "tenant %s: %s", t->handle, t->reason);
}

void driver_report(berth_instance *owner, const char *handle, const struct berth_observed *o)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t || !o || t->op || !t->driver || strcmp(t->driver, inst_name(owner))) return;
    enum berth_observed_state prev = t->observed;
    if (o->id) set_str(&t->id, o->id);
    if (o->state == BERTH_OBS_STOPPED || o->state == BERTH_OBS_ABSENT ||
        o->state == BERTH_OBS_FAILED) {
        if (o->message) set_str(&t->reason, o->message);
        if (o->state == BERTH_OBS_ABSENT) set_str(&t->id, NULL);
        if (t->desired == BERTH_DESIRED_RUNNING) crashed(t, o->message);
        set_observed(t, o->state);
        save(t);
        if (prev != o->state) {
            struct berth_ev_container_stopped ev = {sizeof ev, o->id, o->exit_code, o->oom,
                                                    false, o->message};
            bus_publish(BERTH_EV_CONTAINER_STOPPED, t->handle, &ev);
        }
    } else {
        set_observed(t, o->state);
        save(t);
    }
    mark(t);
}

/* ---- the reconciler ---- */

static void wait_reason(struct tenant *t, const char *fmt, const char *arg)
{
    char *r = xasprintf(fmt, arg);
    if (!t->reason || strcmp(t->reason, r)) {
        set_str(&t->reason, r);
        save(t);
    }
    free(r);
}

static void finish_delete(struct tenant *t)
{
    char handle[40];
    snprintf(handle, sizeof handle, "%s", t->handle);
    const char *p[] = {handle};
    store_exec_params(C.store, "DELETE FROM tenants WHERE handle=?1", p, 1, NULL, NULL, NULL);
    if (t->dirty) list_del(&t->dirty_link);
    notify(t, BERTH_ENOENT, "the tenant was deleted");
    index_del(t);
    free_tenant(t);
    struct berth_ev_tenant_deleted ev = {sizeof ev};
    bus_publish(BERTH_EV_TENANT_DELETED, handle, &ev);
    log_info("tenant %s deleted", handle);
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
        set_observed(t, BERTH_OBS_ABSENT);
        save(t);
    }
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
    if (!d) {
        wait_reason(t, "driver '%s' is not loaded", dname);
        return;
    }
    /* nothing is created before the driver has said what already exists */
    if (!d->listed || d->list_error) {
        if (d->list_error) wait_reason(t, "%s", d->list_error);
        return;
    }
    if (!t->driver) set_str(&t->driver, dname);
    enum berth_observed_state o = t->observed;
    bool up = o == BERTH_OBS_RUNNING || o == BERTH_OBS_READY || o == BERTH_OBS_STARTING;
    enum op_kind next = OP_INSPECT;     /* none */
    if (t->desired == BERTH_DESIRED_RUNNING) {
        if (t->restart_pending && up) next = OP_STOP;
        else if (o == BERTH_OBS_ABSENT || (o == BERTH_OBS_FAILED && !t->id)) next = OP_CREATE;
        else if (o == BERTH_OBS_STOPPED || o == BERTH_OBS_FAILED) next = OP_START;
    } else {
        t->restart_pending = false;
        if (up) next = OP_STOP;
    }
    /* a backoff delays bringing the workload up, never taking it down */
    if ((next == OP_CREATE || next == OP_START) && t->retry_at > wall_ms()) return;
    if (next != OP_INSPECT) {
        issue(t, d, next, tm);
    } else if (t->reason && !t->attempts && o != BERTH_OBS_FAILED) {
        if (in_crash_loop(t)) return;
        t->crashes = 0;     /* converged: the last complaint no longer holds */
        set_str(&t->reason, NULL);
        save(t);
    }
}

/* ---- the API of tenants ---- */

int tenant_create(const char *handle, const char *kind, const char *tmpl, char *err, size_t n)
{
    if (!handle_valid(handle)) {
        snprintf(err, n, "handle '%s' is not valid: 2-32 characters of a-z, 0-9 and '-', "
                 "starting with a letter and not ending with '-'", handle ? handle : "");
        return BERTH_EINVAL;
    }
    if (!kind || (strcmp(kind, "human") && strcmp(kind, "agent"))) {
        snprintf(err, n, "kind must be 'human' or 'agent'");
        return BERTH_EINVAL;
    }
    if (!tmpl || !ident_valid(tmpl)) {
        snprintf(err, n, "template name '%s' is not valid", tmpl ? tmpl : "");
        return BERTH_EINVAL;
    }
    if (tenant_find(handle)) {
        snprintf(err, n, "tenant '%s' already exists", handle);
        return BERTH_EEXIST;
    }
    struct tenant *t = xcalloc(1, sizeof *t);
    snprintf(t->handle, sizeof t->handle, "%s", handle);
    t->kind = xstrdup(kind);
    t->tmpl = xstrdup(tmpl);
    t->desired = BERTH_DESIRED_RUNNING;
    t->observed = BERTH_OBS_ABSENT;
    t->created_ms = t->last_activity_ms = wall_ms();
    list_init(&t->dirty_link);
    list_init(&t->waiters);
    index_add(t);
    save(t);
    struct berth_ev_tenant_created ev = {sizeof ev, kind, tmpl};
    bus_publish(BERTH_EV_TENANT_CREATED, handle, &ev);
    mark(t);
    return 0;
}

int tenant_desire(const char *handle, enum berth_desired d, const char *source)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (d < BERTH_DESIRED_RUNNING || d > BERTH_DESIRED_DELETED) return BERTH_EINVAL;
    if (t->desired == BERTH_DESIRED_DELETED && d != BERTH_DESIRED_DELETED) return BERTH_EBUSY;
    if (t->desired != d) {
        t->desired = d;
        t->attempts = 0;
        t->retry_at = 0;
        save(t);
        changed(t);
        if (d == BERTH_DESIRED_DELETED) {
            struct berth_ev_tenant_deleting ev = {sizeof ev};
            bus_publish(BERTH_EV_TENANT_DELETING, t->handle, &ev);
        }
    }
    if (d == BERTH_DESIRED_RUNNING) {
        /* a wake is activity: the idle clock starts again from here */
        t->last_activity_ms = wall_ms();
        t->activity_dirty = true;
        struct berth_ev_tenant_wake_requested ev = {sizeof ev, source};
        bus_publish(BERTH_EV_TENANT_WAKE_REQUESTED, t->handle, &ev);
    } else if (d == BERTH_DESIRED_ASLEEP) {
        struct berth_ev_tenant_sleep_requested ev = {sizeof ev, source};
        bus_publish(BERTH_EV_TENANT_SLEEP_REQUESTED, t->handle, &ev);
    }
    mark(t);
    return 0;
}

int tenant_restart(const char *handle)
{
    struct tenant *t = tenant_find(handle);
    if (!t) return BERTH_ENOENT;
    if (t->desired != BERTH_DESIRED_RUNNING) return BERTH_EBUSY;
    t->restart_pending = true;
    mark(t);
    return 0;
}

int tenant_touch(const char *handle, const char *source)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    struct berth_ev_tenant_activity ev = {sizeof ev, source};
    t->last_activity_ms = wall_ms();
    t->activity_dirty = true;
    return bus_publish(BERTH_EV_TENANT_ACTIVITY, t->handle, &ev);
}

/* Activity comes from every request a plugin serves: it is kept in memory and written in
 * batches, so a busy tenant costs no SQLite write per request. */
static void on_activity(const struct berth_event *ev, void *arg)
{
    (void)arg;
    struct tenant *t = ev->tenant ? tenant_find(ev->tenant) : NULL;
    if (!t) return;
    if (ev->time_ms > t->last_activity_ms) t->last_activity_ms = ev->time_ms;
    t->activity_dirty = true;
}

static void flush_activity(uv_timer_t *h)
{
    (void)h;
    bool any = false;
    list_each(it, &T.all) {
        struct tenant *t = container_of(it, struct tenant, link);
        if (!t->activity_dirty) continue;
        if (!any) store_begin(C.store);
        any = true;
        save(t);
    }
    if (any) store_commit(C.store);
}

int tenant_finalizer(const char *handle, const char *name, bool add)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    for (size_t i = 0; i < t->nfin; i++) {
        if (strcmp(t->fin[i], name)) continue;
        if (add) return 0;
        free(t->fin[i]);
        t->fin[i] = t->fin[--t->nfin];
        save(t);
        mark(t);
        return 0;
    }
    if (!add) return BERTH_ENOENT;
    if (t->desired == BERTH_DESIRED_DELETED) return BERTH_EBUSY;
    t->fin = xrealloc(t->fin, (t->nfin + 1) * sizeof *t->fin);
    t->fin[t->nfin++] = xstrdup(name);
    save(t);
    return 0;
}

/* Releases a hold: its tenant's count goes down (the tenant may be gone already). */
void busy_drop(struct res *r)
{
    struct busy *b = (struct busy *)r;
    struct tenant *t = tenant_find(b->handle);
    if (t && t->busy > 0) t->busy--;
    list_del(&b->link);
    res_detach(r);
    free(b);
}

int tenant_busy(berth_instance *owner, const char *handle, bool hold)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (hold) {
        struct busy *b = xcalloc(1, sizeof *b);
        snprintf(b->handle, sizeof b->handle, "%s", handle);
        res_attach(owner, &b->res, RES_BUSY);
        list_add_tail(&T.busy, &b->link);
        t->busy++;
        return 0;
    }
    list_each(it, &T.busy) {
        struct busy *b = container_of(it, struct busy, link);
        if (b->res.owner == owner && !strcmp(b->handle, handle)) {
            busy_drop(&b->res);
            return 0;
        }
    }
    return BERTH_ENOENT;
}

int tenant_health(const char *handle, bool healthy, const char *msg)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    int h = healthy ? 1 : 2;
    if (t->health != h) {
        t->health = h;
        struct berth_ev_container_health ev = {sizeof ev, healthy, msg};
        bus_publish(BERTH_EV_CONTAINER_HEALTH, t->handle, &ev);
    }
    if (healthy && t->observed == BERTH_OBS_RUNNING && !t->op) set_observed(t, BERTH_OBS_READY);
    else if (!healthy && t->observed == BERTH_OBS_READY) set_observed(t, BERTH_OBS_RUNNING);
    else return 0;
    save(t);
    return 0;
}

int tenant_restart_crash(const char *handle, const char *reason)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (t->desired != BERTH_DESIRED_RUNNING) return BERTH_EBUSY;
    t->restart_pending = true;      /* counted in restarts when the stop completes */
    crashed(t, reason);
    if (reason && t->crashes < 2) set_str(&t->reason, reason);
    save(t);
    mark(t);
    return 0;
}

int tenant_status_set(const char *who, const char *handle, const char *json)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (!t->plugins) t->plugins = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(t->plugins, who);
    if (!json) return 0;
    cJSON *v = cJSON_Parse(json);
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return BERTH_EINVAL;
    }
    cJSON_AddItemToObject(t->plugins, who, v);
    return 0;
}

void tenant_fill_info(const struct tenant *t, struct berth_tenant_info *out)
{
    size_t size = out->size;
    memset(out, 0, size);
    out->size = size;
    out->handle = t->handle;
    out->kind = t->kind;
    out->template_name = t->tmpl;
    out->desired = t->desired;
    out->observed = t->observed;
    out->address = t->address;
    out->reason = t->reason;
    out->created_ms = t->created_ms;
    out->last_activity_ms = t->last_activity_ms;
    if (size < sizeof *out) return;     /* an older plugin's shorter struct */
    out->busy = t->busy;
    out->started_ms = t->started_ms;
}

int tenants_each(berth_tenant_fn fn, void *arg)
{
    struct berth_tenant_info info = {.size = sizeof info};
    list_each(it, &T.all) {
        tenant_fill_info(container_of(it, struct tenant, link), &info);
        if (!fn(&info, arg)) break;
    }
    return 0;
}

void tenants_count(size_t counts[9])
{
    memset(counts, 0, 9 * sizeof *counts);
    list_each(it, &T.all) counts[container_of(it, struct tenant, link)->observed]++;
}

static void add_str(cJSON *o, const char *k, const char *v)
{
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

cJSON *tenant_json(const struct tenant *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handle", t->handle);
    cJSON_AddStringToObject(o, "kind", t->kind);
    cJSON_AddStringToObject(o, "template", t->tmpl);
    add_str(o, "driver", t->driver);
    cJSON_AddStringToObject(o, "desired", desired_name(t->desired));
    cJSON_AddStringToObject(o, "observed", observed_name(t->observed));
    add_str(o, "reason", t->reason);
    add_str(o, "id", t->id);
    add_str(o, "address", t->address);
    cJSON *fin = cJSON_AddArrayToObject(o, "finalizers");
    for (size_t i = 0; i < t->nfin; i++) cJSON_AddItemToArray(fin, cJSON_CreateString(t->fin[i]));
    cJSON_AddNumberToObject(o, "created_ms", (double)t->created_ms);
    cJSON_AddNumberToObject(o, "updated_ms", (double)t->updated_ms);
    cJSON_AddNumberToObject(o, "last_activity_ms", (double)t->last_activity_ms);
    cJSON_AddNumberToObject(o, "restarts", (double)t->restarts);
    cJSON_AddNumberToObject(o, "attempts", (double)t->attempts);
    cJSON_AddNumberToObject(o, "crashes", (double)t->crashes);
    cJSON_AddNumberToObject(o, "busy", (double)t->busy);
    cJSON_AddNullToObject(o, "idle_deadline_ms");  /* idle settings are lifecycle's since 1.1 */
    static const char *const hn[] = {"unknown", "healthy", "unhealthy"};
    cJSON_AddStringToObject(o, "health", hn[t->health]);
    cJSON_AddItemToObject(o, "plugins", t->plugins ? cJSON_Duplicate(t->plugins, 1)
                                                   : cJSON_CreateObject());
    int64_t retry = t->retry_at ? t->retry_at - wall_ms() : 0;
    cJSON_AddNumberToObject(o, "retry_in_ms", (double)(retry > 0 ? retry : 0));
    add_str(o, "operation", t->op ? op_names[t->op->kind] : NULL);
    return o;
}

cJSON *tenants_json(void)
{
    cJSON *a = cJSON_CreateArray();
    list_each(it, &T.all) cJSON_AddItemToArray(a, tenant_json(container_of(it, struct tenant,
                                                                          link)));
    return a;
}

int tenants_init(void)
{
    list_init(&T.all);
    list_init(&T.dirty);
    list_init(&T.drivers);
    list_init(&T.ops);
    list_init(&T.contribs);
    list_init(&T.busy);
    index_grow();
    char *err = NULL;
    if (store_exec_params(C.store, "SELECT handle,kind,template,driver,desired,observed,reason,"
                          "driver_id,address,finalizers,created_ms,updated_ms,"
                          "last_activity_ms,restarts FROM tenants ORDER BY created_ms", NULL,
                          0, load_row, NULL, &err) < 0) {
        log_error("loading tenants: %s", err);
        free(err);
        return BERTH_EIO;
    }
    uv_timer_init(C.loop, &T.kick);
    uv_timer_init(C.loop, &T.resync);
    uv_timer_init(C.loop, &T.flush);
    uint64_t every = (uint64_t)C.gen->core.reconcile.resync_interval;
    uv_timer_start(&T.resync, resync, every, every);
    uv_timer_start(&T.flush, flush_activity, 5000, 5000);
    T.activity = bus_subscribe(BERTH_EV_TENANT_ACTIVITY, on_activity, NULL);
    T.up = true;
    log_info("%zu tenant(s) loaded", T.count);
    tenants_reconcile_all();
    return 0;
}

void tenants_shutdown(void)
{
    if (!T.up) return;
    T.up = false;
    flush_activity(NULL);
    bus_unsubscribe(T.activity);
    uv_close((uv_handle_t *)&T.kick, NULL);
    uv_close((uv_handle_t *)&T.resync, NULL);
    uv_close((uv_handle_t *)&T.flush, NULL);
    list_each(it, &T.all) {
        struct tenant *t = container_of(it, struct tenant, link);
        list_del(&t->link);
        free_tenant(t);
    }
    free(T.tab);
    T.tab = NULL;
    T.cap = T.count = 0;
}
