/* The routes berth expects Caddy to hold, and writing them.
 *
 * berth owns one route in the configured server, found by its @id (cfg.id, "berth"): a
 * subroute holding one route per tenant (@id "<id>-<handle>", matching the tenant's host) and
 * a catch-all for the rest of the domain, both sent to berth's listener unless the tenant is
 * ready. Routes of anybody else are never read back or rewritten: every write replaces only
 * the object with our @id (PATCH /id/<id>), or inserts it first in the server's routes when
 * Caddy does not have it.
 *
 * Each write is a full config load for Caddy, so changes are coalesced: writes start at most
 * once per `batch` (a change after a quiet spell goes at once), one at a time, and each
 * carries everything changed since the last. `gen` counts changes; a write carries the gen it saw, and what waits
 * for a change (a provision, a held request) finishes once `acked` reaches it.
 *
 * The container carries a revision tag in its `group` field; a periodic check reads it back.
 * A failed call, a missing object or another tag (Caddy restarted empty, or someone loaded
 * another config) marks the routes lost and writes them all again. The set of routes lives
 * in the table caddy_routes, so deleted tenants' routes never come back after a restart. */
#include "caddy.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { CALL_NONE, CALL_PATCH, CALL_INSERT, CALL_CHECK, CALL_LOG_GET, CALL_LOG_PUT,
       CALL_SRV_GET, CALL_SRV_PUT, CALL_ADOPT };

static const char *const steps[] = {
    "CREATE TABLE caddy_routes (inst TEXT NOT NULL, handle TEXT NOT NULL, host TEXT NOT NULL,"
    " PRIMARY KEY (inst, handle))",
    "CREATE TABLE caddy_domains (inst TEXT NOT NULL, tmpl TEXT NOT NULL, domain TEXT NOT NULL,"
    " PRIMARY KEY (inst, tmpl))",
};

static void flush(struct caddy *c);
static void schedule(struct caddy *c, int64_t delay);
static int64_t batch_wait(struct caddy *c);
static void logger_write(struct caddy *c);
static void logger_answer(struct caddy *c, int kind, const struct berth_http_result *res);
static void server_answer(struct caddy *c, const struct berth_http_result *res);

struct route *route_find(struct caddy *c, const char *handle)
{
    for (struct route *r = c->routes; r; r = r->next)
        if (!strcmp(r->handle, handle)) return r;
    return NULL;
}

struct route *route_by_host(struct caddy *c, const char *host)
{
    for (struct route *r = c->routes; r; r = r->next)
        if (!strcmp(r->host, host)) return r;
    return NULL;
}

static struct route *route_new(struct caddy *c, const char *handle, const char *host)
{
    struct route *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    snprintf(r->handle, sizeof r->handle, "%s", handle);
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->acked, sizeof r->acked, "-");
    r->next = c->routes;
    c->routes = r;
    return r;
}

static bool load_row(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    struct caddy *c = arg;
    if (v[0] && v[1] && !route_find(c, v[0]) && !route_new(c, v[0], v[1]))
        H->log(c->self, BERTH_LOG_ERROR, "out of memory loading route of %s", v[0]);
    return true;
}

int routes_load(struct caddy *c)
{
    int rc = H->store_migrate(c->self, steps, sizeof steps / sizeof *steps);
    if (rc) return rc;
    const char *q[] = {H->name(c->self)};
    rc = H->store_exec(c->self, "SELECT handle, host FROM caddy_routes WHERE inst=?1", q, 1,
                       load_row, c);
    if (rc || (rc = domains_load(c))) return rc;
    for (struct route *r = c->routes; r; r = r->next) route_refresh(c, r->handle);
    c->lost = true;     /* whatever Caddy holds now, our container is written once */
    c->gen++;
    return 0;
}

/* A provision run again for a route berth has (a reload, a retry) changes nothing: no write,
 * since every config load may cost Caddy a connection (README, Limits). */
