/* The control API: a router shared by core and plugin routes, and the core's own endpoints. */
#include "core.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <ftw.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct route {
    struct res res;             /* first: the owner's resource list points here */
    struct list link;
    char *method, *pattern;
    char **segs; size_t nsegs;
    bool rest;                  /* the pattern ends in '*' */
    berth_http_handler h;
    void *arg;
    berth_instance *owner;
};

static struct list routes = {&routes, &routes};

static size_t split(const char *path, char ***out)
{
    size_t n = 0;
    char **v = NULL;
    for (const char *p = path; *p;) {
        while (*p == '/') p++;
        if (!*p) break;
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = xstrndup(p, l);
        p += l;
    }
    *out = v;
    return n;
}

static void free_segs(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++) free(v[i]);
    free(v);
}

int route_add(berth_instance *owner, const char *method, const char *pattern,
              berth_http_handler h, void *arg, struct route **out)
{
    if (!method || !pattern || pattern[0] != '/' || !h) return BERTH_EINVAL;
    struct route *r = xcalloc(1, sizeof *r);
    r->method = xstrdup(method);
    r->pattern = xstrdup(pattern);
    r->nsegs = split(pattern, &r->segs);
    if (r->nsegs && !strcmp(r->segs[r->nsegs - 1], "*")) {
        r->rest = true;
        free(r->segs[--r->nsegs]);
    }
    r->h = h;
    r->arg = arg;
    r->owner = owner;
    if (owner) res_attach(owner, &r->res, RES_ROUTE);
    list_add_tail(&routes, &r->link);
    if (out) *out = r;
    return 0;
}

/* A core route whose parameter answers only some values: a plugin may use the others. */
static const struct { const char *pattern, *seg, *values; } closed_params[] = {
    {"/v1/tenants/{handle}/{action}", "{action}", " wake sleep restart touch "},
};

static bool seg_may_be(const struct route *core, size_t i, const char *lit)
{
    const char *seg = core->segs[i];
    if (seg[0] != '{') return !strcmp(seg, lit);
    for (size_t k = 0; k < ARRAY_LEN(closed_params); k++) {
        if (strcmp(closed_params[k].pattern, core->pattern) || strcmp(closed_params[k].seg, seg))
            continue;
        char word[80];
        snprintf(word, sizeof word, " %s ", lit);
        return strstr(closed_params[k].values, word) != NULL;
    }
    return true;
}

/* Whether some path matches both: the plugin's route (newer) would answer it instead. */
static bool overlaps(const struct route *p, const struct route *core)
{
    if (strcmp(p->method, core->method) &&
        !(!strcmp(p->method, "HEAD") && !strcmp(core->method, "GET")))
        return false;
    size_t a = p->nsegs, b = core->nsegs;
    if ((!p->rest && !core->rest && a != b) || (p->rest && !core->rest && b < a) ||
        (!p->rest && core->rest && a < b))
        return false;
    for (size_t i = 0; i < a && i < b; i++) {
        const char *ps = p->segs[i];
        if (ps[0] != '{' && !seg_may_be(core, i, ps)) return false;
    }
    return true;
}

const char *route_shadows_core(const char *method, const char *pattern)
{
    struct route probe = {.method = (char *)method, .pattern = (char *)pattern};
    if (pattern[0] != '/') return NULL;
    probe.nsegs = split(pattern, &probe.segs);
    if (probe.nsegs && !strcmp(probe.segs[probe.nsegs - 1], "*")) {
        probe.rest = true;
        free(probe.segs[--probe.nsegs]);
    }
    const char *hit = NULL;
    list_each(it, &routes) {
        struct route *r = container_of(it, struct route, link);
        if (!r->owner && overlaps(&probe, r)) {
            hit = r->pattern;
            break;
        }
    }
    free_segs(probe.segs, probe.nsegs);
    return hit;
}

void route_del(struct route *r)
{
    list_del(&r->link);
    if (r->owner) res_detach(&r->res);
    free_segs(r->segs, r->nsegs);
    free(r->method);
    free(r->pattern);
    free(r);
}

