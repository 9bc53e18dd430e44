/* Provisioners: per-tenant work a plugin does before the tenant's workload is created (an API
 * key, accounts, a route) and undoes before the tenant is gone.
 *
 * A template enables the provisioner registered by instance X by having a block `X: {...}`.
 * Each (tenant, provisioner) pair has a record here, persisted in tenant_provisioners: its
 * state, the last failure and retry schedule, the digest of the block it ran with, the
 * environment and labels it returned, and whether the existing workload has them. The
 * reconciler (reconcile.c) calls provision_step() before a create and deprovision_step()
 * after a delete removed the workload; each issues at most one operation per tenant at a
 * time, in the provisioners' order. The record is written before the operation starts, so
 * one in flight when berthd is killed runs again on the next start (the contract makes
 * provision and deprovision idempotent). */
#include "tenant.h"

#include <stdlib.h>
#include <string.h>

enum pst { PS_PENDING, PS_DONE, PS_FAILED, PS_DEPROVISIONING, PS_DEPROVISION_FAILED };
static const char *const pst_names[] = {"pending", "done", "failed", "deprovisioning",
                                        "deprovision_failed"};

struct provisioner {
    struct res res;             /* first: the owner's resource list points here */
    struct list link;
    struct berth_provisioner p; /* a copy of what the plugin registered */
    void *state;
};

/* one provisioner's record for one tenant; owned by the tenant's `provs` list */
struct pstate {
    struct list link;
    char *name;                 /* the provisioner's instance name */
    enum pst st;
    char *message;              /* the last failure, or why it is pending */
    int64_t attempts, next_retry_ms;   /* next_retry_ms < 0: a permanent failure */
    uint64_t digest;            /* of the template block it last ran with */
    bool applied;               /* the tenant's workload, if any, has env and labels */
    bool rerun;                 /* asked to run again while its op was in flight */
    struct kv env, labels;
};

static struct list provs = {&provs, &provs};

/* ---- the registry ---- */

/* a draining instance finishes what it has but gets no new work */
static struct provisioner *prov_find(const char *name)
{
    struct provisioner *found = NULL;
    list_each(it, &provs) {
        struct provisioner *p = container_of(it, struct provisioner, link);
        if (!strcmp(inst_name(p->res.owner), name) && inst_running(p->res.owner))
            found = p;      /* the newest wins */
    }
    return found;
}

int provisioner_add(berth_instance *owner, const struct berth_provisioner *p, void *state)
{
    if (!p || p->size < sizeof *p || !p->provision || !p->deprovision) return BERTH_EINVAL;
    list_each(it, &provs)
        if (container_of(it, struct provisioner, link)->res.owner == owner) return BERTH_EEXIST;
    struct provisioner *pr = xcalloc(1, sizeof *pr);
    pr->p = *p;
    pr->state = state;
    res_attach(owner, &pr->res, RES_PROV);
    list_add_tail(&provs, &pr->link);
    blog(BERTH_LOG_INFO, "core", "provisioner registered by %s (order %d)", inst_name(owner),
         p->order);
    tenants_reconcile_all();
    return 0;
}

void provisioners_drop_owner(berth_instance *owner)
{
    list_each(it, &provs) {
        struct provisioner *p = container_of(it, struct provisioner, link);
        if (p->res.owner != owner) continue;
        list_del(&p->link);
        res_detach(&p->res);
        free(p);
    }
}

/* ---- the template's provisioners ---- */

struct enabled { struct provisioner *p; const struct tmpl_blk *b; };

static int enabled_cmp(const void *a, const void *b)
{
    const struct enabled *x = a, *y = b;
    if (x->p->p.order != y->p->p.order) return x->p->p.order < y->p->p.order ? -1 : 1;
    return strcmp(x->b->inst, y->b->inst);
}

/* The provisioners tm's blocks enable, in order, into out (tm->nblocks entries). A block of
 * an instance that did not load blocks everything: it may be a provisioner that cannot run,
 * and skipping it would create a workload without what it gives. Returns how many, or -1
 * with *missing set. */
