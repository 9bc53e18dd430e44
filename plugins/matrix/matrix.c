/* plugins/matrix: a Matrix identity for every tenant, as a provisioner (order 200 by
 * default). provision() registers (or adopts) each account of the template's block, joins
 * them to the configured rooms and returns MATRIX_* of env_account for the workload;
 * deprovision() deactivates every account the tenant has. See README.md. */
#include "matrix.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void mx_routes(struct mx *mx);   /* routes.c */

static const struct berth_cfg_item room_schema[] = {
    {"alias", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct mx_room_cfg, alias),
     "local part of the room's alias (#ALIAS:server_name), how it is found", BERTH_CFG_REQUIRED,
     NULL, NULL},
    {"name", BERTH_CFG_STR, "", 0, 0, offsetof(struct mx_room_cfg, name), "the room's name", 0,
     NULL, NULL},
    {"topic", BERTH_CFG_STR, "", 0, 0, offsetof(struct mx_room_cfg, topic), "the room's topic",
     0, NULL, NULL},
    {"space", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct mx_room_cfg, space),
     "a space rather than a room", 0, NULL, NULL},
    {"in_space", BERTH_CFG_STR, "", 0, 0, offsetof(struct mx_room_cfg, in_space),
     "alias of a configured space this room is a child of", 0, NULL, NULL},
    {"join", BERTH_CFG_LIST, NULL, 0, 0, offsetof(struct mx_room_cfg, join),
     "localparts of each tenant's accounts that are invited and joined (\"{handle}_ai\")", 0,
     NULL, NULL},
    BERTH_CFG_ELEM_END(struct mx_room_cfg),
};

static const struct berth_cfg_item reg_schema[] = {
    {"shared_secret", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct mx_cfg, registration.shared_secret)
     - offsetof(struct mx_cfg, registration),
     "Synapse's registration_shared_secret: admin registration, admin API", 0, NULL, NULL},
    {"token", BERTH_CFG_SECRET, NULL, 0, 0, offsetof(struct mx_cfg, registration.token)
     - offsetof(struct mx_cfg, registration),
     "a registration token (the m.login.registration_token flow)", 0, NULL, NULL},
    {0},
};

static const struct berth_cfg_item admin_schema[] = {
    {"user", BERTH_CFG_STR, "berth", 0, 0, 0,
     "localpart of the account berth administers with (owns the rooms)", 0, NULL, NULL},
    {0},
};

static const struct berth_cfg_item schema[] = {
    {"homeserver", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct mx_cfg, homeserver),
     "base URL of the homeserver's client API", BERTH_CFG_REQUIRED, NULL, NULL},
    {"server_name", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct mx_cfg, server_name),
     "the homeserver's server_name (the part after ':' in user ids)", BERTH_CFG_REQUIRED, NULL,
     NULL},
    {"registration", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct mx_cfg, registration),
     "how accounts are registered: shared_secret or token", BERTH_CFG_REQUIRED, NULL,
     reg_schema},
    {"admin", BERTH_CFG_STRUCT, NULL, 0, 0, offsetof(struct mx_cfg, admin),
     "berth's own account", 0, NULL, admin_schema},
    {"rooms", BERTH_CFG_STRUCT_LIST, NULL, 0, 0, offsetof(struct mx_cfg, rooms),
     "rooms and spaces bootstrapped and kept, by alias", BERTH_CFG_RELOAD, NULL, room_schema},
    {"max_concurrent", BERTH_CFG_INT, "4", 1, 64, offsetof(struct mx_cfg, max_concurrent),
     "calls in flight to the homeserver at most", BERTH_CFG_RELOAD, NULL, NULL},
    {"timeout", BERTH_CFG_DURATION, "30s", 100, 600000, offsetof(struct mx_cfg, timeout),
     "for one call to the homeserver", BERTH_CFG_RELOAD, NULL, NULL},
    {"erase", BERTH_CFG_BOOL, "false", 0, 0, offsetof(struct mx_cfg, erase),
     "deactivation also erases the account's messages (GDPR erase)", BERTH_CFG_RELOAD, NULL,
     NULL},
    {"order", BERTH_CFG_INT, "200", -100000, 100000, offsetof(struct mx_cfg, order),
     "when it runs among a tenant's provisioners (lower first)", 0, NULL, NULL},
    {"check", BERTH_CFG_DURATION, "15s", 100, 3600000, offsetof(struct mx_cfg, check),
     "how often berth asks the homeserver for /_matrix/client/versions", 0, NULL, NULL},
    {"required", BERTH_CFG_BOOL, "true", 0, 0, offsetof(struct mx_cfg, required),
     "berthd's /health answers 503 while the homeserver fails (false: only listed)", 0,
     NULL, NULL},
    {0},
};

