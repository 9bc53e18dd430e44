/* The homeserver client: every call of the instance goes through one queue, so no more than
 * max_concurrent are in flight against the homeserver, and a 429 makes the whole queue wait
 * the retry_after_ms the server asked for before the call is sent again (a burst of tenants
 * never turns into a burst of retries). Transport failures are handed to the caller, who
 * decides (provisioning reports them; the core retries with its backoff). */
#include "matrix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct hcall {
    struct hcall *next;
    struct mx_hs *hs;
    char *method, *path, *token, *body;
    mx_done cb;
    void *arg;
    berth_call *call;
};

struct mx_hs {
    const struct berth_host *H;
    berth_instance *self;
    char *base;
    int64_t limit, timeout;
    struct hcall *queue, **tail;        /* waiting, in order */
    struct hcall *running;
    int64_t nrunning;
    berth_timer *pause;                 /* set while a 429 is waited out */
    int64_t pause_until;                /* when that pause ends (wall clock, ms) */
    berth_timer *kick;                  /* a pump pending after hs_call */
    bool up, seen, canceled;            /* canceled: stopping, nothing more is sent */
    char last_error[256];
    berth_metric *m_calls, *m_up;
    int64_t n_ok, n_429, n_err;
};

struct mx_hs *hs_new(const struct berth_host *h, berth_instance *self)
{
    struct mx_hs *hs = calloc(1, sizeof *hs);
    if (!hs) return NULL;
    hs->H = h;
    hs->self = self;
    hs->tail = &hs->queue;
    hs->limit = 4;
    static const char *const lbl[] = {"result", NULL};
    hs->m_calls = h->metric_register(self, "homeserver_calls_total", BERTH_METRIC_COUNTER,
                                     "calls to the homeserver by result: ok (answered), "
                                     "error (5xx, unreachable), rate_limited (429)", lbl);
    hs->m_up = h->metric_register(self, "homeserver_up", BERTH_METRIC_GAUGE,
                                  "1 when the homeserver answered the last call", NULL);
    return hs;
}

int hs_configure(struct mx_hs *hs, const char *base, int64_t max_concurrent, int64_t timeout)
{
    char *b = strdup(base);
    if (!b) return BERTH_ENOMEM;
    size_t n = strlen(b);
    while (n && b[n - 1] == '/') b[--n] = 0;
    free(hs->base);
    hs->base = b;
    hs->limit = max_concurrent > 0 ? max_concurrent : 4;
    hs->timeout = timeout;
    return 0;
}

static void hcall_free(struct hcall *c)
{
    free(c->method);
    free(c->path);
    free(c->token);
    free(c->body);
    free(c);
}

static void unlink_running(struct hcall *c)
{
    for (struct hcall **pp = &c->hs->running; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            c->hs->nrunning--;
            return;
        }
}

static void count(struct mx_hs *hs, const char *result)
{
    const char *v[] = {result};
    hs->H->metric_add(hs->m_calls, v, 1);
}

static void set_up(struct mx_hs *hs, bool up, const char *why)
{
    hs->up = up;
    hs->seen = true;
    if (why) snprintf(hs->last_error, sizeof hs->last_error, "%s", why);
    else hs->last_error[0] = 0;
    hs->H->metric_set(hs->m_up, NULL, up ? 1 : 0);
}

static void pump(struct mx_hs *hs);

static void resume(berth_timer *t, void *arg)
{
    struct mx_hs *hs = arg;
    hs->H->timer_stop(t);
    hs->pause = NULL;
    pump(hs);
}

/* A 429: back to the head of the queue, and nothing is sent until the server's time is up
 * (ms as hsa_retry_ms clamped it).
 * A pause only ever grows: a 429 that asks less than one already waited out (two calls were
 * in flight) must not cut the earlier one's wait short. */
static void requeue_after(struct hcall *c, int64_t ms)
{
    struct mx_hs *hs = c->hs;
    c->next = hs->queue;
    hs->queue = c;
    if (hs->tail == &hs->queue) hs->tail = &c->next;
    hs->H->log(hs->self, BERTH_LOG_DEBUG, "homeserver rate-limited %s %s: waiting %lld ms",
               c->method, c->path, (long long)ms);
    int64_t until = hs->H->now_ms(hs->self) + ms;
    if (hs->pause && until <= hs->pause_until) return;
    if (hs->pause) hs->H->timer_stop(hs->pause);
    hs->pause_until = until;
    hs->pause = hs->H->timer_start(hs->self, (uint64_t)ms, 0, resume, hs);
}

static void deliver(struct hcall *c, const struct mx_res *r)
{
    c->cb(r, c->arg);
    hcall_free(c);
}

static void done(const struct berth_http_result *res, void *arg)
{
    struct hcall *c = arg;
    struct mx_hs *hs = c->hs;
    unlink_running(c);
    c->call = NULL;
    cJSON *j = res->status && res->body ? cJSON_Parse(res->body) : NULL;
    struct mx_res r = {.status = res->status, .error = res->error, .message = "",
                       .errcode = "", .json = j};
    if (!res->status) {
        r.message = res->message && res->message[0] ? res->message : berth_strerror(res->error);
        if (!r.error) r.error = BERTH_EIO;
        set_up(hs, false, r.message);
        count(hs, "error");
        hs->n_err++;
    } else {
        hsa_error_read(j, &r.errcode, &r.message);
        set_up(hs, res->status < 500, res->status < 500 ? NULL : "homeserver answers 5xx");
        if (res->status == 429) {
            count(hs, "rate_limited");
            hs->n_429++;
            requeue_after(c, hsa_retry_ms(j));
            cJSON_Delete(j);
            pump(hs);
            return;
        }
        count(hs, res->status < 500 ? "ok" : "error");   /* a 404 is an answer */
        if (res->status < 500) hs->n_ok++;
        else hs->n_err++;
    }
    deliver(c, &r);
    cJSON_Delete(j);
    pump(hs);
}

