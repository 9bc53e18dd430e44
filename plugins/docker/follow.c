/* dockerd's event stream (GET /events, container events of berth's labels), followed for
 * the whole life of an instance: a container that dies, is OOM-killed or is removed behind
 * berth's back becomes a driver report within a second. When the stream ends (dockerd
 * restarted) it reconnects with backoff and asks berthd to re-list, to catch what it missed.
 * Also the small lists docker.c and the follower share (expected stops, ids). */
#include "dk.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void dk_expect_add(struct dk *d, const char *h)
{
    for (struct expect *e = d->expected; e; e = e->next)
        if (!strcmp(e->handle, h)) return;
    struct expect *e = calloc(1, sizeof *e);
    if (!e) return;
    snprintf(e->handle, sizeof e->handle, "%s", h);
    e->next = d->expected;
    d->expected = e;
}

bool dk_expect_take(struct dk *d, const char *h)
{
    for (struct expect **pp = &d->expected; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->handle, h)) continue;
        struct expect *e = *pp;
        *pp = e->next;
        free(e);
        return true;
    }
    return false;
}

bool dk_id_take(struct idlist *l, const char *id)
{
    for (int i = 0; i < l->n; i++) {
        if (strcmp(l->v[i], id)) continue;
        free(l->v[i]);
        l->v[i] = l->v[--l->n];
        return true;
    }
    return false;
}

void dk_id_add(struct idlist *l, const char *id)
{
    if (l->n == 64) {
        free(l->v[0]);
        l->v[0] = l->v[--l->n];
    }
    l->v[l->n++] = strdup(id);
}

void dk_id_clear(struct idlist *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    l->n = 0;
}

static void on_event(struct dk *d, const cJSON *m)
{
    struct dk_event ev;
    if (!dk_event_parse(m, &ev) || strcmp(ev.instance, H->name(d->self))) return;
    const char *action = ev.action, *id = ev.id, *h = ev.tenant;
    if (!strcmp(action, "oom")) {
        dk_id_add(&d->oom, id);
        return;
    }
    bool die = !strcmp(action, "die"), destroy = !strcmp(action, "destroy");
    if (!die && !destroy) return;
    bool oom = dk_id_take(&d->oom, id);
    if (destroy && dk_id_take(&d->moved, id)) return;     /* re-created on another port */
    if (dk_expect_take(d, h)) return;       /* berth stopped or removed it */
    /* ... or the instance a reload replaced did: its expectation went with it, but the
     * tenant still says it is being stopped or removed, or should not run. (A container
     * destroyed under an asleep tenant is still reported: its id must go.) */
    struct berth_tenant_info ti = {.size = sizeof ti};
    if (H->tenant_get(d->self, h, &ti) == 0 &&
        (ti.observed == BERTH_OBS_STOPPING || ti.desired == BERTH_DESIRED_DELETED ||
         (die && ti.desired != BERTH_DESIRED_RUNNING)))
        return;
    const char *code = ev.exit_code;
    char msg[128];
    struct berth_observed o = {sizeof o, die ? BERTH_OBS_STOPPED : BERTH_OBS_ABSENT, id, NULL,
                               code ? atoi(code) : -1, oom, msg};
    if (destroy) snprintf(msg, sizeof msg, "container removed behind berth's back");
    else if (oom) snprintf(msg, sizeof msg, "container OOM-killed (exit %d)", o.exit_code);
    else snprintf(msg, sizeof msg, "container died (exit %d)", o.exit_code);
    H->log(d->self, BERTH_LOG_WARN, "tenant %s: %s", h, msg);
    H->driver_report(d->self, h, &o);
}

static void event_line(const char *line, size_t len, void *arg)
{
    struct dk *d = arg;
    cJSON *m = cJSON_ParseWithLength(line, len);
    if (m) on_event(d, m);
    cJSON_Delete(m);
}

static bool event_data(const char *data, size_t len, void *arg)
{
    struct dk *d = arg;
    if (!dk_lines_feed(&d->ev, data, len, event_line, d)) {
        H->log(d->self, BERTH_LOG_WARN, "dockerd sent an event line over %u bytes; "
               "reconnecting", DK_LINE_MAX);
        return false;
    }
    d->backoff = 0;
    return true;
}

static void reconnect_fire(berth_timer *t, void *arg)
{
    struct dk *d = arg;
    H->timer_stop(t);
    d->reconnect = NULL;
    dk_follow(d);
}

static void events_ended(const struct berth_http_result *r, void *arg)
{
    struct dk *d = arg;
    d->events = NULL;
    dk_lines_reset(&d->ev);
    d->backoff = d->backoff ? d->backoff * 2 : 500;
    if (d->backoff > d->cfg.reconnect_max) d->backoff = d->cfg.reconnect_max;
    H->log(d->self, BERTH_LOG_WARN, "dockerd event stream ended (%s); reconnecting in %lldms",
           r->status ? "closed" : r->message, (long long)d->backoff);
    d->api[0] = 0;      /* a restarted dockerd may be another version */
    d->reconnect = H->timer_start(d->self, (uint64_t)d->backoff, 0, reconnect_fire, d);
}

static void pinged(const struct berth_http_result *r, void *arg)
{
    struct dk *d = arg;
    if (r->status == 200 && d->events) {
        H->log(d->self, BERTH_LOG_INFO, "following dockerd events; re-listing containers");
        H->driver_relist(d->self);
    }
}

void dk_follow(struct dk *d)
{
    char url[512];
    snprintf(url, sizeof url, "%s/events?filters=%%7B%%22type%%22%%3A%%5B%%22container%%22"
             "%%5D%%2C%%22label%%22%%3A%%5B%%22berth.managed%%3Dtrue%%22%%5D%%7D", d->url);
    struct berth_http_opts o = {
        .size = sizeof o, .url = url, .unix_socket = d->cfg.host ? NULL : d->cfg.socket,
        .on_data = event_data, .tls_ca = d->cfg.tls_ca, .tls_cert = d->cfg.tls_cert,
        .tls_key = d->cfg.tls_key,
    };
    d->events = H->http_request(d->self, &o, events_ended, d);
    /* the stream says nothing until something happens: a ping tells it is up */
    snprintf(url, sizeof url, "%s/_ping", d->url);
    struct berth_http_opts p = o;
    p.url = url;
    p.on_data = NULL;
    p.timeout_ms = 5000;
    H->http_request(d->self, &p, pinged, d);
}

void dk_unfollow(struct dk *d)
{
    if (d->events) H->http_cancel(d->events);
    d->events = NULL;
    if (d->reconnect) H->timer_stop(d->reconnect);
    d->reconnect = NULL;
}