int route_add(struct caddy *c, const char *handle, const char *host)
{
    struct route *r = route_find(c, handle);
    if (r && !strcmp(r->host, host)) {
        route_refresh(c, handle);
        return 0;
    }
    const char *q[] = {H->name(c->self), handle, host};
    int rc = H->store_exec(c->self, "INSERT INTO caddy_routes(inst,handle,host) VALUES(?1,?2,?3)"
                           " ON CONFLICT(inst,handle) DO UPDATE SET host=?3", q, 3, NULL, NULL);
    if (rc) return rc;
    if (!r && !(r = route_new(c, handle, host))) return BERTH_ENOMEM;
    snprintf(r->host, sizeof r->host, "%s", host);
    snprintf(r->acked, sizeof r->acked, "-");
    route_refresh(c, handle);
    routes_changed(c);
    return 0;
}

void route_remove(struct caddy *c, const char *handle)
{
    const char *q[] = {H->name(c->self), handle};
    H->store_exec(c->self, "DELETE FROM caddy_routes WHERE inst=?1 AND handle=?2", q, 2, NULL,
                  NULL);
    for (struct route **pp = &c->routes; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->handle, handle)) {
            struct route *r = *pp;
            *pp = r->next;
            free(r);
            H->tenant_status_set(c->self, handle, NULL);
            routes_changed(c);
            return;
        }
}

/* Where the route sends requests now: the tenant while it is ready and meant to run, else
 * berth's listener (which wakes it). */
void route_refresh(struct caddy *c, const char *handle)
{
    struct route *r = route_find(c, handle);
    if (!r) return;
    struct berth_tenant_info t = {.size = sizeof t};
    const char *want = "";
    if (!H->tenant_get(c->self, handle, &t) && t.desired == BERTH_DESIRED_RUNNING &&
        t.observed == BERTH_OBS_READY && t.address && *t.address)
        want = t.address;
    if (!strcmp(r->upstream, want)) return;
    snprintf(r->upstream, sizeof r->upstream, "%s", want);
    routes_changed(c);
}

void routes_changed(struct caddy *c)
{
    c->gen++;
    schedule(c, batch_wait(c));
}

/* ---- the JSON berth writes ---------------------------------------------------------------- */

/* Caddy's dial address of berth's listener: "unix:/p" becomes "unix//p" */
static void berth_dial(struct caddy *c, char *out, size_t n)
{
    const char *u = c->cfg.upstream && *c->cfg.upstream ? c->cfg.upstream : c->cfg.listen;
    if (!strncmp(u, "unix:", 5)) snprintf(out, n, "unix/%s", u + 5);
    else snprintf(out, n, "%s", u);
}

static cJSON *proxy(struct caddy *c, const char *tenant)
{
    char dial[CADDY_ADDR_MAX + 8];
    berth_dial(c, dial, sizeof dial);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "handler", "reverse_proxy");
    cJSON *ups = cJSON_AddArrayToObject(h, "upstreams");
    if (tenant && *tenant) {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "dial", tenant);
        cJSON_AddItemToArray(ups, u);
        /* the tenant first, berth behind it: a tenant that stopped a moment before its
         * route changed sends the request to the waking path, never a 502 */
        cJSON *lb = cJSON_AddObjectToObject(h, "load_balancing");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(lb, "selection_policy"), "policy",
                                "first");
        cJSON_AddStringToObject(lb, "try_duration", "5s");
        cJSON_AddStringToObject(lb, "try_interval", "50ms");
        cJSON *pas = cJSON_AddObjectToObject(cJSON_AddObjectToObject(h, "health_checks"),
                                             "passive");
        cJSON_AddStringToObject(pas, "fail_duration", "1s");
        cJSON_AddNumberToObject(pas, "max_fails", 1);
    }
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "dial", dial);
    cJSON_AddItemToArray(ups, b);
    /* berth answers with a redirect to the same URL: it needs the query too */
    cJSON *set = cJSON_AddObjectToObject(cJSON_AddObjectToObject(
        cJSON_AddObjectToObject(h, "headers"), "request"), "set");
    cJSON *v = cJSON_AddArrayToObject(set, "X-Berth-Uri");
    cJSON_AddItemToArray(v, cJSON_CreateString("{http.request.uri}"));
    return h;
}

