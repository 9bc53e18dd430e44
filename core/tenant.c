/* Tenant records: the handle index, persistence in the `tenants` table, their JSON, the
 * tenant API the HTTP API and plugins call, readiness waiters and busy holds. Desired state
 * is written here; the reconciler (reconcile.c) makes observed state follow it. */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

/* someone waiting for a tenant to become ready */
struct waiter {
    struct res res;                 /* first: linked into its instance, if a plugin waits */
    struct list link;
    uv_timer_t timer;
    berth_ready_cb cb;
    void *arg;
    char handle[BERTH_HANDLE_MAX + 1];
};

/* a status object a plugin instance set for a tenant; goes when the instance unloads */
struct pstatus { struct list link; berth_instance *owner; char *name; cJSON *v; };

/* one busy hold taken by a plugin instance */
struct busy { struct res res; struct list link; char handle[BERTH_HANDLE_MAX + 1]; };

struct list tenant_all = {&tenant_all, &tenant_all};

static struct {
    struct list busy;
    struct tenant **tab; size_t cap, count;
    uv_timer_t flush;
    struct bus_sub *activity;
    bool up;
} T;

static void waiter_finish(struct waiter *w, int status, const char *msg);

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
    list_each(it, &tenant_all) {
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
    list_add_tail(&tenant_all, &t->link);
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

int tenant_save(struct tenant *t)
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
    int rc = store_exec_params(C.store,
                               "INSERT OR REPLACE INTO tenants(handle,kind,template,driver,"
                               "desired,observed,reason,driver_id,address,finalizers,created_ms,"
                               "updated_ms,last_activity_ms,restarts) VALUES(?1,?2,?3,?4,?5,?6,"
                               "?7,?8,?9,?10,?11,?12,?13,?14)", p, ARRAY_LEN(p), NULL, NULL,
                               &err);
    cJSON_free(fin);
    if (rc < 0) {
        if (!t->unsaved) log_error("saving tenant %s: %s", t->handle, err ? err : "");
        free(err);
        t->unsaved = true;
        return rc;
    }
    if (t->unsaved) log_info("tenant %s is saved again", t->handle);
    t->unsaved = false;
    t->activity_dirty = false;
    return 0;
}

/* For what the API acknowledges: on disk (fsync) before the answer. */
int tenant_save_durable(struct tenant *t)
{
    store_durable(C.store, true);
    int rc = tenant_save(t);
    store_durable(C.store, false);
    return rc;
}

void str_set(char **dst, const char *v)
{
    if (*dst == v || (*dst && v && !strcmp(*dst, v))) return;
    free(*dst);
    *dst = xstrdup(v);
}

void uv_free_handle(uv_handle_t *h)
{
    free(h);
}

static void status_free(struct pstatus *st)
{
    list_del(&st->link);
    free(st->name);
    cJSON_Delete(st->v);
    free(st);
}

static struct tenant *tenant_new(const char *handle)
{
    struct tenant *t = xcalloc(1, sizeof *t);
    snprintf(t->handle, sizeof t->handle, "%s", handle);
    list_init(&t->dirty_link);
    list_init(&t->waiters);
    list_init(&t->status);
    list_init(&t->provs);
    return t;
}

static void free_tenant(struct tenant *t)
{
    free(t->kind);
    free(t->tmpl);
    free(t->driver);
    free(t->id);
    free(t->address);
    free(t->reason);
    free(t->crash_msg);
    for (size_t i = 0; i < t->nfin; i++) free(t->fin[i]);
    free(t->fin);
    list_each(it, &t->status) status_free(container_of(it, struct pstatus, link));
    provision_free_tenant(t);
    list_each(it, &t->waiters) waiter_finish(container_of(it, struct waiter, link),
                                             BERTH_ECANCELED, "berthd is stopping");
    if (t->retry) uv_close((uv_handle_t *)t->retry, uv_free_handle);
    free(t);
}

static bool load_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names; (void)arg;
    struct tenant *t = tenant_new(v[0]);
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
    if (!handle_valid(t->handle) || !t->desired) {
        log_error("tenant row '%s' is corrupt; skipping it", v[0]);
        free_tenant(t);
        return true;
    }
    index_add(t);
    return true;
}

