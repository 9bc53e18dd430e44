/* heartbeat: tenants report that they are alive, optionally with a status (progress text,
 * percent), and a template's `heartbeat: {expect_every: 30m}` marks a running tenant stale
 * when none came for that long.
 *
 * POST /v1/tenants/{handle}/heartbeat on the control API takes an optional JSON object; the
 * last one is kept (lifecycle_heartbeats) and shown in the tenant's status. Each running
 * tenant of such a template has one node in the due-queue (dueq.c) at its deadline; missing
 * it sets `stale` (status, heartbeat.missed, /metrics); the next heartbeat clears it
 * (heartbeat.resumed). The clock restarts when the tenant starts and when berthd starts (it
 * could not report while berthd was down); a sleeping tenant is not expected to report. */
#include "lc.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATUS_MAX 4096

static void set_stale(struct lc *lc, struct ent *e, bool stale)
{
    if (e->stale == stale) return;
    e->stale = stale;
    lc->nstale += stale ? 1 : -1;
    const char *labels[] = {e->handle};
    H->metric_set(lc->m_stale, labels, stale ? 1 : 0);
    H->metric_set(lc->m_nstale, NULL, (double)lc->nstale);
}

static int64_t expect_every(struct lc *lc, const char *handle, struct berth_tenant_info *t)
{
    t->size = sizeof *t;
    if (H->tenant_get(lc->self, handle, t) < 0) return 0;
    return tcfg_of(lc, t->template_name)->heartbeat.expect_every;
}

/* (Re)starts the tenant's deadline from `from` if it is running and expected to report. */
static void arm(struct lc *lc, struct ent *e, int64_t from)
{
    struct berth_tenant_info t;
    int64_t every = expect_every(lc, e->handle, &t);
    if (every <= 0 || t.desired != BERTH_DESIRED_RUNNING || !lc_up(t.observed)) {
        dq_del(lc, &e->hb);
        return;
    }
    dq_set(lc, &e->hb, from + every);
}

void hb_due(struct lc *lc, struct ent *e)
{
    struct berth_tenant_info t;
    int64_t every = expect_every(lc, e->handle, &t);
    if (every <= 0 || e->stale || t.desired != BERTH_DESIRED_RUNNING || !lc_up(t.observed))
        return;
    H->log(lc->self, BERTH_LOG_WARN, "tenant %s is stale: no heartbeat for %lld ms", e->handle,
           (long long)every);
    set_stale(lc, e, true);
    char json[160];
    snprintf(json, sizeof json, "{\"last_ms\":%lld,\"expect_every_ms\":%lld}",
             (long long)e->hb_last, (long long)every);
    lc_publish(lc, lc->ev_stale, e->handle, json);
    lc_status(lc, e->handle);
}

/* Keeps it; the caller answers. Returns an HTTP status. */
static int record(struct lc *lc, const char *handle, const char *body, size_t len, char *why,
                  size_t whylen)
{
    cJSON *st = NULL;
    if (len) {
        st = len <= STATUS_MAX ? cJSON_ParseWithLength(body, len) : NULL;
        if (!cJSON_IsObject(st)) {
            cJSON_Delete(st);
            snprintf(why, whylen, len > STATUS_MAX ? "the status is over 4096 bytes"
                                                   : "the body must be a JSON object");
            return 400;
        }
    }
    char *text = st ? cJSON_PrintUnformatted(st) : NULL;
    cJSON_Delete(st);
    int64_t now = H->now_ms(lc->self);
    struct berth_value p[] = {BERTH_TEXT(handle), BERTH_INT(now),
                              text ? BERTH_TEXT(text) : BERTH_NULL};
    int rc = H->store_query(lc->self, "INSERT INTO lifecycle_heartbeats(handle, at_ms, status) "
                            "VALUES(?1, ?2, ?3) ON CONFLICT(handle) DO UPDATE SET "
                            "at_ms = excluded.at_ms, status = excluded.status", p, 3, NULL, NULL);
    struct ent *e = rc < 0 ? NULL : ent_get(lc, handle, true);
    if (!e) {
        cJSON_free(text);
        snprintf(why, whylen, "cannot keep the heartbeat: %s", berth_strerror(rc < 0 ? rc
                                                                          : BERTH_ENOMEM));
        return rc == BERTH_ENOSPC ? 507 : 503;
    }
    free(e->hb_status);
    e->hb_status = text ? strdup(text) : NULL;
    cJSON_free(text);
    e->hb_last = now;
    lc->heartbeats++;
    H->metric_add(lc->m_beats, NULL, 1);
    if (e->stale) {
        set_stale(lc, e, false);
        H->log(lc->self, BERTH_LOG_INFO, "tenant %s reports again; no longer stale", handle);
        lc_publish(lc, lc->ev_resumed, handle, "{}");
    }
    arm(lc, e, now);
    dq_arm(lc);
    lc_status(lc, handle);
    return 200;
}