static const struct berth_cfg_item acct_schema[] = {
    {"localpart", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct mx_acct_cfg, localpart),
     "the account's localpart; {handle} is the tenant's handle", BERTH_CFG_REQUIRED, NULL, NULL},
    {"display_name", BERTH_CFG_STR, NULL, 0, 0, offsetof(struct mx_acct_cfg, display_name),
     "its display name; {handle} is the tenant's handle", 0, NULL, NULL},
    BERTH_CFG_ELEM_END(struct mx_acct_cfg),
};

static const struct berth_cfg_item tschema[] = {
    {"accounts", BERTH_CFG_STRUCT_LIST, NULL, 0, 0, offsetof(struct mx_block, accounts),
     "the tenant's accounts", 0, NULL, acct_schema},
    {"env_account", BERTH_CFG_STR, "", 0, 0, offsetof(struct mx_block, env_account),
     "localpart pattern of the account whose token goes into MATRIX_* (default: the first)",
     0, NULL, NULL},
    {0},
};

static bool localpart_ok(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || strchr("._=-/{}", *s)))
            return false;
    return true;
}

static const struct mx_room_cfg *cfg_room(const struct mx_cfg *c, size_t i)
{
    return (const struct mx_room_cfg *)c->rooms.v + i;
}

static int validate(const void *cfgp, char *err, size_t len)
{
    const struct mx_cfg *c = cfgp;
    if (!c->registration.shared_secret == !c->registration.token) {
        snprintf(err, len, "registration needs exactly one of shared_secret and token");
        return BERTH_EINVAL;
    }
    if (strncmp(c->homeserver, "http://", 7) && strncmp(c->homeserver, "https://", 8)) {
        snprintf(err, len, "homeserver must be an http:// or https:// URL");
        return BERTH_EINVAL;
    }
    /* Matrix ids are at most 255 bytes: with a localpart of up to MX_LOCALPART_MAX - 1
     * (a tenant's, after {handle}), '@', ':' and the server name, every id berth builds
     * fits, and so does its escaped form in a path. */
    if (strlen(c->server_name) > 255 - 1 - 1 - (MX_LOCALPART_MAX - 1)) {
        snprintf(err, len, "server_name is longer than %d bytes: a user id built on it "
                 "(@localpart:server_name) could pass Matrix's 255", 255 - 1 - MX_LOCALPART_MAX);
        return BERTH_EINVAL;
    }
    if (strlen(c->admin.user) >= MX_LOCALPART_MAX) {
        snprintf(err, len, "admin.user is longer than %d bytes", MX_LOCALPART_MAX - 1);
        return BERTH_EINVAL;
    }
    if (!localpart_ok(c->admin.user) || strchr(c->admin.user, '{')) {
        snprintf(err, len, "admin.user must be a plain localpart (a-z 0-9 . _ = - /)");
        return BERTH_EINVAL;
    }
    for (size_t i = 0; i < c->rooms.n; i++) {
        const struct mx_room_cfg *r = cfg_room(c, i);
        if (!localpart_ok(r->alias) || strchr(r->alias, '{') ||
            strlen(r->alias) >= MX_LOCALPART_MAX) {
            snprintf(err, len, "rooms[%zu].alias '%s' is not a valid alias localpart", i,
                     r->alias);
            return BERTH_EINVAL;
        }
        bool space_found = !r->in_space[0];
        for (size_t k = 0; k < c->rooms.n; k++) {
            const struct mx_room_cfg *o = cfg_room(c, k);
            if (k != i && !strcmp(o->alias, r->alias)) {
                snprintf(err, len, "rooms[%zu].alias '%s' appears twice", i, r->alias);
                return BERTH_EINVAL;
            }
            if (r->in_space[0] && o->space && !strcmp(o->alias, r->in_space)) space_found = true;
        }
        if (!space_found) {
            snprintf(err, len, "rooms[%zu].in_space '%s' is not a configured space", i,
                     r->in_space);
            return BERTH_EINVAL;
        }
    }
    return 0;
}