static bool match(const struct route *r, char **segs, size_t n, berth_req *req)
{
    if (n < r->nsegs || (!r->rest && n != r->nsegs)) return false;
    for (size_t i = 0; i < r->nsegs; i++) {
        const char *p = r->segs[i];
        if (p[0] == '{') continue;
        if (strcmp(p, segs[i])) return false;
    }
    if (!req) return true;
    for (size_t i = 0; i < r->nsegs; i++) {
        const char *p = r->segs[i];
        if (p[0] != '{') continue;
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)strlen(p) - 2, p + 1);
        http_req_set_param(req, name, segs[i]);
    }
    return true;
}

static bool json_body(berth_req *req, const struct route *r)
{
    if (!r->owner) return true;     /* the core's bodies are all JSON */
    const char *ct = req_header(req, "content-type");
    return ct && !strncasecmp(ct, "application/json", 16);
}

/* Everything from outside is checked whole before a handler sees it: cJSON stops a string at
 * \u0000 and passes invalid UTF-8 through, so `ab\u0000cd` would otherwise be `ab`. */
static bool target_ok(berth_req *req)
{
    const char *path = req_path(req), *q = req_query_raw(req);
    if (!utf8_valid(path, strlen(path))) {
        req_respond_error(req, 400, "invalid_request", "the path is not valid UTF-8");
        return false;
    }
    if (q && !pct_text_valid(q, strlen(q))) {
        req_respond_error(req, 400, "invalid_request", "the query string decodes to a NUL "
                          "byte or invalid UTF-8");
        return false;
    }
    return true;
}

static bool body_ok(berth_req *req, const struct route *r)
{
    size_t n;
    const char *body = req_body(req, &n);
    char err[160];
    if (n && json_body(req, r) && json_text_check(body, n, err, sizeof err)) {
        req_respond_error(req, 400, "invalid_json", "%s", err);
        return false;
    }
    return true;
}

void api_dispatch(berth_req *req, void *arg)
{
    (void)arg;
    if (!target_ok(req)) return;
    char **segs;
    size_t n = split(req_path(req), &segs);
    bool path_known = false;
    const char *method = req_method(req);
    bool head = !strcmp(method, "HEAD");
    const char *why;
    /* a write the store cannot keep is refused, never acknowledged into a deleted file */
    if (strcmp(method, "GET") && !head && n >= 2 && !strcmp(segs[0], "v1") &&
        !strcmp(segs[1], "tenants") && !store_healthy(C.store, &why)) {
        free_segs(segs, n);
        req_respond_error(req, 503, "store_unavailable", "%s", why);
        return;
    }
    /* the newest registration wins: during a reload the new instance's route answers */
    for (struct list *it = routes.prev; it != &routes; it = it->prev) {
        struct route *r = container_of(it, struct route, link);
        if (!match(r, segs, n, NULL)) continue;
        path_known = true;
        if (strcmp(r->method, method) && !(head && !strcmp(r->method, "GET"))) continue;
        match(r, segs, n, req);
        free_segs(segs, n);
        if (!body_ok(req, r)) return;
        http_req_set_owner(req, r->owner);
        r->h(req, r->arg);
        return;
    }
    free_segs(segs, n);
    if (path_known) req_respond_error(req, 405, "method_not_allowed", "%s is not allowed here",
                                      method);
    else req_respond_error(req, 404, "not_found", "no route for %s", req_path(req));
}

/* ---- core endpoints ---- */

/* plugin instances that failed to configure or start: a part of the configuration that is
 * not running. Adds {"ok", "state", "reason"} per instance; returns the first failure. */
static const char *plugins_health(cJSON *o, cJSON *all)
{
    const char *first = NULL;
    cJSON *p;
    cJSON_ArrayForEach(p, all) {
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(p, "name"));
        const char *st = cJSON_GetStringValue(cJSON_GetObjectItem(p, "state"));
        const char *err = cJSON_GetStringValue(cJSON_GetObjectItem(p, "error"));
        bool failed = st && !strcmp(st, "failed");
        cJSON *h = cJSON_AddObjectToObject(o, name ? name : "?");
        cJSON_AddBoolToObject(h, "ok", !failed);
        cJSON_AddStringToObject(h, "state", st ? st : "?");
        if (err) cJSON_AddStringToObject(h, "reason", err);
        if (failed && !first) first = name;
    }
    return first;
}

/* 200 only when berthd is usable: its store writable, every driver able to reach what it
 * drives, every configured plugin running; otherwise 503 with the first reason and every
 * check in "checks". A healthy answer stays {"status":"ok"} (probes poll it often) unless
 * ?details=1 asks for the checks. */
