/* testdrv: a driver for tests. Its "containers" are rows in a plugin-owned SQLite table, so
 * they outlive berthd like real containers do and adoption after a restart can be tested.
 * Operations complete after `delay`, asynchronously, through host timers. */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cfg { int64_t delay; bool fail_create; bool fail_start; };
struct tcfg { const char *command; uint64_t memory; };

static const struct berth_cfg_item schema[] = {
    {"delay", BERTH_CFG_DURATION, "20ms", 0, 60000, offsetof(struct cfg, delay),
     "how long each operation takes", BERTH_CFG_RELOAD, NULL, NULL},
    {"fail_create", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, fail_create),
     "make create fail (to test retries)", BERTH_CFG_RELOAD, NULL, NULL},
    {"fail_start", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct cfg, fail_start),
     "make start fail", BERTH_CFG_RELOAD, NULL, NULL},
    {0},
};
static const struct berth_cfg_item tschema[] = {
    {"command", BERTH_CFG_STR, "sleep infinity", 0, 0, offsetof(struct tcfg, command),
     "what the pretend container runs", 0, NULL, NULL},
    {"memory", BERTH_CFG_SIZE, "64m", 0, 0, offsetof(struct tcfg, memory), "memory limit", 0,
     NULL, NULL},
    {0},
};

static const struct berth_host *H;

struct drv { berth_instance *self; struct cfg cfg; };

enum kind { K_CREATE, K_START, K_STOP, K_REMOVE, K_LIST };
struct pending { struct drv *d; berth_op *op; enum kind k; char handle[40], tmpl[64]; char env[512],
                 labels[256]; };

static const char *const steps[] = {
    "CREATE TABLE testdrv_containers (handle TEXT PRIMARY KEY, template TEXT, id TEXT,"
    " state TEXT, env TEXT)",
    "ALTER TABLE testdrv_containers ADD COLUMN labels TEXT",
};

struct row { char state[16], id[64]; bool found; };

static bool get_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct row *r = arg;
    snprintf(r->state, sizeof r->state, "%s", v[0] ? v[0] : "");
    snprintf(r->id, sizeof r->id, "%s", v[1] ? v[1] : "");
    r->found = true;
    return false;
}

static struct row lookup(struct drv *d, const char *h)
{
    struct row r = {.found = false};
    const char *p[] = {h};
    H->store_exec(d->self, "SELECT state,id FROM testdrv_containers WHERE handle=?1", p, 1,
                  get_row, &r);
    return r;
}

static void set_state(struct drv *d, const char *h, const char *st)
{
    const char *p[] = {st, h};
    H->store_exec(d->self, "UPDATE testdrv_containers SET state=?1 WHERE handle=?2", p, 2, NULL,
                  NULL);
}

static bool list_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct pending *p = arg;
    struct berth_observed o = {sizeof o, !strcmp(v[2], "running") ? BERTH_OBS_RUNNING
                                                                   : BERTH_OBS_STOPPED,
                               v[3], NULL, 0, false, NULL};
    H->op_list_add(p->op, v[0], v[1], &o);
    return true;
}

static void complete(berth_timer *t, void *arg)
{
    struct pending *p = arg;
    struct drv *d = p->d;
    H->timer_stop(t);
    struct row r = lookup(d, p->handle);
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, r.id, NULL, -1, false, NULL};
    char addr[64];
    switch (p->k) {
    case K_CREATE:
        if (d->cfg.fail_create) {
            H->op_done(p->op, BERTH_EIO, NULL, "testdrv: create refused (fail_create)");
            break;
        }
        if (!r.found) {
            char id[64];
            snprintf(id, sizeof id, "tc-%s-%lld", p->handle, (long long)H->now_ms(d->self));
            const char *q[] = {p->handle, p->tmpl, id, p->env, p->labels};
            H->store_exec(d->self, "INSERT INTO testdrv_containers(handle,template,id,state,env,"
                          "labels) VALUES(?1,?2,?3,'created',?4,?5)", q, 5, NULL, NULL);
            r = lookup(d, p->handle);
        }
        o.id = r.id;
        H->op_done(p->op, 0, &o, NULL);
        break;
    case K_START:
        if (!r.found) {
            H->op_done(p->op, BERTH_ENOENT, NULL, "testdrv: no such container");
            break;
        }
        if (d->cfg.fail_start) {
            H->op_done(p->op, BERTH_EIO, NULL, "testdrv: start refused (fail_start)");
            break;
        }
        set_state(d, p->handle, "running");
        snprintf(addr, sizeof addr, "127.0.0.1:%d", 40000 + (int)(strlen(p->handle) * 7));
        o.state = BERTH_OBS_RUNNING;
        o.address = addr;
        H->op_done(p->op, 0, &o, NULL);
        break;
    case K_STOP:
        if (r.found) set_state(d, p->handle, "stopped");
        o.exit_code = 0;
        H->op_done(p->op, 0, &o, NULL);
        break;
    case K_REMOVE: {
        const char *q[] = {p->handle};
        H->store_exec(d->self, "DELETE FROM testdrv_containers WHERE handle=?1", q, 1, NULL,
                      NULL);
        o.state = BERTH_OBS_ABSENT;
        H->op_done(p->op, 0, &o, NULL);
        break;
    }
    case K_LIST:
        H->store_exec(d->self, "SELECT handle,template,state,id FROM testdrv_containers", NULL,
                      0, list_row, p);
        H->op_done(p->op, 0, NULL, NULL);
        break;
    }
    free(p);
}