static int enabled_list(const struct tmpl *tm, struct enabled *out, const char **missing)
{
    int n = 0;
    for (size_t i = 0; tm && i < tm->nblocks; i++) {
        struct provisioner *p = prov_find(tm->blocks[i].inst);
        if (p) {
            out[n++] = (struct enabled){p, &tm->blocks[i]};
            continue;
        }
        for (size_t k = 0; C.gen && k < C.gen->ninst; k++) {
            berth_instance *in = C.gen->inst[k];
            if (!strcmp(inst_name(in), tm->blocks[i].inst) && !inst_running(in)) {
                *missing = tm->blocks[i].inst;
                return -1;
            }
        }
    }
    qsort(out, (size_t)n, sizeof *out, enabled_cmp);
    return n;
}

static struct enabled *enabled_alloc(const struct tmpl *tm)
{
    return xcalloc(tm && tm->nblocks ? tm->nblocks : 1, sizeof(struct enabled));
}

/* ---- records ---- */

static struct pstate *ps_find(const struct tenant *t, const char *name)
{
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        if (!strcmp(ps->name, name)) return ps;
    }
    return NULL;
}

static struct pstate *ps_new(struct tenant *t, const char *name)
{
    struct pstate *ps = xcalloc(1, sizeof *ps);
    ps->name = xstrdup(name);
    ps->applied = true;         /* nothing returned yet: nothing the workload misses */
    list_add_tail(&t->provs, &ps->link);
    return ps;
}

static void ps_free(struct pstate *ps)
{
    list_del(&ps->link);
    free(ps->name);
    free(ps->message);
    kv_free(&ps->env);
    kv_free(&ps->labels);
    free(ps);
}

static void ps_save(const struct tenant *t, const struct pstate *ps)
{
    char attempts[24], retry[24], digest[24], updated[24];
    snprintf(attempts, sizeof attempts, "%" PRId64, ps->attempts);
    snprintf(retry, sizeof retry, "%" PRId64, ps->next_retry_ms);
    snprintf(digest, sizeof digest, "%016" PRIx64, ps->digest);
    snprintf(updated, sizeof updated, "%" PRId64, wall_ms());
    char *env = kv_json(&ps->env), *labels = kv_json(&ps->labels);
    const char *p[] = {t->handle, ps->name, pst_names[ps->st], ps->message, attempts, retry,
                       digest, env, labels, ps->applied ? "1" : "0", updated};
    char *err = NULL;
    if (store_exec_params(C.store, "INSERT OR REPLACE INTO tenant_provisioners(tenant,"
                          "provisioner,state,message,attempts,next_retry_ms,digest,env,labels,"
                          "applied,updated_ms) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)", p,
                          ARRAY_LEN(p), NULL, NULL, &err) < 0) {
        log_error("saving provisioner %s of tenant %s: %s", ps->name, t->handle, err);
        free(err);
    }
    cJSON_free(env);
    cJSON_free(labels);
}

static void ps_delete(const struct tenant *t, struct pstate *ps)
{
    const char *p[] = {t->handle, ps->name};
    store_exec_params(C.store, "DELETE FROM tenant_provisioners WHERE tenant=?1 AND "
                      "provisioner=?2", p, 2, NULL, NULL, NULL);
    ps_free(ps);
}

static int parse_pst(const char *s)
{
    for (size_t i = 0; s && i < ARRAY_LEN(pst_names); i++)
        if (!strcmp(s, pst_names[i])) return (int)i;
    return -1;
}

static bool load_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names; (void)arg;
    struct tenant *t = v[0] ? tenant_find(v[0]) : NULL;
    int st = parse_pst(v[2]);
    if (!t || st < 0 || !v[1]) {
        log_warn("dropping provisioner record %s/%s: %s", v[0] ? v[0] : "?",
                 v[1] ? v[1] : "?", t ? "its state is corrupt" : "no such tenant");
        const char *p[] = {v[0] ? v[0] : "", v[1] ? v[1] : ""};
        store_exec_params(C.store, "DELETE FROM tenant_provisioners WHERE tenant=?1 AND "
                          "provisioner=?2", p, 2, NULL, NULL, NULL);
        return true;
    }
    struct pstate *ps = ps_new(t, v[1]);
    ps->st = (enum pst)st;
    ps->message = xstrdup(v[3]);
    ps->attempts = v[4] ? atoll(v[4]) : 0;
    ps->next_retry_ms = v[5] ? atoll(v[5]) : 0;
    ps->digest = v[6] ? strtoull(v[6], NULL, 16) : 0;
    kv_parse(&ps->env, v[7]);
    kv_parse(&ps->labels, v[8]);
    ps->applied = v[9] && atoi(v[9]);
    return true;
}

