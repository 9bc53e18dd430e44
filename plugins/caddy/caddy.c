/* caddy: every tenant at <handle>.<domain> through Caddy.
 *
 * A provisioner (order 900, after keys and accounts) gives each tenant whose template has a
 * `caddy:` block a route in Caddy, written through Caddy's admin API (routes.c), and takes
 * it away before the tenant is gone. The tenant's events move the route between the tenant's
 * address (while ready) and berth's own listener (waking.c), which wakes a sleeping tenant,
 * answers unknown handles with a 404 page and approves on-demand TLS certificates (`ask`). */
#include "caddy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct berth_host *H;

static const struct berth_cfg_item waking_schema[] = {
    {"mode", BERTH_CFG_STR, "page", 0, 0, offsetof(struct caddy_waking, mode),
     "page: a \"waking up\" page that refreshes itself; hold: keep the request until the tenant "
     "is ready, then redirect to the same URL", 0, "page|hold", NULL},
    {"hold", BERTH_CFG_DURATION, "30s", 100, 600000, offsetof(struct caddy_waking, hold),
     "how long a held request waits before it gets the waking page", 0, NULL, NULL},
    {0},
};

static const struct berth_cfg_item schema[] = {
    {"admin", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct caddy_cfg, admin),
     "Caddy's admin API: unix:/run/caddy/admin.sock or http://127.0.0.1:2019",
     BERTH_CFG_REQUIRED, NULL, NULL},
    {"server", BERTH_CFG_STR, "srv0", 0, 0, offsetof(struct caddy_cfg, server),
     "the Caddy HTTP server (apps.http.servers.<name>) that gets the routes", 0, NULL, NULL},
    {"domain", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct caddy_cfg, domain),
     "tenants are served at <handle>.<domain>", BERTH_CFG_REQUIRED, NULL, NULL},
    {"listen", BERTH_CFG_STR, "127.0.0.1:7801", 0, 0, offsetof(struct caddy_cfg, listen),
     "berth's endpoint for Caddy (host:port or unix:PATH): the waking path and ask", 0, NULL,
     NULL},
    {"upstream", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct caddy_cfg, upstream),
     "how Caddy dials berth's listener when it differs from listen (host:port)", 0, NULL, NULL},
    {"id", BERTH_CFG_STR, "berth", 0, 0, offsetof(struct caddy_cfg, id),
     "the @id of berth's route in Caddy; tenants' routes are <id>-<handle>", 0, NULL, NULL},
    {"batch", BERTH_CFG_DURATION, "100ms", 0, 60000, offsetof(struct caddy_cfg, batch),
     "changes within this window go to Caddy in one config load", 0, NULL, NULL},
    {"check", BERTH_CFG_DURATION, "2s", 100, 3600000, offsetof(struct caddy_cfg, check),
     "how often berth checks that Caddy still holds its routes", 0, NULL, NULL},
    {"timeout", BERTH_CFG_DURATION, "10s", 100, 600000, offsetof(struct caddy_cfg, timeout),
     "limit of one call to the admin API", 0, NULL, NULL},
    {"waking", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct caddy_cfg, waking),
     "what a request for a sleeping tenant gets", 0, NULL, waking_schema},
    {"access_log", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct caddy_cfg, access_log),
     "IPv4 host:port where berth takes Caddy's access log (its `net` writer) as activity; "
     "unset: no activity from Caddy", 0, NULL, NULL},
    {"activity_interval", BERTH_CFG_DURATION, "1s", 100, 600000,
     offsetof(struct caddy_cfg, activity_interval),
     "how often berth polls Caddy's open requests per upstream; tenants seen there or in the "
     "access log get one tenant.activity per interval", 0, NULL, NULL},
    {"extra_hosts", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct caddy_cfg, extra_hosts),
     "hostnames besides tenants' that ask approves for on-demand TLS", 0, NULL, NULL},
    {"server_listen", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct caddy_cfg, server_listen),
     "listen addresses of the server berth creates when Caddy has none (e.g. [\":8080\"]); "
     "unset: berth never creates it", 0, NULL, NULL},
    {"required", BERTH_CFG_BOOL, "true", 0, 0, offsetof(struct caddy_cfg, required),
     "berthd's /health answers 503 while Caddy's admin API fails (false: only listed)", 0,
     NULL, NULL},
    {0},
};

static const struct berth_cfg_item tschema[] = {
    {"domain", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct caddy_blk, domain),
     "this template's tenants are at <handle>.<domain> (default: the plugin's domain)", 0,
     NULL, NULL},
    {0},
};

