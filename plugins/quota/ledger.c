/* The durable ledger: per-tenant totals and one row per call, in this plugin's own tables.
 *
 * A call is reserved before it is forwarded (its most possible cost joins the tenant's
 * `reserved`, checked against the budget in the same transaction, so no interleaving of
 * calls can take spent + reserved past the budget) and settled when it ends (the
 * reservation is replaced by the real cost). Each call row records the process that owns
 * it: rows left open by a process that is gone (a SIGKILL) are settled at the next start at
 * their reservation, the most they could have cost, so no call is ever free. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const steps[] = {
    "CREATE TABLE quota_tenants (tenant TEXT PRIMARY KEY, budget INTEGER,"
    " spent INTEGER NOT NULL DEFAULT 0, reserved INTEGER NOT NULL DEFAULT 0,"
    " calls INTEGER NOT NULL DEFAULT 0, since_ms INTEGER NOT NULL,"
    " period TEXT NOT NULL DEFAULT '', period_spent INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE quota_calls (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL,"
    " api TEXT NOT NULL, model TEXT NOT NULL, owner TEXT NOT NULL, state TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL, ended_ms INTEGER, period TEXT NOT NULL DEFAULT '',"
    " reserved INTEGER NOT NULL,"
    " cost INTEGER NOT NULL DEFAULT 0, input INTEGER NOT NULL DEFAULT 0,"
    " output INTEGER NOT NULL DEFAULT 0, cache_read INTEGER NOT NULL DEFAULT 0,"
    " cache_write INTEGER NOT NULL DEFAULT 0, status INTEGER, outcome TEXT);"
    "CREATE INDEX quota_calls_open ON quota_calls(state) WHERE state = 'open';"
    "CREATE INDEX quota_calls_tenant ON quota_calls(tenant, model);"
    "CREATE TABLE quota_keys (tenant TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
    " nonce BLOB NOT NULL, rotate INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL)",
    /* 2: bumped by every write of quota_tenants, so an instance's totals held in memory know
     * when another instance of this process (a reload, a .so swap) changed them */
    "CREATE TABLE quota_meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
    "INSERT INTO quota_meta VALUES('gen', 0)",
    /* 3: each tenant's settled calls summed per model, written once per batch: usage reads
     * a row per model, not every call the tenant ever made (its GET /usage scanned the whole
     * history on the loop), and a call's row no longer feeds a (tenant, model) index */
    "CREATE TABLE quota_models (tenant TEXT NOT NULL, model TEXT NOT NULL,"
    " calls INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL,"
    " cache_read INTEGER NOT NULL, cache_write INTEGER NOT NULL, cost INTEGER NOT NULL,"
    " PRIMARY KEY (tenant, model)) WITHOUT ROWID;"
    "INSERT INTO quota_models SELECT tenant, model, count(*), sum(input), sum(output),"
    " sum(cache_read), sum(cache_write), sum(cost) FROM quota_calls WHERE state != 'open'"
    " GROUP BY tenant, model;"
    "DROP INDEX quota_calls_tenant",
};

/* this process, so a reload (old and new instance in one process) never settles the calls
 * an older instance still streams */
static const char *owner(void)
{
    static char id[64];
    if (id[0]) return id;
    unsigned long long start = 0;
    FILE *f = fopen("/proc/self/stat", "r");
    if (f) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = 0;
        fclose(f);
        char *p = strrchr(buf, ')');
        for (int field = 2; p && field < 22; field++) p = strchr(p + 1, ' ');
        if (p) start = strtoull(p + 1, NULL, 10);
    }
    snprintf(id, sizeof id, "%ld.%llu", (long)getpid(), start);
    return id;
}

/* the calendar month (UTC) of ms, "2026-11": what a monthly budget is spent in */
static void month_of(int64_t ms, char out[16])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    if (!strftime(out, 16, "%Y-%m", &tm)) out[0] = 0;
}

int ledger_migrate(struct quota *q)
{
    return H->store_migrate(q->self, steps, sizeof steps / sizeof *steps);
}

static bool ints(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    int64_t *out = arg;
    for (int i = 0; i < n; i++) out[i] = v[i].type == BERTH_VAL_NULL ? -1 : v[i].i;
    return false;
}