/* ---- the provisioner ---- */

struct acct_want { char localpart[MX_LOCALPART_MAX], display[256]; bool has_display; };

struct mx_job {
    struct mx_job *next;
    struct mx *mx;
    berth_op *op;
    berth_timer *timer;
    bool de;
    char handle[BERTH_HANDLE_MAX + 1];
    struct acct_want *accts;
    size_t n, i;
    char env_lp[MX_LOCALPART_MAX];
};

static void job_end(struct mx_job *j, int status, const char *msg)
{
    struct mx *mx = j->mx;
    for (struct mx_job **pp = &mx->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    if (j->timer) mx->H->timer_stop(j->timer);
    mx->H->op_done(j->op, status, NULL, msg);
    free(j->accts);
    free(j);
}

static void set_status(struct mx *mx, const char *handle)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "accounts", acct_list(mx, handle));
    char *s = cJSON_PrintUnformatted(o);
    mx->H->tenant_status_set(mx->self, handle, s);
    free(s);
    cJSON_Delete(o);
}

static void give_env(struct mx_job *j)
{
    struct mx *mx = j->mx;
    char uid[MX_ID_MAX];
    struct mx_account a;
    acct_user_id(mx, j->env_lp, uid, sizeof uid);
    if (!acct_load(mx, uid, &a) || !a.token[0]) {
        job_end(j, BERTH_EIO, "matrix: env_account's token is missing from the store");
        return;
    }
    mx->H->op_setenv(j->op, "MATRIX_HOMESERVER_URL", mx->cfg.homeserver);
    mx->H->op_setenv(j->op, "MATRIX_USER_ID", a.user_id);
    mx->H->op_setenv(j->op, "MATRIX_ACCESS_TOKEN", a.token);
    mx->H->op_setenv(j->op, "MATRIX_DEVICE_ID", a.device_id);
    set_status(mx, j->handle);
    job_end(j, 0, NULL);
}

static void joins_done(struct mx *mx, int status, const char *msg, void *arg)
{
    (void)mx;
    struct mx_job *j = arg;
    if (status) job_end(j, status, msg);
    else give_env(j);
}

static bool any_join(const struct mx *mx)
{
    for (size_t i = 0; i < mx->cfg.rooms.n; i++)
        if (cfg_room(&mx->cfg, i)->join.n) return true;
    return false;
}

static void next_account(struct mx *mx, int status, const char *msg, void *arg)
{
    struct mx_job *j = arg;
    if (status) {
        job_end(j, status, msg);
        return;
    }
    if (j->i < j->n) {
        struct acct_want *w = &j->accts[j->i++];
        acct_ensure(mx, j->handle, w->localpart, w->has_display ? w->display : NULL, false,
                    next_account, j);
        return;
    }
    if (any_join(mx)) rooms_join_tenant(mx, j->handle, joins_done, j);
    else give_env(j);
}

static void deprovisioned(struct mx *mx, int status, const char *msg, void *arg)
{
    struct mx_job *j = arg;
    if (!status) mx->H->tenant_status_set(mx->self, j->handle, NULL);
    job_end(j, status, msg);
}

static void job_begin(berth_timer *t, void *arg)
{
    struct mx_job *j = arg;
    j->mx->H->timer_stop(t);
    j->timer = NULL;
    if (j->de) acct_deactivate_tenant(j->mx, j->handle, deprovisioned, j);
    else next_account(j->mx, 0, NULL, j);
}