static void get_health(berth_req *r, void *arg)
{
    (void)arg;
    const char *why = NULL;
    cJSON *o = cJSON_CreateObject(), *all = plugins_json();
    cJSON *checks = cJSON_CreateObject();
    cJSON *store = cJSON_AddObjectToObject(checks, "store");
    bool store_ok = store_healthy(C.store, &why);
    cJSON_AddBoolToObject(store, "ok", store_ok);
    if (why) cJSON_AddStringToObject(store, "reason", why);
    cJSON *drivers = cJSON_AddObjectToObject(checks, "drivers");
    bool drivers_ok = drivers_health(drivers);
    const char *failed = plugins_health(cJSON_AddObjectToObject(checks, "plugins"), all);
    char *reason = !store_ok ? xstrdup(why ? why : "the store is failing")
                 : failed ? xasprintf("plugin instance '%s' failed", failed) : NULL;
    cJSON *d;
    if (store_ok && !failed && !drivers_ok) cJSON_ArrayForEach(d, drivers)
        if (!reason && cJSON_IsString(cJSON_GetObjectItem(d, "reason")))
            reason = xstrdup(cJSON_GetObjectItem(d, "reason")->valuestring);
    char *dep_failing = deps_json(cJSON_AddObjectToObject(checks, "dependencies"));
    if (!reason) reason = dep_failing;
    else free(dep_failing);
    cJSON_AddStringToObject(o, "status", reason ? "failing" : "ok");
    if (reason) cJSON_AddStringToObject(o, "reason", reason);
    const char *details = req_query(r, "details");
    if (reason || (details && strcmp(details, "0"))) cJSON_AddItemToObject(o, "checks", checks);
    else cJSON_Delete(checks);
    cJSON_Delete(all);
    int status = reason ? 503 : 200;
    free(reason);
    req_respond_json(r, status, o);
}

static uint64_t file_size(const char *dir, const char *name)
{
    char *p = xasprintf("%s/%s", dir, name);
    struct stat st;
    uint64_t n = stat(p, &st) == 0 ? (uint64_t)st.st_size : 0;
    free(p);
    return n;
}

static uint64_t dir_bytes_total;

static int add_size(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)path;
    (void)ftw;
    if (flag == FTW_F) dir_bytes_total += (uint64_t)st->st_blocks * 512;
    return 0;
}

/* what the state dir holds on disk (blocks, so sparse files count as they are) */
static uint64_t dir_bytes(const char *dir)
{
    dir_bytes_total = 0;
    nftw(dir, add_size, 16, FTW_PHYS | FTW_MOUNT);
    return dir_bytes_total;
}

/* MemTotal and MemAvailable of /proc/meminfo, and berthd's resident set */
static void add_memory(cJSON *o)
{
    cJSON *m = cJSON_AddObjectToObject(o, "memory");
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    unsigned long long kb;
    while (f && fgets(line, sizeof line, f)) {
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            cJSON_AddNumberToObject(m, "total_bytes", (double)kb * 1024);
        else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
            cJSON_AddNumberToObject(m, "available_bytes", (double)kb * 1024);
    }
    if (f) fclose(f);
    f = fopen("/proc/self/statm", "r");
    unsigned long long size, rss;
    if (f && fscanf(f, "%llu %llu", &size, &rss) == 2)
        cJSON_AddNumberToObject(m, "berthd_rss_bytes", (double)rss * (double)getpagesize());
    if (f) fclose(f);
}

