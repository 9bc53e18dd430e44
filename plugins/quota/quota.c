/* quota: the LLM proxy (see README.md). This file: the descriptor and configuration,
 * per-tenant limits, and the control routes. Keys are in keys.c. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const struct berth_host *H;

#define UP(field, what)                                                                     \
    {"url", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct upstream, url),                      \
     "base URL of the " what " API (http or https)", 0, NULL, NULL},                       \
    {"key", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct upstream, key),                   \
     "the real " what " API key: {env: NAME} or {file: PATH}", 0, NULL, NULL},              \
    {"ca", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct upstream, ca),                        \
     "a CA file to verify the upstream with (default: the system's)", 0, NULL, NULL},       \
    {0}

static const struct berth_cfg_item up_anthropic[] = {UP(anthropic, "Anthropic")};
static const struct berth_cfg_item up_openai[] = {UP(openai, "OpenAI")};
static const struct berth_cfg_item up_schema[] = {
    {"anthropic", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct cfg, up.anthropic) -
     offsetof(struct cfg, up), "the Anthropic Messages upstream", 0, NULL, up_anthropic},
    {"openai", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct cfg, up.openai) -
     offsetof(struct cfg, up), "the OpenAI upstream", 0, NULL, up_openai},
    {0},
};

#define PRICE(k, d) {#k, BERTH_CFG_DOUBLE, d, 0, 1e6, offsetof(struct price, k),             \
                     "USD per million " #k " tokens", BERTH_CFG_RELOAD, NULL, NULL}
static const struct berth_cfg_item price_schema[] = {
    PRICE(input, "0"), PRICE(output, "0"), PRICE(cache_read, "0"), PRICE(cache_write, "0"),
    PRICE(cache_write_1h, "0"),
    BERTH_CFG_ELEM_END(struct price),
};
static const struct berth_cfg_item default_price_schema[] = {
    PRICE(input, "0"), PRICE(output, "0"), PRICE(cache_read, "0"), PRICE(cache_write, "0"),
    PRICE(cache_write_1h, "0"),
    {0},
};

static const struct berth_cfg_item schema[] = {
    {"listen", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, listen),
     "host:port where tenants reach the proxy", BERTH_CFG_REQUIRED, NULL, NULL},
    {"public_url", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, public_url),
     "the proxy's URL as tenants see it (default: http://<listen>)", 0, NULL, NULL},
    {"upstreams", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct cfg, up),
     "where calls go, with the real keys", 0, NULL, up_schema},
    {"prices", BERTH_CFG_STRUCT_MAP, NULL, 0, 0, offsetof(struct cfg, prices),
     "model -> {input, output, cache_read, cache_write, cache_write_1h} in USD per million"
     " tokens",
     BERTH_CFG_RELOAD, NULL, price_schema},
    {"default_price", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct cfg, default_price),
     "the price of a model not in `prices` (unset: such calls are refused)",
     BERTH_CFG_RELOAD, NULL, default_price_schema},
    {"max_output_tokens", BERTH_CFG_INT, "4096", 1, 10000000,
     offsetof(struct cfg, max_output_tokens),
     "the output bound (and the limit set upstream) for a call that names none",
     BERTH_CFG_RELOAD, NULL, NULL},
    {"max_connections", BERTH_CFG_SIZE, "4096", 0, 0, offsetof(struct cfg, max_connections),
     "connections the listener accepts at once", 0, NULL, NULL},
    {"max_connections_per_tenant", BERTH_CFG_INT, "64", 0, 1000000,
     offsetof(struct cfg, max_conns_per_tenant),
     "connections one tenant's key may hold open at once (0: no cap); the next is refused"
     " with 429 and closed", BERTH_CFG_RELOAD, NULL, NULL},
    {"max_body", BERTH_CFG_SIZE, "32m", 0, 0, offsetof(struct cfg, max_body),
     "largest request body (413 above)", 0, NULL, NULL},
    {"timeout", BERTH_CFG_DURATION, "10m", 0, 0, offsetof(struct cfg, timeout_ms),
     "longest upstream call", BERTH_CFG_RELOAD, NULL, NULL},
    {0},
};

static const struct berth_cfg_item tschema[] = {
    {"budget", BERTH_CFG_DOUBLE, "5", 0, 1e9, offsetof(struct blk, budget),
     "USD a tenant may spend (PUT /v1/tenants/{handle}/budget overrides it)", 0, NULL, NULL},
    {"concurrency", BERTH_CFG_INT, "5", 1, 100000, offsetof(struct blk, concurrency),
     "calls in flight per tenant", 0, NULL, NULL},
    {"requests_per_minute", BERTH_CFG_INT, "60", 1, 10000000, offsetof(struct blk, rpm),
     "calls started per minute per tenant", 0, NULL, NULL},
    {"inject_budget", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct blk, inject_budget),
     "add \"Budget: $X.XX remaining\" to each Anthropic call's system prompt", 0, NULL, NULL},
    {"period", BERTH_CFG_STR, "none", 0, 0, offsetof(struct blk, period),
     "none: the budget is for the tenant's lifetime; monthly: per calendar month (UTC)", 0,
     "none|monthly", NULL},
    {0},
};

/* ---- per-tenant limits ---- */