void hb_answer(struct lc *lc, berth_req *r, const char *handle)
{
    struct berth_tenant_info t = {.size = sizeof t};
    if (!handle || H->tenant_get(lc->self, handle, &t) < 0) {    /* or deleted meanwhile */
        H->respond_error(r, 404, "not_found", "no tenant '%s'", handle ? handle : "");
        return;
    }
    size_t len = 0;
    const char *body = H->req_body(r, &len);
    char why[160];
    int status = record(lc, handle, body, len, why, sizeof why);
    if (status != 200) {
        H->respond_error(r, status, status == 400 ? "bad_request" : "unavailable", "%s", why);
        return;
    }
    const struct ent *e = ent_get(lc, handle, false);
    char out[128];
    int n = snprintf(out, sizeof out, "{\"handle\":\"%s\",\"at_ms\":%lld,\"stale\":false}\n",
                     handle, (long long)e->hb_last);
    H->respond(r, 200, "application/json", out, (size_t)n);
}

/* POST /v1/tenants/{handle}/heartbeat (control API: operators, or an agent's supervisor) */
static void post(berth_req *r, void *arg)
{
    hb_answer(arg, r, H->req_param(r, "handle"));
}

void hb_changed(struct lc *lc, const char *handle, bool up)
{
    struct ent *e = ent_get(lc, handle, false);
    if (!up) {
        if (!e || !e->hb.pos) return;
        dq_del(lc, &e->hb);
        dq_arm(lc);
        lc_status(lc, handle);
        return;
    }
    struct berth_tenant_info t;
    if (expect_every(lc, handle, &t) <= 0) return;
    if (!e && !(e = ent_get(lc, handle, true))) return;
    if (e->hb.pos) return;
    arm(lc, e, H->now_ms(lc->self));
    dq_arm(lc);
    lc_status(lc, handle);
}

void hb_deleted(struct lc *lc, const char *handle)
{
    struct berth_value p[] = {BERTH_TEXT(handle)};
    H->store_query(lc->self, "DELETE FROM lifecycle_heartbeats WHERE handle = ?1", p, 1, NULL,
                   NULL);
    struct ent *e = ent_get(lc, handle, false);
    if (e && e->stale) {
        const char *labels[] = {handle};
        set_stale(lc, e, false);
        H->metric_set(lc->m_stale, labels, 0);
    }
}

static bool row(int ncols, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)ncols; (void)names;
    struct lc *lc = arg;
    struct berth_tenant_info t = {.size = sizeof t};
    if (H->tenant_get(lc->self, v[0].p, &t) < 0) return true;     /* deleted while down */
    struct ent *e = ent_get(lc, v[0].p, true);
    if (!e) return true;
    e->hb_last = v[1].i;
    e->hb_status = v[2].type == BERTH_VAL_TEXT ? strdup(v[2].p) : NULL;
    return true;
}

/* A reload may add, change or drop expect_every: every running tenant's deadline follows. */
static bool rearm(const struct berth_tenant_info *t, void *arg)
{
    struct lc *lc = arg;
    int64_t every = tcfg_of(lc, t->template_name)->heartbeat.expect_every;
    struct ent *e = ent_get(lc, t->handle, every > 0);
    if (!e) return true;
    if (every <= 0) {
        dq_del(lc, &e->hb);
        set_stale(lc, e, false);
        return true;
    }
    int64_t from = e->hb_last > lc->hb_base ? e->hb_last : lc->hb_base;
    if (t->started_ms > from) from = t->started_ms;
    if (!e->stale) arm(lc, e, from);
    return true;
}

void hb_reload(struct lc *lc)
{
    H->tenant_each(lc->self, rearm, lc);
}

int hb_start(struct lc *lc)
{
    int rc = H->store_query(lc->self, "SELECT handle, at_ms, status FROM lifecycle_heartbeats",
                            NULL, 0, row, lc);
    if (rc < 0) return rc;
    lc->hb_base = H->now_ms(lc->self);   /* nobody could report while berthd was down */
    H->tenant_each(lc->self, rearm, lc);
    return H->route(lc->self, "POST", "/v1/tenants/{handle}/heartbeat", post, lc);
}

void hb_status(struct lc *lc, const struct ent *e, const char *template_name, void *json_obj)
{
    int64_t every = tcfg_of(lc, template_name)->heartbeat.expect_every;
    if (every <= 0 && !e->hb_last) return;
    cJSON *o = json_obj;
    cJSON_AddBoolToObject(o, "stale", e->stale);
    cJSON *h = cJSON_AddObjectToObject(o, "heartbeat");
    if (e->hb_last) cJSON_AddNumberToObject(h, "last_ms", (double)e->hb_last);
    else cJSON_AddNullToObject(h, "last_ms");
    if (every > 0) cJSON_AddNumberToObject(h, "expect_every_ms", (double)every);
    if (e->hb.pos) cJSON_AddNumberToObject(h, "deadline_ms", (double)e->hb.due);
    cJSON *st = e->hb_status ? cJSON_Parse(e->hb_status) : NULL;
    if (st) cJSON_AddItemToObject(h, "status", st);
}
