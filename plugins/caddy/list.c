/* GET /v1/<instance>/routes: what Caddy holds against what berth expects, for
 * `berthctl routes`. Caddy's side is read fresh (GET /id/<id>) for every request. */
#include "caddy.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct listing {
    struct listing *next;
    struct caddy *c;
    berth_req *req;
    berth_call *call;
};

static void unlink_listing(struct listing *l)
{
    for (struct listing **pp = &l->c->listings; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
}

static char *report(struct caddy *c, const cJSON *held, const char *err)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "revision", (double)c->rev);
    cJSON_AddNumberToObject(o, "config_loads", (double)c->loads);
    cJSON_AddNumberToObject(o, "failures", (double)c->failures);
    cJSON_AddStringToObject(o, "last_error", c->last_error);
    if (err) cJSON_AddStringToObject(o, "caddy_error", err);
    cJSON_AddBoolToObject(o, "caddy_holds_container", held != NULL);
    cJSON *list = cJSON_AddArrayToObject(o, "routes");
    for (struct route *r = c->routes; r; r = r->next) {
        char id[BERTH_HANDLE_MAX + 80];
        snprintf(id, sizeof id, "%s-%s", c->cfg.id, r->handle);
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "handle", r->handle);
        cJSON_AddStringToObject(e, "host", r->host);
        cJSON_AddStringToObject(e, "expected", *r->upstream ? r->upstream : "berth");
        const cJSON *hr = held ? caddy_held_route(held, id) : NULL;
        if (hr) cJSON_AddStringToObject(e, "caddy", caddy_held_upstream(hr));
        else cJSON_AddNullToObject(e, "caddy");
        cJSON_AddItemToArray(list, e);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static void got(const struct berth_http_result *res, void *arg)
{
    struct listing *l = arg;
    l->call = NULL;
    cJSON *held = res->status == 200 ? cJSON_ParseWithLength(res->body, res->body_len) : NULL;
    char err[200] = "";
    if (res->status == 0) snprintf(err, sizeof err, "%s", res->message);
    else if (res->status != 200 && res->status != 404)
        snprintf(err, sizeof err, "HTTP %d", res->status);
    char *s = report(l->c, held, *err ? err : NULL);
    cJSON_Delete(held);
    if (l->req) {
        H->on_close(l->req, NULL, NULL);
        if (s) H->respond(l->req, 200, "application/json", s, strlen(s));
        else H->respond_error(l->req, 500, "internal", "out of memory");
    }
    free(s);
    unlink_listing(l);
    free(l);
}

static void gone(berth_req *r, void *arg)
{
    (void)r;
    struct listing *l = arg;
    l->req = NULL;
    H->respond(r, 499, "text/plain", "", 0);   /* ends it; nobody reads it */
}

void routes_list(berth_req *req, void *arg)
{
    struct caddy *c = arg;
    struct listing *l = calloc(1, sizeof *l);
    if (!l) {
        H->respond_error(req, 500, "internal", "out of memory");
        return;
    }
    l->c = c;
    l->req = req;
    char url[512];
    snprintf(url, sizeof url, "%s/id/%s", c->admin_url, c->cfg.id);
    struct berth_header hdr[4];
    admin_headers(c, hdr, false);
    struct berth_http_opts o = {.size = sizeof o, .url = url, .unix_socket = c->admin_sock,
                                .headers = hdr, .timeout_ms = c->cfg.timeout,
                                .connect_timeout_ms = 2000};
    l->call = H->http_request(c->self, &o, got, l);
    if (!l->call) {
        H->respond_error(req, 502, "caddy", "cannot call Caddy's admin API");
        free(l);
        return;
    }
    l->next = c->listings;
    c->listings = l;
    H->on_close(req, gone, l);
}

void routes_list_stop(struct caddy *c)
{
    while (c->listings) {
        struct listing *l = c->listings;
        c->listings = l->next;
        if (l->call) H->http_cancel(l->call);
        if (l->req) {
            H->on_close(l->req, NULL, NULL);
            H->respond_error(l->req, 503, "stopping", "the caddy plugin is stopping");
        }
        free(l);
    }
}