const struct blk *quota_block(struct quota *q, const char *handle)
{
    struct berth_tenant_info ti = {.size = sizeof ti};
    if (H->tenant_get(q->self, handle, &ti)) return NULL;
    return H->template_config(q->self, ti.template_name);
}

int64_t quota_budget(struct quota *q, const char *handle)
{
    int64_t o = ledger_budget_override(q, handle);
    if (o >= 0) return o;
    const struct blk *b = quota_block(q, handle);
    return b ? (int64_t)(b->budget * 1e6 + 0.5) : 0;
}

void quota_budget_line(struct quota *q, const char *handle, char *out, size_t n)
{
    int64_t spent = 0, reserved = 0;
    ledger_spent(q, handle, quota_monthly(q, handle), &spent, &reserved);
    int64_t left = quota_budget(q, handle) - spent - reserved;
    if (left < 0) left = 0;
    snprintf(out, n, "Budget: $%.2f remaining", (double)(left / 10000) / 100.0);
}

bool quota_monthly(struct quota *q, const char *handle)
{
    const struct blk *b = quota_block(q, handle);
    return b && b->period && !strcmp(b->period, "monthly");
}

struct tstate *quota_tstate(struct quota *q, const char *handle)
{
    for (struct tstate *t = q->ts; t; t = t->next)
        if (!strcmp(t->handle, handle)) return t;
    struct tstate *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    snprintf(t->handle, sizeof t->handle, "%s", handle);
    t->tokens = -1;
    t->next = q->ts;
    q->ts = t;
    return t;
}

int64_t quota_rate_take(struct quota *q, struct tstate *t, const struct blk *b)
{
    int64_t now = H->now_ms(q->self);
    double cap = (double)b->rpm, per_ms = cap / 60000.0;
    if (t->tokens < 0) t->tokens = cap;
    else t->tokens += (double)(now - t->refill_ms) * per_ms;
    if (t->tokens > cap) t->tokens = cap;
    t->refill_ms = now;
    if (t->tokens >= 1) {
        t->tokens -= 1;
        return 0;
    }
    int64_t wait_s = (int64_t)((1 - t->tokens) / per_ms / 1000) + 1;
    return wait_s;
}

void quota_event(struct quota *q, uint32_t type, const char *handle, const char *json)
{
    struct berth_ev_custom ev = {sizeof ev, json};
    if (type) H->publish(q->self, type, handle, &ev);
}

/* ---- control routes ---- */