static void get_info(berth_req *r, void *arg)
{
    (void)arg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "version", BERTH_VERSION_STR);
    char abi[16];
    snprintf(abi, sizeof abi, "%d.%d", BERTH_ABI_MAJOR, BERTH_ABI_MINOR);
    cJSON_AddStringToObject(o, "abi", abi);
    cJSON_AddNumberToObject(o, "pid", getpid());
    cJSON_AddNumberToObject(o, "uptime_s", (double)(wall_ms() - C.started_ms) / 1000.0);
    cJSON_AddStringToObject(o, "state_dir", C.state_dir);
    cJSON_AddItemToObject(o, "plugins", plugins_json());
    cJSON *t = cJSON_AddObjectToObject(o, "tenants");
    size_t counts[9];
    tenants_count(counts);
    cJSON_AddNumberToObject(t, "total", (double)tenants_total());
    for (int s = 1; s <= 8; s++)
        cJSON_AddNumberToObject(t, observed_name((enum berth_observed_state)s), (double)counts[s]);
    const char *why;
    cJSON *store = cJSON_AddObjectToObject(o, "store");
    cJSON_AddBoolToObject(store, "healthy", store_healthy(C.store, &why));
    if (why) cJSON_AddStringToObject(store, "reason", why);
    cJSON *disk = cJSON_AddObjectToObject(o, "disk");
    uint64_t db = file_size(C.state_dir, "berth.db") + file_size(C.state_dir, "berth.db-wal") +
                  file_size(C.state_dir, "berth.db-shm");
    cJSON_AddNumberToObject(disk, "database_bytes", (double)db);
    cJSON_AddNumberToObject(disk, "state_dir_bytes", (double)dir_bytes(C.state_dir));
    struct statvfs vfs;
    if (statvfs(C.state_dir, &vfs) == 0) {
        cJSON_AddNumberToObject(disk, "free_bytes", (double)vfs.f_bavail * (double)vfs.f_frsize);
        cJSON_AddNumberToObject(disk, "total_bytes", (double)vfs.f_blocks * (double)vfs.f_frsize);
    }
    cJSON *cfg = cJSON_AddObjectToObject(o, "config");
    cJSON_AddStringToObject(cfg, "dir", C.conf_dir);
    cJSON_AddNumberToObject(cfg, "generation", (double)C.gen->id);
    cJSON *lr = cJSON_AddObjectToObject(cfg, "last_reload");
    cJSON_AddBoolToObject(lr, "ok", C.reload.ok);
    cJSON_AddNumberToObject(lr, "at_ms", (double)C.reload.at_ms);
    cJSON_AddItemToObject(lr, "errors", C.reload.errors ? cJSON_Duplicate(C.reload.errors, 1)
                                                        : cJSON_CreateArray());
    add_memory(o);
    cJSON *deps = cJSON_AddObjectToObject(o, "dependencies");
    drivers_health(deps);                                           /* dockerd, ... */
    free(deps_json(deps));                                          /* Caddy, homeserver */
    cJSON *ev = cJSON_AddObjectToObject(o, "events");
    cJSON_AddNumberToObject(ev, "last_seq", (double)bus_last_seq());
    cJSON_AddItemToObject(o, "loop_handles", loop_handles_json());
    req_respond_json(r, 200, o);
}

static void get_metrics(berth_req *r, void *arg)
{
    (void)arg;
    struct buf b = {0};
    buf_printf(&b, "# HELP berth_info berthd build information.\n# TYPE berth_info gauge\n"
               "berth_info{version=\"%s\"} 1\n", BERTH_VERSION_STR);
    buf_printf(&b, "# HELP berth_uptime_seconds Seconds since berthd started.\n"
               "# TYPE berth_uptime_seconds gauge\nberth_uptime_seconds %.3f\n",
               (double)(wall_ms() - C.started_ms) / 1000.0);
    size_t counts[9];
    tenants_count(counts);
    buf_adds(&b, "# HELP berth_tenants Tenants by observed state.\n# TYPE berth_tenants gauge\n");
    for (int s = 1; s <= 8; s++)
        buf_printf(&b, "berth_tenants{observed=\"%s\"} %zu\n",
                   observed_name((enum berth_observed_state)s), counts[s]);
    buf_printf(&b, "# HELP berth_events_published_total Events published on the bus.\n"
               "# TYPE berth_events_published_total counter\nberth_events_published_total %"
               PRIu64 "\n", bus_published());
    buf_printf(&b, "# HELP berth_http_requests_total Requests served by berthd's HTTP server.\n"
               "# TYPE berth_http_requests_total counter\nberth_http_requests_total %" PRIu64
               "\n", http_requests_total());
    buf_printf(&b, "# HELP berth_http_connections Open HTTP connections.\n"
               "# TYPE berth_http_connections gauge\nberth_http_connections %" PRIu64 "\n",
               http_connections_open());
    buf_printf(&b, "# HELP berth_plugins Plugin instances running.\n"
               "# TYPE berth_plugins gauge\nberth_plugins %zu\n", plugins_count());
    buf_printf(&b, "# HELP berth_config_generation Config generation running.\n"
               "# TYPE berth_config_generation gauge\nberth_config_generation %" PRIu64 "\n",
               C.gen->id);
    buf_printf(&b, "# HELP berth_config_last_reload_ok Whether the last reload succeeded.\n"
               "# TYPE berth_config_last_reload_ok gauge\nberth_config_last_reload_ok %d\n",
               C.reload.ok ? 1 : 0);
    deps_metrics(&b);
    metrics_render(&b);
    req_respond(r, 200, "text/plain; version=0.0.4", b.p, b.len);
    buf_free(&b);
}