int provision_load(void)
{
    char *err = NULL;
    if (store_exec_params(C.store, "SELECT tenant,provisioner,state,message,attempts,"
                          "next_retry_ms,digest,env,labels,applied FROM tenant_provisioners "
                          "ORDER BY rowid", NULL, 0, load_row, NULL, &err) < 0) {
        log_error("loading provisioner records: %s", err);
        free(err);
        return BERTH_EIO;
    }
    return 0;
}

void provision_free_tenant(struct tenant *t)
{
    list_each(it, &t->provs) ps_free(container_of(it, struct pstate, link));
    if (t->pretry) uv_close((uv_handle_t *)t->pretry, uv_free_handle);
    t->pretry = NULL;
}

void provision_forget(struct tenant *t)
{
    const char *p[] = {t->handle};
    store_exec_params(C.store, "DELETE FROM tenant_provisioners WHERE tenant=?1", p, 1, NULL,
                      NULL, NULL);
}

/* ---- retries and reasons ---- */

static void pretry_fire(uv_timer_t *h)
{
    tenant_mark(h->data);
}

static void pretry_at(struct tenant *t, int64_t at)
{
    int64_t delay = at - wall_ms();
    if (!t->pretry) {
        t->pretry = xcalloc(1, sizeof *t->pretry);
        uv_timer_init(C.loop, t->pretry);
        t->pretry->data = t;
    }
    uv_timer_start(t->pretry, pretry_fire, (uint64_t)(delay > 0 ? delay : 0), 0);
}

static void set_reason(struct tenant *t, char *r)     /* consumes r */
{
    if (!t->reason || strcmp(t->reason, r)) {
        str_set(&t->reason, r);
        tenant_save(t);
    }
    free(r);
}

/* reasons this file sets all start so: a success can take back its own complaint */
static bool our_reason(const struct tenant *t)
{
    return t->reason && (!strncmp(t->reason, "provision", 9) ||
                         !strncmp(t->reason, "deleting: deprovision", 21));
}

/* A provision finished with BERTH_EPERM will not succeed by waiting (a name someone else
 * owns): it is not retried until its block changes or an operator reprovisions. A
 * deprovision always is: giving up on one would leave the tenant's things behind. */
static void failed(struct tenant *t, struct pstate *ps, bool de, int status, const char *msg)
{
    ps->attempts++;
    const struct core_cfg *c = &C.gen->core;
    bool permanent = !de && status == BERTH_EPERM;
    int64_t delay = permanent ? -1 : status == BERTH_EAGAIN ? c->reconcile.retry_base
                                                           : reconcile_backoff(ps->attempts);
    ps->st = de ? PS_DEPROVISION_FAILED : PS_FAILED;
    str_set(&ps->message, msg && *msg ? msg : berth_strerror(status));
    ps->next_retry_ms = permanent ? -1 : wall_ms() + delay;
    ps_save(t, ps);
    set_reason(t, xasprintf("%sprovisioner '%s' failed: %s", de ? "deleting: de" : "",
                            ps->name, ps->message));
    if (permanent)
        blog(BERTH_LOG_WARN, "core", "tenant %s: %s (permanent: not retried until its block "
             "changes or it is reprovisioned)", t->handle, t->reason);
    else {
        pretry_at(t, ps->next_retry_ms);
        blog(BERTH_LOG_WARN, "core", "tenant %s: %s (attempt %" PRId64 ", retry in %" PRId64
             "ms)", t->handle, t->reason, ps->attempts, delay);
    }
    if (de) {
        struct berth_ev_tenant_deprovision_failed ev = {sizeof ev, ps->name, ps->message,
                                                        ps->attempts, delay};
        bus_publish(BERTH_EV_TENANT_DEPROVISION_FAILED, t->handle, &ev);
    } else {
        struct berth_ev_tenant_provision_failed ev = {sizeof ev, ps->name, ps->message,
                                                      ps->attempts, delay};
        bus_publish(BERTH_EV_TENANT_PROVISION_FAILED, t->handle, &ev);
        tenant_notify(t, BERTH_EIO, t->reason);
    }
}

