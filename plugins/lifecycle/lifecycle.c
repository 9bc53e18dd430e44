/* lifecycle: puts idle tenants to sleep and keeps running ones healthy.
 *
 * Idle: one sweep per check_interval walks every tenant once (no per-tenant timer, no work
 * per tenant per second): a running tenant whose last activity is older than its template's
 * idle_timeout and that nobody holds busy gets desired state asleep. Activity itself is the
 * core's (tenant.activity events, touch, wake), persisted across restarts.
 *
 * Both read the template's `lifecycle` block (host->template_config, SDK 1.1): a template
 * without one behaves as with an empty one (idle_timeout 30m, no health check).
 *
 * Health: a probe per running tenant whose template has `health`, on a host timer (libuv's
 * timer heap): HTTP GET of `http` (2xx/3xx is healthy) or a TCP connect. The first success
 * reports the tenant healthy, which makes it ready (tenant.ready, wake?wait answers).
 * `retries` failures in a row, outside `start_period`, report it unhealthy and ask for a
 * restart, which the core paces with its crash-loop backoff. */
#include "lc.h"

#include <cJSON.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const struct berth_cfg_item schema[] = {
    {"check_interval", BERTH_CFG_DURATION, "30s", 10, 3600000,
     offsetof(struct cfg, check_interval),
     "how often idle tenants are looked for: a tenant sleeps at most this late",
     BERTH_CFG_RELOAD, NULL, NULL},
    {"test_clock_offset", BERTH_CFG_INT, "0", 0, 0, offsetof(struct cfg, test_clock_offset),
     "for tests only: ms added to the clock schedules are computed on", 0, NULL, NULL},
    {"heartbeat_listen", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, heartbeat_listen),
     "host:port where tenants post heartbeats with their token (unset: control API only)", 0,
     NULL, NULL},
    {"heartbeat_url", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct cfg, heartbeat_url),
     "the URL tenants are given (default http://<heartbeat_listen>/v1/heartbeat)", 0, NULL,
     NULL},
    {0},
};

/* a template's block: templates.<t>.<this instance>.{idle_timeout, health, schedule,
 * heartbeat} (struct tcfg, lc.h) */
#define HT(f) offsetof(struct health, f)
static const struct berth_cfg_item health_schema[] = {
    {"http", BERTH_CFG_STR, NULL, 0, 0, HT(http), "path probed with GET; 2xx/3xx is healthy",
     0, NULL, NULL},
    {"tcp", BERTH_CFG_BOOL, "false", 0, 0, HT(tcp), "healthy when the port accepts", 0, NULL,
     NULL},
    {"interval", BERTH_CFG_DURATION, "10s", 100, 3600000, HT(interval), "probe period", 0,
     NULL, NULL},
    {"timeout", BERTH_CFG_DURATION, "2s", 10, 600000, HT(timeout), "one probe's limit", 0,
     NULL, NULL},
    {"retries", BERTH_CFG_INT, "3", 1, 100, HT(retries), "failures before unhealthy", 0, NULL,
     NULL},
    {"start_period", BERTH_CFG_DURATION, "0", 0, 3600000, HT(start_period),
     "failures do not count this long after a start", 0, NULL, NULL},
    {0},
};
#define SC(f) offsetof(struct sched_cfg, f)
static const struct berth_cfg_item schedule_schema[] = {
    {"cron", BERTH_CFG_STR, NULL, 0, 0, SC(cron),
     "five-field cron expression or @hourly-style alias: when a sleeping tenant is woken", 0,
     NULL, NULL},
    {"tz", BERTH_CFG_STR, "UTC", 0, 0, SC(tz), "time zone of the expression (TZ database name)",
     0, NULL, NULL},
    {"run_for", BERTH_CFG_DURATION, "0", 0, 0, SC(run_for),
     "after a scheduled wake, sleep again this long after it if unused (0: idle_timeout rules)",
     0, NULL, NULL},
    {"catch_up", BERTH_CFG_STR, "none", 0, 0, SC(catch_up),
     "a run missed while berthd was down: none skips it, one runs it once at start", 0,
     "none|one", NULL},
    {0},
};
static const struct berth_cfg_item heartbeat_schema[] = {
    {"expect_every", BERTH_CFG_DURATION, "0", 0, 0, offsetof(struct hb_cfg, expect_every),
     "a running tenant with no heartbeat for this long is stale (0: never)", 0, NULL, NULL},
    {0},
};
static const struct berth_cfg_item tmpl_schema[] = {
    {"idle_timeout", BERTH_CFG_DURATION, "30m", 0, 0, offsetof(struct tcfg, idle_timeout),
     "idle tenants are put to sleep after this (0: never)", 0, NULL, NULL},
    {"health", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct tcfg, health),
     "health check: the tenant is ready once a probe passes", 0, NULL, health_schema},
    {"schedule", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct tcfg, schedule),
     "wake the tenant on a cron schedule", 0, NULL, schedule_schema},
    {"heartbeat", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct tcfg, heartbeat),
     "heartbeats expected from the running tenant", 0, NULL, heartbeat_schema},
    {0},
};
/* what a template without a block gets: the schema's defaults */
static const struct tcfg tcfg_default = {
    .idle_timeout = 30 * 60 * 1000,
    .health = {.interval = 10000, .timeout = 2000, .retries = 3},
    .schedule = {.tz = "UTC", .catch_up = "none"},
};

