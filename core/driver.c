/* Drivers: the registry of what plugins registered, the operations issued to them, listing
 * what a driver has (adoption after a restart or a lost store) and the reports drivers send
 * when a workload changes on its own. */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

const char *const op_names[OP_DEPROVISION + 1] = {
    "create", "start", "stop", "remove", "inspect", "list", "provision", "deprovision"};

static struct { struct list drivers, ops; } D = {
    {&D.drivers, &D.drivers}, {&D.ops, &D.ops}};

static void list_driver(struct driver *d);
static void op_finish(berth_op *op, int status, const struct berth_observed *obs,
                      const char *msg);

struct driver *driver_find(const char *name)
{
    struct driver *found = NULL;
    list_each(it, &D.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (!strcmp(inst_name(d->res.owner), name)) found = d;   /* the newest wins */
    }
    return found;
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
    list_add_tail(&D.drivers, &drv->link);
    blog(BERTH_LOG_INFO, "core", "driver '%s' registered by %s", d->name, inst_name(owner));
    list_driver(drv);
    return 0;
}

void tenants_drop_owner(berth_instance *owner)
{
    list_each(it, &D.ops) {
        berth_op *op = container_of(it, berth_op, link);
        if (op->res.owner == owner)
            op_finish(op, BERTH_ECANCELED, NULL, op->drv ? "the driver was unloaded"
                                                         : "the provisioner was unloaded");
    }
    list_each(it, &D.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (d->res.owner != owner) continue;
        list_del(&d->link);
        res_detach(&d->res);
        free(d->list_error);
        if (d->relist) uv_close((uv_handle_t *)d->relist, uv_free_handle);
        free(d);
    }
    provisioners_drop_owner(owner);
    spec_drop_owner(owner);
    tenants_drop_status(owner);
    /* tenants served by another instance of this name continue there */
    tenants_reconcile_all();
}

berth_op *op_alloc(berth_instance *owner, enum op_kind k, const char *handle)
{
    berth_op *op = xcalloc(1, sizeof *op);
    op->kind = k;
    if (handle) snprintf(op->handle, sizeof op->handle, "%s", handle);
    res_attach(owner, &op->res, RES_OP);
    inst_pending(owner, 1);
    list_add_tail(&D.ops, &op->link);
    return op;
}

static berth_op *op_new(struct driver *d, enum op_kind k, const char *handle)
{
    berth_op *op = op_alloc(d->res.owner, k, handle);
    op->drv = d;
    return op;
}

void op_free(berth_op *op)
{
    list_del(&op->link);
    res_detach(&op->res);
    inst_pending(op->res.owner, -1);
    spec_free(op->spec);
    free(op->pname);
    kv_free(&op->env);
    kv_free(&op->labels);
    for (size_t i = 0; i < op->nitems; i++) {
        free(op->items[i].handle);
        free(op->items[i].tmpl);
        free(op->items[i].id);
        free(op->items[i].address);
    }
    free(op->items);
    free(op);
}

void driver_issue(struct tenant *t, struct driver *d, enum op_kind k, berth_spec *spec)
{
    berth_op *op = op_new(d, k, t->handle);
    op->spec = spec;
    t->op = op;
    static const enum berth_observed_state during[] = {
        BERTH_OBS_CREATING, BERTH_OBS_STARTING, BERTH_OBS_STOPPING, BERTH_OBS_STOPPING};
    if (k <= OP_REMOVE) tenant_set_observed(t, during[k]);
    tenant_save(t);
    void (*fn)(void *, const berth_spec *, berth_op *) =
        k == OP_CREATE ? d->d->create : k == OP_START ? d->d->start
        : k == OP_STOP ? d->d->stop : d->d->remove;
    fn(d->state, op->spec, op);
}

/* A workload labelled as ours with no record: the store was lost or restored from an older
 * copy. Adopt it rather than leave an orphan. */