/* copies what the block asks for, {handle} expanded; false with a message when it is bad */
static bool job_fill(struct mx_job *j, const struct mx_block *b, char *err, size_t len)
{
    if (!b->accounts.n) {
        snprintf(err, len, "matrix: the template's block has no accounts");
        return false;
    }
    j->accts = calloc(b->accounts.n, sizeof *j->accts);
    if (!j->accts) {
        snprintf(err, len, "matrix: out of memory");
        return false;
    }
    j->n = b->accounts.n;
    for (size_t i = 0; i < j->n; i++) {
        const struct mx_acct_cfg *c = (const struct mx_acct_cfg *)b->accounts.v + i;
        struct acct_want *w = &j->accts[i];
        if (!mx_expand(c->localpart, j->handle, w->localpart, sizeof w->localpart) ||
            !localpart_ok(w->localpart) || strchr(w->localpart, '{')) {
            snprintf(err, len, "matrix: accounts[%zu].localpart '%s' is not a valid localpart",
                     i, c->localpart);
            return false;
        }
        w->has_display = c->display_name != NULL;
        if (w->has_display) mx_expand(c->display_name, j->handle, w->display, sizeof w->display);
    }
    const char *env = b->env_account && b->env_account[0] ? b->env_account : NULL;
    if (!env) snprintf(j->env_lp, sizeof j->env_lp, "%s", j->accts[0].localpart);
    else mx_expand(env, j->handle, j->env_lp, sizeof j->env_lp);
    for (size_t i = 0; i < j->n; i++)
        if (!strcmp(j->accts[i].localpart, j->env_lp)) return true;
    snprintf(err, len, "matrix: env_account '%s' is not one of the tenant's accounts", j->env_lp);
    return false;
}

static void job_start(struct mx *mx, const berth_spec *s, berth_op *op, bool de)
{
    if (mx->stopping) {
        mx->H->op_done(op, BERTH_ECANCELED, NULL, "matrix: stopping");
        return;
    }
    struct mx_job *j = calloc(1, sizeof *j);
    if (!j) {
        mx->H->op_done(op, BERTH_ENOMEM, NULL, "matrix: out of memory");
        return;
    }
    j->mx = mx;
    j->op = op;
    j->de = de;
    snprintf(j->handle, sizeof j->handle, "%s", mx->H->spec_handle(s));
    j->next = mx->jobs;
    mx->jobs = j;
    char err[300];
    const struct mx_block *b = de ? NULL : mx->H->spec_config(s);
    if (!de && !b) {
        job_end(j, BERTH_EINVAL, "matrix: the template has no matrix block");
        return;
    }
    if (!de && !job_fill(j, b, err, sizeof err)) {
        job_end(j, BERTH_EINVAL, err);
        return;
    }
    /* from a timer: op_done never runs inside provision() */
    j->timer = mx->H->timer_start(mx->self, 0, 0, job_begin, j);
    if (!j->timer) job_end(j, BERTH_ENOMEM, "matrix: out of memory");
}

static void provision(void *st, const berth_spec *s, berth_op *op) { job_start(st, s, op, false); }
static void deprovision(void *st, const berth_spec *s, berth_op *op) { job_start(st, s, op, true); }

/* ---- the instance ---- */

void mx_event(struct mx *mx, uint32_t type, const char *tenant, const char *key,
              const char *id)
{
    if (!type) return;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, key, id);
    char *js = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!js) return;
    struct berth_ev_custom c = {sizeof c, js};
    mx->H->publish(mx->self, type, tenant && tenant[0] ? tenant : NULL, &c);
    free(js);
}

/* the homeserver as a dependency of berthd's /health: a probe's answer, or (r NULL) not
 * probed yet. A probe that never comes back stops the reports and the host calls them
 * stale. */
static void hs_health(struct mx *mx, const struct mx_res *r)
{
    if (!BERTH_HOST_HAS(mx->H, dependency_report)) return;
    char msg[400] = "";
    int st = !r ? BERTH_EAGAIN : r->status == 200 ? BERTH_OK : r->status ? BERTH_EIO
           : r->error ? r->error : BERTH_EIO;
    if (!r)
        snprintf(msg, sizeof msg, "%s: not checked yet", mx->cfg.homeserver);
    else if (r->status && r->status != 200)
        snprintf(msg, sizeof msg, "%s answers HTTP %d to /_matrix/client/versions",
                 mx->cfg.homeserver, r->status);
    else if (!r->status)
        snprintf(msg, sizeof msg, "%s: %s", mx->cfg.homeserver, r->message);
    mx->H->dependency_report(mx->self, "homeserver", mx->cfg.required, st, msg, mx->cfg.check);
}