static cJSON *one_route(struct caddy *c, const char *id, const char *host, const char *tenant)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "@id", id);
    cJSON *m = cJSON_CreateObject();
    cJSON *hosts = cJSON_AddArrayToObject(m, "host");
    cJSON_AddItemToArray(hosts, cJSON_CreateString(host));
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "match"), m);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "handle"), proxy(c, tenant));
    cJSON_AddBoolToObject(o, "terminal", true);
    return o;
}

static int by_handle(const void *a, const void *b)
{
    return strcmp((*(const struct route *const *)a)->handle,
                  (*(const struct route *const *)b)->handle);
}

/* One route per tenant, in handle order: the same routes make the same JSON whichever
 * order they were created or loaded in, so a new instance can tell that Caddy holds
 * exactly what it would write (adopt_answer). */
static int tenant_routes(struct caddy *c, cJSON *list)
{
    size_t n = 0;
    for (struct route *r = c->routes; r; r = r->next) n++;
    struct route **v = malloc((n ? n : 1) * sizeof *v);
    if (!v) return BERTH_ENOMEM;
    n = 0;
    for (struct route *r = c->routes; r; r = r->next) v[n++] = r;
    qsort(v, n, sizeof *v, by_handle);
    char id[CADDY_HOST_MAX + 64];
    for (size_t i = 0; i < n; i++) {
        snprintf(id, sizeof id, "%s-%s", c->cfg.id, v[i]->handle);
        cJSON_AddItemToArray(list, one_route(c, id, v[i]->host, v[i]->upstream));
    }
    free(v);
    return 0;
}

/* the route for every other host of `domain`: "<id>-any" for the plugin's own domain,
 * "<id>-any-<domain>" for a template's */
static void catch_all(struct caddy *c, const char *domain, void *arg)
{
    char id[CADDY_HOST_MAX + 64], any[CADDY_HOST_MAX + 2];
    if (!strcmp(domain, c->cfg.domain)) snprintf(id, sizeof id, "%s-any", c->cfg.id);
    else snprintf(id, sizeof id, "%s-any-%s", c->cfg.id, domain);
    snprintf(any, sizeof any, "*.%s", domain);
    cJSON_AddItemToArray(arg, one_route(c, id, any, NULL));
}

static char *container_json(struct caddy *c)
{
    char buf[CADDY_HOST_MAX + 64];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "@id", c->cfg.id);
    snprintf(buf, sizeof buf, "%s-rev-%llu", c->cfg.id, (unsigned long long)c->rev);
    cJSON_AddStringToObject(o, "group", buf);
    cJSON *sub = cJSON_CreateObject();
    cJSON_AddStringToObject(sub, "handler", "subroute");
    cJSON *list = cJSON_AddArrayToObject(sub, "routes");
    if (tenant_routes(c, list)) {
        cJSON_Delete(o);
        cJSON_Delete(sub);
        return NULL;
    }
    /* unknown and deleted handles of every domain berth serves get berth's 404 page */
    if (domains_each(c, catch_all, list)) {
        cJSON_Delete(o);
        cJSON_Delete(sub);
        return NULL;
    }
    /* Caddy 2.6 gives up a reverse_proxy's retry when a config load ends the handler's
     * config, and answers 502 with the tenant's error: a request that found a tenant dead
     * and was waiting to retry on berth when we switched its route. Whatever our routes
     * could not proxy goes to berth's listener instead (no retry, so nothing to give up),
     * which waits for the tenant or redirects: berth never acts on the request itself. */
    cJSON *err = cJSON_AddArrayToObject(cJSON_AddObjectToObject(sub, "errors"), "routes");
    cJSON *fallback = cJSON_CreateObject();
    cJSON_AddItemToArray(cJSON_AddArrayToObject(fallback, "handle"), proxy(c, NULL));
    cJSON_AddItemToArray(err, fallback);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, "handle"), sub);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* ---- calls to the admin API ---------------------------------------------------------------- */

static void on_call(const struct berth_http_result *res, void *arg);

