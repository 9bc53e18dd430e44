/* The matrix plugin's control API routes:
 *   GET    /v1/tenants/{handle}/matrix   the tenant's accounts (user ids, never tokens)
 *   GET    /v1/matrix/health             homeserver reachability, admin account, rooms
 *   POST   /v1/matrix/plan               what apply would change (writes nothing)
 *   POST   /v1/matrix/apply              rooms, spaces and joins brought to the config
 *   POST   /v1/matrix/invites            mint a registration token {uses, days}
 *   GET    /v1/matrix/invites            list them
 *   DELETE /v1/matrix/invites/{token}    revoke one
 * Invite tokens use Synapse's registration-token admin API; elsewhere they answer 501. */
#include "matrix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mx_routes(struct mx *mx);

/* a request answered later: the client may be gone by then */
struct pend {
    struct mx *mx;
    berth_req *req;
    cJSON *plan;
    char token[128];
    int64_t uses, days;
};

/* the client left: the request is ended now (nobody reads the answer), the homeserver
 * call goes on and its result is dropped in pend_end / pend_error */
static void pend_closed(berth_req *r, void *arg)
{
    struct pend *p = arg;
    p->req = NULL;
    p->mx->H->respond_abort(r);
}

static struct pend *pend_new(struct mx *mx, berth_req *r)
{
    struct pend *p = calloc(1, sizeof *p);
    if (!p) {
        mx->H->respond_error(r, 500, "nomem", "out of memory");
        return NULL;
    }
    p->mx = mx;
    p->req = r;
    mx->H->on_close(r, pend_closed, p);
    return p;
}

static void respond_json(struct mx *mx, berth_req *r, int status, cJSON *o)
{
    char *s = cJSON_PrintUnformatted(o);
    if (s) {
        size_t n = strlen(s);
        char *t = realloc(s, n + 2);
        if (t) {
            s = t;
            s[n++] = '\n';
            s[n] = 0;
        }
        mx->H->respond(r, status, "application/json", s, n);
    } else {
        mx->H->respond_error(r, 500, "nomem", "out of memory");
    }
    free(s);
    cJSON_Delete(o);
}

static void pend_end(struct pend *p, int status, cJSON *o)
{
    if (p->req) {
        p->mx->H->on_close(p->req, NULL, NULL);
        respond_json(p->mx, p->req, status, o);
    } else {
        cJSON_Delete(o);
    }
    cJSON_Delete(p->plan);
    free(p);
}

static void pend_error(struct pend *p, int status, const char *code, const char *msg)
{
    if (p->req) {
        p->mx->H->on_close(p->req, NULL, NULL);
        p->mx->H->respond_error(p->req, status, code, "%s", msg);
    }
    cJSON_Delete(p->plan);
    free(p);
}

static void tenant_matrix(berth_req *r, void *arg)
{
    struct mx *mx = arg;
    const char *h = mx->H->req_param(r, "handle");
    struct berth_tenant_info t = {.size = sizeof t};
    if (mx->H->tenant_get(mx->self, h, &t)) {
        mx->H->respond_error(r, 404, "not_found", "no tenant '%s'", h);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "handle", h);
    cJSON_AddStringToObject(o, "homeserver", mx->cfg.homeserver);
    cJSON_AddItemToObject(o, "accounts", acct_list(mx, h));
    respond_json(mx, r, 200, o);
}

static void health(berth_req *r, void *arg)
{
    struct mx *mx = arg;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "homeserver", mx->cfg.homeserver);
    cJSON_AddBoolToObject(o, "reachable", hs_up(mx->hs));
    if (!hs_up(mx->hs)) cJSON_AddStringToObject(o, "error", hs_last_error(mx->hs));
    cJSON_AddBoolToObject(o, "admin_ready", mx->admin_ready);
    if (mx->admin_error[0]) cJSON_AddStringToObject(o, "admin_error", mx->admin_error);
    cJSON_AddBoolToObject(o, "rooms_ready", mx->rooms_ready || !mx->cfg.rooms.n);
    if (mx->rooms_error[0]) cJSON_AddStringToObject(o, "rooms_error", mx->rooms_error);
    hs_stats(mx->hs, o);
    respond_json(mx, r, 200, o);
}

static void walked(struct mx *mx, int status, const char *msg, void *arg)
{
    (void)mx;
    struct pend *p = arg;
    if (status) {
        pend_error(p, status == BERTH_ECONNREFUSED ? 502 : 503, "homeserver", msg);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, p->plan ? "changes" : "applied",
                          p->plan ? p->plan : cJSON_CreateTrue());
    p->plan = NULL;
    pend_end(p, 200, o);
}

static void plan(berth_req *r, void *arg)
{
    struct pend *p = pend_new(arg, r);
    if (!p) return;
    p->plan = cJSON_CreateArray();
    rooms_apply(p->mx, p->plan, walked, p);
}

static void apply(berth_req *r, void *arg)
{
    struct pend *p = pend_new(arg, r);
    if (p) rooms_apply(p->mx, NULL, walked, p);
}

/* ---- invite tokens ---- */

static bool no_admin_api(struct mx *mx, berth_req *r)
{
    if (mx->cfg.registration.shared_secret) return false;
    mx->H->respond_error(r, 501, "not_supported", "invite tokens are not supported by this "
                         "homeserver configuration (they need Synapse's admin API: "
                         "registration.shared_secret)");
    return true;
}