const struct berth_host *H;

enum { P_STARTING, P_HEALTHY, P_UNHEALTHY };

struct probe {
    struct probe *next;
    struct lc *lc;
    char handle[BERTH_HANDLE_MAX + 1], addr[96], path[256];
    bool tcp;
    int64_t interval, timeout, retries, start_period, started_ms;
    int state, failures;
    int64_t last_ms, counted_ms;    /* last probe; last failure that counted */
    char last[160];
    berth_timer *tick, *deadline;
    berth_call *call;
    int head_status;                /* the probe's answer status, once its head came */
    size_t body_seen;
    int fd;
    berth_watch *watch;
};

static bool gates_ready(const void *block)
{
    const struct tcfg *c = block;
    return c->health.http || c->health.tcp;
}

static int template_validate(const void *block, char *err, size_t errlen)
{
    return sched_validate(&((const struct tcfg *)block)->schedule, err, errlen);
}

bool lc_up(enum berth_observed_state s)
{
    return s == BERTH_OBS_RUNNING || s == BERTH_OBS_READY;
}

void lc_publish(struct lc *lc, uint32_t type, const char *handle, const char *json)
{
    struct berth_ev_custom ev = {sizeof ev, json};
    if (type) H->publish(lc->self, type, handle, &ev);
}

/* Read afresh on each use: the block belongs to the running config generation. */
const struct tcfg *tcfg_of(const struct lc *lc, const char *template_name)
{
    const struct tcfg *c = template_name ? H->template_config(lc->self, template_name) : NULL;
    return c ? c : &tcfg_default;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- idle sweep ---- */

struct sweep {
    struct lc *lc;
    int64_t now;
    char (*sleepy)[BERTH_HANDLE_MAX + 1];
    size_t n, cap;
    char tmpl[64];              /* the last template looked up: tenants mostly share one */
    const struct tcfg *cfg;
};

/* Tenants mostly share a template: its block is looked up once per run of equal names. The
 * walk is synchronous, so no reload can swap the generation under it. */
static const struct tcfg *sweep_cfg(struct sweep *s, const char *tmpl)
{
    const char *name = tmpl ? tmpl : "";
    if (s->cfg && !strcmp(s->tmpl, name)) return s->cfg;
    const struct tcfg *c = tcfg_of(s->lc, tmpl);
    size_t l = strlen(name);
    s->cfg = l < sizeof s->tmpl ? c : NULL;         /* a longer name is not cached */
    if (s->cfg) memcpy(s->tmpl, name, l + 1);
    return c;
}

static bool check_idle(const struct berth_tenant_info *t, void *arg)
{
    struct sweep *s = arg;
    s->lc->checked++;
    if (t->desired != BERTH_DESIRED_RUNNING || t->busy > 0) return true;
    if (t->observed != BERTH_OBS_RUNNING && t->observed != BERTH_OBS_READY) return true;
    int64_t idle = sweep_cfg(s, t->template_name)->idle_timeout;
    if (idle <= 0 || s->now - t->last_activity_ms < idle) return true;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        char (*v)[BERTH_HANDLE_MAX + 1] = realloc(s->sleepy, cap * sizeof *v);
        if (!v) return false;
        s->sleepy = v;
        s->cap = cap;
    }
    snprintf(s->sleepy[s->n++], 40, "%s", t->handle);
    return true;
}