/* ---- per-tenant totals, held in memory ----
 * Admission (slots, budget) is decided from these, never by reading SQLite per call. They are
 * loaded from quota_tenants the first time a batch needs a tenant, changed in step with the
 * rows each batch writes, and all dropped (to be loaded again) when a batch fails or when
 * quota_meta's generation shows that someone else wrote quota_tenants since our last batch:
 * another instance in this process (slots are this process's open calls, shared by an
 * instance still streaming after a reload and its successor) or a budget override. */
struct tot {
    struct tot *next;
    int64_t spent, reserved, period_spent, budget, open;   /* budget: the override, or -1 */
    /* what this batch changed, written to the tenant's row by one statement at its end */
    int64_t d_spent, d_reserved, d_calls, d_period_spent;
    bool dirty;
    char period[16];
    char handle[BERTH_HANDLE_MAX + 1];
};

static void tots_drop(struct quota *q)
{
    while (q->tots) {
        struct tot *t = q->tots;
        q->tots = t->next;
        free(t);
    }
}

static bool tot_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    struct tot *t = arg;
    if (n < 5) return false;
    t->spent = v[0].i;
    t->reserved = v[1].i;
    t->budget = v[2].type == BERTH_VAL_NULL ? -1 : v[2].i;
    t->period_spent = v[3].i;
    snprintf(t->period, sizeof t->period, "%.*s", v[4].type == BERTH_VAL_TEXT ? (int)v[4].len : 0,
             v[4].type == BERTH_VAL_TEXT ? (const char *)v[4].p : "");
    return false;
}

/* the tenant's totals, loaded (its row created) on first use; NULL on a store error */
static struct tot *tot_get(struct quota *q, const char *handle, int64_t now, const char *month,
                           int *rc)
{
    for (struct tot *t = q->tots; t; t = t->next)
        if (!strcmp(t->handle, handle)) return t;
    berth_instance *s = q->self;
    struct tot *t = calloc(1, sizeof *t);
    if (!t) {
        *rc = BERTH_ENOMEM;
        return NULL;
    }
    snprintf(t->handle, sizeof t->handle, "%s", handle);
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_INT(now), BERTH_TEXT(month),
                              BERTH_TEXT(owner())};
    *rc = H->store_query(s, "INSERT OR IGNORE INTO quota_tenants(tenant, since_ms, period) "
                         "VALUES(?1, ?2, ?3)", p, 3, NULL, NULL);
    if (!*rc) *rc = H->store_query(s, "SELECT spent, reserved, budget, period_spent, period FROM"
                                   " quota_tenants WHERE tenant = ?1", p, 1, tot_row, t);
    /* slots are this process's open calls: an instance replaced by a reload (its streams
     * still running) and its successor count the same ones */
    struct berth_value o[] = {BERTH_TEXT(handle), BERTH_TEXT(owner())};
    if (!*rc) *rc = H->store_query(s, "SELECT count(*) FROM quota_calls WHERE state = 'open' AND"
                                   " tenant = ?1 AND owner = ?2", o, 2, ints, &t->open);
    if (*rc) {
        free(t);
        return NULL;
    }
    t->next = q->tots;
    q->tots = t;
    return t;
}

/* ---- reservations and settlements, committed in batches ----
 * Every call needs a reservation in the ledger before it is forwarded and a settlement after it
 * ends. Both are queued and committed together on the next loop turn: one transaction
 * (settlements first, then reservations in arrival order, each checked against the totals the
 * previous ones left), committed without waiting for the disk (BERTH_TX_NOSYNC: in the WAL at
 * once, so a SIGKILL of berthd loses none; synced within a second, for a power loss).
 * Within the batch, a tenant's totals change in memory and reach its row in one UPDATE at the
 * end (tots_write), and call ids are given from max(id) (no last_insert_rowid() per call):
 * three statements per call instead of six, the transaction keeping it all or nothing. */

/* what a batch's settlements add to one (tenant, model) row of quota_models */
struct model_tot {
    struct model_tot *next;
    const char *handle, *model;     /* the settlement's, which outlives the batch's commit */
    int64_t calls, cost;
    struct usage u;
};

struct batch {
    struct quota *q;
    struct settle *settles;
    struct reservation *res;
    int64_t gen, next_id;
    struct model_tot *models;
};