static void invite_answer(const struct mx_res *res, void *arg)
{
    struct pend *p = arg;
    if (res->error == BERTH_ECANCELED) {
        pend_error(p, 503, "stopping", "berthd is stopping");
    } else if (!res->status) {
        pend_error(p, 502, "homeserver", res->message);
    } else if (res->status == 401 && !strcmp(res->errcode, "M_UNKNOWN_TOKEN")) {
        acct_refused(p->mx, p->mx->admin_id);      /* the next call logs in again */
        pend_error(p, 503, "homeserver", "berth's admin token was refused; try again");
    } else if (res->status == 404 || (res->status == 400 && !strcmp(res->errcode,
                                                                   "M_UNRECOGNIZED"))) {
        pend_error(p, 501, "not_supported", "registration tokens are not supported by this "
                   "homeserver");
    } else if (res->status >= 300) {
        char msg[1024];
        snprintf(msg, sizeof msg, "homeserver: HTTP %d %s %s", res->status, res->errcode,
                 res->message);
        pend_error(p, res->status == 404 ? 404 : 502, "homeserver", msg);
    } else {
        pend_end(p, res->status, res->json ? cJSON_Duplicate(res->json, true)
                                           : cJSON_CreateObject());
    }
}

static void invite_go(struct mx *mx, int status, const char *msg, void *arg);

static void invite_call(berth_req *r, struct mx *mx, int64_t uses, int64_t days,
                        const char *token)
{
    if (no_admin_api(mx, r)) return;
    struct pend *p = pend_new(mx, r);
    if (!p) return;
    p->uses = uses;
    p->days = days;
    snprintf(p->token, sizeof p->token, "%s", token ? token : "");
    admin_ensure(mx, invite_go, p);
}

/* uses: -1 lists, -2 revokes p->token, >=0 mints */
static void invite_go(struct mx *mx, int status, const char *msg, void *arg)
{
    struct pend *p = arg;
    if (status) {
        pend_error(p, 503, "homeserver", msg);
        return;
    }
    char path[400], esc[300];
    if (p->uses == -1) {
        hs_call(mx->hs, "GET", "/_synapse/admin/v1/registration_tokens", mx->admin_token, NULL,
                invite_answer, p);
    } else if (p->uses == -2) {
        hs_escape(p->token, esc, sizeof esc);
        snprintf(path, sizeof path, "/_synapse/admin/v1/registration_tokens/%s", esc);
        hs_call(mx->hs, "DELETE", path, mx->admin_token, NULL, invite_answer, p);
    } else {
        cJSON *b = cJSON_CreateObject();
        if (p->uses > 0) cJSON_AddNumberToObject(b, "uses_allowed", (double)p->uses);
        else cJSON_AddNullToObject(b, "uses_allowed");
        if (p->days > 0)
            cJSON_AddNumberToObject(b, "expiry_time",
                                    (double)(mx->H->now_ms(mx->self) + p->days * 86400000));
        hs_call(mx->hs, "POST", "/_synapse/admin/v1/registration_tokens/new", mx->admin_token,
                b, invite_answer, p);
    }
}

static void invites_new(berth_req *r, void *arg)
{
    struct mx *mx = arg;
    size_t len = 0;
    const char *body = mx->H->req_body(r, &len);
    cJSON *b = body && len ? cJSON_ParseWithLength(body, len) : cJSON_CreateObject();
    cJSON *u = cJSON_GetObjectItem(b, "uses"), *d = cJSON_GetObjectItem(b, "days");
    if (!b || (u && (!cJSON_IsNumber(u) || u->valuedouble < 0 || u->valuedouble > 1e9)) ||
        (d && (!cJSON_IsNumber(d) || d->valuedouble < 0 || d->valuedouble > 36500))) {
        cJSON_Delete(b);
        mx->H->respond_error(r, 400, "bad_request", "expected {\"uses\": N, \"days\": N} with "
                             "non-negative numbers (0: unlimited)");
        return;
    }
    int64_t uses = u ? (int64_t)u->valuedouble : 1, days = d ? (int64_t)d->valuedouble : 7;
    cJSON_Delete(b);
    invite_call(r, mx, uses, days, NULL);
}

static void invites_list(berth_req *r, void *arg) { invite_call(r, arg, -1, 0, NULL); }

static void invites_revoke(berth_req *r, void *arg)
{
    struct mx *mx = arg;
    invite_call(r, mx, -2, 0, mx->H->req_param(r, "token"));
}

void mx_routes(struct mx *mx)
{
    const struct berth_host *H = mx->H;
    H->route(mx->self, "GET", "/v1/tenants/{handle}/matrix", tenant_matrix, mx);
    H->route(mx->self, "GET", "/v1/matrix/health", health, mx);
    H->route(mx->self, "POST", "/v1/matrix/plan", plan, mx);
    H->route(mx->self, "POST", "/v1/matrix/apply", apply, mx);
    H->route(mx->self, "POST", "/v1/matrix/invites", invites_new, mx);
    H->route(mx->self, "GET", "/v1/matrix/invites", invites_list, mx);
    H->route(mx->self, "DELETE", "/v1/matrix/invites/{token}", invites_revoke, mx);
}