static void sweep(berth_timer *t, void *arg)
{
    (void)t;
    struct lc *lc = arg;
    int64_t t0 = mono_us();
    struct sweep s = {.lc = lc, .now = H->now_ms(lc->self)};
    lc->checked = 0;
    H->tenant_each(lc->self, check_idle, &s);
    /* desired state changes after the walk: the walk sees one consistent picture */
    for (size_t i = 0; i < s.n; i++) {
        H->log(lc->self, BERTH_LOG_INFO, "tenant %s is idle; putting it to sleep", s.sleepy[i]);
        H->tenant_set_desired(lc->self, s.sleepy[i], BERTH_DESIRED_ASLEEP, "idle");
    }
    lc->slept_total += (int64_t)s.n;
    lc->sweeps++;
    free(s.sleepy);
    lc->last_sweep_us = mono_us() - t0;
}

/* ---- health probes ---- */

static struct probe *probe_find(struct lc *lc, const char *h)
{
    for (struct probe *p = lc->probes; p; p = p->next)
        if (!strcmp(p->handle, h)) return p;
    return NULL;
}

static void probe_cancel(struct probe *p)
{
    if (p->call) H->http_cancel(p->call);
    p->call = NULL;
    if (p->watch) H->watch_stop(p->watch);
    p->watch = NULL;
    if (p->fd >= 0) close(p->fd);
    p->fd = -1;
    if (p->deadline) H->timer_stop(p->deadline);
    p->deadline = NULL;
}