/* ---- operations ---- */

static void issue(struct tenant *t, const struct tmpl *tm, struct provisioner *p,
                  struct pstate *ps, enum op_kind k)
{
    berth_op *op = op_alloc(p->res.owner, k, t->handle);
    op->pname = xstrdup(ps->name);
    op->spec = spec_build_prov(t, tm, tm ? tmpl_block(tm, ps->name) : NULL);
    t->pop = op;
    blog(BERTH_LOG_DEBUG, "core", "tenant %s: %s by %s", t->handle, op_names[k], ps->name);
    (k == OP_PROVISION ? p->p.provision : p->p.deprovision)(p->state, op->spec, op);
}

static void provisioned(struct tenant *t, struct pstate *ps, berth_op *op)
{
    if (!kv_equal(&ps->env, &op->env) || !kv_equal(&ps->labels, &op->labels)) {
        /* a workload that exists has the old values; with none, the next create has these
         * (and no write is needed when it succeeds) */
        ps->applied = !t->id;
        kv_free(&ps->env);
        kv_free(&ps->labels);
        ps->env = op->env;
        ps->labels = op->labels;
        op->env = op->labels = (struct kv){0};
    }
    ps->st = ps->rerun ? PS_PENDING : PS_DONE;
    ps->rerun = false;
    ps->attempts = 0;
    ps->next_retry_ms = 0;
    str_set(&ps->message, NULL);
    ps_save(t, ps);
    if (our_reason(t)) {
        str_set(&t->reason, NULL);
        tenant_save(t);
    }
    struct berth_ev_tenant_provisioned ev = {sizeof ev, ps->name};
    bus_publish(BERTH_EV_TENANT_PROVISIONED, t->handle, &ev);
}

static void deprovisioned(struct tenant *t, struct pstate *ps)
{
    struct berth_ev_tenant_deprovisioned ev = {sizeof ev, ps->name};
    bus_publish(BERTH_EV_TENANT_DEPROVISIONED, t->handle, &ev);
    ps_delete(t, ps);
    if (our_reason(t)) {
        str_set(&t->reason, NULL);
        tenant_save(t);
    }
}

void provision_op_finished(berth_op *op, int status, const char *msg)
{
    struct tenant *t = tenant_find(op->handle);
    if (!t || t->pop != op) return;     /* abandoned by a forced delete */
    t->pop = NULL;
    struct pstate *ps = ps_find(t, op->pname);
    bool de = op->kind == OP_DEPROVISION;
    if (!ps) {
    } else if (status == BERTH_ECANCELED) {
        /* the provisioner unloaded: no attempt was made; it runs when one is back */
        str_set(&ps->message, msg);
        ps_save(t, ps);
    } else if (status) {
        failed(t, ps, de, status, msg);
    } else if (de) {
        deprovisioned(t, ps);
    } else {
        provisioned(t, ps, op);
    }
    tenant_mark(t);
}

int op_setenv(berth_op *op, const char *name, const char *value)
{
    if (!op_live(op, "op_setenv") || op->kind != OP_PROVISION || !env_name_valid(name) || !value)
        return BERTH_EINVAL;
    if (!strncmp(name, "BERTH_", 6)) return BERTH_EINVAL;      /* the core's */
    return kv_set(&op->env, name, value);
}

int op_label(berth_op *op, const char *name, const char *value)
{
    if (!op_live(op, "op_label") || op->kind != OP_PROVISION || !env_name_valid(name) || !value)
        return BERTH_EINVAL;
    if (!strncmp(name, "berth.", 6)) return BERTH_EINVAL;      /* the core's and drivers' */
    return kv_set(&op->labels, name, value);
}

/* ---- what the reconciler asks ---- */

