/* The configured rooms and spaces, and tenants' joins. One walk serves both `apply` and
 * `plan`: every room is looked up by alias first and created only when missing; its name,
 * topic and place in its space are read and written only when they differ; then every stored
 * account a room's `join` names is invited (by berth's admin account, which owns the rooms)
 * and joins with its own token. Joins done are remembered in matrix_joins, so running it
 * again sends no write. With a plan array, the walk only reads and records what it would
 * change. */
#include "matrix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pair { char user_id[MX_ID_MAX], tenant[BERTH_HANDLE_MAX + 1]; size_t room; };

struct walk {
    struct mx *mx;
    uint64_t gen;               /* the configuration it started with */
    cJSON *plan;                /* NULL: apply */
    mx_cb cb;
    void *arg;
    bool rooms, joins;          /* which phases run */
    char tenant[BERTH_HANDLE_MAX + 1];   /* joins of this tenant only; "" = all */
    size_t *order, pos;         /* rooms, spaces first */
    char **ids;                 /* room ids found or made by this walk */
    bool retried;
    struct pair *pairs;
    size_t npairs, pi;
};

bool mx_expand(const char *pattern, const char *handle, char *out, size_t cap)
{
    size_t o = 0;
    for (const char *p = pattern; *p;) {
        const char *add = p;
        size_t n = 1;
        if (!strncmp(p, "{handle}", 8)) {
            add = handle;
            n = strlen(handle);
            p += 8;
        } else {
            p++;
        }
        if (o + n >= cap) return false;
        memcpy(out + o, add, n);
        o += n;
    }
    out[o] = 0;
    return true;
}

static const struct mx_room_cfg *room(struct mx *mx, size_t i)
{
    return (const struct mx_room_cfg *)mx->cfg.rooms.v + i;
}

static void alias_of(struct mx *mx, size_t i, char *out, size_t cap)
{
    snprintf(out, cap, "#%s:%s", room(mx, i)->alias, mx->cfg.server_name);
}

static void note(struct walk *w, const char *fmt, const char *a, const char *b)
{
    char line[1024];
    snprintf(line, sizeof line, fmt, a, b ? b : "");
    cJSON_AddItemToArray(w->plan, cJSON_CreateString(line));
}

static void walk_free(struct walk *w)
{
    for (size_t i = 0; w->ids && i < w->mx->cfg.rooms.n; i++) free(w->ids[i]);
    free(w->ids);
    free(w->order);
    free(w->pairs);
    free(w);
}

static void walk_end(struct walk *w, int status, const char *msg)
{
    struct mx *mx = w->mx;
    if (!status && w->gen != mx->gen) {
        status = BERTH_EAGAIN;
        msg = "matrix: the rooms' configuration changed; trying again";
    }
    if (!status && w->rooms && !w->plan) {
        rooms_reset(mx);
        mx->room_ids = w->ids;
        mx->nrooms = mx->cfg.rooms.n;
        mx->rooms_ready = true;
        w->ids = NULL;
    }
    w->cb(mx, status, msg, w->arg);
    walk_free(w);
}

/* a call made with who's token failed */
static void walk_fail_as(struct walk *w, const char *what, const struct mx_res *r,
                         const char *who)
{
    char msg[1024];
    if (r->error == BERTH_ECANCELED) {
        walk_end(w, BERTH_ECANCELED, "matrix: stopping");
        return;
    }
    if (r->status == 401 && !strcmp(r->errcode, "M_UNKNOWN_TOKEN")) acct_refused(w->mx, who);
    if (!r->status)
        snprintf(msg, sizeof msg, "matrix: homeserver unreachable (%s): %s", what, r->message);
    else
        snprintf(msg, sizeof msg, "matrix: %s: HTTP %d %s %s", what, r->status, r->errcode,
                 r->message);
    walk_end(w, r->status ? BERTH_EIO : BERTH_ECONNREFUSED, msg);
}