static struct tenant *adopt_new(const struct listed *l, const char *dname)
{
    char err[256];
    if (tenant_create(l->handle, "human", l->tmpl ? l->tmpl : "default",
                      BERTH_DESIRED_RUNNING, err, sizeof err) < 0) {
        blog(BERTH_LOG_WARN, "core", "cannot adopt %s: %s", l->handle, err);
        return NULL;
    }
    struct tenant *t = tenant_find(l->handle);
    str_set(&t->driver, dname);
    if (l->st != BERTH_OBS_RUNNING && l->st != BERTH_OBS_READY)
        t->desired = BERTH_DESIRED_ASLEEP;
    blog(BERTH_LOG_INFO, "core", "adopted %s found by driver %s", l->handle, dname);
    return t;
}

/* t takes what the driver says of its workload */
static void adopt_state(struct tenant *t, struct listed *l, const char *dname)
{
    if (t->op) return;
    if (!t->driver) str_set(&t->driver, dname);
    const struct tmpl *tm = tmpl_find(t->tmpl);
    if (l->st == BERTH_OBS_RUNNING && tm && !tmpl_gates_ready(tm))
        l->st = BERTH_OBS_READY;    /* nothing to probe: running is ready */
    str_set(&t->id, l->id);
    if (l->address) str_set(&t->address, l->address);
    if (t->observed != l->st &&
        !(t->observed == BERTH_OBS_READY && l->st == BERTH_OBS_RUNNING) &&
        !(t->observed == BERTH_OBS_FAILED && t->retry_at > wall_ms()))
        tenant_set_observed(t, l->st);
    tenant_save(t);
}

/* Records for what has none are written in one batch, synced once at its commit (as
 * tenant_create's own save would be): a synced commit each had the loop wait for an fsync per
 * container, seconds for 500 of them on a busy disk. Nothing in the batch calls into a plugin,
 * whose statements would find the store busy: a tenant created here has no readiness waiter
 * yet, and events are only queued. A batch that does not commit is retried by the activity
 * flush (unsaved); the tenants exist meanwhile, and their workloads keep their labels. */
static void adopt_records(berth_op *op, const char *dname)
{
    struct tenant **made = xcalloc(op->nitems ? op->nitems : 1, sizeof *made);
    size_t n = 0;
    bool began = false, batch = false;
    for (size_t i = 0; i < op->nitems; i++) {
        struct listed *l = &op->items[i];
        if (l->known) continue;
        if (!began) {
            began = true;
            store_durable(C.store, true);
            batch = store_begin(C.store) == 0;
        }
        struct tenant *t = tenant_find(l->handle);  /* listed twice: the first made it */
        if (!t && !(t = adopt_new(l, dname))) continue;
        t->listed = true;
        adopt_state(t, l, dname);
        made[n++] = t;
    }
    if (batch && store_commit(C.store))
        for (size_t i = 0; i < n; i++) made[i]->unsaved = true;
    if (began) store_durable(C.store, false);
    free(made);
}

