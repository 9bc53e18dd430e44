/* The proxy's listener: each request is authorized by its key at header time, limited,
 * reserved against the budget, forwarded with the real key, relayed back event by event
 * with back-pressure, metered from the upstream's usage fields and settled.
 *
 * A call's slot, busy hold and reservation are taken together in serve() and given back
 * together in finish(), which every path reaches exactly once: the upstream's end or
 * failure (done), the client going away (gone), or the instance unloading (destroy). */
#include "quota.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIGH_WATER (256u << 10)     /* bytes queued for a slow client before the upstream waits */
#define BODY_MAX (8u << 20)         /* a whole (not streamed) answer kept for its usage */
#define WHOLE_MAX (256u << 10)      /* a smaller whole answer is relayed in one write */

struct call {
    struct call *next, **pprev;
    struct quota *q;
    berth_req *r;
    berth_call *up;
    enum api api;
    char handle[BERTH_HANDLE_MAX + 1];
    char model[128];
    char *url, *body, *auth, *ca;
    struct reservation res;     /* queued in the ledger while `reserving` */
    size_t body_len;
    struct berth_header *hdr;
    int64_t id, reserved, in_bound, out_bound;
    struct price price;
    struct usage u;
    struct sse sse;
    struct hide hide;           /* used when the proxy asked for the usage chunk */
    char *acc;                  /* a whole answer's body, for its usage */
    size_t acc_len;
    struct berth_header *uphdr; /* while `held`: the upstream's headers, one allocation */
    int status;
    bool head_seen, sse_mode, paused, gone, in_cb, reserving, hide_usage, hour_cache;
    bool held;                  /* a small whole answer, kept to be relayed at its end */
    bool streamed;              /* the client asked for a stream */
};

/* ---- errors in each API's own format ---- */

enum family { FAM_ANTHROPIC, FAM_OPENAI };

static enum family family_of(berth_req *r)
{
    const char *p = H->req_path(r);
    if (!strncmp(p, "/v1/messages", 12)) return FAM_ANTHROPIC;
    if (!strncmp(p, "/v1/chat/", 9) || !strncmp(p, "/v1/responses", 13)) return FAM_OPENAI;
    return H->req_header(r, "x-api-key") || H->req_header(r, "anthropic-version")
           ? FAM_ANTHROPIC : FAM_OPENAI;
}

static const char *anthropic_type(int status)
{
    switch (status) {
    case 400: return "invalid_request_error";
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    case 529: case 503: return "overloaded_error";
    default: return "api_error";
    }
}

static const char *openai_type(int status, const char **code)
{
    *code = NULL;
    switch (status) {
    case 401: *code = "invalid_api_key"; return "invalid_request_error";
    case 402: *code = "insufficient_quota"; return "insufficient_quota";
    case 429: *code = "rate_limit_exceeded"; return "requests";
    case 400: case 403: case 404: case 413: return "invalid_request_error";
    default: return "server_error";
    }
}

BERTH_PRINTF(4, 5)
static void api_error(berth_req *r, int status, int64_t retry_after, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cJSON *j = cJSON_CreateObject(), *e;
    if (family_of(r) == FAM_ANTHROPIC) {
        cJSON_AddStringToObject(j, "type", "error");
        e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "type", anthropic_type(status));
        cJSON_AddStringToObject(e, "message", msg);
    } else {
        const char *code;
        e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "message", msg);
        cJSON_AddStringToObject(e, "type", openai_type(status, &code));
        cJSON_AddNullToObject(e, "param");
        if (code) cJSON_AddStringToObject(e, "code", code);
        else cJSON_AddNullToObject(e, "code");
    }
    char *body = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    char ra[24];
    snprintf(ra, sizeof ra, "%lld", (long long)retry_after);
    struct berth_header h[] = {{"Content-Type", "application/json"},
                               {retry_after > 0 ? "Retry-After" : NULL, ra}, {NULL, NULL}};
    H->respond_with(r, status, h, body, strlen(body));
    free(body);
}

/* a stream that fails after its head: the error, as each API sends one mid-stream (its SDKs
 * raise it), before the cut */