/* a call made with berth's own token failed */
static void walk_fail(struct walk *w, const char *what, const struct mx_res *r)
{
    walk_fail_as(w, what, r, w->mx->admin_id);
}

/* a reload replaced the configuration this walk indexes into: it ends, to be run again */
static bool stale(struct walk *w, const struct mx_res *r)
{
    if (r->error == BERTH_ECANCELED) {
        walk_end(w, BERTH_ECANCELED, "matrix: stopping");
        return true;
    }
    if (w->gen == w->mx->gen) return false;
    walk_end(w, BERTH_EAGAIN, "matrix: the rooms' configuration changed; trying again");
    return true;
}

static void path_state(char *out, size_t cap, const char *room_id, const char *type,
                       const char *key)
{
    char er[MX_ID_MAX * 3], ek[MX_ID_MAX * 3];
    hs_escape(room_id, er, sizeof er);
    hs_escape(key, ek, sizeof ek);
    snprintf(out, cap, "/_matrix/client/v3/rooms/%s/state/%s/%s", er, type, ek);
}

/* ---- the joins phase ---- */

static void join_next(struct walk *w);

static void joined(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    struct pair *p = &w->pairs[w->pi];
    char what[MX_ID_MAX + 32];
    snprintf(what, sizeof what, "join %s", p->user_id);
    if (r->status != 200) {     /* the account's own token, unless the admin API joined */
        walk_fail_as(w, what, r, w->mx->cfg.registration.shared_secret ? w->mx->admin_id
                                                                       : p->user_id);
        return;
    }
    struct berth_value v[] = {BERTH_TEXT(p->user_id), BERTH_TEXT(room(w->mx, p->room)->alias),
                              BERTH_TEXT(w->mx->room_ids[p->room])};
    w->mx->H->store_query(w->mx->self, "INSERT OR REPLACE INTO matrix_joins(user_id,alias,"
                          "room_id) VALUES(?1,?2,?3)", v, 3, NULL, NULL);
    w->pi++;
    join_next(w);
}

/* the account joins with its own token, logged in again first if that was refused */
static void join_own(struct mx *mx, int status, const char *msg, void *arg)
{
    struct walk *w = arg;
    if (status) {
        walk_end(w, status, msg);
        return;
    }
    if (w->gen != mx->gen) {    /* reloaded during the login: room_ids are no longer ours */
        walk_end(w, BERTH_EAGAIN, "matrix: the rooms' configuration changed; trying again");
        return;
    }
    struct pair *p = &w->pairs[w->pi];
    struct mx_account a;
    if (!acct_load(mx, p->user_id, &a) || !a.token[0]) {   /* deleted meanwhile */
        w->pi++;
        join_next(w);
        return;
    }
    char er[MX_ID_MAX * 3], path[MX_PATH_MAX];
    hs_escape(mx->room_ids[p->room], er, sizeof er);
    snprintf(path, sizeof path, "/_matrix/client/v3/join/%s", er);
    hs_call(mx->hs, "POST", path, a.token, cJSON_CreateObject(), joined, w);
}

static void invited(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    struct pair *p = &w->pairs[w->pi];
    /* 403 "already in the room" / "already invited": the join below tells */
    if (r->status != 200 && r->status != 403) {
        char what[MX_ID_MAX + 32];
        snprintf(what, sizeof what, "invite %s", p->user_id);
        walk_fail(w, what, r);
        return;
    }
    struct mx_account a;
    if (!acct_load(w->mx, p->user_id, &a) || !a.token[0]) {   /* deleted meanwhile */
        w->pi++;
        join_next(w);
        return;
    }
    acct_live(w->mx, &a, join_own, w);
}