/* Caddy refuses a Host (and, with enforce_origin, an Origin) it does not list for its admin
 * address: an empty Host on a unix socket, the address itself on TCP. */
void admin_headers(struct caddy *c, struct berth_header h[4], bool json)
{
    int n = 0;
    h[n++] = (struct berth_header){"Host", c->admin_host};
    if (c->admin_origin[0]) h[n++] = (struct berth_header){"Origin", c->admin_origin};
    if (json) h[n++] = (struct berth_header){"Content-Type", "application/json"};
    h[n] = (struct berth_header){NULL, NULL};
}

static int admin_call(struct caddy *c, int kind, const char *method, const char *path,
                      char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", c->admin_url, path);
    struct berth_header hdr[4];
    admin_headers(c, hdr, true);
    struct berth_http_opts o = {.size = sizeof o, .method = method, .url = url,
                                .unix_socket = c->admin_sock, .headers = hdr,
                                .body = body, .body_len = body ? strlen(body) : 0,
                                .timeout_ms = c->cfg.timeout, .connect_timeout_ms = 2000};
    c->call = H->http_request(c->self, &o, on_call, c);
    if (!c->call) {
        free(body);
        return BERTH_EIO;
    }
    c->call_kind = kind;
    c->call_body = body;
    return 0;
}

static void finish_ops(struct caddy *c, int status, const char *msg)
{
    for (struct op_wait **pp = &c->ops; *pp;) {
        struct op_wait *w = *pp;
        if (status == 0 && w->gen > c->acked) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        H->op_done(w->op, status, NULL, status ? msg : NULL);
        free(w);
    }
}

void op_wait_add(struct caddy *c, berth_op *op)
{
    struct op_wait *w = calloc(1, sizeof *w);
    if (!w) {
        H->op_done(op, BERTH_ENOMEM, NULL, "caddy: out of memory");
        return;
    }
    w->op = op;
    w->gen = c->gen;
    w->next = c->ops;
    c->ops = w;
    if (!c->started) return;    /* the first write after start finishes it */
    if (!c->lost && c->acked >= c->gen) {
        finish_ops(c, 0, NULL); /* nothing changed: Caddy holds it already */
        return;
    }
    schedule(c, batch_wait(c));
}

char *routes_status_json(struct caddy *c, const struct route *r)
{
    (void)c;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "host", r->host);
    bool present = strcmp(r->acked, "-") != 0;
    cJSON_AddStringToObject(o, "route", present ? "present" : "pending");
    if (present) cJSON_AddStringToObject(o, "upstream", *r->acked ? r->acked : "berth");
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Caddy holds what berth sent (`load`: by a config load berth caused; else Caddy held it
 * already) */
static void written(struct caddy *c, bool load)
{
    c->acked = c->sent;
    c->lost = false;
    c->last_error[0] = 0;
    if (load) {
        c->loads++;
        if (c->m_loads) H->metric_add(c->m_loads, NULL, 1);
    }
    for (struct route *r = c->routes; r; r = r->next) {
        if (!strcmp(r->acked, r->upstream)) continue;
        snprintf(r->acked, sizeof r->acked, "%s", r->upstream);
        char *st = routes_status_json(c, r);
        if (st) H->tenant_status_set(c->self, r->handle, st);
        free(st);
    }
    finish_ops(c, 0, NULL);
    waking_acked(c);
}

static void failed_msg(struct caddy *c);

static void failed(struct caddy *c, const char *what, const struct berth_http_result *res)
{
    if (res->status)
        snprintf(c->last_error, sizeof c->last_error, "%s: HTTP %d: %.*s", what, res->status,
                 (int)(res->body_len > 160 ? 160 : res->body_len), res->body ? res->body : "");
    else
        snprintf(c->last_error, sizeof c->last_error, "%s: %s", what, res->message);
    failed_msg(c);
}