static void later(struct drv *d, enum kind k, const berth_spec *s, berth_op *op)
{
    struct pending *p = calloc(1, sizeof *p);
    p->d = d;
    p->op = op;
    p->k = k;
    if (s) {
        snprintf(p->handle, sizeof p->handle, "%s", H->spec_handle(s));
        snprintf(p->tmpl, sizeof p->tmpl, "%s", H->spec_template(s));
        size_t off = 0;
        for (size_t i = 0; i < H->spec_env_count(s) && off < sizeof p->env; i++) {
            const char *v;
            const char *n = H->spec_env(s, i, &v);
            off += (size_t)snprintf(p->env + off, sizeof p->env - off, "%s=%s;", n, v);
        }
        off = 0;
        for (size_t i = 0; i < H->spec_label_count(s) && off < sizeof p->labels; i++) {
            const char *v;
            const char *n = H->spec_label(s, i, &v);
            off += (size_t)snprintf(p->labels + off, sizeof p->labels - off, "%s=%s;", n, v);
        }
    }
    H->timer_start(d->self, (uint64_t)d->cfg.delay, 0, complete, p);
}

static void op_create(void *st, const berth_spec *s, berth_op *op) { later(st, K_CREATE, s, op); }
static void op_start(void *st, const berth_spec *s, berth_op *op) { later(st, K_START, s, op); }
static void op_stop(void *st, const berth_spec *s, berth_op *op) { later(st, K_STOP, s, op); }
static void op_remove(void *st, const berth_spec *s, berth_op *op) { later(st, K_REMOVE, s, op); }
static void op_list(void *st, berth_op *op) { later(st, K_LIST, NULL, op); }

static const struct berth_driver driver = {
    .size = sizeof driver, .name = "testdrv", .create = op_create, .start = op_start,
    .stop = op_stop, .remove = op_remove, .list = op_list,
};

/* POST /v1/testdrv/{handle}/crash: the pretend container dies behind berth's back */
static void crash(berth_req *r, void *arg)
{
    struct drv *d = arg;
    const char *h = H->req_param(r, "handle");
    struct row row = lookup(d, h);
    if (!row.found) {
        H->respond_error(r, 404, "not_found", "no container for %s", h);
        return;
    }
    set_state(d, h, "stopped");
    struct berth_observed o = {sizeof o, BERTH_OBS_STOPPED, row.id, NULL, 137, true, "killed"};
    H->driver_report(d->self, h, &o);
    /* ?gone=1: removed as well, reported twice as dockerd does for `docker rm -f` (die, then
     * destroy) */
    const char *gone = H->req_query(r, "gone");
    if (gone && !strcmp(gone, "1")) {
        const char *q[] = {h};
        H->store_exec(d->self, "DELETE FROM testdrv_containers WHERE handle=?1", q, 1, NULL,
                      NULL);
        struct berth_observed a = {sizeof a, BERTH_OBS_ABSENT, NULL, NULL, 137, true,
                                   "removed"};
        H->driver_report(d->self, h, &a);
    }
    H->respond(r, 200, "application/json", "{\"crashed\":true}\n", 17);
}

/* GET /v1/testdrv/{handle}: what the pretend container is, env and labels included */
static bool env_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    snprintf(arg, 1024, "{\"state\":\"%s\",\"env\":\"%s\",\"labels\":\"%s\"}\n", v[0],
             v[1] ? v[1] : "", v[2] ? v[2] : "");
    return false;
}

static void show(berth_req *r, void *arg)
{
    struct drv *d = arg;
    char out[1024] = "";
    const char *p[] = {H->req_param(r, "handle")};
    H->store_exec(d->self, "SELECT state,env,labels FROM testdrv_containers WHERE handle=?1", p, 1,
                  env_row, out);
    if (!out[0]) H->respond_error(r, 404, "not_found", "no container");
    else H->respond(r, 200, "application/json", out, strlen(out));
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    struct drv *d = calloc(1, sizeof *d);
    d->self = self;
    *state = d;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct drv *d = state;
    d->cfg = *(const struct cfg *)cfg;
    return 0;
}

static int start(void *state)
{
    struct drv *d = state;
    int rc = H->store_migrate(d->self, steps, 2);
    if (rc) return rc;
    H->route(d->self, "POST", "/v1/testdrv/{handle}/crash", crash, d);
    H->route(d->self, "GET", "/v1/testdrv/{handle}", show, d);
    return H->driver_register(d->self, &driver, d);
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "testdrv", .version = "1.0", .description = "driver for tests",
             .config = schema, .config_size = sizeof(struct cfg), .template_config = tschema,
             .template_config_size = sizeof(struct tcfg), .init = init,
             .configure = configure, .start = start, .destroy = destroy);