static void stream_error(struct call *c, const struct berth_http_result *res)
{
    if (!c->sse_mode) return;
    int status = res->error == BERTH_ETIMEDOUT ? 504 : 502;
    char msg[300];
    snprintf(msg, sizeof msg, "upstream: %s", res->message ? res->message : "failed");
    cJSON *j = cJSON_CreateObject(), *e = j;
    const char *code = NULL, *name = NULL;
    if (c->api == API_ANTHROPIC || c->api == API_OPENAI_RESPONSES) {
        name = "error";
        cJSON_AddStringToObject(j, "type", "error");
    }
    if (c->api == API_ANTHROPIC) {
        e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "type", anthropic_type(status));
    } else if (c->api == API_OPENAI_CHAT) {
        e = cJSON_AddObjectToObject(j, "error");
        cJSON_AddStringToObject(e, "type", openai_type(status, &code));
    }
    if (c->api == API_OPENAI_RESPONSES) cJSON_AddStringToObject(e, "code", "server_error");
    cJSON_AddStringToObject(e, "message", msg);
    if (c->api != API_ANTHROPIC) cJSON_AddNullToObject(e, "param");
    if (c->api == API_OPENAI_CHAT) cJSON_AddNullToObject(e, "code");
    char *data = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!data) return;
    size_t len = strlen(data) + 32;     /* a partial event held back (hide.c) is dropped */
    char *ev = malloc(len);
    if (ev) {
        snprintf(ev, len, "%s%s%sdata: %s\n\n", name ? "event: " : "", name ? name : "",
                 name ? "\n" : "", data);
        H->respond_write(c->r, ev, strlen(ev));
    }
    free(ev);
    free(data);
}

static void refuse(struct quota *q, berth_req *r, const char *handle, const char *reason,
                   int status, int64_t retry_after, const char *msg)
{
    const char *lv[] = {reason, NULL};
    H->metric_add(q->m_refused, lv, 1);
    char ev[160];
    snprintf(ev, sizeof ev, "{\"reason\":\"%s\",\"status\":%d}", reason, status);
    quota_event(q, q->ev_refused, handle, ev);
    api_error(r, status, retry_after, "%s", msg);
}

/* ---- keys and routing ---- */

static const char *presented_key(berth_req *r)
{
    const char *k = H->req_header(r, "x-api-key");
    if (k) return k;
    const char *a = H->req_header(r, "authorization");
    if (a && !strncasecmp(a, "Bearer ", 7)) return a + 7;
    return NULL;
}

static int api_of(berth_req *r, enum api *out)
{
    const char *m = H->req_method(r), *p = H->req_path(r);
    if (!strcmp(m, "GET") && !strcmp(p, "/usage")) return 1;
    if (strcmp(m, "POST")) return -1;
    if (!strcmp(p, "/v1/messages")) *out = API_ANTHROPIC;
    else if (!strcmp(p, "/v1/messages/count_tokens")) *out = API_COUNT_TOKENS;
    else if (!strcmp(p, "/v1/chat/completions")) *out = API_OPENAI_CHAT;
    else if (!strcmp(p, "/v1/responses")) *out = API_OPENAI_RESPONSES;
    else return -1;
    return 0;
}

/* A tenant's key holds at most max_connections_per_tenant of the listener's connections:
 * a request that would make one more is refused, and its connection closes after the answer
 * (a keep-alive client opens a new one later, when one of its others has closed). The claim
 * of a connection the tenant holds already is a string compare. */
static bool conn_claim(struct quota *q, berth_req *r, const char *owner)
{
    int64_t max = q->cfg.max_conns_per_tenant;
    /* claimed without a cap too (max 0 only counts): a cap set on SIGHUP then holds a
     * tenant to the connections it opened before */
    if (H->req_conn_claim(r, owner, (uint32_t)max) != BERTH_EBUSY) return true;
    char msg[192];
    snprintf(msg, sizeof msg, "this tenant has %lld connections to the proxy open already; "
             "reuse or close one", (long long)max);
    refuse(q, r, owner, "connections", 429, 1, msg);
    return false;
}