/* the end of a deletion: the record goes, waiters hear it, tenant.deleted is published */
void tenant_forget(struct tenant *t)
{
    char handle[BERTH_HANDLE_MAX + 1];
    snprintf(handle, sizeof handle, "%s", t->handle);
    const char *p[] = {handle};
    store_exec_params(C.store, "DELETE FROM tenants WHERE handle=?1", p, 1, NULL, NULL, NULL);
    provision_forget(t);
    tenant_notify(t, BERTH_ENOENT, "the tenant was deleted");
    index_del(t);
    free_tenant(t);
    struct berth_ev_tenant_deleted ev = {sizeof ev};
    bus_publish(BERTH_EV_TENANT_DELETED, handle, &ev);
    log_info("tenant %s deleted", handle);
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
    char handle[BERTH_HANDLE_MAX + 1];
    snprintf(handle, sizeof handle, "%s", w->handle);
    berth_ready_cb cb = w->cb;
    void *arg = w->arg;
    uv_close((uv_handle_t *)&w->timer, waiter_closed);
    cb(handle, status, msg, arg);
}

void tenant_notify(struct tenant *t, int status, const char *msg)
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

void tenant_changed(struct tenant *t)
{
    struct berth_ev_tenant_changed ev = {sizeof ev, desired_name(t->desired),
                                         observed_name(t->observed)};
    bus_publish(BERTH_EV_TENANT_CHANGED, t->handle, &ev);
}

void tenant_set_observed(struct tenant *t, enum berth_observed_state s)
{
    if (t->observed == s) return;
    t->observed = s;
    tenant_changed(t);
    if (s == BERTH_OBS_READY) {
        crash_ready(t);
        struct berth_ev_tenant_ready r = {sizeof r, t->address};
        bus_publish(BERTH_EV_TENANT_READY, t->handle, &r);
        tenant_notify(t, 0, NULL);
    }
}

/* ---- the API of tenants ---- */

int tenant_create(const char *handle, const char *kind, const char *tmpl,
                  enum berth_desired desired, char *err, size_t n)
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
    struct tenant *t = tenant_new(handle);
    t->kind = xstrdup(kind);
    t->tmpl = xstrdup(tmpl);
    t->desired = desired;
    t->observed = BERTH_OBS_ABSENT;
    t->created_ms = t->last_activity_ms = wall_ms();
    /* acknowledged only once stored: a tenant that cannot be saved never existed */
    int rc = tenant_save_durable(t);
    if (rc) {
        snprintf(err, n, "tenant '%s' could not be stored: %s", handle, berth_strerror(rc));
        free_tenant(t);
        return rc;
    }
    index_add(t);
    struct berth_ev_tenant_created ev = {sizeof ev, kind, tmpl};
    bus_publish(BERTH_EV_TENANT_CREATED, handle, &ev);
    tenant_mark(t);
    return 0;
}

int tenant_desire(const char *handle, enum berth_desired d, const char *source)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (d < BERTH_DESIRED_RUNNING || d > BERTH_DESIRED_DELETED) return BERTH_EINVAL;
    if (t->desired == BERTH_DESIRED_DELETED && d != BERTH_DESIRED_DELETED) return BERTH_EBUSY;
    if (t->desired != d) {
        enum berth_desired was = t->desired;
        t->desired = d;
        int rc = tenant_save_durable(t);
        if (rc) {
            t->desired = was;   /* what is not stored is not promised */
            t->unsaved = false;
            return rc;
        }
        t->attempts = 0;
        t->retry_at = 0;
        tenant_changed(t);
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
    tenant_mark(t);
    return 0;
}

int tenant_delete(const char *handle, bool force)
{
    int rc = tenant_desire(handle, BERTH_DESIRED_DELETED, "api");
    struct tenant *t = rc ? NULL : tenant_find(handle);
    if (t && force) provision_abandon(t);
    return rc;
}

int tenant_restart(const char *handle)
{
    struct tenant *t = tenant_find(handle);
    if (!t) return BERTH_ENOENT;
    if (t->desired != BERTH_DESIRED_RUNNING) return BERTH_EBUSY;
    t->restart_pending = true;
    tenant_mark(t);
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

/* Also the retry of saves that failed (a full disk): their rows catch up once it has room. */
static void flush_activity(uv_timer_t *h)
{
    (void)h;
    struct tenant **batch = NULL;
    size_t n = 0;
    list_each(it, &tenant_all) {
        struct tenant *t = container_of(it, struct tenant, link);
        if (!t->activity_dirty && !t->unsaved) continue;
        if (!n) store_begin(C.store);
        batch = xrealloc(batch, (n + 1) * sizeof *batch);
        batch[n++] = t;
        tenant_save(t);
    }
    /* a batch that does not commit stored nothing of it */
    if (n && store_commit(C.store))
        for (size_t i = 0; i < n; i++) batch[i]->unsaved = true;
    free(batch);
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
        tenant_save(t);
        tenant_mark(t);
        return 0;
    }
    if (!add) return BERTH_ENOENT;
    if (t->desired == BERTH_DESIRED_DELETED) return BERTH_EBUSY;
    t->fin = xrealloc(t->fin, (t->nfin + 1) * sizeof *t->fin);
    t->fin[t->nfin++] = xstrdup(name);
    tenant_save(t);
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
    if (healthy && t->observed == BERTH_OBS_RUNNING && !t->op)
        tenant_set_observed(t, BERTH_OBS_READY);
    else if (!healthy && t->observed == BERTH_OBS_READY) tenant_set_observed(t, BERTH_OBS_RUNNING);
    else return 0;
    tenant_save(t);
    return 0;
}

