/* testprov: a provisioner for tests. A template enables it with a block under the instance's
 * name; provision returns one environment variable (and a label when asked), after `delay`,
 * through a host timer. It can fail its first N provisions or deprovisions of a tenant, and
 * with `hold` it keeps provisions in flight until POST /v1/<instance>/release, so a test can
 * kill berthd in the middle of one. Every call is counted in a plugin table, so counts
 * survive restarts: GET /v1/<instance>/calls/{handle} (provision_started: calls,
 * provision: attempts that finished, provisioned: successes; the same for deprovision).
 * A success also sets the tenant's status {"value": ...} under the instance's name. */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfg { int64_t order, delay; bool hold, fail_start, count, done_twice, bad_utf8; };
struct blk { const char *env, *value, *label; int64_t fail, deprov_fail; bool eagain, eperm; };

static const struct berth_cfg_item schema[] = {
    {"order", BERTH_CFG_INT, "100", -100000, 100000, offsetof(struct cfg, order),
     "when it runs among the tenant's provisioners (lower first)", 0, NULL, NULL},
    {"delay", BERTH_CFG_DURATION, "5ms", 0, 60000, offsetof(struct cfg, delay),
     "how long each operation takes", BERTH_CFG_RELOAD, NULL, NULL},
    {"hold", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, hold),
     "keep provisions in flight until POST /v1/<instance>/release", BERTH_CFG_RELOAD, NULL,
     NULL},
    {"fail_start", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, fail_start),
     "refuse to start (a provisioner that did not load)", 0, NULL, NULL},
    {"count", BERTH_CFG_BOOL, "true", 0, 0, offsetof(struct cfg, count),
     "count calls and set status; false: a no-op that only returns its env (for benches)",
     0, NULL, NULL},
    {"done_twice", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, done_twice),
     "misuse the SDK: finish each operation twice, then touch it (the host must refuse)",
     0, NULL, NULL},
    {"bad_utf8", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, bad_utf8),
     "failure messages and the status end in bytes that are not UTF-8, as an upstream's "
     "might", 0, NULL, NULL},
    {0},
};
static const struct berth_cfg_item tschema[] = {
    {"env", BERTH_CFG_STR, "TESTPROV_KEY", 0, 0, offsetof(struct blk, env),
     "the variable provision returns", 0, NULL, NULL},
    {"value", BERTH_CFG_STR, "key", 0, 0, offsetof(struct blk, value),
     "its value is <value>-<handle>", 0, NULL, NULL},
    {"label", BERTH_CFG_STR, "", 0, 0, offsetof(struct blk, label),
     "when set, the label testprov.<instance>=<label>", 0, NULL, NULL},
    {"fail", BERTH_CFG_INT, "0", 0, 1000, offsetof(struct blk, fail),
     "fail this many provisions of each tenant first", 0, NULL, NULL},
    {"deprov_fail", BERTH_CFG_INT, "0", 0, 1000, offsetof(struct blk, deprov_fail),
     "fail this many deprovisions of each tenant first", 0, NULL, NULL},
    {"eagain", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct blk, eagain),
     "failures are BERTH_EAGAIN (retry soon)", 0, NULL, NULL},
    {"eperm", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct blk, eperm),
     "failures are BERTH_EPERM (permanent for a provision)", 0, NULL, NULL},
    {0},
};

static const struct berth_host *H;

struct prov;
struct job {
    struct job *next;
    struct prov *p;
    berth_op *op;
    berth_timer *timer;
    bool de, released;
    char handle[BERTH_HANDLE_MAX + 1];
    struct blk b;               /* a copy: the spec's block is valid only during the call */
};

struct prov {
    berth_instance *self;
    struct cfg cfg;
    struct berth_provisioner reg;
    struct job *jobs;           /* in flight */
    bool stopping;
};

static const char *const steps[] = {
    "CREATE TABLE testprov_calls (inst TEXT NOT NULL, tenant TEXT NOT NULL, kind TEXT NOT NULL,"
    " n INTEGER NOT NULL, PRIMARY KEY (inst, tenant, kind))",
};