static void join_next(struct walk *w)
{
    if (w->pi >= w->npairs) {
        walk_end(w, 0, NULL);
        return;
    }
    struct pair *p = &w->pairs[w->pi];
    char alias[MX_ID_MAX];
    alias_of(w->mx, p->room, alias, sizeof alias);
    if (!w->plan && (!w->mx->room_ids || !w->mx->room_ids[p->room])) {
        walk_end(w, BERTH_EAGAIN, "matrix: the rooms are not set up yet");
        return;
    }
    if (w->plan) {
        note(w, "join %s to %s", p->user_id, alias);
        w->pi++;
        join_next(w);
        return;
    }
    char er[MX_ID_MAX * 3], path[MX_PATH_MAX];
    hs_escape(w->mx->room_ids[p->room], er, sizeof er);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "user_id", p->user_id);
    if (w->mx->cfg.registration.shared_secret) {
        /* Synapse's admin join: invite and join in one call, outside the per-room join
         * limiter (1/s by default) that would pace a fleet's joins into one room */
        snprintf(path, sizeof path, "/_synapse/admin/v1/join/%s", er);
        hs_call(w->mx->hs, "POST", path, w->mx->admin_token, b, joined, w);
        return;
    }
    snprintf(path, sizeof path, "/_matrix/client/v3/rooms/%s/invite", er);
    hs_call(w->mx->hs, "POST", path, w->mx->admin_token, b, invited, w);
}

static bool joined_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names; (void)v;
    *(bool *)arg = true;
    return false;
}

static bool pair_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    struct walk *w = arg;
    struct mx *mx = w->mx;
    const char *tenant = v[0].p, *localpart = v[1].p, *uid = v[2].p;
    for (size_t i = 0; i < mx->cfg.rooms.n; i++) {
        const struct mx_room_cfg *rc = room(mx, i);
        for (size_t k = 0; k < rc->join.n; k++) {
            char lp[MX_LOCALPART_MAX];
            if (!mx_expand(rc->join.v[k], tenant, lp, sizeof lp) || strcmp(lp, localpart))
                continue;
            char **ids = w->rooms ? w->ids : mx->room_ids;   /* a plan's own lookups */
            const char *rid = ids && (w->rooms || i < mx->nrooms) ? ids[i] : NULL;
            bool done = false;
            struct berth_value q[] = {BERTH_TEXT(uid), BERTH_TEXT(rc->alias),
                                      BERTH_TEXT(rid ? rid : "")};
            mx->H->store_query(mx->self, "SELECT 1 FROM matrix_joins WHERE user_id=?1 AND "
                               "alias=?2 AND room_id=?3", q, 3, joined_row, &done);
            if (done) break;
            struct pair *np = realloc(w->pairs, (w->npairs + 1) * sizeof *np);
            if (!np) return false;
            w->pairs = np;
            struct pair *p = &w->pairs[w->npairs++];
            snprintf(p->user_id, sizeof p->user_id, "%s", uid);
            snprintf(p->tenant, sizeof p->tenant, "%s", tenant);
            p->room = i;
            break;
        }
    }
    return true;
}

static void joins_start(struct walk *w)
{
    if (!w->joins) {
        walk_end(w, 0, NULL);
        return;
    }
    if (w->rooms && !w->plan) {   /* what this walk resolved is what joins use */
        rooms_reset(w->mx);
        w->mx->room_ids = w->ids;
        w->mx->nrooms = w->mx->cfg.rooms.n;
        w->mx->rooms_ready = true;
        w->ids = NULL;
        w->rooms = false;
    }
    struct berth_value p[] = {BERTH_TEXT(w->tenant)};
    w->mx->H->store_query(w->mx->self, "SELECT tenant,localpart,user_id FROM matrix_accounts "
                          "WHERE tenant<>'' AND (?1='' OR tenant=?1) AND token IS NOT NULL "
                          "ORDER BY created_ms, rowid", p, 1, pair_row, w);
    w->pi = 0;
    join_next(w);
}

/* ---- the rooms phase ---- */

static void room_next(struct walk *w);
static void space_child(struct walk *w);

static size_t cur(struct walk *w) { return w->order[w->pos]; }