static int reserve_one(struct batch *b, struct reservation *r)
{
    struct quota *q = b->q;
    berth_instance *s = q->self;
    int64_t now = H->now_ms(s);
    char month[16];
    month_of(now, month);
    int rc = 0;
    struct tot *t = tot_get(q, r->handle, now, month, &rc);
    if (!t) return rc;
    struct berth_value p[] = {BERTH_TEXT(r->handle), BERTH_INT(r->bound), BERTH_TEXT(month)};
    if (strcmp(t->period, month)) {     /* a new month starts the month's spending afresh */
        rc = H->store_query(s, "UPDATE quota_tenants SET period = ?3, period_spent = 0 "
                            "WHERE tenant = ?1", p, 3, NULL, NULL);
        if (rc) return rc;
        snprintf(t->period, sizeof t->period, "%s", month);
        t->period_spent = 0;
        t->d_period_spent = 0;      /* what this batch settled belonged to the month gone */
    }
    if (t->open >= r->slots) {
        r->id = BERTH_EBUSY;
        return 0;
    }
    int64_t budget = t->budget >= 0 ? t->budget : r->budget;
    if ((r->monthly ? t->period_spent : t->spent) + t->reserved + r->bound > budget) {
        r->id = 0;
        return 0;
    }
    int64_t id = b->next_id + 1;
    struct berth_value c[] = {BERTH_TEXT(r->handle), BERTH_TEXT(r->api), BERTH_TEXT(r->model),
                              BERTH_TEXT(owner()), BERTH_INT(now), BERTH_INT(r->bound),
                              BERTH_TEXT(month), BERTH_INT(id)};
    rc = H->store_query(s, "INSERT INTO quota_calls(id, tenant, api, model, owner, state,"
                        " started_ms, reserved, period) VALUES(?8,?1,?2,?3,?4,'open',?5,"
                        "?6,?7)", c, 8, NULL, NULL);
    if (rc) return rc;
    b->next_id = id;
    r->id = id;
    snprintf(r->period, sizeof r->period, "%s", month);
    t->reserved += r->bound;
    t->d_reserved += r->bound;
    t->dirty = true;
    t->open++;
    return 0;
}

struct settle {
    struct settle *next;
    int64_t id, reserved, cost;
    struct usage u;
    int status, attempts;
    bool published;             /* its event: once, even when the batch is tried again */
    char handle[BERTH_HANDLE_MAX + 1], outcome[32], period[16], model[128];
    char *event;                /* quota.call's payload, or NULL */
};

static void settle_free(struct settle *st)
{
    free(st->event);
    free(st);
}

static int model_add(struct batch *b, const struct settle *st)
{
    struct model_tot *m = b->models;
    while (m && (strcmp(m->model, st->model) || strcmp(m->handle, st->handle))) m = m->next;
    if (!m) {
        if (!(m = calloc(1, sizeof *m))) return BERTH_ENOMEM;
        m->handle = st->handle;
        m->model = st->model;
        m->next = b->models;
        b->models = m;
    }
    m->calls++;
    m->cost += st->cost;
    m->u.input += st->u.input;
    m->u.output += st->u.output;
    m->u.cache_read += st->u.cache_read;
    m->u.cache_write += st->u.cache_write;
    return 0;
}

static int models_write(struct batch *b)
{
    for (struct model_tot *m = b->models; m; m = m->next) {
        struct berth_value v[] = {BERTH_TEXT(m->handle), BERTH_TEXT(m->model),
                                  BERTH_INT(m->calls), BERTH_INT(m->u.input),
                                  BERTH_INT(m->u.output), BERTH_INT(m->u.cache_read),
                                  BERTH_INT(m->u.cache_write), BERTH_INT(m->cost)};
        int rc = H->store_query(b->q->self, "INSERT INTO quota_models VALUES(?1, ?2, ?3, ?4,"
                                " ?5, ?6, ?7, ?8) ON CONFLICT(tenant, model) DO UPDATE SET"
                                " calls = calls + ?3, input = input + ?4, output = output + ?5,"
                                " cache_read = cache_read + ?6, cache_write = cache_write + ?7,"
                                " cost = cost + ?8", v, 8, NULL, NULL);
        if (rc) return rc;
    }
    return 0;
}

static void models_free(struct batch *b)
{
    while (b->models) {
        struct model_tot *m = b->models;
        b->models = m->next;
        free(m);
    }
}