static void probe_free(struct lc *lc, struct probe *p)
{
    for (struct probe **pp = &lc->probes; *pp; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    probe_cancel(p);
    if (p->tick) H->timer_stop(p->tick);
    free(p);
}

static void probe_json(const struct probe *p, cJSON *o)
{
    static const char *const names[] = {"starting", "healthy", "unhealthy"};
    cJSON_AddStringToObject(o, "health", names[p->state]);
    cJSON_AddNumberToObject(o, "failures", p->failures);
    cJSON_AddNumberToObject(o, "last_probe_ms", (double)p->last_ms);
    cJSON_AddStringToObject(o, "last_result", p->last);
    cJSON_AddStringToObject(o, "probe", p->tcp ? "tcp" : p->path);
}

/* The tenant's status under plugins.<instance>: its probe, schedule and heartbeat together
 * (one object per instance); cleared when there is nothing to show. */
void lc_status(struct lc *lc, const char *handle)
{
    cJSON *o = cJSON_CreateObject();
    const struct probe *p = probe_find(lc, handle);
    if (p) probe_json(p, o);
    const struct ent *e = ent_get(lc, handle, false);
    struct berth_tenant_info t = {.size = sizeof t};
    if (e && H->tenant_get(lc->self, handle, &t) == 0) {
        sched_status(lc, e, o);
        hb_status(lc, e, t.template_name, o);
    }
    char *s = o->child ? cJSON_PrintUnformatted(o) : NULL;
    H->tenant_status_set(lc->self, handle, s);
    cJSON_free(s);
    cJSON_Delete(o);
}

static void publish_status(struct probe *p)
{
    lc_status(p->lc, p->handle);
}

static void probe_now(berth_timer *t, void *arg);

static void probe_result(struct probe *p, bool ok, const char *msg)
{
    struct lc *lc = p->lc;
    probe_cancel(p);
    p->last_ms = H->now_ms(lc->self);
    snprintf(p->last, sizeof p->last, "%s", msg);
    if (ok) {
        p->failures = 0;
        if (p->state != P_HEALTHY) {
            p->state = P_HEALTHY;
            H->health_report(lc->self, p->handle, true, msg);
            /* from now on at the configured cadence */
            H->timer_stop(p->tick);
            p->tick = H->timer_start(lc->self, (uint64_t)p->interval, (uint64_t)p->interval,
                                     probe_now, p);
        }
        publish_status(p);
        return;
    }
    if (p->last_ms - p->started_ms < p->start_period) {   /* still allowed to be starting */
        publish_status(p);
        return;
    }
    /* while starting, probes come fast (readiness is what a waking user waits for) but at
     * most one failure per interval counts, so retries x interval keeps its meaning */
    if (p->last_ms - p->counted_ms < p->interval) return;
    p->counted_ms = p->last_ms;
    p->failures++;
    publish_status(p);
    if (p->failures < p->retries) return;
    char reason[256];
    snprintf(reason, sizeof reason, "health check failed %d times: %s", p->failures, msg);
    H->log(lc->self, BERTH_LOG_WARN, "tenant %s: %s; restarting it", p->handle, reason);
    p->state = P_UNHEALTHY;
    H->health_report(lc->self, p->handle, false, reason);
    publish_status(p);
    char handle[BERTH_HANDLE_MAX + 1];
    snprintf(handle, sizeof handle, "%s", p->handle);
    probe_free(lc, p);                  /* a new probe comes with the next start */
    H->tenant_report_crash(lc->self, handle, reason);
}

/* A probe needs the status only: the body is read and dropped, and past PROBE_BODY_MAX the
 * call is cut, so a tenant answering its probe with an endless or huge body costs berthd
 * neither memory nor the probe's whole timeout. */
#define PROBE_BODY_MAX 65536

static bool probe_head(int status, const struct berth_header *h, size_t n, void *arg)
{
    (void)h; (void)n;
    ((struct probe *)arg)->head_status = status;
    return true;
}

static bool probe_body(const char *data, size_t len, void *arg)
{
    (void)data;
    struct probe *p = arg;
    p->body_seen += len;
    return p->body_seen <= PROBE_BODY_MAX;
}

static void http_done(const struct berth_http_result *r, void *arg)
{
    struct probe *p = arg;
    p->call = NULL;
    int status = r->status ? r->status : r->error == BERTH_ECANCELED ? p->head_status : 0;
    char msg[160];
    if (!status) snprintf(msg, sizeof msg, "%s", r->message);
    else snprintf(msg, sizeof msg, "HTTP %d", status);
    probe_result(p, status >= 200 && status < 400, msg);
}

static void tcp_ready(berth_watch *w, int events, void *arg)
{
    (void)w; (void)events;
    struct probe *p = arg;
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(p->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    char msg[160];
    snprintf(msg, sizeof msg, err ? "connect: %s" : "port open", strerror(err));
    probe_result(p, err == 0, msg);
}

static void tcp_timeout(berth_timer *t, void *arg)
{
    (void)t;
    struct probe *p = arg;
    p->deadline = NULL;
    H->timer_stop(t);
    probe_result(p, false, "connect timed out");
}

static void tcp_probe(struct probe *p)
{
    char host[64];
    int port = 0;
    const char *colon = strrchr(p->addr, ':');
    struct sockaddr_in a = {.sin_family = AF_INET};
    if (!colon || (size_t)(colon - p->addr) >= sizeof host) {
        probe_result(p, false, "no address");
        return;
    }
    memcpy(host, p->addr, (size_t)(colon - p->addr));
    host[colon - p->addr] = 0;
    port = atoi(colon + 1);
    a.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
        probe_result(p, false, "address is not IPv4");
        return;
    }
    p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0 || (connect(p->fd, (struct sockaddr *)&a, sizeof a) < 0 &&
                      errno != EINPROGRESS)) {
        char msg[160];
        snprintf(msg, sizeof msg, "connect: %s", strerror(errno));
        probe_result(p, false, msg);
        return;
    }
    p->watch = H->watch_fd(p->lc->self, p->fd, BERTH_WATCH_WRITABLE, tcp_ready, p);
    p->deadline = H->timer_start(p->lc->self, (uint64_t)p->timeout, 0, tcp_timeout, p);
}