static bool int_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    *(long *)arg = v[0] ? atol(v[0]) : 0;
    return false;
}

/* counts one call of kind; returns the new count */
static long count(struct prov *p, const char *handle, const char *kind)
{
    const char *q[] = {H->name(p->self), handle, kind};
    H->store_exec(p->self, "INSERT INTO testprov_calls(inst,tenant,kind,n) VALUES(?1,?2,?3,1) "
                  "ON CONFLICT(inst,tenant,kind) DO UPDATE SET n=n+1", q, 3, NULL, NULL);
    long n = 0;
    H->store_exec(p->self, "SELECT n FROM testprov_calls WHERE inst=?1 AND tenant=?2 AND "
                  "kind=?3", q, 3, int_row, &n);
    return n;
}

static void unlink_job(struct job *j)
{
    for (struct job **pp = &j->p->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
}

static void finish(struct job *j)
{
    struct prov *p = j->p;
    unlink_job(j);
    const char *kind = j->de ? "deprovision" : "provision";
    long calls = p->cfg.count ? count(p, j->handle, kind) : 1;
    int64_t fails = j->de ? j->b.deprov_fail : j->b.fail;
    if (calls <= fails) {
        char msg[96];
        snprintf(msg, sizeof msg, "testprov: %s %ld of %ld refused%s", kind, calls, (long)fails,
                 p->cfg.bad_utf8 ? " \xff\xfe" : "");
        H->op_done(j->op, j->b.eagain ? BERTH_EAGAIN : j->b.eperm ? BERTH_EPERM : BERTH_EIO,
                    NULL, msg);
    } else if (j->de) {
        if (p->cfg.count) count(p, j->handle, "deprovisioned");
        H->op_done(j->op, 0, NULL, NULL);
    } else {
        char val[256];
        snprintf(val, sizeof val, "%s-%s", j->b.value, j->handle);
        H->op_setenv(j->op, j->b.env, val);
        if (j->b.label[0]) {
            char name[128];
            snprintf(name, sizeof name, "testprov.%s", H->name(p->self));
            H->op_label(j->op, name, j->b.label);
        }
        if (p->cfg.count) {
            count(p, j->handle, "provisioned");
            char st[300];
            snprintf(st, sizeof st, "{\"value\":\"%s%s\"}", val, p->cfg.bad_utf8 ? "\xff" : "");
            H->tenant_status_set(p->self, j->handle, st);
        }
        H->op_done(j->op, 0, NULL, NULL);
    }
    if (p->cfg.done_twice) {
        H->op_setenv(j->op, "LATE", "x");
        H->op_done(j->op, 0, NULL, NULL);
    }
    free(j);
}

static void fire(berth_timer *t, void *arg)
{
    struct job *j = arg;
    H->timer_stop(t);
    j->timer = NULL;
    if (!j->de && j->p->cfg.hold && !j->released) return;  /* stays until released */
    finish(j);
}

static void later(struct prov *p, const berth_spec *s, berth_op *op, bool de)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j) {
        H->op_done(op, BERTH_ENOMEM, NULL, "testprov: out of memory");
        return;
    }
    const struct blk *b = H->spec_config(s);
    static const struct blk none = {"TESTPROV_KEY", "key", "", 0, 0, false};
    j->b = b ? *b : none;      /* deprovision after the template lost its block */
    j->p = p;
    j->op = op;
    j->de = de;
    snprintf(j->handle, sizeof j->handle, "%s", H->spec_handle(s));
    if (p->cfg.count) count(p, j->handle, de ? "deprovision_started" : "provision_started");
    j->next = p->jobs;
    p->jobs = j;
    j->timer = H->timer_start(p->self, (uint64_t)p->cfg.delay, 0, fire, j);
}

static void provision(void *st, const berth_spec *s, berth_op *op) { later(st, s, op, false); }
static void deprovision(void *st, const berth_spec *s, berth_op *op) { later(st, s, op, true); }