static void adopt(berth_op *op)
{
    struct driver *d = op->drv;
    const char *dname = inst_name(d->res.owner);
    /* tenants with a record first, one by one: reaching ready answers their waiters, which
     * may be plugins that write to the store */
    for (size_t i = 0; i < op->nitems; i++) {
        struct listed *l = &op->items[i];
        struct tenant *t = tenant_find(l->handle);
        if (!(l->known = t != NULL)) continue;
        t->listed = true;
        adopt_state(t, l, dname);
    }
    adopt_records(op, dname);
    /* what the driver no longer has is absent, and will be recreated if it should run */
    list_each(it, &tenant_all) {
        struct tenant *t = container_of(it, struct tenant, link);
        bool seen = t->listed;
        t->listed = false;
        if (seen || t->op || !t->driver || strcmp(t->driver, dname)) continue;
        if (t->observed != BERTH_OBS_ABSENT) {
            str_set(&t->id, NULL);
            str_set(&t->address, NULL);
            tenant_set_observed(t, BERTH_OBS_ABSENT);
            tenant_save(t);
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
    int64_t delay = reconcile_backoff(d->list_failures);
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
    if (op->kind == OP_PROVISION || op->kind == OP_DEPROVISION) {
        provision_op_finished(op, status, msg);
        op_free(op);
        return;
    }
    struct tenant *t = tenant_find(op->handle);
    if (t && t->op == op) reconcile_op_finished(t, op, status, obs, msg);
    op_free(op);
}

/* An op a plugin hands back must still be in flight: one it already finished (or that the host
 * completed as canceled) is freed, and touching it would be a use after free in berthd. A
 * plugin bug is logged and refused. The scan is linear in the ops in flight, which the
 * reconciler bounds to two per tenant. */
bool op_live(const berth_op *op, const char *fn)
{
    if (!op) return false;
    list_each(it, &D.ops) if (container_of(it, berth_op, link) == op) return true;
    blog(BERTH_LOG_ERROR, "core", "a plugin called %s on an operation that is not in flight "
         "(finished already, or canceled); ignored", fn);
    return false;
}

void op_done(berth_op *op, int status, const struct berth_observed *obs, const char *msg)
{
    if (!op_live(op, "op_done")) return;
    if (obs && obs->size < sizeof(size_t) * 2) obs = NULL;
    op_finish(op, status, obs, msg);
}

void op_list_add(berth_op *op, const char *handle, const char *tmpl,
                 const struct berth_observed *obs)
{
    if (!op_live(op, "op_list_add") || op->kind != OP_LIST || !handle_valid(handle) || !obs)
        return;
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
    list_each(it, &D.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        if (d->res.owner == owner) list_driver(d);
    }
}

/* each driver's dependency as its last list() saw it (dockerd reachable, ...): adds a
 * {"ok", "reason"} per driver to o; false when one of them is failing */
bool drivers_health(cJSON *o)
{
    bool ok = true;
    list_each(it, &D.drivers) {
        struct driver *d = container_of(it, struct driver, link);
        cJSON *h = cJSON_AddObjectToObject(o, inst_name(d->res.owner));
        cJSON_AddBoolToObject(h, "ok", !d->list_error);
        cJSON_AddBoolToObject(h, "listed", d->listed);
        if (d->list_error) cJSON_AddStringToObject(h, "reason", d->list_error);
        ok = ok && !d->list_error;
    }
    return ok;
}

void drivers_list_all(void)
{
    list_each(it, &D.drivers) list_driver(container_of(it, struct driver, link));
}

void driver_report(berth_instance *owner, const char *handle, const struct berth_observed *o)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t || !o || t->op || !t->driver || strcmp(t->driver, inst_name(owner))) return;
    enum berth_observed_state prev = t->observed;
    /* one stop is one crash and one event, however many reports tell of it (dockerd says
     * die, then destroy, for `docker rm -f`) */
    bool was_up = prev == BERTH_OBS_STARTING || prev == BERTH_OBS_RUNNING ||
                  prev == BERTH_OBS_READY;
    if (o->id) str_set(&t->id, o->id);
    if (o->state == BERTH_OBS_STOPPED || o->state == BERTH_OBS_ABSENT ||
        o->state == BERTH_OBS_FAILED) {
        if (o->message && (was_up || !t->reason)) str_set(&t->reason, o->message);
        if (o->state == BERTH_OBS_ABSENT) str_set(&t->id, NULL);
        if (t->desired == BERTH_DESIRED_RUNNING && was_up) crash_count(t, o->message);
        tenant_set_observed(t, o->state);
        tenant_save(t);
        if (was_up) {
            struct berth_ev_container_stopped ev = {sizeof ev, o->id, o->exit_code, o->oom,
                                                    false, o->message};
            bus_publish(BERTH_EV_CONTAINER_STOPPED, t->handle, &ev);
        }
    } else {
        tenant_set_observed(t, o->state);
        tenant_save(t);
    }
    tenant_mark(t);
}