static void probe_now(berth_timer *t, void *arg)
{
    (void)t;
    struct probe *p = arg;
    if (p->call || p->watch) return;        /* the previous probe is still out */
    if (p->tcp) {
        tcp_probe(p);
        return;
    }
    char url[512];
    snprintf(url, sizeof url, "http://%s%s", p->addr, p->path);
    struct berth_http_opts o = {.size = sizeof o, .url = url, .timeout_ms = p->timeout,
                                .connect_timeout_ms = p->timeout, .on_head = probe_head,
                                .on_data = probe_body, .recv_buffer = 4096};
    p->head_status = 0;
    p->body_seen = 0;
    p->call = H->http_request(p->lc->self, &o, http_done, p);
    if (!p->call) probe_result(p, false, "cannot start the probe");
}

/* The template's probe settings, read again on every reload: a new interval, timeout or
 * path applies to a running probe at once, and its failure count carries on. */
static void probe_settings(struct probe *p, const struct tcfg *c)
{
    int64_t old = p->interval;
    const struct health *h = &c->health;
    snprintf(p->path, sizeof p->path, "%s", h->http ? h->http : "/");
    p->tcp = !h->http;
    p->interval = h->interval;
    p->timeout = h->timeout;
    p->retries = h->retries;
    p->start_period = h->start_period;
    if (p->state == P_HEALTHY && p->interval != old) {
        H->timer_stop(p->tick);
        p->tick = H->timer_start(p->lc->self, (uint64_t)p->interval, (uint64_t)p->interval,
                                 probe_now, p);
    }
}

static bool has_probe(const struct lc *lc, const struct berth_tenant_info *t)
{
    return gates_ready(tcfg_of(lc, t->template_name)) && t->address;
}

static void probe_start(struct lc *lc, const struct berth_tenant_info *t)
{
    if (!has_probe(lc, t) || probe_find(lc, t->handle)) return;
    struct probe *p = calloc(1, sizeof *p);
    if (!p) return;
    p->lc = lc;
    p->fd = -1;
    snprintf(p->handle, sizeof p->handle, "%s", t->handle);
    snprintf(p->addr, sizeof p->addr, "%s", t->address);
    probe_settings(p, tcfg_of(lc, t->template_name));
    p->started_ms = t->started_ms ? t->started_ms : H->now_ms(lc->self);
    p->state = P_STARTING;
    snprintf(p->last, sizeof p->last, "not probed yet");
    p->next = lc->probes;
    lc->probes = p;
    /* until the first success, probe every 50ms: readiness is what a waking user waits for */
    uint64_t fast = p->interval < 50 ? (uint64_t)p->interval : 50;
    p->tick = H->timer_start(lc->self, 0, fast, probe_now, p);
    publish_status(p);
}

static void on_changed(const struct berth_event *ev, void *arg)
{
    struct lc *lc = arg;
    const struct berth_ev_tenant_changed *c = ev->payload;
    if (!ev->tenant || !c->observed) return;
    bool up = !strcmp(c->observed, "running") || !strcmp(c->observed, "ready");
    struct probe *p = probe_find(lc, ev->tenant);
    hb_changed(lc, ev->tenant, up);
    if (!up) {
        if (p) probe_free(lc, p);
        return;
    }
    struct berth_tenant_info t = {.size = sizeof t};
    if (!p && H->tenant_get(lc->self, ev->tenant, &t) == 0) probe_start(lc, &t);
}

static bool scan(const struct berth_tenant_info *t, void *arg)
{
    struct lc *lc = arg;
    if (t->observed == BERTH_OBS_RUNNING || t->observed == BERTH_OBS_READY) probe_start(lc, t);
    /* no probe, no status: one that failed is freed before its restart, so a reload landing
     * in that gap found no probe to clear and left its last status on the tenant for good */
    if (!probe_find(lc, t->handle)) H->tenant_status_set(lc->self, t->handle, NULL);
    return true;
}

static bool refresh(const struct berth_tenant_info *t, void *arg)
{
    if (ent_get(arg, t->handle, false)) lc_status(arg, t->handle);
    return true;
}