/* at header time: nothing of an unauthorized request's body is read */
static bool authorize(berth_req *r, void *arg)
{
    struct quota *q = arg;
    enum api api;
    const char *owner = quota_key_owner(q, presented_key(r));
    if (!owner) {
        const char *lv[] = {"key", NULL};
        H->metric_add(q->m_refused, lv, 1);
        api_error(r, 401, 0, "invalid or missing API key");
        return false;
    }
    if (api_of(r, &api) < 0) {
        api_error(r, 404, 0, "%s %s is not served by this proxy", H->req_method(r),
                  H->req_path(r));
        return false;
    }
    return conn_claim(q, r, owner);
}

/* ---- the call's lifetime ---- */

static void call_free(struct call *c)
{
    if (c->pprev) *c->pprev = c->next;
    if (c->next) c->next->pprev = c->pprev;
    sse_free(&c->sse);
    hide_free(&c->hide);
    free(c->acc);
    free(c->uphdr);
    free(c->hdr);
    free(c->url);
    free(c->ca);
    free(c->body);
    if (c->auth) {
        memset(c->auth, 0, strlen(c->auth));
        free(c->auth);
    }
    free(c);
}

/* what the call cost: the upstream's report, and for what it did not report (a cut stream,
 * a client gone) the upper bound of what was streamed since, within the reservation */
static int64_t final_cost(struct call *c, bool interrupted)
{
    if (!c->sse_mode && c->acc) {
        cJSON *doc = cJSON_ParseWithLength(c->acc, c->acc_len);
        if (doc) meter_absorb(&c->u, doc);
        cJSON_Delete(doc);
    }
    bool upstream_refused = c->head_seen && c->status >= 300;
    bool reached = c->head_seen || interrupted;
    if (!reached || (upstream_refused && !c->u.seen_input && !c->u.seen_output)) {
        memset(&c->u, 0, sizeof c->u);
        return 0;
    }
    if (!c->u.seen_input) c->u.input = c->in_bound;
    int64_t streamed = c->u.output + (int64_t)c->sse.text_after;
    if (!c->u.seen_output || interrupted || c->sse.text_after) {
        int64_t cap = c->out_bound > c->u.output ? c->out_bound : c->u.output;
        c->u.output = streamed < cap ? streamed : cap;
    }
    return meter_cost(&c->price, &c->u);
}

static const char *api_name(enum api a)
{
    static const char *const n[] = {"messages", "chat", "responses", "count_tokens"};
    return n[a];
}