static void get_tenants(berth_req *r, void *arg)
{
    (void)arg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "tenants", tenants_json());
    req_respond_json(r, 200, o);
}

static const char *json_str(cJSON *o, const char *k, const char *def, bool *bad)
{
    cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) return def;
    if (!cJSON_IsString(v)) {
        *bad = true;
        return NULL;
    }
    return v->valuestring;
}

/* A write the store refused is never acknowledged: 507 for a full disk (the client may
 * retry once there is room), 503 for anything else the store said. */
static void respond_store_error(berth_req *r, int rc, const char *msg)
{
    if (rc == BERTH_ENOSPC)
        req_respond_error(r, 507, "insufficient_storage", "%s (the state disk is full)", msg);
    else
        req_respond_error(r, 503, "store_unavailable", "%s: %s", msg, berth_strerror(rc));
}

/* The body as one JSON object in which the keys POST /v1/tenants reads appear once, or NULL
 * (answered 400). cJSON alone stops after the first value and keeps the first of two equal
 * keys, so a proxy that read the last `handle` (or a second object) would approve one tenant
 * and berthd create another. */
static cJSON *object_body(berth_req *r)
{
    size_t n;
    const char *body = req_body(r, &n), *end = NULL;
    cJSON *in = cJSON_ParseWithLengthOpts(body, n, &end, false);
    const char *why = cJSON_IsObject(in) ? NULL : "the body must be a JSON object";
    while (!why && end < body + n && strchr(" \t\r\n", *end)) end++;
    if (!why && end != body + n) why = "the body must be one JSON object and nothing after it";
    /* only the keys a handler reads: a pairwise check of every key would be quadratic */
    static const char *const keys[] = {"handle", "kind", "template", "desired"};
    for (size_t k = 0; !why && k < sizeof keys / sizeof *keys; k++) {
        int seen = 0;
        for (cJSON *a = in->child; a; a = a->next) seen += !strcmp(a->string, keys[k]);
        if (seen > 1) why = "a key appears twice in the body";
    }
    if (!why) return in;
    cJSON_Delete(in);
    req_respond_error(r, 400, "invalid_json", "%s", why);
    return NULL;
}

static void post_tenants(berth_req *r, void *arg)
{
    (void)arg;
    cJSON *in = object_body(r);
    if (!in) return;
    bool bad = false;
    const char *handle = json_str(in, "handle", NULL, &bad);
    const char *kind = json_str(in, "kind", "human", &bad);
    const char *tmpl = json_str(in, "template", "default", &bad);
    const char *desired = json_str(in, "desired", "running", &bad);
    char err[256];
    if (bad || !handle) {
        req_respond_error(r, 400, "invalid_request",
                          "handle, kind, template and desired must be strings; handle is "
                          "required");
    } else if (!handle_valid(handle)) {
        tenant_create(handle, kind, tmpl, BERTH_DESIRED_RUNNING, err, sizeof err);
        req_respond_error(r, 400, "invalid_handle", "%s", err);
    } else if (strcmp(desired, "running") && strcmp(desired, "asleep")) {
        req_respond_error(r, 400, "invalid_request", "desired must be running or asleep");
    } else if (!tmpl_find(tmpl)) {
        req_respond_error(r, 422, "unknown_template", "template '%s' is not defined in the "
                          "config", tmpl);
    } else {
        enum berth_desired d = strcmp(desired, "asleep") ? BERTH_DESIRED_RUNNING
                                                           : BERTH_DESIRED_ASLEEP;
        int rc = tenant_create(handle, kind, tmpl, d, err, sizeof err);
        if (rc == BERTH_EEXIST) req_respond_error(r, 409, "exists", "%s", err);
        else if (rc == BERTH_EINVAL) req_respond_error(r, 400, "invalid_request", "%s", err);
        else if (rc) respond_store_error(r, rc, err);
        else req_respond_json(r, 201, tenant_json(tenant_find(handle)));
    }
    cJSON_Delete(in);
}

