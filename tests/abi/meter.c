/* meter: a plugin for tests that registers metrics and changes them on request:
 *   POST /v1/<instance>/{metric}?op=add|set&v=N&l1=...&l2=...   answers {"rc":N}
 * metrics: hits_total (counter, labels path and code), level (gauge, no labels),
 * and the refused registrations' results at GET /v1/<instance>/registered. */
#include <berth/berth.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct berth_host *H;

struct meter {
    berth_instance *self;
    berth_metric *hits, *level;
    char reg[512];
};

static void change(berth_req *r, void *arg)
{
    struct meter *m = arg;
    const char *name = H->req_param(r, "metric"), *op = H->req_query(r, "op");
    const char *v = H->req_query(r, "v");
    berth_metric *x = !strcmp(name, "hits_total") ? m->hits : !strcmp(name, "level") ? m->level
                      : NULL;
    const char *labels[] = {H->req_query(r, "l1"), H->req_query(r, "l2"), NULL};
    double d = v ? strtod(v, NULL) : 1;
    int rc = op && !strcmp(op, "set") ? H->metric_set(x, labels, d) : H->metric_add(x, labels, d);
    char body[64];
    int n = snprintf(body, sizeof body, "{\"rc\":%d}\n", rc);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

static void registered(berth_req *r, void *arg)
{
    struct meter *m = arg;
    char body[600];
    int n = snprintf(body, sizeof body, "{%s}\n", m->reg);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

static void try_register(struct meter *m, const char *what, const char *name,
                         enum berth_metric_kind kind, const char *const *labels)
{
    size_t len = strlen(m->reg);
    const char *help = strcmp(what, "bad_help") ? "refused" : "not \xff UTF-8";
    snprintf(m->reg + len, sizeof m->reg - len, "%s\"%s\":%s", len ? "," : "", what,
             H->metric_register(m->self, name, kind, help, labels) ? "true" : "false");
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR || !BERTH_HOST_HAS(host, metric_set))
        return BERTH_ENOTSUP;
    H = host;
    struct meter *m = calloc(1, sizeof *m);
    m->self = self;
    *state = m;
    return 0;
}

static int start(void *state)
{
    struct meter *m = state;
    static const char *const labels[] = {"path", "code", NULL};
    m->hits = H->metric_register(m->self, "hits_total", BERTH_METRIC_COUNTER,
                                 "Hits by path and code.\nSecond line with a \\.", labels);
    m->level = H->metric_register(m->self, "level", BERTH_METRIC_GAUGE, "A level.", NULL);
    if (!m->hits || !m->level) return BERTH_EINVAL;
    static const char *const bad_label[] = {"Bad-Label", NULL};
    static const char *const dup_label[] = {"a", "a", NULL};
    try_register(m, "upper", "Hits", BERTH_METRIC_COUNTER, NULL);
    try_register(m, "dash", "a-b", BERTH_METRIC_GAUGE, NULL);
    try_register(m, "digit", "1x", BERTH_METRIC_GAUGE, NULL);
    try_register(m, "again", "level", BERTH_METRIC_GAUGE, NULL);
    try_register(m, "bad_label", "x", BERTH_METRIC_GAUGE, bad_label);
    try_register(m, "dup_label", "y", BERTH_METRIC_GAUGE, dup_label);
    try_register(m, "kind", "z", (enum berth_metric_kind)7, NULL);
    try_register(m, "bad_help", "w", BERTH_METRIC_GAUGE, NULL);
    char path[128];
    snprintf(path, sizeof path, "/v1/%s/{metric}", H->name(m->self));
    H->route(m->self, "POST", path, change, m);
    snprintf(path, sizeof path, "/v1/%s/registered", H->name(m->self));
    H->route(m->self, "GET", path, registered, m);
    return 0;
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "meter", .version = "1.0", .description = "plugin metrics in tests",
             .init = init, .start = start, .destroy = destroy);