static char *put_str(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static char *put_int(char *p, long long v)
{
    char d[24], *e = d + sizeof d;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do *--e = (char)('0' + u % 10);
    while (u /= 10);
    if (v < 0) *p++ = '-';
    memcpy(p, e, (size_t)(d + sizeof d - e));
    return p + (d + sizeof d - e);
}

/* the quota.call payload (plugins/quota/README.md), put together by hand: one per call, and
 * snprintf's format walk was the larger part of its cost. Owned by the caller; NULL when out
 * of memory. */
static char *call_event(const struct call *c, const char *outcome, int64_t cost)
{
    char *ev = malloc(strlen(c->model) + strlen(outcome) + 384), *p = ev;
    if (!ev) return NULL;
    p = put_int(put_str(p, "{\"id\":"), c->id);
    p = put_str(put_str(put_str(p, ",\"api\":\""), api_name(c->api)), "\",\"model\":\"");
    p = put_str(put_str(p, c->model), "\",\"status\":");
    p = put_str(put_str(put_int(p, c->status), ",\"outcome\":\""), outcome);
    p = put_int(put_str(p, "\",\"input_tokens\":"), c->u.input);
    p = put_int(put_str(p, ",\"output_tokens\":"), c->u.output);
    p = put_int(put_str(p, ",\"cache_read_tokens\":"), c->u.cache_read);
    p = put_int(put_str(p, ",\"cache_write_tokens\":"), c->u.cache_write);
    p = put_str(put_int(put_str(p, ",\"cost_micro\":"), cost), "}");
    *p = 0;
    return ev;
}

static void account(struct call *c, const char *outcome, bool interrupted)
{
    struct quota *q = c->q;
    H->busy_release(q->self, c->handle);
    H->metric_add(q->m_inflight, NULL, -1);
    int64_t cost = final_cost(c, interrupted);
    bound_overrun(q, c->handle, c->id, api_name(c->api), c->model, c->reserved, cost);
    const char *lv[] = {api_name(c->api), outcome, NULL};
    H->metric_add(q->m_calls, lv, 1);
    const char *label = meter_label(q, c->model);
    const char *mv[] = {label, NULL};
    H->metric_add(q->m_spend, mv, (double)cost);
    const char *kinds[] = {"input", "output", "cache_read", "cache_write"};
    int64_t n[] = {c->u.input, c->u.output, c->u.cache_read, c->u.cache_write};
    for (int i = 0; i < 4; i++) {
        const char *kv[] = {label, kinds[i], NULL};
        if (n[i]) H->metric_add(q->m_tokens, kv, (double)n[i]);
    }
    /* the event goes out with the settlement's commit */
    ledger_settle(q, &c->res, cost, &c->u, c->status, outcome, call_event(c, outcome, cost));
}

/* ends the call once: bills it (unless free), and frees it */
static void finish(struct call *c, const char *outcome, bool interrupted)
{
    struct quota *q = c->q;
    if (c->id > 0) account(c, outcome, interrupted);
    call_free(c);
    quota_idle(q);
}

/* ---- relaying ---- */

/* the upstream's headers, kept past on_head in one allocation; NULL when out of memory */
static struct berth_header *copy_headers(const struct berth_header *h, size_t n)
{
    size_t size = (n + 1) * sizeof *h;
    for (size_t i = 0; i < n; i++) size += strlen(h[i].name) + strlen(h[i].value) + 2;
    struct berth_header *out = malloc(size);
    if (!out) return NULL;
    char *p = (char *)(out + n + 1);
    for (size_t i = 0; i < n; i++) {
        size_t a = strlen(h[i].name) + 1, b = strlen(h[i].value) + 1;
        out[i].name = memcpy(p, h[i].name, a);
        out[i].value = memcpy(p + a, h[i].value, b);
        p += a + b;
    }
    out[n] = (struct berth_header){NULL, NULL};
    return out;
}

/* A whole answer of known, small length is relayed with its head in one write when it ends
 * (the client cannot use half a JSON document anyway); a stream, as each piece arrives. */
static bool hold_whole(struct call *c, const struct berth_header *h, size_t n)
{
    if (c->sse_mode) return false;
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(h[i].name, "content-length")) {
            char *end;
            unsigned long long len = strtoull(h[i].value, &end, 10);
            return end != h[i].value && !*end && len <= WHOLE_MAX &&
                   (c->uphdr = copy_headers(h, n)) != NULL;
        }
    return false;
}

static bool on_head(int status, const struct berth_header *h, size_t n, void *arg)
{
    struct call *c = arg;
    if (c->gone) return false;
    c->head_seen = true;
    c->status = status;
    for (size_t i = 0; i < n; i++)
        if (!strcasecmp(h[i].name, "content-type") && strstr(h[i].value, "text/event-stream"))
            c->sse_mode = true;
    if ((c->held = hold_whole(c, h, n))) return true;
    c->in_cb = true;
    int rc = H->respond_start(c->r, status, h);
    c->in_cb = false;
    return rc == 0 && !c->gone;
}

static void resume(berth_req *r, void *arg)
{
    struct call *c = arg;
    (void)r;
    if (!c->paused || !c->up) return;
    c->paused = false;
    H->http_resume(c->up);
}

/* false when a whole answer's bytes could not be kept (out of memory) */
static bool meter_bytes(struct call *c, const char *data, size_t len)
{
    if (c->sse_mode) {
        sse_feed(&c->sse, &c->u, data, len);
        return true;
    }
    if (c->acc_len + len > BODY_MAX) return true;     /* relayed, its usage unread */
    char *p = realloc(c->acc, c->acc_len + len + 1);
    if (!p) return false;
    memcpy(p + c->acc_len, data, len);
    c->acc = p;
    c->acc_len += len;
    return true;
}