int tenant_status_set(berth_instance *owner, const char *handle, const char *json)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    char err[160];
    /* shown in every answer about the tenant: whole, valid UTF-8 strings only */
    if (json && json_text_check(json, strlen(json), err, sizeof err)) return BERTH_EINVAL;
    cJSON *v = json ? cJSON_Parse(json) : NULL;
    if (json && !cJSON_IsObject(v)) {
        cJSON_Delete(v);
        return BERTH_EINVAL;
    }
    const char *name = inst_name(owner);
    list_each(it, &t->status) {
        struct pstatus *st = container_of(it, struct pstatus, link);
        if (!strcmp(st->name, name)) status_free(st);
    }
    if (!v) return 0;
    struct pstatus *st = xcalloc(1, sizeof *st);
    st->owner = owner;
    st->name = xstrdup(name);
    st->v = v;
    list_add_tail(&t->status, &st->link);
    return 0;
}

/* what an unloading instance said about tenants no longer holds (another instance of the
 * same name that set its own entry since keeps it) */
void tenants_drop_status(berth_instance *owner)
{
    list_each(it, &tenant_all) {
        struct tenant *t = container_of(it, struct tenant, link);
        list_each(s_it, &t->status) {
            struct pstatus *st = container_of(s_it, struct pstatus, link);
            if (st->owner == owner) status_free(st);
        }
    }
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
    list_each(it, &tenant_all) {
        tenant_fill_info(container_of(it, struct tenant, link), &info);
        if (!fn(&info, arg)) break;
    }
    return 0;
}

void tenants_count(size_t counts[9])
{
    memset(counts, 0, 9 * sizeof *counts);
    list_each(it, &tenant_all) counts[container_of(it, struct tenant, link)->observed]++;
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
    /* not probed yet, on a template whose check gates ready: "starting", as the probe
     * itself (plugins.lifecycle) says; "unknown" is for workloads nothing checks */
    static const char *const hn[] = {"unknown", "healthy", "unhealthy"};
    bool up = t->observed == BERTH_OBS_STARTING || t->observed == BERTH_OBS_RUNNING;
    cJSON_AddStringToObject(o, "health", !t->health && up && tmpl_gates_ready(tmpl_find(t->tmpl))
                                         ? "starting" : hn[t->health]);
    cJSON *pl = cJSON_AddObjectToObject(o, "plugins");
    list_each(it, &t->status) {
        struct pstatus *st = container_of(it, struct pstatus, link);
        cJSON_AddItemToObject(pl, st->name, cJSON_Duplicate(st->v, 1));
    }
    provision_json(t, o);
    int64_t retry = t->retry_at ? t->retry_at - wall_ms() : 0;
    cJSON_AddNumberToObject(o, "retry_in_ms", (double)(retry > 0 ? retry : 0));
    add_str(o, "operation", t->op ? op_names[t->op->kind] : t->pop ? op_names[t->pop->kind]
                                                                   : NULL);
    return o;
}

cJSON *tenants_json(void)
{
    cJSON *a = cJSON_CreateArray();
    list_each(it, &tenant_all) cJSON_AddItemToArray(a, tenant_json(container_of(it, struct tenant,
                                                                          link)));
    return a;
}

int tenants_init(void)
{
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
    if (provision_load() < 0) return BERTH_EIO;
    uv_timer_init(C.loop, &T.flush);
    uv_timer_start(&T.flush, flush_activity, 5000, 5000);
    T.activity = bus_subscribe(BERTH_EV_TENANT_ACTIVITY, on_activity, NULL);
    T.up = true;
    log_info("%zu tenant(s) loaded", T.count);
    reconcile_start();
    return 0;
}

void tenants_shutdown(void)
{
    if (!T.up) return;
    T.up = false;
    reconcile_stop();
    flush_activity(NULL);
    bus_unsubscribe(T.activity);
    uv_close((uv_handle_t *)&T.flush, NULL);
    list_each(it, &tenant_all) {
        struct tenant *t = container_of(it, struct tenant, link);
        list_del(&t->link);
        free_tenant(t);
    }
    free(T.tab);
    T.tab = NULL;
    T.cap = T.count = 0;
}