static struct tenant *param_tenant(berth_req *r)
{
    const char *h = req_param(r, "handle");
    struct tenant *t = handle_valid(h) ? tenant_find(h) : NULL;
    if (!t) {
        if (!handle_valid(h)) req_respond_error(r, 400, "invalid_handle",
                                                "'%s' is not a valid handle", h);
        else req_respond_error(r, 404, "not_found", "no tenant '%s'", h);
    }
    return t;
}

static void get_tenant(berth_req *r, void *arg)
{
    (void)arg;
    struct tenant *t = param_tenant(r);
    if (t) req_respond_json(r, 200, tenant_json(t));
}

static void delete_tenant(berth_req *r, void *arg)
{
    (void)arg;
    struct tenant *t = param_tenant(r);
    if (!t) return;
    const char *h = req_param(r, "handle");
    const char *force = req_query(r, "force");
    if (force && strcmp(force, "true") && strcmp(force, "false")) {
        req_respond_error(r, 400, "invalid_request", "force must be true or false");
        return;
    }
    int rc = tenant_delete(h, force && !strcmp(force, "true"));
    if (rc && rc != BERTH_EBUSY) {
        respond_store_error(r, rc, "the deletion could not be stored");
        return;
    }
    t = tenant_find(h);
    if (t) req_respond_json(r, 202, tenant_json(t));
    else req_respond(r, 204, NULL, NULL, 0);
}

static void wake_answered(const char *handle, int status, const char *msg, void *arg)
{
    berth_req *r = arg;
    struct tenant *t = tenant_find(handle);
    if (status == 0 && t) req_respond_json(r, 200, tenant_json(t));
    else if (status == BERTH_ETIMEDOUT)
        req_respond_error(r, 504, "timeout", "%s is not ready yet; it keeps starting", handle);
    else if (status == BERTH_ENOENT || !t)
        req_respond_error(r, 404, "not_found", "tenant '%s' was deleted", handle);
    else
        req_respond_error(r, 503, "not_ready", "%s", msg ? msg : "the tenant failed to start");
}

static void tenant_action(berth_req *r, void *arg)
{
    (void)arg;
    const char *action = req_param(r, "action");
    struct tenant *t = param_tenant(r);
    if (!t) return;
    const char *h = req_param(r, "handle");
    int rc;
    const char *wait = req_query(r, "wait");
    int64_t wait_ms = 0;
    if (wait && (parse_duration(wait, &wait_ms) < 0 || wait_ms > 600000)) {
        req_respond_error(r, 400, "invalid_request", "wait must be a duration up to 10m, "
                          "like 30s");
        return;
    }
    if (!strcmp(action, "wake") && wait_ms > 0) {
        /* concurrent wakes start it once: the reconciler runs one operation per tenant,
         * and every waiter is answered by the same readiness */
        rc = tenant_desire(h, BERTH_DESIRED_RUNNING, "api");
        if (!rc) rc = tenant_wait_ready(NULL, h, wait_ms, wake_answered, r);
        if (!rc) return;
    } else if (!strcmp(action, "wake")) rc = tenant_desire(h, BERTH_DESIRED_RUNNING, "api");
    else if (!strcmp(action, "sleep")) rc = tenant_desire(h, BERTH_DESIRED_ASLEEP, "api");
    else if (!strcmp(action, "restart")) rc = tenant_restart(h);
    else if (!strcmp(action, "touch")) rc = tenant_touch(h, "api");
    else if (!strcmp(action, "reprovision")) rc = tenant_reprovision(NULL, h);
    else {
        req_respond_error(r, 404, "not_found", "unknown action '%s' (wake, sleep, restart, "
                          "touch, reprovision)", action);
        return;
    }
    if (rc == BERTH_EBUSY)
        req_respond_error(r, 409, "conflict", "tenant '%s' is being deleted or not running", h);
    else if (rc == BERTH_ENOSPC || rc == BERTH_EIO)
        respond_store_error(r, rc, "the change could not be stored");
    else if (rc)
        req_respond_error(r, 500, "internal", "%s", berth_strerror(rc));
    else
        req_respond_json(r, 202, tenant_json(t));
}