/* A failure whose text is in last_error already. */
static void failed_msg(struct caddy *c)
{
    size_t n = strlen(c->last_error);
    while (n && (c->last_error[n - 1] == '\n')) c->last_error[--n] = 0;
    c->failures++;
    c->lost = true;
    if (c->m_fail) H->metric_add(c->m_fail, NULL, 1);
    H->log(c->self, BERTH_LOG_WARN, "caddy admin API: %s", c->last_error);
    char msg[300];
    snprintf(msg, sizeof msg, "caddy: %s", c->last_error);
    finish_ops(c, BERTH_EAGAIN, msg);   /* the core retries them; the routes stay queued */
}

/* The first call of an instance: the container Caddy holds, as the previous instance (a reload
 * replaced it) or berthd (a restart) left it. When it is exactly what this instance would
 * write, nothing is written: a reload that changed none of the routes costs Caddy no config
 * load. Its revision tag is taken over either way, so the next one written is newer. */
static bool adopt_answer(struct caddy *c, const struct berth_http_result *res)
{
    if (res->status != 200) return false;
    cJSON *held = cJSON_ParseWithLength(res->body, res->body_len);
    uint64_t rev;
    bool same = false;
    if (caddy_held_rev(held, c->cfg.id, &rev)) {
        c->rev = rev;
        char *mine = container_json(c);
        cJSON *want = mine ? cJSON_Parse(mine) : NULL;
        same = want && cJSON_Compare(held, want, true);
        cJSON_Delete(want);
        free(mine);
    }
    cJSON_Delete(held);
    if (!same) return false;
    H->log(c->self, BERTH_LOG_INFO, "Caddy holds berth's routes as they are (revision %llu): "
           "nothing to write", (unsigned long long)c->rev);
    c->sent = c->gen;
    written(c, false);
    return true;
}

/* Caddy's admin API as a dependency of berthd's /health, reported on every answer of it
 * (the periodic check included): any answer below 500 shows it usable. res NULL: not asked
 * yet. A call that hangs stops the reports and the host calls them stale. */
static void admin_health(struct caddy *c, const struct berth_http_result *res)
{
    if (!BERTH_HOST_HAS(H, dependency_report)) return;
    char msg[300] = "";
    int st = BERTH_OK;
    if (!res) {
        st = BERTH_EAGAIN;
        snprintf(msg, sizeof msg, "admin API %s: not checked yet", c->cfg.admin);
    } else if (!res->status) {
        st = res->error ? res->error : BERTH_EIO;
        snprintf(msg, sizeof msg, "admin API %s: %s", c->cfg.admin, res->message);
    } else if (res->status >= 500) {
        st = BERTH_EIO;
        snprintf(msg, sizeof msg, "admin API %s answers HTTP %d", c->cfg.admin, res->status);
    }
    H->dependency_report(c->self, "admin", c->cfg.required, st, msg, c->cfg.check);
}

static void on_call(const struct berth_http_result *res, void *arg)
{
    struct caddy *c = arg;
    admin_health(c, res);
    int kind = c->call_kind;
    char *body = c->call_body;
    c->call = NULL;
    c->call_body = NULL;
    c->call_kind = CALL_NONE;
    bool ok = res->status == 200;
    if (kind == CALL_PATCH && res->status == 404) {
        /* our container is not there (a fresh Caddy): insert it first in the server */
        char path[300];
        snprintf(path, sizeof path, "/config/apps/http/servers/%s/routes/0", c->cfg.server);
        int rc = admin_call(c, CALL_INSERT, "PUT", path, body);   /* takes body */
        body = NULL;
        if (!rc) return;
    }
    if (kind == CALL_INSERT && !ok && res->status) {
        /* no server to insert into (Caddy started without a config?): see what it has */
        free(body);
        if (!admin_call(c, CALL_SRV_GET, "GET", "/config/", NULL)) return;
        body = NULL;
    }
    free(body);
    if (kind == CALL_SRV_GET) {
        server_answer(c, res);
        return;
    }
    if (kind == CALL_LOG_GET || kind == CALL_LOG_PUT) {
        logger_answer(c, kind, res);
        return;
    }
    if (kind == CALL_CHECK) {
        if (ok && caddy_tag_matches(res->body, res->body_len, c->cfg.id, c->rev)) return;
        if (ok || res->status == 404) {
            c->log_written = false;
            H->log(c->self, BERTH_LOG_WARN, "Caddy lost berth's routes (revision %llu): "
                   "writing them again", (unsigned long long)c->rev);
            c->lost = true;
            routes_changed(c);
        } else {
            failed(c, "check", res);
        }
        return;
    }
    if (kind == CALL_ADOPT && !adopt_answer(c, res)) {
        schedule(c, 0);     /* Caddy holds another container, or none: written as usual */
        return;
    }
    if (kind != CALL_ADOPT && ok) written(c, true);
    else if (kind != CALL_ADOPT) failed(c, kind == CALL_PATCH ? "writing routes" :
                                        kind == CALL_INSERT ? "inserting berth's routes" :
                                        "creating Caddy's server", res);
    if (ok && kind != CALL_PATCH) c->log_written = false;     /* a Caddy we had not seen */
    if (ok && !c->log_written && c->cfg.access_log && *c->cfg.access_log) {
        logger_write(c);
        return;
    }
    if (c->gen > c->acked || c->lost)
        schedule(c, ok ? batch_wait(c) : (c->cfg.batch > 1000 ? c->cfg.batch : 1000));
}