static int settle_one(struct batch *b, struct settle *st)
{
    struct quota *q = b->q;
    berth_instance *s = q->self;
    const struct usage *u = &st->u;
    int64_t now = H->now_ms(s);
    char month[16];
    month_of(now, month);
    int rc = 0;
    struct tot *t = tot_get(q, st->handle, now, month, &rc);
    if (!t) return rc;
    struct berth_value p[] = {BERTH_INT(st->id), BERTH_INT(now), BERTH_INT(st->cost),
                              BERTH_INT(u->input), BERTH_INT(u->output),
                              BERTH_INT(u->cache_read), BERTH_INT(u->cache_write),
                              BERTH_INT(st->status), BERTH_TEXT(st->outcome)};
    rc = H->store_query(s, "UPDATE quota_calls SET state = 'done', ended_ms = ?2, cost = ?3,"
                        " input = ?4, output = ?5, cache_read = ?6, cache_write = ?7,"
                        " status = ?8, outcome = ?9 WHERE id = ?1 AND state = 'open'",
                        p, 9, NULL, NULL);
    int64_t changed = 0;
    if (!rc) rc = H->store_query(s, "SELECT changes()", NULL, 0, ints, &changed);
    if (rc) return rc;
    /* published inside the transaction: the bus journals it in the same commit */
    if (st->event && !st->published) {
        quota_event(q, q->ev_call, st->handle, st->event);
        st->published = true;
    }
    if (!changed) return 0;             /* settled already: nothing is billed twice */
    if ((rc = model_add(b, st)) != 0) return rc;
    bool this_period = !strcmp(st->period, t->period);
    t->reserved -= st->reserved;
    t->spent += st->cost;
    t->d_reserved -= st->reserved;
    t->d_spent += st->cost;
    t->d_calls++;
    if (this_period) {
        t->period_spent += st->cost;
        t->d_period_spent += st->cost;
    }
    t->dirty = true;
    t->open--;
    return 0;
}

/* another writer since our last batch: the totals in memory are stale; and the last call id */
static int gen_check(struct batch *b)
{
    int64_t v[2] = {-1, 0};
    int rc = H->store_query(b->q->self, "SELECT v, (SELECT coalesce(max(id), 0) FROM"
                            " quota_calls) FROM quota_meta WHERE k = 'gen'", NULL, 0, ints, v);
    b->gen = v[0];
    b->next_id = v[1];
    if (!rc && b->gen != b->q->gen) tots_drop(b->q);
    return rc;
}

/* each changed tenant's row, once per batch */
static int tots_write(struct quota *q)
{
    for (struct tot *t = q->tots; t; t = t->next) {
        if (!t->dirty) continue;
        struct berth_value v[] = {BERTH_TEXT(t->handle), BERTH_INT(t->d_reserved),
                                  BERTH_INT(t->d_spent), BERTH_INT(t->d_calls),
                                  BERTH_INT(t->d_period_spent)};
        int rc = H->store_query(q->self, "UPDATE quota_tenants SET reserved = reserved + ?2,"
                                " spent = spent + ?3, calls = calls + ?4,"
                                " period_spent = period_spent + ?5 WHERE tenant = ?1",
                                v, 5, NULL, NULL);
        if (rc) return rc;
        t->d_reserved = t->d_spent = t->d_calls = t->d_period_spent = 0;
        t->dirty = false;
    }
    return 0;
}

static int gen_bump(struct quota *q)
{
    return H->store_query(q->self, "UPDATE quota_meta SET v = v + 1 WHERE k = 'gen'", NULL, 0,
                          NULL, NULL);
}

static int batch_tx(void *arg)
{
    struct batch *b = arg;
    int rc = gen_check(b);
    for (struct settle *st = b->settles; st && !rc; st = st->next) rc = settle_one(b, st);
    for (struct reservation *r = b->res; r && !rc; r = r->next) rc = reserve_one(b, r);
    if (!rc) rc = models_write(b);
    if (!rc) rc = tots_write(b->q);
    if (!rc) rc = gen_bump(b->q);
    b->gen++;
    return rc;
}

static void flush_timer(berth_timer *t, void *arg)
{
    struct quota *q = arg;
    H->timer_stop(t);
    if (t == q->retry) q->retry = NULL;
    else if (t == q->lag) q->lag = NULL;
    else q->flush = NULL;
    ledger_flush(q);
}

/* A batch that failed (a full disk, say) leaves its settlements queued: they are tried again
 * with a backoff until the store takes them, since each holds its call's slot and reserved
 * money until it is settled. New reservations do not wait for the retry. */