static void get_plugins(berth_req *r, void *arg)
{
    (void)arg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "plugins", plugins_json());
    req_respond_json(r, 200, o);
}

static void post_reload(berth_req *r, void *arg)
{
    (void)arg;
    struct errs e = {0};
    if (core_reload(&e) == 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, "ok", true);
        cJSON_AddNumberToObject(o, "generation", (double)C.gen->id);
        req_respond_json(r, 200, o);
    } else {
        cJSON *o = cJSON_CreateObject();
        cJSON *er = cJSON_AddObjectToObject(o, "error");
        cJSON_AddStringToObject(er, "code", "invalid_config");
        char msg[128];
        snprintf(msg, sizeof msg, "%zu error(s); generation %" PRIu64 " keeps running", e.n,
                 C.gen->id);
        cJSON_AddStringToObject(er, "message", msg);
        cJSON *d = cJSON_AddArrayToObject(er, "details");
        for (size_t i = 0; i < e.n; i++) cJSON_AddItemToArray(d, cJSON_CreateString(e.v[i]));
        req_respond_json(r, 422, o);
    }
    errs_free(&e);
}

/* ---- GET /v1/events: Server-Sent Events from the journal, then live ---- */

struct sse {
    struct list link;
    berth_req *r;
    struct bus_sub *sub;
    uint64_t last;
    char *type, *tenant;
    bool prefix, catching_up, live, slow;
};

static struct list sses = {&sses, &sses};
static uv_timer_t heartbeat;
static bool heartbeat_init;

#define SSE_HIGH_WATER (256u << 10)
#define SSE_MAX_QUEUE (8u << 20)

static bool sse_wants(const struct sse *s, const char *type, const char *tenant)
{
    if (s->tenant && (!tenant || strcmp(s->tenant, tenant))) return false;
    if (!s->type) return true;
    return s->prefix ? !strncmp(type, s->type, strlen(s->type)) : !strcmp(type, s->type);
}

static void sse_close(struct sse *s)
{
    list_del(&s->link);
    bus_unsubscribe(s->sub);
    req_end(s->r);
    free(s->type);
    free(s->tenant);
    free(s);
}

/* Returns the bytes queued for the client afterwards. */
static size_t sse_send(struct sse *s, uint64_t seq, int64_t t, const char *type,
                       const char *tenant, const char *json)
{
    if (seq <= s->last) return 0;
    s->last = seq;
    if (!sse_wants(s, type, tenant)) return 0;
    struct buf b = {0};
    buf_printf(&b, "id: %" PRIu64 "\nevent: %s\ndata: {\"seq\":%" PRIu64 ",\"type\":\"%s\","
               "\"time_ms\":%" PRId64 ",\"tenant\":", seq, type, seq, type, t);
    if (tenant) buf_printf(&b, "\"%s\"", tenant);     /* handles need no escaping */
    else buf_adds(&b, "null");
    buf_printf(&b, ",\"payload\":%s}\n\n", json);
    size_t queued = req_write(s->r, b.p, b.len);
    buf_free(&b);
    return queued;
}

static void sse_live(const struct berth_event *ev, void *arg)
{
    struct sse *s = arg;
    if (s->catching_up) return;     /* journaled before delivery: the backlog will send it */
    if (sse_send(s, ev->seq, ev->time_ms, ev->type_name, ev->tenant, ev->json) >
        SSE_MAX_QUEUE) {
        log_warn("an event stream client is not reading; closing it");
        sse_close(s);
    }
}

struct page { struct sse *s; size_t rows; bool full; };

static bool sse_row(uint64_t seq, int64_t t, const char *type, const char *tenant,
                    const char *json, void *arg)
{
    struct page *p = arg;
    p->rows++;
    if (sse_send(p->s, seq, t, type, tenant, json) > SSE_HIGH_WATER) p->full = true;
    return !p->full;
}

/* Sends the journal page by page, pausing while the client's queue is high. */
static void sse_catch_up(berth_req *r, void *arg)
{
    (void)r;
    struct sse *s = arg;
    for (;;) {
        struct page p = {s, 0, false};
        store_events_since(C.store, s->last, 500, sse_row, &p);
        if (p.full) {
            req_on_drain(s->r, sse_catch_up, s);
            return;
        }
        if (p.rows < 500) break;
    }
    s->catching_up = false;
    if (!s->live) sse_close(s);
}

