/* rogue: a plugin for tests that tries what the host's ownership rules refuse: publishing the
 * core's events and another plugin's, registering another plugin's event name, and routes
 * that would shadow the core's. GET /v1/rogue/results shows what each attempt returned. */
#include <berth/berth.h>
#include <berth/events.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct berth_host *H;

struct rogue {
    berth_instance *self;
    char results[2048];
    size_t len;
};

static void noop(berth_req *r, void *arg)
{
    (void)arg;
    H->respond(r, 200, "application/json", "{\"rogue\":true}\n", 15);
}

static void results(berth_req *r, void *arg)
{
    struct rogue *g = arg;
    char body[2100];
    int n = snprintf(body, sizeof body, "{%s}\n", g->results);
    H->respond(r, 200, "application/json", body, (size_t)n);
}

static void note(struct rogue *g, const char *what, long rc)
{
    g->len += (size_t)snprintf(g->results + g->len, sizeof g->results - g->len, "%s\"%s\":%ld",
                               g->len ? "," : "", what, rc);
}

static void try_events(struct rogue *g)
{
    struct berth_ev_tenant_deleted del = {sizeof del};
    note(g, "publish tenant.deleted", H->publish(g->self, BERTH_EV_TENANT_DELETED, NULL, &del));
    struct berth_ev_plugin_loaded pl = {sizeof pl, "fake", "fake", "1"};
    note(g, "publish plugin.loaded", H->publish(g->self, BERTH_EV_PLUGIN_LOADED, NULL, &pl));
    struct berth_ev_custom c = {sizeof c, "{\"from\":\"rogue\"}"};
    uint32_t echo = H->event_lookup(g->self, "echo.pinged");
    note(g, "lookup echo.pinged", echo != 0);
    note(g, "publish echo.pinged", H->publish(g->self, echo, NULL, &c));
    note(g, "register echo.pinged", (long)H->event_register(g->self, "echo.pinged"));
    note(g, "register tenant.created", (long)H->event_register(g->self, "tenant.created"));
    uint32_t own = H->event_register(g->self, "rogue.did");
    note(g, "register rogue.did", own != 0);
    note(g, "publish rogue.did", H->publish(g->self, own, NULL, &c));
}

static void try_routes(struct rogue *g)
{
    static const char *const r[][2] = {
        {"GET", "/v1/tenants/{handle}"}, {"DELETE", "/v1/tenants/{name}"},
        {"POST", "/v1/tenants/{handle}/wake"}, {"POST", "/v1/tenants/{h}/{verb}"},
        {"HEAD", "/health"}, {"GET", "/v1/*"}, {"POST", "/v1/tenants"}, {"GET", "/metrics"},
        {"POST", "/v1/tenants/{handle}/quota"}, {"GET", "/v1/tenants/{handle}/quota"},
        {"PUT", "/v1/tenants/{handle}"}, {"GET", "/v1/rogue/results"},
    };
    for (size_t i = 0; i < sizeof r / sizeof *r; i++) {
        char what[96];
        snprintf(what, sizeof what, "route %s %s", r[i][0], r[i][1]);
        note(g, what, H->route(g->self, r[i][0], r[i][1],
                               strstr(r[i][1], "results") ? results : noop, g));
    }
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR) return BERTH_ENOTSUP;
    H = host;
    struct rogue *g = calloc(1, sizeof *g);
    g->self = self;
    *state = g;
    return 0;
}

static int start(void *state)
{
    struct rogue *g = state;
    try_events(g);
    try_routes(g);
    return 0;
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "rogue", .version = "1.0", .description = "breaks ownership rules in tests",
             .init = init, .start = start, .destroy = destroy);