/* POST /v1/<instance>/release: finish every held provision now (or, if its delay has not
 * run out yet, when it does) */
static void release(berth_req *r, void *arg)
{
    struct prov *p = arg;
    int n = 0;
    for (struct job *j = p->jobs, *next; j; j = next) {
        next = j->next;
        if (j->de || j->released) continue;
        n++;
        j->released = true;
        if (!j->timer) finish(j);
    }
    char body[48];
    int len = snprintf(body, sizeof body, "{\"released\":%d}\n", n);
    H->respond(r, 200, "application/json", body, (size_t)len);
}

/* POST /v1/<instance>/rotate/{handle}: host->tenant_reprovision, as a rotated key would */
static void rotate(berth_req *r, void *arg)
{
    struct prov *p = arg;
    int rc = H->tenant_reprovision(p->self, H->req_param(r, "handle"));
    if (rc) H->respond_error(r, rc == BERTH_ENOENT ? 404 : 409, "refused", "%s",
                             berth_strerror(rc));
    else H->respond(r, 202, "application/json", "{}\n", 3);
}

/* GET /v1/<instance>/calls/{handle}: {"provision": n, "provisioned": n, ...} */
struct calls { char out[512]; size_t len; };

static bool calls_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct calls *c = arg;
    c->len += (size_t)snprintf(c->out + c->len, sizeof c->out - c->len, "%s\"%s\":%s",
                               c->len > 1 ? "," : "", v[0], v[1]);
    return c->len < sizeof c->out - 64;
}

static void calls(berth_req *r, void *arg)
{
    struct prov *p = arg;
    struct calls c = {"{", 1};
    const char *q[] = {H->name(p->self), H->req_param(r, "handle")};
    H->store_exec(p->self, "SELECT kind,n FROM testprov_calls WHERE inst=?1 AND tenant=?2 "
                  "ORDER BY kind", q, 2, calls_row, &c);
    c.len += (size_t)snprintf(c.out + c.len, sizeof c.out - c.len, "}\n");
    H->respond(r, 200, "application/json", c.out, c.len);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    if (!BERTH_HOST_HAS(H, provisioner_register)) return BERTH_ENOTSUP;
    struct prov *p = calloc(1, sizeof *p);
    if (!p) return BERTH_ENOMEM;
    p->self = self;
    *state = p;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct prov *p = state;
    p->cfg = *(const struct cfg *)cfg;
    return 0;
}

static int start(void *state)
{
    struct prov *p = state;
    if (p->cfg.fail_start) return BERTH_EIO;
    int rc = H->store_migrate(p->self, steps, 1);
    if (rc) return rc;
    char path[160];
    snprintf(path, sizeof path, "/v1/%s/release", H->name(p->self));
    H->route(p->self, "POST", path, release, p);
    snprintf(path, sizeof path, "/v1/%s/rotate/{handle}", H->name(p->self));
    H->route(p->self, "POST", path, rotate, p);
    snprintf(path, sizeof path, "/v1/%s/calls/{handle}", H->name(p->self));
    H->route(p->self, "GET", path, calls, p);
    p->reg = (struct berth_provisioner){.size = sizeof p->reg, .order = (int)p->cfg.order,
                                        .provision = provision, .deprovision = deprovision};
    return H->provisioner_register(p->self, &p->reg, p);
}

/* what is in flight ends as canceled: the core runs it again when a provisioner is back */
static void stop(void *state)
{
    struct prov *p = state;
    while (p->jobs) {
        struct job *j = p->jobs;
        p->jobs = j->next;
        if (j->timer) H->timer_stop(j->timer);
        H->op_done(j->op, BERTH_ECANCELED, NULL, "testprov: stopping");
        free(j);
    }
    H->drained(p->self);
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "testprov", .version = "1.0", .description = "provisioner for tests",
             .config = schema, .config_size = sizeof(struct cfg), .template_config = tschema,
             .template_config_size = sizeof(struct blk), .init = init,
             .configure = configure, .start = start, .stop = stop, .destroy = destroy);