/* Caddy's config, read after berth's route could not be inserted into the server: create
 * what is missing of it (server.c), with our container in it, or say why not. */
static void server_answer(struct caddy *c, const struct berth_http_result *res)
{
    if (res->status != 200) {
        failed(c, "reading Caddy's config", res);
        schedule(c, 1000);
        return;
    }
    char path[300], err[200];
    const char *method = "PUT";
    char *container = container_json(c);
    char *body = container ? server_create(c->cfg.server, c->cfg.server_listen.v,
                                           c->cfg.server_listen.n, res->body, res->body_len,
                                           container, path, sizeof path, &method, err,
                                           sizeof err) : NULL;
    if (!container) snprintf(err, sizeof err, "out of memory");
    free(container);
    if (body) {
        if (!admin_call(c, CALL_SRV_PUT, method, path, body)) {     /* takes body */
            H->log(c->self, BERTH_LOG_INFO, "Caddy lacks server %s or its routes: adding them",
                   c->cfg.server);
            return;
        }
        snprintf(err, sizeof err, "the admin API call could not start");
    }
    snprintf(c->last_error, sizeof c->last_error, "inserting berth's routes: %s", err);
    failed_msg(c);
    schedule(c, 1000);
}

/* Berth's logger in Caddy (logging.logs.<id>, a `net` writer to access_log): written after
 * our routes whenever Caddy may have lost it. Caddy 2.6 cannot create a missing parent, so
 * the parent's state decides where it goes. */
static void logger_write(struct caddy *c)
{
    admin_call(c, CALL_LOG_GET, "GET", "/config/logging", NULL);
}

static void logger_answer(struct caddy *c, int kind, const struct berth_http_result *res)
{
    if (res->status != 200) {
        failed(c, "writing berth's access logger", res);
        schedule(c, 1000);
        return;
    }
    if (kind == CALL_LOG_PUT) {
        c->log_written = true;
        c->loads++;
        if (c->m_loads) H->metric_add(c->m_loads, NULL, 1);
        if (c->gen > c->acked || c->lost) schedule(c, batch_wait(c));
        return;
    }
    cJSON *cur = cJSON_ParseWithLength(res->body, res->body_len);
    cJSON *logger = activity_logger(c);
    cJSON *body;
    char path[300];
    int place = caddy_logger_place(cur, c->cfg.id, logger, &body, path, sizeof path);
    if (place != 1) cJSON_Delete(logger);
    if (place == 0) {           /* Caddy holds it as it is: no load */
        cJSON_Delete(cur);
        c->log_written = true;
        if (c->gen > c->acked || c->lost) schedule(c, batch_wait(c));
        return;
    }
    if (place < 0) {
        cJSON_Delete(cur);
        snprintf(c->last_error, sizeof c->last_error, "writing berth's access logger: Caddy's "
                 "logging config is not an object berth can add to; nothing written");
        failed_msg(c);
        schedule(c, 1000);
        return;
    }
    char *text = cJSON_PrintUnformatted(body);
    cJSON_Delete(body);
    cJSON_Delete(cur);
    if (!text || admin_call(c, CALL_LOG_PUT, "POST", path, text)) schedule(c, 1000);
}