static void retry_later(struct quota *q)
{
    if (q->retry) return;
    q->retry_ms = q->retry_ms ? (q->retry_ms * 2 > 5000 ? 5000 : q->retry_ms * 2) : 100;
    q->retry = H->timer_start(q->self, q->retry_ms, 0, flush_timer, q);
}

static void schedule(struct quota *q)
{
    if (!q->flush) q->flush = H->timer_start(q->self, 0, 0, flush_timer, q);
    if (!q->flush) ledger_flush(q);     /* no timer: commit now rather than never */
}

/* Settlements wait for the next reservation's batch (its commit takes them along), or at
 * most SETTLE_LAG_MS: the answer reaches the client before its settlement's commit, and a
 * client calling in sequence pays one commit per call, not two. The reservation stands
 * meanwhile (a SIGKILL now bills it), and the ledger's readers commit what waits first. */
#define SETTLE_LAG_MS 5

static void schedule_settle(struct quota *q)
{
    if (q->flush || q->lag) return;
    if (!q->stopping && !q->destroying)
        q->lag = H->timer_start(q->self, SETTLE_LAG_MS, 0, flush_timer, q);
    if (!q->lag) schedule(q);
}

/* the ledger's readers see every call that has ended: what waits is committed first */
static void settle_pending(struct quota *q)
{
    if (!q->settles || q->retry) return;
    struct reservation *res = q->reserves;  /* they keep waiting for their own turn */
    struct reservation **tail = q->reserves_tail;
    q->reserves = NULL;
    q->reserves_tail = &q->reserves;
    ledger_flush(q);
    if (res) {
        *tail = q->reserves;
        if (!q->reserves) q->reserves_tail = tail;
        q->reserves = res;
    }
}

void ledger_flush(struct quota *q)
{
    struct settle *fifo = NULL;     /* queued newest first: committed (and published) in order */
    while (q->settles) {
        struct settle *st = q->settles;
        q->settles = st->next;
        st->next = fifo;
        fifo = st;
    }
    struct batch b = {q, fifo, q->reserves, -1, 0, NULL};
    q->reserves = NULL;
    q->reserves_tail = &q->reserves;
    if (!b.settles && !b.res) return;
    /* written to the WAL at commit (a SIGKILL cannot undo it), synced within a second */
    int rc = H->store_tx_flags(q->self, batch_tx, &b, BERTH_TX_NOSYNC);
    models_free(&b);
    q->gen = b.gen;
    if (rc) tots_drop(q);       /* rolled back: the totals in memory went ahead of it */
    while (b.settles) {
        struct settle *st = b.settles;
        b.settles = st->next;
        if (rc) {                                       /* kept for the retry */
            if (!st->attempts++)
                H->log(q->self, BERTH_LOG_ERROR, "call %lld of %s: cannot settle (%s); "
                       "retrying", (long long)st->id, st->handle, berth_strerror(rc));
            st->next = q->settles;
            q->settles = st;
            continue;
        }
        if (st->attempts)
            H->log(q->self, BERTH_LOG_INFO, "call %lld of %s: settled after %d failed tries",
                   (long long)st->id, st->handle, st->attempts);
        settle_free(st);
    }
    while (b.res) {         /* each callback may queue more work: it goes to the next batch */
        struct reservation *r = b.res;
        b.res = r->next;
        if (rc) r->id = rc;
        r->done(r, r->arg);
    }
    if (!rc) q->retry_ms = 0;
    if (q->settles && rc) retry_later(q);
    else if (q->settles) schedule(q);
    quota_idle(q);
}

void ledger_reserve(struct quota *q, struct reservation *r)
{
    r->next = NULL;
    r->id = BERTH_EAGAIN;
    *q->reserves_tail = r;
    q->reserves_tail = &r->next;
    schedule(q);
}

void ledger_settle(struct quota *q, const struct reservation *r, int64_t cost,
                   const struct usage *u, int status, const char *outcome, char *event)
{
    int64_t id = r->id;
    const char *handle = r->handle;
    struct settle *st = calloc(1, sizeof *st);
    if (!st) {
        H->log(q->self, BERTH_LOG_ERROR, "call %lld of %s: out of memory to settle it; it is "
               "settled at its reservation on the next start", (long long)id, handle);
        if (event) quota_event(q, q->ev_call, handle, event);
        free(event);
        return;
    }
    st->event = event;
    st->id = id;
    st->reserved = r->bound;
    snprintf(st->period, sizeof st->period, "%s", r->period);
    st->cost = cost;
    st->u = *u;
    st->status = status;
    snprintf(st->handle, sizeof st->handle, "%s", handle);
    snprintf(st->model, sizeof st->model, "%s", r->model);
    snprintf(st->outcome, sizeof st->outcome, "%s", outcome);
    st->next = q->settles;
    q->settles = st;
    schedule_settle(q);
}