static bool on_data(const char *data, size_t len, void *arg)
{
    struct call *c = arg;
    if (c->gone) return false;
    bool kept = meter_bytes(c, data, len);
    /* a held answer missing a piece, or longer than its Content-Length said: cut short,
     * answered 502 in done(), never relayed as a truncated 200 */
    if (c->held) return kept && c->acc_len <= WHOLE_MAX;
    if (c->sse_mode && !(len = hide_usage(&c->hide, data, len, &data, c->hide_usage)))
        return true;
    c->in_cb = true;
    size_t queued = H->respond_write(c->r, data, len);
    c->in_cb = false;
    if (c->gone) return false;
    if (queued > HIGH_WATER && !c->paused) {
        c->paused = true;
        H->http_pause(c->up);
        H->on_drain(c->r, resume, c);
    }
    return true;
}

static void done(const struct berth_http_result *res, void *arg)
{
    struct call *c = arg;
    c->up = NULL;
    const char *outcome = "ok";
    if (c->gone) {
        H->respond_abort(c->r);
        outcome = "client_gone";
    } else if (res->error && c->head_seen && c->held) {
        api_error(c->r, res->error == BERTH_ETIMEDOUT ? 504 : 502, 0,
                  "upstream: %s (the answer was cut short)", res->message);
        outcome = "upstream_cut";
    } else if (res->error && c->head_seen) {
        stream_error(c, res);
        H->respond_abort(c->r);      /* the client sees the stream cut, as it was */
        outcome = "upstream_cut";
    } else if (res->error) {
        api_error(c->r, res->error == BERTH_ETIMEDOUT ? 504 : 502, 0, "upstream: %s",
                  res->message);
        outcome = "upstream_error";
    } else {
        const char *rest;
        size_t n = c->sse_mode ? hide_flush(&c->hide, &rest) : 0;
        if (n) H->respond_write(c->r, rest, n);
        if (!c->head_seen) H->respond(c->r, res->status, NULL, NULL, 0);
        else if (c->held) H->respond_with(c->r, c->status, c->uphdr, c->acc, c->acc_len);
        else H->respond_end(c->r);
        if (c->status >= 400) outcome = "upstream_refused";
    }
    finish(c, outcome, c->gone || (res->error && c->head_seen));
}

static void gone(berth_req *r, void *arg)
{
    struct call *c = arg;
    (void)r;
    c->gone = true;
    if (c->reserving) {     /* reserved() frees it */
        H->respond_abort(c->r);
        return;
    }
    if (c->in_cb) return;   /* inside on_head/on_data: they return false and done() ends it */
    if (c->up) H->http_cancel(c->up);
    c->up = NULL;
    H->respond_abort(c->r);
    finish(c, "client_gone", true);
}

/* ---- the request ---- */

/* lengths first: most names are compared with none of these */
static bool hop_by_hop(const char *name)
{
    static const struct { const char *s; size_t n; } skip[] = {
        {"host", 4}, {"content-length", 14}, {"connection", 10}, {"transfer-encoding", 17},
        {"keep-alive", 10}, {"upgrade", 7}, {"proxy-connection", 16}, {"te", 2},
        {"trailer", 7}, {"x-api-key", 9}, {"authorization", 13}, {"accept-encoding", 15}};
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof skip / sizeof *skip; i++)
        if (n == skip[i].n && !strcasecmp(name, skip[i].s)) return true;
    return false;
}

static int64_t int_field(const cJSON *j, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, k);
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0)) return -1;
    /* converting a double beyond int64 is undefined; any count this large prices as a cost
     * no budget admits (meter.c saturates) */
    return v->valuedouble < 1e15 ? (int64_t)v->valuedouble : (int64_t)1e15;
}