static void advance(struct walk *w)
{
    w->pos++;
    w->retried = false;
    room_next(w);
}

static void child_put(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    if (r->status != 200) walk_fail(w, "add a room to its space", r);
    else advance(w);
}

static void child_got(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    struct mx *mx = w->mx;
    if (r->status == 200 && hsa_space_child_linked(r->json)) {
        advance(w);
        return;
    }
    if (r->status != 200 && r->status != 404) {
        walk_fail(w, "read a space's children", r);
        return;
    }
    const struct mx_room_cfg *rc = room(mx, cur(w));
    size_t si = 0;
    while (strcmp(room(mx, si)->alias, rc->in_space)) si++;
    char alias[MX_ID_MAX], space[MX_ID_MAX];
    alias_of(mx, cur(w), alias, sizeof alias);
    alias_of(mx, si, space, sizeof space);
    if (w->plan) {
        note(w, "add %s to space %s", alias, space);
        advance(w);
        return;
    }
    char path[MX_PATH_MAX];
    path_state(path, sizeof path, w->ids[si], "m.space.child", w->ids[cur(w)]);
    cJSON *b = cJSON_CreateObject();
    cJSON *via = cJSON_AddArrayToObject(b, "via");
    cJSON_AddItemToArray(via, cJSON_CreateString(mx->cfg.server_name));
    hs_call(mx->hs, "PUT", path, mx->admin_token, b, child_put, w);
}

static void space_child(struct walk *w)
{
    struct mx *mx = w->mx;
    const struct mx_room_cfg *rc = room(mx, cur(w));
    if (!rc->in_space || !rc->in_space[0]) {
        advance(w);
        return;
    }
    size_t si = 0;
    while (si < mx->cfg.rooms.n && strcmp(room(mx, si)->alias, rc->in_space)) si++;
    if (!w->ids[cur(w)] || si == mx->cfg.rooms.n || !w->ids[si]) {
        char alias[MX_ID_MAX], space[MX_ID_MAX];
        alias_of(mx, cur(w), alias, sizeof alias);
        snprintf(space, sizeof space, "#%s:%s", rc->in_space, mx->cfg.server_name);
        note(w, "add %s to space %s", alias, space);   /* only in a plan */
        advance(w);
        return;
    }
    char path[MX_PATH_MAX];
    path_state(path, sizeof path, w->ids[si], "m.space.child", w->ids[cur(w)]);
    hs_call(mx->hs, "GET", path, mx->admin_token, NULL, child_got, w);
}

/* name, then topic: compared, written when they differ */
static void state_check(struct walk *w, bool topic);

static void state_put(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    if (r->status != 200) walk_fail(w, "update a room's state", r);
    else state_check(w, true);   /* the name was put: now the topic (or on) */
}

static void topic_put(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    if (r->status != 200) walk_fail(w, "update a room's topic", r);
    else space_child(w);
}

static void state_got(const struct mx_res *r, void *arg, bool topic)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    struct mx *mx = w->mx;
    const struct mx_room_cfg *rc = room(mx, cur(w));
    if (r->status != 200 && r->status != 404) {
        walk_fail(w, topic ? "read a room's topic" : "read a room's name", r);
        return;
    }
    const char *key = topic ? "topic" : "name";
    const char *want = topic ? rc->topic : rc->name;
    const char *have = hsa_state_string(r->json, key);
    if (have && !strcmp(have, want)) {
        if (topic) space_child(w);
        else state_check(w, true);
        return;
    }
    char alias[MX_ID_MAX];
    alias_of(mx, cur(w), alias, sizeof alias);
    if (w->plan) {
        note(w, topic ? "set the topic of %s to \"%s\"" : "set the name of %s to \"%s\"", alias,
             want);
        if (topic) space_child(w);
        else state_check(w, true);
        return;
    }
    char path[MX_PATH_MAX];
    path_state(path, sizeof path, w->ids[cur(w)], topic ? "m.room.topic" : "m.room.name", "");
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, key, want);
    hs_call(mx->hs, "PUT", path, mx->admin_token, b, topic ? topic_put : state_put, w);
}

