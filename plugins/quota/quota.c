/* quota: the LLM proxy (see README.md). This file: the descriptor and configuration, the
 * provisioner that gives each tenant its key, per-tenant limits, and the control routes.
 *
 * Keys: 32 bytes from getrandom, shown once to the provisioner's op (the core keeps the
 * environment it returned) and kept here only as their SHA-256. Every provision mints a new
 * key, so a re-run of provision() (reprovision, `berthctl tenant key rotate`) is a rotation
 * and the old key stops working at once. Deprovision deletes the key; the ledger stays. */
#include "quota.h"

#include <cjson/cJSON.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

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
    BERTH_CFG_ELEM_END(struct price),
};
static const struct berth_cfg_item default_price_schema[] = {
    PRICE(input, "0"), PRICE(output, "0"), PRICE(cache_read, "0"), PRICE(cache_write, "0"),
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
     "model -> {input, output, cache_read, cache_write} in USD per million tokens",
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
    {0},
};

/* ---- keys ---- */

static void sha256(const char *s, unsigned char out[QUOTA_HASH_LEN])
{
    SHA256((const unsigned char *)s, strlen(s), out);
}

const char *quota_key_owner(struct quota *q, const char *key)
{
    unsigned char h[QUOTA_HASH_LEN];
    const char *found = NULL;
    if (!key || strncmp(key, "sk-berth-", 9)) return NULL;
    sha256(key, h);
    for (struct key *k = q->keys; k; k = k->next)
        if (!CRYPTO_memcmp(k->hash, h, sizeof h)) found = k->handle;
    return found;
}

static void key_drop(struct quota *q, const char *handle)
{
    for (struct key **pp = &q->keys; *pp;) {
        struct key *k = *pp;
        if (strcmp(k->handle, handle)) {
            pp = &k->next;
            continue;
        }
        *pp = k->next;
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
}

static int key_add(struct quota *q, const char *handle, const void *hash)
{
    struct key *k = calloc(1, sizeof *k);
    if (!k) return BERTH_ENOMEM;
    memcpy(k->hash, hash, QUOTA_HASH_LEN);
    snprintf(k->handle, sizeof k->handle, "%s", handle);
    k->next = q->keys;
    q->keys = k;
    return 0;
}

static bool key_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    if (n == 2 && v[0].type == BERTH_VAL_TEXT && v[1].type == BERTH_VAL_BLOB &&
        v[1].len == QUOTA_HASH_LEN && v[0].len <= BERTH_HANDLE_MAX) {
        char h[BERTH_HANDLE_MAX + 1];
        snprintf(h, sizeof h, "%.*s", (int)v[0].len, (const char *)v[0].p);
        key_add(arg, h, v[1].p);
    }
    return true;
}

static char *base_url(struct quota *q)
{
    char *u = malloc(strlen(q->cfg.listen) + 16);
    if (u) sprintf(u, "http://%s", q->cfg.listen);
    return u;
}

static void provision(void *state, const berth_spec *spec, berth_op *op)
{
    struct quota *q = state;
    const char *handle = H->spec_handle(spec);
    unsigned char raw[32], hash[QUOTA_HASH_LEN];
    char key[9 + 2 * sizeof raw + 1];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) {
        H->op_done(op, BERTH_EAGAIN, NULL, "quota: getrandom failed");
        return;
    }
    strcpy(key, "sk-berth-");
    for (size_t i = 0; i < sizeof raw; i++) sprintf(key + 9 + 2 * i, "%02x", raw[i]);
    sha256(key, hash);
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_BLOB(hash, sizeof hash),
                              BERTH_INT(H->now_ms(q->self))};
    int rc = H->store_query(q->self, "INSERT INTO quota_keys(tenant, hash, created_ms) "
                            "VALUES(?1, ?2, ?3) ON CONFLICT(tenant) DO UPDATE SET hash = ?2,"
                            " created_ms = ?3", p, 3, NULL, NULL);
    if (!rc) {
        key_drop(q, handle);
        rc = key_add(q, handle, hash);
    }
    if (rc) {
        OPENSSL_cleanse(key, sizeof key);
        H->op_done(op, rc, NULL, "quota: cannot store the tenant's key");
        return;
    }
    char *def = q->cfg.public_url ? NULL : base_url(q);
    const char *url = q->cfg.public_url ? q->cfg.public_url : def;
    char oai[1024];
    snprintf(oai, sizeof oai, "%s/v1", url ? url : "");
    H->op_setenv(op, "ANTHROPIC_BASE_URL", url ? url : "");
    H->op_setenv(op, "ANTHROPIC_API_KEY", key);
    H->op_setenv(op, "OPENAI_BASE_URL", oai);
    H->op_setenv(op, "OPENAI_API_KEY", key);
    free(def);
    OPENSSL_cleanse(key, sizeof key);
    OPENSSL_cleanse(raw, sizeof raw);
    quota_event(q, q->ev_key, handle, "{\"action\":\"issued\"}");
    H->op_done(op, 0, NULL, NULL);
}

static void deprovision(void *state, const berth_spec *spec, berth_op *op)
{
    struct quota *q = state;
    const char *handle = H->spec_handle(spec);
    struct berth_value p[] = {BERTH_TEXT(handle)};
    int rc = H->store_query(q->self, "DELETE FROM quota_keys WHERE tenant = ?1", p, 1, NULL,
                            NULL);
    key_drop(q, handle);
    if (!rc) quota_event(q, q->ev_key, handle, "{\"action\":\"revoked\"}");
    H->op_done(op, rc, NULL, rc ? "quota: cannot revoke the key" : NULL);
}

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
        ledger_spent(q, h, &s, &rs);
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
        char *j = ledger_usage_json(q, handles[i], quota_budget(q, handles[i]));
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
    int rc = H->tenant_reprovision(q->self, H->req_param(r, "handle"));
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
    if (host->abi_major != BERTH_ABI_MAJOR || !BERTH_HOST_HAS(host, metric_set))
        return BERTH_ENOTSUP;
    H = host;
    struct quota *q = calloc(1, sizeof *q);
    if (!q) return BERTH_ENOMEM;
    q->self = self;
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
}

static int start(void *state)
{
    struct quota *q = state;
    static const struct berth_provisioner prov = {sizeof prov, 100, provision, deprovision};
    int rc = ledger_migrate(q);
    if (!rc) rc = ledger_recover(q);
    if (!rc) rc = H->store_query(q->self, "SELECT tenant, hash FROM quota_keys", NULL, 0,
                                 key_row, q);
    if (rc) return rc;
    q->ev_call = H->event_register(q->self, "quota.call");
    q->ev_refused = H->event_register(q->self, "quota.refused");
    q->ev_key = H->event_register(q->self, "quota.key");
    metrics(q);
    if ((rc = H->provisioner_register(q->self, &prov, q))) return rc;
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
    if (!q->calls) {
        q->drained_sent = true;
        H->drained(q->self);
    }
}

static void destroy(void *state)
{
    struct quota *q = state;
    proxy_cancel_all(q);
    while (q->keys) {
        struct key *k = q->keys;
        q->keys = k->next;
        OPENSSL_cleanse(k, sizeof *k);
        free(k);
    }
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