bool provision_step(struct tenant *t, const struct tmpl *tm)
{
    if (t->pop) return false;
    if (!tm->nblocks) return true;      /* the common case costs nothing */
    struct enabled *en = enabled_alloc(tm);
    const char *missing = NULL;
    int n = enabled_list(tm, en, &missing);
    if (n < 0) {
        /* "provision..." all the same: a success takes the complaint back */
        set_reason(t, xasprintf("provisioning waits: plugin instance '%s' did not load and "
                                "template '%s' has a block for it", missing, t->tmpl));
        free(en);
        return false;
    }
    int64_t now = wall_ms();
    bool ready = true;
    for (int i = 0; i < n && ready; i++) {
        struct pstate *ps = ps_find(t, en[i].b->inst);
        uint64_t digest = cnode_hash(en[i].b->node);
        if (ps && ps->st == PS_DONE && ps->digest == digest) continue;
        ready = false;
        if (ps && ps->digest != digest) {
            if (ps->st == PS_DONE)
                blog(BERTH_LOG_INFO, "core", "tenant %s: the '%s' block of template '%s' "
                     "changed; provisioning again", t->handle, ps->name, t->tmpl);
            ps->attempts = 0;
            ps->next_retry_ms = 0;
        }
        if (ps && ps->st == PS_FAILED && ps->next_retry_ms < 0) break;   /* permanent */
        if (ps && ps->st == PS_FAILED && ps->next_retry_ms > now) {
            pretry_at(t, ps->next_retry_ms);
            break;
        }
        if (!ps) ps = ps_new(t, en[i].b->inst);
        ps->st = PS_PENDING;
        ps->digest = digest;
        ps->rerun = false;
        ps_save(t, ps);     /* before the call: a crash from here on runs it again */
        issue(t, tm, en[i].p, ps, OP_PROVISION);
    }
    free(en);
    return ready;
}

bool provision_stale(const struct tenant *t, const struct tmpl *tm, const char **who)
{
    for (size_t i = 0; tm && i < tm->nblocks; i++) {
        struct pstate *ps = ps_find(t, tm->blocks[i].inst);
        if (ps && ps->st == PS_DONE && !ps->applied && prov_find(ps->name)) {
            *who = ps->name;
            return true;
        }
    }
    return false;
}

void provision_applied(struct tenant *t)
{
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        if (ps->st != PS_DONE || ps->applied) continue;
        ps->applied = true;
        ps_save(t, ps);
    }
}

void provision_fill_spec(const struct tenant *t, const struct tmpl *tm, struct kv *env,
                         struct kv *labels)
{
    if (list_empty(&t->provs)) return;
    struct enabled *en = enabled_alloc(tm);
    const char *missing = NULL;
    int n = enabled_list(tm, en, &missing);
    for (int i = 0; i < n; i++) {
        struct pstate *ps = ps_find(t, en[i].b->inst);
        if (!ps || ps->st != PS_DONE) continue;
        for (size_t k = 0; k < ps->env.n; k++) kv_set(env, ps->env.k[k], ps->env.v[k]);
        for (size_t k = 0; k < ps->labels.n; k++)
            kv_set(labels, ps->labels.k[k], ps->labels.v[k]);
    }
    free(en);
}

/* The last provisioner to deprovision next: the highest order (ties: the last name), so
 * deprovisioning undoes provisioning in reverse. Every one must be loaded to know. */
static struct pstate *deprov_next(const struct tenant *t, struct provisioner **pp,
                                  const char **missing)
{
    struct pstate *best = NULL;
    struct provisioner *bp = NULL;
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        struct provisioner *p = prov_find(ps->name);
        if (!p) {
            *missing = ps->name;
            return NULL;
        }
        if (!best || p->p.order > bp->p.order ||
            (p->p.order == bp->p.order && strcmp(ps->name, best->name) > 0))
            best = ps, bp = p;
    }
    *pp = bp;
    return best;
}