static void sse_gone(berth_req *r, void *arg)
{
    (void)r;
    sse_close(arg);
}

static void beat(uv_timer_t *h)
{
    (void)h;
    list_each(it, &sses) {
        struct sse *s = container_of(it, struct sse, link);
        req_write(s->r, ": keepalive\n\n", 13);
    }
}

static void get_events(berth_req *r, void *arg)
{
    (void)arg;
    const char *lei = req_header(r, "last-event-id");
    const char *since = lei ? lei : req_query(r, "since");
    const char *follow = req_query(r, "follow"), *type = req_query(r, "type");
    uint64_t last = bus_last_seq();
    uint64_t after = last > 100 ? last - 100 : 0;
    if (since) {
        char *end;
        errno = 0;
        after = strtoull(since, &end, 10);
        /* strtoull takes "-5" and " 5" as numbers; a sequence number is digits only */
        if (*since < '0' || *since > '9' || *end || errno) {
            req_respond_error(r, 400, "invalid_request", "since / Last-Event-ID must be a "
                              "sequence number");
            return;
        }
    }
    if (type && *type && type[strlen(type) - 1] != '*' && !bus_lookup(type)) {
        req_respond_error(r, 400, "invalid_request", "unknown event type '%s' (a registered "
                          "type like tenant.ready, or a prefix ending in *)", type);
        return;
    }
    struct sse *s = xcalloc(1, sizeof *s);
    s->r = r;
    s->last = after;
    s->live = !follow || (strcmp(follow, "0") && strcmp(follow, "false"));
    s->catching_up = true;
    if (type && *type) {
        size_t l = strlen(type);
        s->prefix = l > 1 && type[l - 1] == '*';
        s->type = xstrndup(type, s->prefix ? l - 1 : l);
    }
    const char *tenant = req_query(r, "tenant");
    if (tenant && *tenant) s->tenant = xstrdup(tenant);
    static const struct berth_header hdr[] = {{"Content-Type", "text/event-stream"},
                                              {"Cache-Control", "no-cache"}, {NULL, NULL}};
    req_start(r, 200, hdr);
    list_add_tail(&sses, &s->link);
    s->sub = bus_subscribe(0, sse_live, s);
    req_on_close(r, sse_gone, s);
    if (!heartbeat_init) {
        uv_timer_init(C.loop, &heartbeat);
        uv_timer_start(&heartbeat, beat, 15000, 15000);
        uv_unref((uv_handle_t *)&heartbeat);
        heartbeat_init = true;
    }
    sse_catch_up(r, s);
}

static void get_backup(berth_req *r, void *arg)
{
    (void)arg;
    backup_start(r, C.store, C.state_dir);
}

void api_shutdown(void)
{
    backup_shutdown();
    list_each(it, &sses) sse_close(container_of(it, struct sse, link));
    if (heartbeat_init) uv_close((uv_handle_t *)&heartbeat, NULL);
    heartbeat_init = false;
    list_each(it, &routes) {
        struct route *r = container_of(it, struct route, link);
        if (!r->owner) route_del(r);
    }
}

int api_init(void)
{
    static const struct { const char *m, *p; berth_http_handler h; } core_routes[] = {
        {"GET", "/health", get_health},
        {"GET", "/metrics", get_metrics},
        {"GET", "/v1/system", get_info},
        {"GET", "/v1/system/info", get_info},
        {"GET", "/v1/system/backup", get_backup},
        {"GET", "/v1/tenants", get_tenants},
        {"POST", "/v1/tenants", post_tenants},
        {"GET", "/v1/tenants/{handle}", get_tenant},
        {"DELETE", "/v1/tenants/{handle}", delete_tenant},
        {"POST", "/v1/tenants/{handle}/{action}", tenant_action},
        {"GET", "/v1/events", get_events},
        {"GET", "/v1/plugins", get_plugins},
        {"POST", "/v1/reload", post_reload},
    };
    for (size_t i = 0; i < ARRAY_LEN(core_routes); i++)
        route_add(NULL, core_routes[i].m, core_routes[i].p, core_routes[i].h, NULL, NULL);
    return 0;
}
