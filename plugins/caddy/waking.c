/* berth's own listener, where Caddy sends what no ready tenant answers.
 *
 * A request for a tenant's host wakes the tenant (host->tenant_set_desired: the core runs one
 * start however many requests ask, so the wake is single flight) and gets either a small page
 * that reloads itself (mode page, 503 with Retry-After) or is held (mode hold) until the
 * tenant is ready AND Caddy holds the route to it, then redirected to the same URL (307, so
 * the method and body are sent again), which Caddy now sends to the tenant: never a 502.
 * A host without a route (unknown or deleted handle) gets a 404 page.
 * GET /ask?domain=H on any other host is Caddy's on-demand TLS check: 200 only for a tenant's
 * host or a configured extra host. */
#include "caddy.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* One held request. Freed once it is answered (or its client left) and the core has called
 * back tenant_wait_ready, which holds a pointer to it. */
struct hold {
    struct hold *next;
    struct caddy *c;
    berth_req *req;                 /* NULL once answered */
    berth_timer *timer;             /* the hold limit */
    bool waiting;                   /* tenant_wait_ready has not called back yet */
    bool ready;                     /* the tenant is ready: waiting for Caddy's route */
    char handle[BERTH_HANDLE_MAX + 1];
    char location[1024];
};

static void lower_host(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in && in[i] && in[i] != ':' && i + 1 < n; i++)
        out[i] = (char)tolower((unsigned char)in[i]);
    out[i] = 0;
}

static void respond_html(berth_req *r, int status, const char *extra, const char *title,
                         const char *text)
{
    char body[1024];
    int n = snprintf(body, sizeof body, "<!doctype html><html><head><meta charset=\"utf-8\">"
                     "%s<title>%s</title></head><body><h1>%s</h1><p>%s</p></body></html>\n",
                     extra, title, title, text);
    struct berth_header h[] = {{"Content-Type", "text/html; charset=utf-8"},
                               {"Cache-Control", "no-store"},
                               {status == 503 ? "Retry-After" : NULL, "1"}, {NULL, NULL}};
    H->respond_with(r, status, h, body, (size_t)n);
}

static void not_found(berth_req *r)
{
    respond_html(r, 404, "", "No such site", "Nothing is served at this address.");
}

static void waking_page(berth_req *r, const char *handle)
{
    char text[160];
    snprintf(text, sizeof text, "<b>%s</b> is starting; this page reloads itself.", handle);
    respond_html(r, 503, "<meta http-equiv=\"refresh\" content=\"1\">", "Waking up", text);
}

static void redirect(berth_req *r, const char *location)
{
    struct berth_header h[] = {{"Location", location}, {"Cache-Control", "no-store"},
                               {NULL, NULL}};
    H->respond_with(r, 307, h, "", 0);
}

/* The URL Caddy was asked for (its X-Berth-Uri header), or the path: a relative Location
 * keeps the scheme and host the client used. */
/* a path of this site: one slash first, never "//host" or "/\\host", which browsers
 * follow to another site */
static bool same_site(const char *u, size_t n)
{
    return u && u[0] == '/' && u[1] != '/' && u[1] != '\\' && !strpbrk(u, "\r\n") &&
           strlen(u) < n;
}

/* where the held request goes once the tenant is up: the URI Caddy saw, or the path berth
 * saw, whichever is a path of this site; else the site's root (no open redirect) */
static void location_of(berth_req *r, char *out, size_t n)
{
    const char *u = H->req_header(r, "x-berth-uri");
    if (!same_site(u, n)) u = H->req_path(r);
    snprintf(out, n, "%s", same_site(u, n) ? u : "/");
}

static void hold_unlink(struct hold *h)
{
    for (struct hold **pp = &h->c->holds; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            break;
        }
}

/* answers the held request (fn), and frees it unless the core still owes a callback */
static void hold_answer(struct hold *h, int how)
{
    if (h->req) {
        berth_req *r = h->req;
        h->req = NULL;
        H->on_close(r, NULL, NULL);
        if (how == 307) redirect(r, h->location);
        else if (how == 404) not_found(r);
        else waking_page(r, h->handle);
    }
    if (h->timer) H->timer_stop(h->timer);
    h->timer = NULL;
    if (!h->waiting) {
        hold_unlink(h);
        free(h);
    }
}

static bool route_serves(struct caddy *c, const char *handle)
{
    struct route *rt = route_find(c, handle);
    struct berth_tenant_info t = {.size = sizeof t};
    return rt && !H->tenant_get(c->self, handle, &t) && t.observed == BERTH_OBS_READY &&
           t.address && *rt->acked && !strcmp(rt->acked, t.address);
}

void waking_acked(struct caddy *c)
{
    for (struct hold *h = c->holds, *next; h; h = next) {
        next = h->next;
        if (h->req && h->ready && route_serves(c, h->handle)) hold_answer(h, 307);
    }
}

static void ready_cb(const char *handle, int status, const char *message, void *arg)
{
    (void)handle; (void)message;
    struct hold *h = arg;
    h->waiting = false;
    if (!h->req) {
        hold_answer(h, 0);
        return;
    }
    if (status == 0) {
        h->ready = true;
        if (route_serves(h->c, h->handle)) hold_answer(h, 307);
        return;                 /* the write that carries the route answers it */
    }
    hold_answer(h, status == BERTH_ENOENT ? 404 : 503);
}