/* the budget line joins the system prompt: after a string, or as a last text block */
static void inject_budget(struct call *c, cJSON *j)
{
    char line[64];
    quota_budget_line(c->q, c->handle, line, sizeof line);
    cJSON *sys = cJSON_GetObjectItemCaseSensitive(j, "system");
    if (cJSON_IsArray(sys)) {
        cJSON *blk = cJSON_CreateObject();
        cJSON_AddStringToObject(blk, "type", "text");
        cJSON_AddStringToObject(blk, "text", line);
        cJSON_AddItemToArray(sys, blk);
        return;
    }
    if (cJSON_IsString(sys) && sys->valuestring[0]) {
        size_t n = strlen(sys->valuestring) + strlen(line) + 3;
        char *joined = malloc(n);
        if (!joined) return;
        snprintf(joined, n, "%s\n\n%s", sys->valuestring, line);
        cJSON_ReplaceItemInObjectCaseSensitive(j, "system", cJSON_CreateString(joined));
        free(joined);
        return;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(j, "system");
    cJSON_AddStringToObject(j, "system", line);
}

/* reads the model and the output bound; for OpenAI, sets the output limit when the client
 * named none (so the bound holds) and asks for the streamed usage chunk. Returns a message
 * when the body cannot be forwarded. */
static const char *shape_body(struct call *c, const struct blk *b, const char *body, size_t len)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return "the body is not a JSON object";
    }
    const char *bad = body_check(j);
    if (bad) {
        cJSON_Delete(j);
        return bad;
    }
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "model");
    if (!cJSON_IsString(m) || !body_model_ok(m->valuestring, sizeof c->model)) {
        cJSON_Delete(j);
        return "model: a model name is required (letters, digits and -._:/@+)";
    }
    snprintf(c->model, sizeof c->model, "%s", m->valuestring);
    c->streamed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "stream"));
    int64_t cap = c->q->cfg.max_output_tokens, out = -1;
    bool changed = false;
    if (c->api == API_ANTHROPIC) {
        out = int_field(j, "max_tokens");
        if (b->inject_budget) {
            inject_budget(c, j);
            changed = true;
        }
    } else if (c->api == API_OPENAI_CHAT) {
        int64_t legacy = int_field(j, "max_tokens");
        out = int_field(j, "max_completion_tokens");
        if (legacy > out) out = legacy;
        if (out < 0) {
            cJSON_AddNumberToObject(j, "max_completion_tokens", (double)cap);
            changed = true;
        }
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "stream");
        cJSON *so = cJSON_GetObjectItemCaseSensitive(j, "stream_options");
        if (cJSON_IsTrue(st) &&
            !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"))) {
            if (!cJSON_IsObject(so)) {
                cJSON_DeleteItemFromObjectCaseSensitive(j, "stream_options");
                so = cJSON_AddObjectToObject(j, "stream_options");
            }
            cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
            cJSON_AddTrueToObject(so, "include_usage");
            c->hide_usage = true;
            changed = true;
        }
    } else if (c->api == API_OPENAI_RESPONSES) {
        out = int_field(j, "max_output_tokens");
        if (out < 0) {
            cJSON_AddNumberToObject(j, "max_output_tokens", (double)cap);
            changed = true;
        }
    }
    c->out_bound = out >= 0 ? out : cap;
    if (changed) {
        c->body = cJSON_PrintUnformatted(j);
        c->body_len = c->body ? strlen(c->body) : 0;
    } else {
        c->body = malloc(len ? len : 1);
        if (c->body) memcpy(c->body, body, len);
        c->body_len = len;
    }
    bad = c->body ? NULL : "out of memory";
    if (!bad && c->api != API_COUNT_TOKENS)
        bad = bound_call(c->api, j, c->body_len, c->out_bound, &c->in_bound, &c->out_bound);
    c->hour_cache = c->api == API_ANTHROPIC && bound_hour_cache(j);
    cJSON_Delete(j);
    return bad;
}

static int64_t bound_cost(const struct call *c)
{
    const struct price *p = &c->price;
    double in = meter_max_input_price(p, c->hour_cache);
    struct price pb = {in, p->output, in, in};
    struct usage u = {.input = c->in_bound, .output = c->out_bound};
    return meter_cost(&pb, &u);
}

static const struct upstream *upstream_of(struct quota *q, enum api a)
{
    const struct upstream *u = a == API_ANTHROPIC || a == API_COUNT_TOKENS ? &q->cfg.up.anthropic
                                                                            : &q->cfg.up.openai;
    return u->url && u->key ? u : NULL;
}