static void on_created(const struct berth_event *ev, void *arg)
{
    const struct berth_ev_tenant_created *c = ev->payload;
    if (!ev->tenant) return;
    sched_tenant(arg, ev->tenant, c->template_name);
    dq_arm(arg);
    if (ent_get(arg, ev->tenant, false)) lc_status(arg, ev->tenant);
}

static void on_deleted(const struct berth_event *ev, void *arg)
{
    if (!ev->tenant) return;
    hb_deleted(arg, ev->tenant);
    ent_drop(arg, ev->tenant);
    dq_arm(arg);
}

/* A reload may change, add or remove a template's health check: running probes follow it. */
static void on_reloaded(const struct berth_event *ev, void *arg)
{
    struct lc *lc = arg;
    if (!((const struct berth_ev_config_reloaded *)ev->payload)->ok) return;
    for (struct probe *p = lc->probes, *next; p; p = next) {
        next = p->next;
        struct berth_tenant_info t = {.size = sizeof t};
        if (H->tenant_get(lc->self, p->handle, &t) == 0 && has_probe(lc, &t)) {
            probe_settings(p, tcfg_of(lc, t.template_name));
            publish_status(p);
            continue;
        }
        char handle[BERTH_HANDLE_MAX + 1];
        snprintf(handle, sizeof handle, "%s", p->handle);
        probe_free(lc, p);
        lc_status(lc, handle);
    }
    H->tenant_each(lc->self, scan, lc);
    sched_reload(lc);
    hb_reload(lc);
    dq_arm(lc);
    H->tenant_each(lc->self, refresh, lc);
}

/* GET /v1/lifecycle: what the sweeper and the probes are doing */
static void info(berth_req *r, void *arg)
{
    struct lc *lc = arg;
    int n = 0;
    for (struct probe *p = lc->probes; p; p = p->next) n++;
    char body[768];
    int len = snprintf(body, sizeof body, "{\"check_interval_ms\":%lld,\"sweeps\":%lld,"
                       "\"last_sweep_us\":%lld,\"tenants_checked\":%lld,\"slept_total\":%lld,"
                       "\"probes\":%d,\"due_queue\":%zu,\"next_due_ms\":%lld,"
                       "\"scheduled_wakes\":%lld,\"scheduled_skipped\":%lld,"
                       "\"missed_while_down\":%lld,\"heartbeats\":%lld,\"stale\":%lld}\n",
                       (long long)lc->cfg.check_interval,
                       (long long)lc->sweeps, (long long)lc->last_sweep_us,
                       (long long)lc->checked, (long long)lc->slept_total, n, lc->dq.n,
                       (long long)(lc->dq.n ? lc->dq.v[0]->due : 0), (long long)lc->wakes,
                       (long long)lc->skipped, (long long)lc->missed,
                       (long long)lc->heartbeats, (long long)lc->nstale);
    H->respond(r, 200, "application/json", body, (size_t)len);
}

static bool nothing(const struct berth_tenant_info *t, void *arg)
{
    (void)t;
    ++*(int64_t *)arg;
    return true;
}

/* POST /v1/lifecycle/sweep: one sweep now (operators and benchmarks); ?walk_only=1 times a
 * walk over the tenants that looks at nothing, the baseline of a sweep's cost */
static void sweep_now(berth_req *r, void *arg)
{
    struct lc *lc = arg;
    const char *w = H->req_query(r, "walk_only");
    if (w && !strcmp(w, "1")) {
        int64_t n = 0, t0 = mono_us();
        H->tenant_each(lc->self, nothing, &n);
        char body[128];
        int len = snprintf(body, sizeof body, "{\"walk_us\":%lld,\"tenants\":%lld}\n",
                           (long long)(mono_us() - t0), (long long)n);
        H->respond(r, 200, "application/json", body, (size_t)len);
        return;
    }
    sweep(NULL, lc);
    info(r, lc);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    H = host;
    if (!BERTH_HOST_HAS(host, metric_set)) return BERTH_ENOTSUP;
    struct lc *lc = calloc(1, sizeof *lc);
    if (!lc) return BERTH_ENOMEM;
    lc->self = self;
    *state = lc;
    lc->ev_woke = H->event_register(self, "schedule.woke");
    lc->ev_stale = H->event_register(self, "heartbeat.missed");
    lc->ev_resumed = H->event_register(self, "heartbeat.resumed");
    static const char *const tenant[] = {"tenant", NULL};
    lc->m_wakes = H->metric_register(self, "scheduled_wakes_total", BERTH_METRIC_COUNTER,
                                     "Sleeping tenants woken by their schedule.", NULL);
    lc->m_beats = H->metric_register(self, "heartbeats_total", BERTH_METRIC_COUNTER,
                                     "Heartbeats received.", NULL);
    lc->m_stale = H->metric_register(self, "stale", BERTH_METRIC_GAUGE,
                                     "1 while a tenant has missed its heartbeat.", tenant);
    lc->m_nstale = H->metric_register(self, "stale_tenants", BERTH_METRIC_GAUGE,
                                      "Tenants that missed their heartbeat.", NULL);
    return 0;
}