static void hold_expired(berth_timer *t, void *arg)
{
    (void)t;
    struct hold *h = arg;
    hold_answer(h, h->ready && route_serves(h->c, h->handle) ? 307 : 503);
}

static void hold_gone(berth_req *r, void *arg)
{
    (void)r;
    hold_answer(arg, 503);      /* ends the request; nobody reads it */
}

/* A held request, linked into c->holds; NULL (the request answered with the waking page)
 * when there is no memory for it. */
static struct hold *hold_new(struct caddy *c, berth_req *r, const char *handle)
{
    struct hold *h = calloc(1, sizeof *h);
    if (!h) {
        waking_page(r, handle);
        return NULL;
    }
    h->c = c;
    h->req = r;
    snprintf(h->handle, sizeof h->handle, "%s", handle);
    location_of(r, h->location, sizeof h->location);
    h->next = c->holds;
    c->holds = h;
    return h;
}

static void hold(struct caddy *c, berth_req *r, const char *handle)
{
    struct hold *h = hold_new(c, r, handle);
    if (!h) return;
    h->waiting = true;
    if (H->tenant_wait_ready(c->self, handle, c->cfg.waking.hold, ready_cb, h)) {
        h->waiting = false;
        hold_answer(h, 503);
        return;
    }
    h->timer = H->timer_start(c->self, (uint64_t)c->cfg.waking.hold + 50, 0, hold_expired, h);
    H->on_close(r, hold_gone, h);
}

/* The tenant is ready and Caddy holds its route, yet Caddy sent the request here: it could
 * not reach the tenant (its passive health check then skips it for a moment) or the request
 * raced the config switch. A redirect at once could loop; one after RETRY_MS lets the moment
 * pass, and a tenant that stays unreachable costs the client a redirect per RETRY_MS. */
#define RETRY_MS 500

static void retry_later(struct caddy *c, berth_req *r, const char *handle)
{
    struct hold *h = hold_new(c, r, handle);
    if (!h) return;
    h->ready = true;
    h->timer = H->timer_start(c->self, RETRY_MS, 0, hold_expired, h);
    H->on_close(r, hold_gone, h);
}

static void tenant_request(struct caddy *c, berth_req *r, const struct route *rt)
{
    struct berth_tenant_info t = {.size = sizeof t};
    if (H->tenant_get(c->self, rt->handle, &t) || t.desired == BERTH_DESIRED_DELETED) {
        not_found(r);
        return;
    }
    bool hold_mode = !strcmp(c->cfg.waking.mode, "hold");
    if (hold_mode && route_serves(c, rt->handle)) {
        retry_later(c, r, rt->handle);
        return;
    }
    if (t.desired != BERTH_DESIRED_RUNNING) {
        int rc = H->tenant_set_desired(c->self, rt->handle, BERTH_DESIRED_RUNNING, "caddy");
        if (rc) H->log(c->self, BERTH_LOG_WARN, "waking %s: %s", rt->handle,
                       berth_strerror(rc));
    }
    if (hold_mode) hold(c, r, rt->handle);
    else waking_page(r, rt->handle);
}

bool host_is_extra(struct caddy *c, const char *host)
{
    for (size_t i = 0; i < c->cfg.extra_hosts.n; i++)
        if (!strcasecmp(c->cfg.extra_hosts.v[i], host)) return true;
    return false;
}

static void ask(struct caddy *c, berth_req *r)
{
    char host[CADDY_HOST_MAX];
    lower_host(H->req_query(r, "domain"), host, sizeof host);
    struct route *rt = *host ? route_by_host(c, host) : NULL;
    struct berth_tenant_info t = {.size = sizeof t};
    bool ok = (rt && !H->tenant_get(c->self, rt->handle, &t) &&
               t.desired != BERTH_DESIRED_DELETED) || (*host && host_is_extra(c, host));
    if (ok) H->respond(r, 200, "text/plain", "ok\n", 3);
    else H->respond(r, 404, "text/plain", "not a tenant\n", 13);
}

static void serve(berth_req *r, void *arg)
{
    struct caddy *c = arg;
    char host[CADDY_HOST_MAX];
    lower_host(H->req_header(r, "host"), host, sizeof host);
    struct route *rt = route_by_host(c, host);
    if (rt) tenant_request(c, r, rt);
    else if (!strcmp(H->req_path(r), "/ask") && !strcmp(H->req_method(r), "GET")) ask(c, r);
    else not_found(r);
}

int waking_start(struct caddy *c)
{
    struct berth_listen_opts o = {.size = sizeof o, .addr = c->cfg.listen};
    int rc = H->listen_opts(c->self, &o, serve, c);
    if (rc) H->log(c->self, BERTH_LOG_ERROR, "cannot listen on %s: %s", c->cfg.listen,
                   berth_strerror(rc));
    return rc;
}

/* Held requests get the waking page; the core calls back their waits before the instance
 * is gone, so those stay until then. */
void waking_stop(struct caddy *c)
{
    for (struct hold *h = c->holds, *next; h; h = next) {
        next = h->next;
        if (h->req) hold_answer(h, 503);
    }
}

/* what the core never called back (it cancels the waits of an unloading instance) */
void waking_free(struct caddy *c)
{
    while (c->holds) {
        struct hold *h = c->holds;
        c->holds = h->next;
        if (h->timer) H->timer_stop(h->timer);
        free(h);
    }
}