void ledger_drop(struct quota *q)
{
    tots_drop(q);
    if (q->flush) H->timer_stop(q->flush);
    if (q->retry) H->timer_stop(q->retry);
    if (q->lag) H->timer_stop(q->lag);
    q->flush = q->retry = q->lag = NULL;
    while (q->settles) {        /* the store refused them to the end: settled at a restart */
        struct settle *st = q->settles;
        q->settles = st->next;
        H->log(q->self, BERTH_LOG_ERROR, "call %lld of %s: unsettled at unload; it is settled "
               "at its reservation on the next start", (long long)st->id, st->handle);
        settle_free(st);
    }
}

struct recover { struct quota *q; int64_t n; };

static int recover_tx(void *arg)
{
    struct recover *rv = arg;
    berth_instance *s = rv->q->self;
    struct berth_value p[] = {BERTH_TEXT(owner()), BERTH_INT(H->now_ms(s))};
    int rc = H->store_query(s, "SELECT count(*) FROM quota_calls WHERE state = 'open' AND "
                            "owner != ?1", p, 1, ints, &rv->n);
    if (rc || !rv->n) return rc;
    rc = H->store_query(s, "UPDATE quota_tenants SET"
                        " spent = spent + (SELECT coalesce(sum(reserved), 0) FROM quota_calls c"
                        "  WHERE c.tenant = quota_tenants.tenant AND c.state = 'open'"
                        "  AND c.owner != ?1),"
                        " reserved = reserved - (SELECT coalesce(sum(reserved), 0) FROM"
                        "  quota_calls c WHERE c.tenant = quota_tenants.tenant AND"
                        "  c.state = 'open' AND c.owner != ?1),"
                        " calls = calls + (SELECT count(*) FROM quota_calls c WHERE"
                        "  c.tenant = quota_tenants.tenant AND c.state = 'open'"
                        "  AND c.owner != ?1),"
                        " period_spent = period_spent + (SELECT coalesce(sum(reserved), 0)"
                        "  FROM quota_calls c WHERE c.tenant = quota_tenants.tenant AND"
                        "  c.state = 'open' AND c.owner != ?1 AND c.period ="
                        "  quota_tenants.period)", p, 1, NULL, NULL);
    /* a recovered call's tokens are unknown (0); its cost is its reservation */
    if (!rc) rc = H->store_query(s, "INSERT INTO quota_models SELECT tenant, model, count(*), 0,"
                                 " 0, 0, 0, sum(reserved) FROM quota_calls WHERE state = 'open'"
                                 " AND owner != ?1 GROUP BY tenant, model ON CONFLICT(tenant,"
                                 " model) DO UPDATE SET calls = calls + excluded.calls,"
                                 " cost = cost + excluded.cost", p, 1, NULL, NULL);
    if (!rc) rc = H->store_query(s, "UPDATE quota_calls SET state = 'recovered', cost = reserved,"
                                 " ended_ms = ?2, outcome = 'interrupted' WHERE state = 'open'"
                                 " AND owner != ?1", p, 2, NULL, NULL);
    if (!rc) rc = gen_bump(rv->q);
    return rc;
}

int ledger_recover(struct quota *q)
{
    struct recover rv = {q, 0};
    int rc = H->store_tx(q->self, recover_tx, &rv);
    if (rc) return rc;
    if (rv.n)
        H->log(q->self, BERTH_LOG_WARN, "settled %lld call(s) a previous run left open, each "
               "at its reservation", (long long)rv.n);
    return 0;
}

/* this month's spending: what the row says for its period, if that is this month */
static const char *const MONTH_SPENT =
    "CASE WHEN period = ?2 THEN period_spent ELSE 0 END";

int ledger_spent(struct quota *q, const char *handle, bool monthly, int64_t *spent,
                 int64_t *reserved)
{
    settle_pending(q);
    char month[16], sql[256];
    month_of(H->now_ms(q->self), month);
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_TEXT(month)};
    int64_t row[2] = {0, 0};
    snprintf(sql, sizeof sql, "SELECT %s, reserved FROM quota_tenants WHERE tenant = ?1 AND"
             " ?2 = ?2", monthly ? MONTH_SPENT : "spent");
    int rc = H->store_query(q->self, sql, p, 2, ints, row);
    *spent = row[0];
    *reserved = row[1];
    return rc;
}