static void name_got(const struct mx_res *r, void *arg) { state_got(r, arg, false); }
static void topic_got(const struct mx_res *r, void *arg) { state_got(r, arg, true); }

static void state_check(struct walk *w, bool topic)
{
    const struct mx_room_cfg *rc = room(w->mx, cur(w));
    const char *want = topic ? rc->topic : rc->name;
    if (!want || !want[0]) {
        if (topic) space_child(w);
        else state_check(w, true);
        return;
    }
    char path[MX_PATH_MAX];
    path_state(path, sizeof path, w->ids[cur(w)], topic ? "m.room.topic" : "m.room.name", "");
    hs_call(w->mx->hs, "GET", path, w->mx->admin_token, NULL, topic ? topic_got : name_got, w);
}

static void resolve(struct walk *w);

static void created(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    const char *rid = hsa_room_id(r->json);   /* NULL unless a room id berth can use */
    if (r->status == 400 && !strcmp(r->errcode, "M_ROOM_IN_USE") && !w->retried) {
        w->retried = true;   /* made meanwhile by someone else: look it up again */
        resolve(w);
        return;
    }
    if (r->status != 200 || !rid) {
        walk_fail(w, "create a room", r);
        return;
    }
    w->ids[cur(w)] = strdup(rid);
    char alias[MX_ID_MAX];
    alias_of(w->mx, cur(w), alias, sizeof alias);
    w->mx->H->log(w->mx->self, BERTH_LOG_INFO, "created %s %s", alias, rid);
    mx_event(w->mx, w->mx->ev_room_created, "", "alias", alias);
    space_child(w);
}

static void create(struct walk *w)
{
    struct mx *mx = w->mx;
    const struct mx_room_cfg *rc = room(mx, cur(w));
    char alias[MX_ID_MAX];
    alias_of(mx, cur(w), alias, sizeof alias);
    if (w->plan) {
        note(w, rc->space ? "create space %s%s" : "create room %s%s", alias, "");
        space_child(w);
        return;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "room_alias_name", rc->alias);
    if (rc->name && rc->name[0]) cJSON_AddStringToObject(b, "name", rc->name);
    if (rc->topic && rc->topic[0]) cJSON_AddStringToObject(b, "topic", rc->topic);
    cJSON_AddStringToObject(b, "preset", "private_chat");
    cJSON_AddStringToObject(b, "visibility", "private");
    if (rc->space) {
        cJSON *cc = cJSON_AddObjectToObject(b, "creation_content");
        cJSON_AddStringToObject(cc, "type", "m.space");
    }
    hs_call(mx->hs, "POST", "/_matrix/client/v3/createRoom", mx->admin_token, b, created, w);
}

static void resolved(const struct mx_res *r, void *arg)
{
    struct walk *w = arg;
    if (stale(w, r)) return;
    const char *rid = hsa_room_id(r->json);   /* NULL unless a room id berth can use */
    if (r->status == 404) {
        create(w);
    } else if (r->status == 200 && rid) {
        w->ids[cur(w)] = strdup(rid);
        state_check(w, false);
    } else {
        walk_fail(w, "look up a room alias", r);
    }
}

static void resolve(struct walk *w)
{
    char alias[MX_ID_MAX], esc[MX_ID_MAX * 3], path[MX_PATH_MAX];
    alias_of(w->mx, cur(w), alias, sizeof alias);
    hs_escape(alias, esc, sizeof esc);
    snprintf(path, sizeof path, "/_matrix/client/v3/directory/room/%s", esc);
    hs_call(w->mx->hs, "GET", path, w->mx->admin_token, NULL, resolved, w);
}