bool deprovision_step(struct tenant *t, const struct tmpl *tm)
{
    if (t->pop) {
        /* a provision that never finishes holds the deletion: say which (rm --force won't) */
        if (t->pop->kind == OP_PROVISION)
            set_reason(t, xasprintf("deleting: deprovision waits for provisioner '%s' to "
                                    "finish its provision in flight", t->pop->pname));
        return false;
    }
    if (list_empty(&t->provs)) return true;
    struct provisioner *p = NULL;
    const char *missing = NULL;
    struct pstate *ps = deprov_next(t, &p, &missing);
    if (!ps) {
        set_reason(t, xasprintf("deleting: deprovision waits for provisioner '%s', which is "
                                "not loaded", missing));
        return false;
    }
    if (ps->st == PS_DEPROVISION_FAILED && ps->next_retry_ms > wall_ms()) {
        pretry_at(t, ps->next_retry_ms);
        return false;
    }
    ps->st = PS_DEPROVISIONING;
    ps_save(t, ps);
    issue(t, tm, p, ps, OP_DEPROVISION);
    return false;
}

/* A forced delete: what is not deprovisioned yet is left behind, and said so. */
void provision_abandon(struct tenant *t)
{
    t->pop = NULL;              /* an op in flight finishes into nothing */
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        struct berth_ev_tenant_abandoned ev = {sizeof ev, ps->name, pst_names[ps->st]};
        bus_publish(BERTH_EV_TENANT_ABANDONED, t->handle, &ev);
        blog(BERTH_LOG_WARN, "core", "tenant %s: forced delete leaves provisioner %s's work "
             "behind (%s)", t->handle, ps->name, pst_names[ps->st]);
        ps_delete(t, ps);
    }
    if (our_reason(t)) str_set(&t->reason, NULL);
}

int tenant_reprovision(berth_instance *owner, const char *handle)
{
    struct tenant *t = handle ? tenant_find(handle) : NULL;
    if (!t) return BERTH_ENOENT;
    if (t->desired == BERTH_DESIRED_DELETED) return BERTH_EBUSY;
    if (owner && !prov_find(inst_name(owner))) return BERTH_EINVAL;
    const struct tmpl *tm = tmpl_find(t->tmpl);
    bool any = !owner;
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        if (owner && strcmp(ps->name, inst_name(owner))) continue;
        any = true;
        if (t->pop && t->pop->kind == OP_PROVISION && !strcmp(t->pop->pname, ps->name)) {
            ps->rerun = true;
            continue;
        }
        ps->st = PS_PENDING;
        ps->attempts = 0;
        ps->next_retry_ms = 0;
        ps_save(t, ps);
    }
    /* not run yet for this tenant: it will, if the template enables it */
    if (!any && !(tm && tmpl_block_node(tm, inst_name(owner)))) return BERTH_ENOENT;
    tenant_mark(t);
    return 0;
}

void provision_json(const struct tenant *t, cJSON *o)
{
    cJSON *all = cJSON_AddObjectToObject(o, "provisioners");
    list_each(it, &t->provs) {
        struct pstate *ps = container_of(it, struct pstate, link);
        cJSON *j = cJSON_AddObjectToObject(all, ps->name);
        cJSON_AddStringToObject(j, "state", pst_names[ps->st]);
        if (ps->message) cJSON_AddStringToObject(j, "message", ps->message);
        else cJSON_AddNullToObject(j, "message");
        cJSON_AddNumberToObject(j, "attempts", (double)ps->attempts);
        bool permanent = ps->st == PS_FAILED && ps->next_retry_ms < 0;
        cJSON_AddNumberToObject(j, "next_retry_ms", permanent ? 0 : (double)ps->next_retry_ms);
        cJSON_AddBoolToObject(j, "permanent", permanent);
        struct provisioner *p = prov_find(ps->name);
        if (p) cJSON_AddNumberToObject(j, "order", p->p.order);
        cJSON_AddBoolToObject(j, "loaded", p != NULL);
        /* names only: values are often credentials */
        cJSON *env = cJSON_AddArrayToObject(j, "env");
        for (size_t i = 0; i < ps->env.n; i++)
            cJSON_AddItemToArray(env, cJSON_CreateString(ps->env.k[i]));
        cJSON *labels = cJSON_AddObjectToObject(j, "labels");
        for (size_t i = 0; i < ps->labels.n; i++)
            cJSON_AddStringToObject(labels, ps->labels.k[i], ps->labels.v[i]);
        cJSON_AddBoolToObject(j, "applied", ps->applied);
        cJSON_AddBoolToObject(j, "running", t->pop && !strcmp(t->pop->pname, ps->name));
    }
}