/* Writes start at most once per `batch`: a change after a quiet spell goes at once (a tenant
 * that became ready is served without waiting a batch), the ones that follow it wait for the
 * rest of the window and go together. */
static int64_t batch_wait(struct caddy *c)
{
    int64_t left = c->last_write_ms + c->cfg.batch - H->now_ms(c->self);
    return left > 0 ? left : 0;
}

static void flush(struct caddy *c)
{
    if (c->call || c->stopping) return;
    c->last_write_ms = H->now_ms(c->self);
    c->rev++;
    char *body = container_json(c);
    if (!body) {
        schedule(c, 1000);
        return;
    }
    c->sent = c->gen;
    char path[300];
    snprintf(path, sizeof path, "/id/%s", c->cfg.id);
    if (admin_call(c, CALL_PATCH, "PATCH", path, body))
        schedule(c, 1000);
}

static void flush_fire(berth_timer *t, void *arg)
{
    struct caddy *c = arg;
    H->timer_stop(t);
    c->flush_timer = NULL;
    if (c->call) return;        /* on_call schedules again */
    if (c->gen > c->acked || c->lost || c->ops) flush(c);
}

static void schedule(struct caddy *c, int64_t delay)
{
    if (!c->started || c->stopping || c->flush_timer || c->call) return;
    c->flush_timer = H->timer_start(c->self, (uint64_t)delay, 0, flush_fire, c);
}

static void check_fire(berth_timer *t, void *arg)
{
    (void)t;
    struct caddy *c = arg;
    if (c->call || c->flush_timer) return;
    if (c->lost || c->gen > c->acked) {
        flush(c);
        return;
    }
    if (!c->log_written && c->cfg.access_log && *c->cfg.access_log) {
        logger_write(c);
        return;
    }
    char path[300];
    snprintf(path, sizeof path, "/id/%s/group", c->cfg.id);
    admin_call(c, CALL_CHECK, "GET", path, NULL);
}

void routes_start(struct caddy *c)
{
    const char *a = c->cfg.admin;
    if (!strncmp(a, "unix:", 5)) {
        c->admin_sock = a + 5;
        snprintf(c->admin_url, sizeof c->admin_url, "http://localhost");
        c->admin_host[0] = 0;   /* Caddy accepts only an empty Host on a unix socket */
    } else {
        snprintf(c->admin_url, sizeof c->admin_url, "%s", a);
        size_t n = strlen(c->admin_url);
        if (n && c->admin_url[n - 1] == '/') c->admin_url[n - 1] = 0;
        const char *h = strstr(a, "://");
        snprintf(c->admin_host, sizeof c->admin_host, "%s", h ? h + 3 : a);
        char *slash = strchr(c->admin_host, '/');
        if (slash) *slash = 0;
        snprintf(c->admin_origin, sizeof c->admin_origin, "http://%s", c->admin_host);
    }
    c->started = true;
    admin_health(c, NULL);
    c->check_timer = H->timer_start(c->self, (uint64_t)c->cfg.check, (uint64_t)c->cfg.check,
                                    check_fire, c);
    char path[300];
    snprintf(path, sizeof path, "/id/%s", c->cfg.id);
    if (admin_call(c, CALL_ADOPT, "GET", path, NULL)) schedule(c, 0);
}

void routes_stop(struct caddy *c)
{
    c->stopping = true;
    if (c->flush_timer) H->timer_stop(c->flush_timer);
    if (c->check_timer) H->timer_stop(c->check_timer);
    c->flush_timer = c->check_timer = NULL;
    if (c->call) H->http_cancel(c->call);
    c->call = NULL;
    free(c->call_body);
    c->call_body = NULL;
    finish_ops(c, BERTH_ECANCELED, "caddy: the plugin is stopping");
    while (c->routes) {
        struct route *r = c->routes;
        c->routes = r->next;
        free(r);
    }
    domains_free(c);
}