/* the homeserver's reachability, for /health, /metrics and GET /v1/matrix/health; rooms
 * that could not be applied (the homeserver was down) are applied once it answers */
static void probed(const struct mx_res *r, void *arg)
{
    struct mx *mx = arg;
    mx->probing = false;
    if (r->error == BERTH_ECANCELED) return;
    if (r->status == 200 && !mx->rooms_ready) rooms_kick(mx);
    hs_health(mx, r);
}

static void probe(berth_timer *t, void *arg)
{
    (void)t;
    struct mx *mx = arg;
    if (mx->probing) return;    /* one at a time: a hung homeserver does not grow the queue */
    mx->probing = !hs_call(mx->hs, "GET", "/_matrix/client/versions", NULL, NULL, probed, mx);
}

/* a tenant's status entries are the instance's and go with it: set again at start */
static bool status_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    if (v[0].p) set_status(arg, v[0].p);
    return true;
}

static void restore_status(struct mx *mx)
{
    mx->H->store_query(mx->self, "SELECT DISTINCT tenant FROM matrix_accounts WHERE "
                       "tenant<>''", NULL, 0, status_row, mx);
}

static int init(const struct berth_host *host, berth_instance *self, void **state)
{
    if (!BERTH_HOST_HAS(host, provisioner_register) || !BERTH_HOST_HAS(host, metric_set))
        return BERTH_ENOTSUP;
    struct mx *mx = calloc(1, sizeof *mx);
    if (!mx) return BERTH_ENOMEM;
    mx->H = host;
    mx->self = self;
    mx->hs = hs_new(host, self);
    if (!mx->hs) {
        free(mx);
        return BERTH_ENOMEM;
    }
    *state = mx;
    return 0;
}

static int configure(void *state, const void *cfg)
{
    struct mx *mx = state;
    mx->cfg = *(const struct mx_cfg *)cfg;
    mx->gen++;
    rooms_reset(mx);
    int rc = hs_configure(mx->hs, mx->cfg.homeserver, mx->cfg.max_concurrent, mx->cfg.timeout);
    if (!rc && mx->started) rooms_kick(mx);
    return rc;
}

static int start(void *state)
{
    struct mx *mx = state;
    int rc = acct_migrate(mx);
    if (rc) return rc;
    mx->prov = (struct berth_provisioner){.size = sizeof mx->prov, .order = (int)mx->cfg.order,
                                          .provision = provision, .deprovision = deprovision};
    rc = mx->H->provisioner_register(mx->self, &mx->prov, mx);
    if (rc) return rc;
    mx_routes(mx);
    restore_status(mx);
    mx->ev_registered = mx->H->event_register(mx->self, "matrix.account_registered");
    mx->ev_adopted = mx->H->event_register(mx->self, "matrix.account_adopted");
    mx->ev_deactivated = mx->H->event_register(mx->self, "matrix.account_deactivated");
    mx->ev_room_created = mx->H->event_register(mx->self, "matrix.room_created");
    mx->started = true;
    hs_health(mx, NULL);
    mx->probe = mx->H->timer_start(mx->self, 0, (uint64_t)mx->cfg.check, probe, mx);
    return 0;
}

/* what is in flight ends as canceled: the core runs it again when an instance is back */
static void stop(void *state)
{
    struct mx *mx = state;
    mx->stopping = true;
    if (mx->probe) mx->H->timer_stop(mx->probe);
    mx->probe = NULL;
    hs_cancel_all(mx->hs);
    while (mx->jobs) job_end(mx->jobs, BERTH_ECANCELED, "matrix: stopping");
    mx->H->drained(mx->self);
}

static void destroy(void *state)
{
    struct mx *mx = state;
    rooms_reset(mx);
    acct_free_memory(mx);
    hs_free(mx->hs);
    free(mx->admin_token);
    free(mx);
}

BERTH_PLUGIN(.name = "matrix", .version = "1.0",
             .description = "a Matrix identity per tenant: accounts, rooms, invite tokens",
             .config = schema, .config_size = sizeof(struct mx_cfg), .template_config = tschema,
             .template_config_size = sizeof(struct mx_block), .validate = validate, .init = init,
             .configure = configure, .start = start, .stop = stop, .destroy = destroy);