/* A new interval applies from now; tenants' idle clocks are the core's and do not reset. */
static int configure(void *state, const void *cfg)
{
    struct lc *lc = state;
    lc->cfg = *(const struct cfg *)cfg;
    if (lc->sweep) {
        H->timer_stop(lc->sweep);
        lc->sweep = H->timer_start(lc->self, (uint64_t)lc->cfg.check_interval,
                                   (uint64_t)lc->cfg.check_interval, sweep, lc);
    }
    return 0;
}

static const char *const migrations[] = {
    "CREATE TABLE lifecycle_sched(key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ("CREATE TABLE lifecycle_heartbeats(handle TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, "
     "status TEXT)"),
    "CREATE TABLE lifecycle_secret(id INTEGER PRIMARY KEY CHECK (id = 1), key BLOB NOT NULL)",
};

static int start(void *state)
{
    struct lc *lc = state;
    int rc = H->store_migrate(lc->self, migrations, sizeof migrations / sizeof *migrations);
    if (rc < 0) {
        H->log(lc->self, BERTH_LOG_ERROR, "cannot set up its tables: %s", berth_strerror(rc));
        return rc;
    }
    lc->sweep = H->timer_start(lc->self, (uint64_t)lc->cfg.check_interval,
                               (uint64_t)lc->cfg.check_interval, sweep, lc);
    H->subscribe(lc->self, BERTH_EV_TENANT_CHANGED, on_changed, lc);
    H->subscribe(lc->self, BERTH_EV_CONFIG_RELOADED, on_reloaded, lc);
    H->route(lc->self, "GET", "/v1/lifecycle", info, lc);
    H->route(lc->self, "POST", "/v1/lifecycle/sweep", sweep_now, lc);
    H->subscribe(lc->self, BERTH_EV_TENANT_CREATED, on_created, lc);
    H->subscribe(lc->self, BERTH_EV_TENANT_DELETED, on_deleted, lc);
    H->tenant_each(lc->self, scan, lc);
    if ((rc = sched_start(lc)) < 0 || (rc = hb_start(lc)) < 0 ||
        (rc = hbtoken_start(lc)) < 0) {
        H->log(lc->self, BERTH_LOG_ERROR, "cannot load schedules and heartbeats: %s",
               berth_strerror(rc));
        return rc;
    }
    dq_arm(lc);
    H->tenant_each(lc->self, refresh, lc);
    return 0;
}

static void stop(void *state)
{
    struct lc *lc = state;
    while (lc->probes) probe_free(lc, lc->probes);
    sched_save(lc);
    ents_free(lc);
    dq_free(lc);
    if (lc->sweep) H->timer_stop(lc->sweep);
    lc->sweep = NULL;
    H->drained(lc->self);
}

static void destroy(void *state)
{
    free(state);
}

BERTH_PLUGIN(.name = "lifecycle", .version = "0.1.0",
             .description = "idle sleep, health checks, readiness, schedules, heartbeats",
             .config = schema, .config_size = sizeof(struct cfg),
             .template_config = tmpl_schema, .template_config_size = sizeof(struct tcfg),
             .template_gates_ready = gates_ready, .template_validate = template_validate,
             .init = init,
             .configure = configure, .start = start, .stop = stop, .destroy = destroy);