static bool build_headers(struct call *c, const struct upstream *up)
{
    berth_req *r = c->r;
    size_t nh = H->req_header_count(r), k = 0;
    const char *base = up->url;
    size_t bl = strlen(base);
    while (bl && base[bl - 1] == '/') bl--;
    const char *path = H->req_path(r);
    if (c->api != API_ANTHROPIC && c->api != API_COUNT_TOKENS && bl >= 3 &&
        !strncmp(base + bl - 3, "/v1", 3))
        path += 3;      /* OpenAI's base URL conventionally ends in /v1 */
    c->hdr = calloc(nh + 2, sizeof *c->hdr);
    if (up->ca && !(c->ca = strdup(up->ca))) return false;
    c->url = malloc(bl + strlen(path) + 1);
    c->auth = malloc(strlen(up->key) + 8);
    if (!c->hdr || !c->url || !c->auth) return false;
    memcpy(c->url, base, bl);
    strcpy(c->url + bl, path);
    bool anthropic = c->api == API_ANTHROPIC || c->api == API_COUNT_TOKENS;
    strcpy(c->auth, anthropic ? "" : "Bearer ");
    strcat(c->auth, up->key);
    for (size_t i = 0; i < nh; i++) {
        const char *v, *name = H->req_header_at(r, i, &v);
        if (!hop_by_hop(name)) c->hdr[k++] = (struct berth_header){name, v};
    }
    c->hdr[k++] = (struct berth_header){anthropic ? "x-api-key" : "Authorization", c->auth};
    return true;
}

static void track(struct quota *q, struct call *c)
{
    c->next = q->calls;
    if (c->next) c->next->pprev = &c->next;
    c->pprev = &q->calls;
    q->calls = c;
}

static void forward(struct call *c)
{
    struct berth_http_opts o = {.size = sizeof o, .method = "POST", .url = c->url,
                                .headers = c->hdr, .body = c->body, .body_len = c->body_len,
                                .timeout_ms = c->q->cfg.timeout_ms, .on_data = on_data,
                                .on_head = on_head, .tls_ca = c->ca,
                                /* SSE events are small; a held stream costs ~3 KiB less */
                                .recv_buffer = c->streamed ? 1024 : 0};
    c->up = H->http_request(c->q->self, &o, done, c);
    if (!c->up) {
        api_error(c->r, 502, 0, "cannot start the upstream call");
        finish(c, "upstream_error", false);
    }
}

/* the ledger's answer, on a later loop turn: forward, or refuse */
static void reserved(struct reservation *res, void *arg)
{
    struct call *c = arg;
    struct quota *q = c->q;
    c->reserving = false;
    if (c->gone || q->destroying) {     /* never forwarded: nothing to pay */
        static const struct usage none;
        if (res->id > 0)
            ledger_settle(q, res, 0, &none, 0, "client_gone", NULL);
        call_free(c);
        quota_idle(q);
        return;
    }
    if (res->id == BERTH_EBUSY)
        refuse(q, c->r, c->handle, "concurrency", 429, 1,
               "too many calls in flight for this tenant");
    else if (res->id < 0)
        api_error(c->r, 503, 0, "the ledger is unavailable: %s", berth_strerror((int)res->id));
    else if (!res->id)
        refuse(q, c->r, c->handle, "budget", 402, 0,
               "this tenant's budget cannot pay for this call");
    if (res->id <= 0) {
        call_free(c);
        quota_idle(q);
        return;
    }
    c->id = res->id;
    H->busy_hold(q->self, c->handle);
    H->metric_add(q->m_inflight, NULL, 1);
    forward(c);
}

/* rate and price now, then slot and budget in the ledger's next batch; false after
 * answering a refusal */