static void usage_route(berth_req *r, void *arg)
{
    struct quota *q = arg;
    const char *h = H->req_param(r, "handle");
    struct berth_tenant_info ti = {.size = sizeof ti};
    if (H->tenant_get(q->self, h, &ti) && ledger_budget_override(q, h) < 0) {
        int64_t s, rs;
        ledger_spent(q, h, false, &s, &rs);
        if (!s && !rs) {
            H->respond_error(r, 404, "not_found", "no tenant %s", h);
            return;
        }
    }
    proxy_usage(q, r, h);
}

static void usage_all(berth_req *r, void *arg)
{
    struct quota *q = arg;
    cJSON *arr = cJSON_CreateArray();
    char **handles = NULL;
    size_t n = 0;
    for (struct key *k = q->keys; k; k = k->next) {
        char **p = realloc(handles, (n + 1) * sizeof *p);
        if (!p) break;
        handles = p;
        handles[n++] = k->handle;
    }
    for (size_t i = 0; i < n; i++) {
        char *j = ledger_usage_json(q, handles[i], quota_budget(q, handles[i]),
                                    quota_monthly(q, handles[i]));
        cJSON *o = j ? cJSON_Parse(j) : NULL;
        if (o) cJSON_AddItemToArray(arr, o);
        free(j);
    }
    free(handles);
    char *out = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    H->respond(r, 200, "application/json", out, strlen(out));
    free(out);
}

static void budget_route(berth_req *r, void *arg)
{
    struct quota *q = arg;
    const char *h = H->req_param(r, "handle");
    size_t len;
    const char *body = H->req_body(r, &len);
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "budget");
    struct berth_tenant_info ti = {.size = sizeof ti};
    if (H->tenant_get(q->self, h, &ti)) {
        H->respond_error(r, 404, "not_found", "no tenant %s", h);
    } else if (!cJSON_IsNumber(b) && !cJSON_IsNull(b)) {
        H->respond_error(r, 400, "bad_request", "expected {\"budget\": USD} or null");
    } else if (cJSON_IsNumber(b) && (b->valuedouble < 0 || b->valuedouble > 1e9)) {
        H->respond_error(r, 400, "bad_request", "budget out of range (0 to 1e9 USD)");
    } else {
        int64_t micro = cJSON_IsNull(b) ? -1 : (int64_t)(b->valuedouble * 1e6 + 0.5);
        int rc = ledger_set_budget(q, h, micro);
        if (rc) H->respond_error(r, 500, "store", "%s", berth_strerror(rc));
        else proxy_usage(q, r, h);
    }
    cJSON_Delete(j);
}

static void rotate_route(berth_req *r, void *arg)
{
    struct quota *q = arg;
    const char *h = H->req_param(r, "handle");
    struct berth_tenant_info ti = {.size = sizeof ti};
    int rc = H->tenant_get(q->self, h, &ti);
    if (!rc) rc = keys_rotate(q, h);
    if (!rc) rc = H->tenant_reprovision(q->self, h);
    if (rc == BERTH_ENOENT) H->respond_error(r, 404, "not_found", "no such tenant");
    else if (rc) H->respond_error(r, 409, "conflict", "%s", berth_strerror(rc));
    else H->respond(r, 202, "application/json", "{\"rotating\":true}\n", 18);
}

/* ---- lifecycle ---- */

static int validate(const void *cfg, char *err, size_t errlen)
{
    const struct cfg *c = cfg;
    const struct upstream *u[] = {&c->up.anthropic, &c->up.openai};
    for (size_t i = 0; i < 2; i++)
        if (u[i]->url && strncmp(u[i]->url, "http://", 7) && strncmp(u[i]->url, "https://", 8)) {
            snprintf(err, errlen, "upstream url %s: not http(s)", u[i]->url);
            return BERTH_EINVAL;
        }
    return 0;
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (host->abi_major != BERTH_ABI_MAJOR || !BERTH_HOST_HAS(host, req_conn_claim))
        return BERTH_ENOTSUP;
    H = host;
    struct quota *q = calloc(1, sizeof *q);
    if (!q) return BERTH_ENOMEM;
    q->self = self;
    q->reserves_tail = &q->reserves;
    *state = q;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    ((struct quota *)state)->cfg = *(const struct cfg *)cfg;
    return 0;
}