static void start_one(struct mx_hs *hs, struct hcall *c)
{
    char url[2048], auth[600];
    snprintf(url, sizeof url, "%s%s", hs->base, c->path);
    struct berth_header hdr[3] = {{"Content-Type", "application/json"}, {NULL, NULL},
                                  {NULL, NULL}};
    if (c->token) {
        snprintf(auth, sizeof auth, "Bearer %s", c->token);
        hdr[1] = (struct berth_header){"Authorization", auth};
    }
    struct berth_http_opts o = {.size = sizeof o, .method = c->method, .url = url,
                                .headers = hdr, .body = c->body,
                                .body_len = c->body ? strlen(c->body) : 0,
                                .timeout_ms = hs->timeout, .connect_timeout_ms = 5000};
    c->next = hs->running;
    hs->running = c;
    hs->nrunning++;
    c->call = hs->H->http_request(hs->self, &o, done, c);
    if (!c->call) {
        unlink_running(c);
        struct mx_res r = {.error = BERTH_EIO, .message = "cannot start an HTTP call",
                           .errcode = ""};
        deliver(c, &r);   /* pump runs from a callback of ours, never inside hs_call */
    }
}

static void pump(struct mx_hs *hs)
{
    while (!hs->canceled && !hs->pause && hs->queue && hs->nrunning < hs->limit) {
        struct hcall *c = hs->queue;
        hs->queue = c->next;
        if (!hs->queue) hs->tail = &hs->queue;
        start_one(hs, c);
    }
}

static void kick(berth_timer *t, void *arg)
{
    struct mx_hs *hs = arg;
    hs->H->timer_stop(t);
    hs->kick = NULL;
    pump(hs);
}

int hs_call(struct mx_hs *hs, const char *method, const char *path, const char *token,
            cJSON *body, mx_done cb, void *arg)
{
    struct hcall *c = calloc(1, sizeof *c);
    if (c) {
        c->hs = hs;
        c->cb = cb;
        c->arg = arg;
        c->method = strdup(method);
        c->path = strdup(path);
        c->token = token ? strdup(token) : NULL;
        c->body = body ? cJSON_PrintUnformatted(body) : NULL;
    }
    cJSON_Delete(body);
    if (!c || !c->method || !c->path || (token && !c->token)) {
        if (c) hcall_free(c);
        return BERTH_ENOMEM;
    }
    *hs->tail = c;
    hs->tail = &c->next;
    /* started from a timer so that cb can never run inside this call */
    if (!hs->kick) hs->kick = hs->H->timer_start(hs->self, 0, 0, kick, hs);
    return 0;
}

void hs_cancel_all(struct mx_hs *hs)
{
    struct mx_res r = {.error = BERTH_ECANCELED, .message = "stopping", .errcode = ""};
    hs->canceled = true;
    if (hs->pause) hs->H->timer_stop(hs->pause);
    if (hs->kick) hs->H->timer_stop(hs->kick);
    hs->pause = hs->kick = NULL;
    while (hs->running) {
        struct hcall *c = hs->running;
        hs->running = c->next;
        hs->nrunning--;
        hs->H->http_cancel(c->call);
        deliver(c, &r);
    }
    while (hs->queue) {
        struct hcall *c = hs->queue;
        hs->queue = c->next;
        deliver(c, &r);
    }
    hs->tail = &hs->queue;
}

void hs_free(struct mx_hs *hs)
{
    if (!hs) return;
    while (hs->queue) {          /* queued after the cancel: never sent, nobody waits */
        struct hcall *c = hs->queue;
        hs->queue = c->next;
        hcall_free(c);
    }
    free(hs->base);
    free(hs);
}

bool hs_up(const struct mx_hs *hs) { return hs->up; }

const char *hs_last_error(const struct mx_hs *hs)
{
    return hs->seen ? hs->last_error : "not contacted yet";
}

void hs_stats(const struct mx_hs *hs, cJSON *into)
{
    cJSON_AddNumberToObject(into, "calls_ok", (double)hs->n_ok);
    cJSON_AddNumberToObject(into, "calls_failed", (double)hs->n_err);
    cJSON_AddNumberToObject(into, "rate_limited", (double)hs->n_429);
    cJSON_AddNumberToObject(into, "in_flight", (double)hs->nrunning);
}

bool hs_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        bool plain = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                     (ch >= '0' && ch <= '9') || strchr("-._~", ch);
        if (o + 4 > cap) {
            if (cap) out[0] = 0;    /* never an unterminated buffer for a caller to print */
            return false;
        }
        if (plain) out[o++] = (char)ch;
        else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    if (o >= cap) {
        if (cap) out[0] = 0;
        return false;
    }
    out[o] = 0;
    return true;
}