static void room_next(struct walk *w)
{
    if (w->pos >= w->mx->cfg.rooms.n) joins_start(w);
    else resolve(w);
}

static void with_admin(struct mx *mx, int status, const char *msg, void *arg)
{
    struct walk *w = arg;
    (void)mx;
    if (status) walk_end(w, status, msg);
    else if (w->rooms) room_next(w);
    else joins_start(w);
}

static void walk_start(struct mx *mx, cJSON *plan, bool rooms, bool joins, const char *tenant,
                       mx_cb cb, void *arg)
{
    struct walk *w = calloc(1, sizeof *w);
    size_t n = mx->cfg.rooms.n;
    if (w) {
        w->order = calloc(n + 1, sizeof *w->order);
        w->ids = calloc(n + 1, sizeof *w->ids);
    }
    if (!w || !w->order || !w->ids) {
        if (w) walk_free(w);
        cb(mx, BERTH_ENOMEM, "matrix: out of memory", arg);
        return;
    }
    *w = (struct walk){.mx = mx, .gen = mx->gen, .plan = plan, .cb = cb, .arg = arg, .rooms = rooms,
                       .joins = joins, .order = w->order, .ids = w->ids};
    snprintf(w->tenant, sizeof w->tenant, "%s", tenant ? tenant : "");
    size_t k = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (room(mx, i)->space == (pass == 0)) w->order[k++] = i;
    admin_ensure(mx, with_admin, w);
}

void rooms_apply(struct mx *mx, cJSON *plan, mx_cb cb, void *arg)
{
    walk_start(mx, plan, true, true, NULL, cb, arg);
}

/* ---- per tenant: rooms resolved once (shared by concurrent provisions), then joins ---- */

struct tj { mx_cb cb; void *arg; char tenant[BERTH_HANDLE_MAX + 1]; };

static void tj_rooms(struct mx *mx, int status, const char *msg, void *arg)
{
    struct tj *t = arg;
    if (status) t->cb(mx, status, msg, t->arg);
    else walk_start(mx, NULL, false, true, t->tenant, t->cb, t->arg);
    free(t);
}

static void rooms_settled(struct mx *mx, int status, const char *msg, void *arg)
{
    (void)arg;
    mx->rooms_busy = false;
    if (status) snprintf(mx->rooms_error, sizeof mx->rooms_error, "%s", msg ? msg : "failed");
    else mx->rooms_error[0] = 0;
    if (status && status != BERTH_ECANCELED)
        mx->H->log(mx->self, BERTH_LOG_WARN, "rooms not applied: %s", mx->rooms_error);
    else if (!status)
        mx->H->log(mx->self, BERTH_LOG_INFO, "rooms applied");
    waiter_fire(mx, &mx->rooms_waiters, status, msg);
}

void rooms_kick(struct mx *mx)
{
    if (!mx->cfg.rooms.n || mx->rooms_busy) return;
    mx->rooms_busy = true;
    walk_start(mx, NULL, true, true, NULL, rooms_settled, NULL);
}

void rooms_join_tenant(struct mx *mx, const char *tenant, mx_cb cb, void *arg)
{
    if (mx->rooms_ready) {
        walk_start(mx, NULL, false, true, tenant, cb, arg);
        return;
    }
    struct tj *t = calloc(1, sizeof *t);
    if (!t) {
        cb(mx, BERTH_ENOMEM, "matrix: out of memory", arg);
        return;
    }
    t->cb = cb;
    t->arg = arg;
    snprintf(t->tenant, sizeof t->tenant, "%s", tenant);
    waiter_add(&mx->rooms_waiters, tj_rooms, t);
    rooms_kick(mx);
}

void rooms_reset(struct mx *mx)
{
    for (size_t i = 0; mx->room_ids && i < mx->nrooms; i++) free(mx->room_ids[i]);
    free(mx->room_ids);
    mx->room_ids = NULL;
    mx->nrooms = 0;
    mx->rooms_ready = false;
}