static bool admit(struct call *c, const struct blk *b)
{
    struct quota *q = c->q;
    struct tstate *t = quota_tstate(q, c->handle);
    if (!t) {
        api_error(c->r, 500, 0, "out of memory");
        return false;
    }
    int64_t wait = quota_rate_take(q, t, b);
    if (wait) {
        refuse(q, c->r, c->handle, "rate", 429, wait, "requests per minute exceeded");
        return false;
    }
    if (c->api == API_COUNT_TOKENS) {   /* free of charge */
        forward(c);
        return true;
    }
    if (!meter_price(q, c->model, &c->price)) {
        char msg[256];
        snprintf(msg, sizeof msg, "model %s has no price on this proxy", c->model);
        refuse(q, c->r, c->handle, "unpriced", 400, 0, msg);
        return false;
    }
    c->reserved = bound_cost(c);
    c->res = (struct reservation){.handle = c->handle, .api = api_name(c->api),
                                  .model = c->model,
                                  .budget = (int64_t)(b->budget * 1e6 + 0.5),
                                  .bound = c->reserved, .slots = b->concurrency,
                                  .monthly = b->period && !strcmp(b->period, "monthly"),
                                  .done = reserved, .arg = c};
    c->reserving = true;
    ledger_reserve(q, &c->res);
    return true;
}

/* an activity mark per call, at most one a second per tenant: idle sleep counts in minutes,
 * and each mark is a journaled event */
static void mark_activity(struct quota *q, const char *handle)
{
    struct tstate *t = quota_tstate(q, handle);
    int64_t now = H->now_ms(q->self);
    if (t && t->activity_ms && now - t->activity_ms < 1000) return;
    if (t) t->activity_ms = now;
    struct berth_ev_tenant_activity act = {sizeof act, "quota"};
    H->publish(q->self, BERTH_EV_TENANT_ACTIVITY, handle, &act);
}

void proxy_usage(struct quota *q, berth_req *r, const char *handle)
{
    char *j = ledger_usage_json(q, handle, quota_budget(q, handle), quota_monthly(q, handle));
    if (!j) {
        api_error(r, 503, 0, "the ledger is unavailable");
        return;
    }
    H->respond(r, 200, "application/json", j, strlen(j));
    free(j);
}

static void serve(berth_req *r, void *arg)
{
    struct quota *q = arg;
    const char *owner = quota_key_owner(q, presented_key(r));
    enum api api = API_ANTHROPIC;
    if (!owner) {           /* revoked between the headers and the body */
        api_error(r, 401, 0, "invalid or missing API key");
        return;
    }
    if (api_of(r, &api) == 1) {
        proxy_usage(q, r, owner);
        return;
    }
    mark_activity(q, owner);
    const struct upstream *up = upstream_of(q, api);
    const struct blk *b = quota_block(q, owner);
    if (!up || !b) {
        api_error(r, !up ? 404 : 403, 0, !up ? "this API has no upstream on this proxy"
                                             : "this tenant's template has no quota block");
        return;
    }
    struct call *c = calloc(1, sizeof *c);
    if (!c) {
        api_error(r, 500, 0, "out of memory");
        return;
    }
    c->q = q;
    c->r = r;
    c->api = api;
    snprintf(c->handle, sizeof c->handle, "%s", owner);
    size_t len;
    const char *body = H->req_body(r, &len);
    const char *bad = shape_body(c, b, body ? body : "", body ? len : 0);
    if (!bad && !build_headers(c, up)) bad = "out of memory";
    if (bad) {
        api_error(r, 400, 0, "%s", bad);
        call_free(c);
        return;
    }
    track(q, c);
    H->on_close(r, gone, c);
    if (!admit(c, b)) call_free(c);
}

int proxy_start(struct quota *q)
{
    struct berth_listen_opts o = {.size = sizeof o, .addr = q->cfg.listen,
                                  .max_body = q->cfg.max_body,
                                  .max_connections = q->cfg.max_connections,
                                  .authorize = authorize};
    return H->listen_opts(q->self, &o, serve, q);
}

/* the instance unloads with calls in flight: each is billed as a cut stream (those still
 * waiting for their reservation were freed by the ledger's flush before) */
void proxy_cancel_all(struct quota *q)
{
    while (q->calls) {
        struct call *c = q->calls;
        if (c->up) H->http_cancel(c->up);
        c->up = NULL;
        finish(c, "unloaded", true);     /* its request is left to the host, which aborts it */
    }
}