static void metrics(struct quota *q)
{
    static const char *const api[] = {"api", "outcome", NULL};
    static const char *const api_only[] = {"api", NULL};
    static const char *const reason[] = {"reason", NULL};
    static const char *const model[] = {"model", NULL};
    static const char *const kind[] = {"model", "kind", NULL};
    q->m_calls = H->metric_register(q->self, "calls_total", BERTH_METRIC_COUNTER,
                                    "Calls forwarded, by API and outcome.", api);
    q->m_refused = H->metric_register(q->self, "refused_total", BERTH_METRIC_COUNTER,
                                      "Calls refused before forwarding, by reason.", reason);
    q->m_spend = H->metric_register(q->self, "spend_microdollars_total", BERTH_METRIC_COUNTER,
                                    "Micro-dollars billed, by model.", model);
    q->m_tokens = H->metric_register(q->self, "tokens_total", BERTH_METRIC_COUNTER,
                                     "Tokens billed, by model and kind.", kind);
    q->m_inflight = H->metric_register(q->self, "inflight", BERTH_METRIC_GAUGE,
                                       "Calls in flight.", NULL);
    q->m_overrun = H->metric_register(q->self, "over_reservation_total", BERTH_METRIC_COUNTER,
                                      "Calls billed above their reservation, by API.", api_only);
}

static int start(void *state)
{
    struct quota *q = state;
    int rc = ledger_migrate(q);
    if (!rc) rc = ledger_recover(q);
    if (!rc) rc = keys_load(q);
    if (rc) return rc;
    q->ev_call = H->event_register(q->self, "quota.call");
    q->ev_refused = H->event_register(q->self, "quota.refused");
    q->ev_key = H->event_register(q->self, "quota.key");
    metrics(q);
    if ((rc = H->provisioner_register(q->self, &quota_provisioner, q))) return rc;
    if ((rc = H->route(q->self, "GET", "/v1/tenants/{handle}/usage", usage_route, q)) ||
        (rc = H->route(q->self, "PUT", "/v1/tenants/{handle}/budget", budget_route, q)) ||
        (rc = H->route(q->self, "POST", "/v1/tenants/{handle}/key/rotate", rotate_route, q)) ||
        (rc = H->route(q->self, "GET", "/v1/quota/usage", usage_all, q)))
        return rc;
    return proxy_start(q);
}

/* Draining waits for the calls in flight (each reports drained when the last one ends); a
 * drain that outlasts berth.drain_timeout is cut short by the host, and destroy() bills
 * what it cuts. */
static void stop(void *state)
{
    struct quota *q = state;
    q->stopping = true;
    quota_idle(q);
}

void quota_idle(struct quota *q)
{
    if (q->stopping && !q->destroying && !q->drained_sent && !q->calls && !q->settles &&
        !q->reserves) {
        q->drained_sent = true;
        H->drained(q->self);
    }
}

static void destroy(void *state)
{
    struct quota *q = state;
    q->destroying = true;
    ledger_flush(q);        /* calls waiting for a reservation: freed, nothing forwarded */
    proxy_cancel_all(q);
    ledger_flush(q);        /* their settlements */
    ledger_drop(q);
    keys_free(q);
    while (q->ts) {
        struct tstate *t = q->ts;
        q->ts = t->next;
        free(t);
    }
    free(q);
}

BERTH_PLUGIN(.name = "quota", .version = "1.0",
             .description = "LLM proxy: per-tenant keys, metering, budgets and limits",
             .config = schema, .config_size = sizeof(struct cfg), .template_config = tschema,
             .template_config_size = sizeof(struct blk), .validate = validate, .init = init,
             .configure = configure, .start = start, .stop = stop, .destroy = destroy);