static void provision(void *st, const berth_spec *s, berth_op *op)
{
    struct caddy *c = st;
    const struct caddy_blk *b = H->spec_config(s);
    const char *domain = b && b->domain && *b->domain ? b->domain : c->cfg.domain;
    const char *handle = H->spec_handle(s);
    char host[CADDY_HOST_MAX];
    if ((size_t)snprintf(host, sizeof host, "%s.%s", handle, domain) >= sizeof host) {
        H->op_done(op, BERTH_EINVAL, NULL, "caddy: the tenant's hostname is too long");
        return;
    }
    const char *tmpl = H->spec_template(s);
    int rc = tmpl ? domain_seen(c, tmpl, domain) : 0;
    if (!rc) rc = route_add(c, handle, host);
    if (rc) {
        H->op_done(op, rc, NULL, "caddy: the route could not be stored");
        return;
    }
    op_wait_add(c, op);     /* done once Caddy holds it */
}

static void deprovision(void *st, const berth_spec *s, berth_op *op)
{
    struct caddy *c = st;
    route_remove(c, H->spec_handle(s));
    op_wait_add(c, op);     /* done once Caddy no longer holds it */
}

static void on_tenant(const struct berth_event *ev, void *arg)
{
    struct caddy *c = arg;
    if (!ev->tenant || !route_find(c, ev->tenant)) return;
    if (ev->type == BERTH_EV_TENANT_DELETED) route_remove(c, ev->tenant);  /* rm --force */
    else route_refresh(c, ev->tenant);
}

/* a template may have gained, changed or lost its own domain */
static void on_reload(const struct berth_event *ev, void *arg)
{
    (void)ev;
    domains_recheck(arg);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR || !BERTH_HOST_HAS(host, metric_set))
        return BERTH_ENOTSUP;
    H = host;
    struct caddy *c = calloc(1, sizeof *c);
    if (!c) return BERTH_ENOMEM;
    c->self = self;
    c->act_fd = -1;
    *state = c;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    ((struct caddy *)state)->cfg = *(const struct caddy_cfg *)cfg;
    return 0;
}

static int validate(const void *cfg, char *err, size_t errlen)
{
    const struct caddy_cfg *c = cfg;
    if (strncmp(c->admin, "unix:/", 6) && strncmp(c->admin, "http://", 7)) {
        snprintf(err, errlen, "admin must be unix:/PATH or http://HOST:PORT, not '%s'",
                 c->admin);
        return BERTH_EINVAL;
    }
    if (!*c->domain || strchr(c->domain, '/') || strchr(c->domain, ' ')) {
        snprintf(err, errlen, "domain '%s' is not a DNS name", c->domain);
        return BERTH_EINVAL;
    }
    return 0;
}

static int start(void *state)
{
    struct caddy *c = state;
    int rc = routes_load(c);
    if (rc) return rc;
    c->m_loads = H->metric_register(c->self, "config_loads_total", BERTH_METRIC_COUNTER,
                                    "config loads berth caused in Caddy", NULL);
    c->m_fail = H->metric_register(c->self, "admin_failures_total", BERTH_METRIC_COUNTER,
                                   "failed calls to Caddy's admin API", NULL);
    static const uint32_t types[] = {BERTH_EV_TENANT_READY, BERTH_EV_TENANT_CHANGED,
                                     BERTH_EV_TENANT_SLEEP_REQUESTED, BERTH_EV_TENANT_DELETED};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (!(c->subs[i] = H->subscribe(c->self, types[i], on_tenant, c))) return BERTH_ENOMEM;
    if (!(c->subs[4] = H->subscribe(c->self, BERTH_EV_CONFIG_RELOADED, on_reload, c)))
        return BERTH_ENOMEM;
    if ((rc = waking_start(c)) || (rc = activity_start(c))) return rc;
    char path[160];
    snprintf(path, sizeof path, "/v1/%s/routes", H->name(c->self));
    if ((rc = H->route(c->self, "GET", path, routes_list, c))) return rc;
    c->prov = (struct berth_provisioner){.size = sizeof c->prov, .order = 900,
                                         .provision = provision, .deprovision = deprovision};
    if ((rc = H->provisioner_register(c->self, &c->prov, c))) return rc;
    routes_start(c);
    return 0;
}

static void stop(void *state)
{
    struct caddy *c = state;
    waking_stop(c);
    activity_stop(c);
    routes_list_stop(c);
    routes_stop(c);
    H->drained(c->self);
}

static void destroy(void *state)
{
    struct caddy *c = state;
    if (!c->stopping) {
        waking_stop(c);
        activity_stop(c);
        routes_list_stop(c);
        routes_stop(c);
    }
    waking_free(c);
    free(c);
}

BERTH_PLUGIN(.name = "caddy", .version = "1.0",
             .description = "routes every tenant through Caddy, wakes sleeping ones",
             .config = schema, .config_size = sizeof(struct caddy_cfg),
             .template_config = tschema, .template_config_size = sizeof(struct caddy_blk),
             .validate = validate, .init = init, .configure = configure, .start = start,
             .stop = stop, .destroy = destroy);