int64_t ledger_budget_override(struct quota *q, const char *handle)
{
    struct berth_value p[] = {BERTH_TEXT(handle)};
    int64_t b = -1;
    if (H->store_query(q->self, "SELECT budget FROM quota_tenants WHERE tenant = ?1", p, 1,
                       ints, &b))
        return -1;
    return b;
}

int ledger_set_budget(struct quota *q, const char *handle, int64_t micro)
{
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_INT(H->now_ms(q->self)),
                              micro < 0 ? BERTH_NULL : BERTH_INT(micro)};
    /* one call, so atomic; the generation makes every instance load the totals again */
    return H->store_query(q->self, "INSERT INTO quota_tenants(tenant, since_ms, budget) "
                          "VALUES(?1, ?2, ?3) ON CONFLICT(tenant) DO UPDATE SET budget = ?3;"
                          "UPDATE quota_meta SET v = v + 1 WHERE k = 'gen'", p, 3, NULL, NULL);
}

static double usd(int64_t micro)
{
    return (double)micro / 1e6;
}

static bool model_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    if (n < 7 || v[0].type != BERTH_VAL_TEXT) return true;
    cJSON *m = cJSON_CreateObject();
    char model[256];
    snprintf(model, sizeof model, "%.*s", (int)v[0].len, (const char *)v[0].p);
    cJSON_AddStringToObject(m, "model", model);
    cJSON_AddNumberToObject(m, "calls", (double)v[1].i);
    cJSON_AddNumberToObject(m, "input_tokens", (double)v[2].i);
    cJSON_AddNumberToObject(m, "output_tokens", (double)v[3].i);
    cJSON_AddNumberToObject(m, "cache_read_tokens", (double)v[4].i);
    cJSON_AddNumberToObject(m, "cache_write_tokens", (double)v[5].i);
    cJSON_AddNumberToObject(m, "cost", usd(v[6].i));
    cJSON_AddItemToArray(arg, m);
    return true;
}

char *ledger_usage_json(struct quota *q, const char *handle, int64_t budget, bool monthly)
{
    settle_pending(q);
    char month[16];
    month_of(H->now_ms(q->self), month);
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_TEXT(month)};
    int64_t row[6] = {0, 0, 0, -1, 0, 0};
    int rc = H->store_query(q->self, "SELECT spent, reserved, calls, budget, since_ms, CASE WHEN"
                            " period = ?2 THEN period_spent ELSE 0 END FROM quota_tenants"
                            " WHERE tenant = ?1", p, 2, ints, row);
    if (rc) return NULL;
    if (row[3] >= 0) budget = row[3];
    int64_t left = budget - (monthly ? row[5] : row[0]) - row[1];
    if (left < 0) left = 0;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "tenant", handle);
    cJSON_AddNumberToObject(j, "budget", usd(budget));
    cJSON_AddNumberToObject(j, "spent", usd(row[0]));
    cJSON_AddNumberToObject(j, "reserved", usd(row[1]));
    cJSON_AddNumberToObject(j, "remaining", usd(left));
    cJSON_AddNumberToObject(j, "spent_micro", (double)row[0]);
    cJSON_AddNumberToObject(j, "reserved_micro", (double)row[1]);
    cJSON_AddNumberToObject(j, "calls", (double)row[2]);
    cJSON_AddNumberToObject(j, "since_ms", (double)row[4]);
    cJSON_AddStringToObject(j, "period", monthly ? "monthly" : "none");
    cJSON_AddStringToObject(j, "month", month);
    cJSON_AddNumberToObject(j, "month_spent", usd(row[5]));
    cJSON_AddNumberToObject(j, "month_spent_micro", (double)row[5]);
    char line[64];
    quota_budget_line(q, handle, line, sizeof line);
    cJSON_AddStringToObject(j, "summary", line);
    cJSON *models = cJSON_AddArrayToObject(j, "models");
    rc = H->store_query(q->self, "SELECT model, calls, input, output, cache_read, cache_write,"
                        " cost FROM quota_models WHERE tenant = ?1 ORDER BY model",
                        p, 1, model_row, models);
    char *out = rc ? NULL : cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return out;
}
