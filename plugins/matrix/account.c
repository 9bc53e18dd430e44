/* Accounts berth creates on the homeserver, kept in matrix_accounts (tenant "" is berth's
 * own admin account). A row is written with its random password BEFORE the registration is
 * sent: a registration that succeeded but whose answer was lost (a crash, a timeout) is then
 * recognised on the next attempt (M_USER_IN_USE with a row of ours: adopted by logging in
 * with that password), while an M_USER_IN_USE without a row of ours means someone else owns
 * the name, and provisioning fails with that reason.
 *
 * No login storms: a stored token is checked with whoami once per start (the `verified`
 * list), a new login happens only after M_UNKNOWN_TOKEN, and never more often than a
 * per-user backoff allows (1 s doubling to 5 min). A token refused once is not asked about
 * again: the attempts after a failed login go straight to the next login. */
#include "matrix.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mx_waiter { struct mx_waiter *next; mx_cb cb; void *arg; };
struct mx_verified { struct mx_verified *next; char user_id[MX_ID_MAX]; };
struct mx_login {
    struct mx_login *next;
    char user_id[MX_ID_MAX];
    int64_t next_ms, delay_ms;
    bool refused;               /* the stored token got M_UNKNOWN_TOKEN; no login took yet */
};

static const char *const steps[] = {
    "CREATE TABLE matrix_accounts (tenant TEXT NOT NULL, localpart TEXT NOT NULL,"
    " user_id TEXT NOT NULL UNIQUE, password TEXT NOT NULL, token TEXT, device_id TEXT,"
    " created_ms INTEGER NOT NULL, PRIMARY KEY (tenant, localpart));"
    "CREATE TABLE matrix_joins (user_id TEXT NOT NULL, alias TEXT NOT NULL,"
    " room_id TEXT NOT NULL, PRIMARY KEY (user_id, alias))",
};

int acct_migrate(struct mx *mx)
{
    return mx->H->store_migrate(mx->self, steps, 1);
}

void waiter_add(struct mx_waiter **list, mx_cb cb, void *arg)
{
    struct mx_waiter *w = calloc(1, sizeof *w);
    if (!w) return;   /* out of memory: the caller's op is canceled when the plugin stops */
    w->cb = cb;
    w->arg = arg;
    while (*list) list = &(*list)->next;
    *list = w;
}

void waiter_fire(struct mx *mx, struct mx_waiter **list, int status, const char *msg)
{
    struct mx_waiter *w = *list;
    *list = NULL;
    while (w) {
        struct mx_waiter *next = w->next;
        w->cb(mx, status, msg, w->arg);
        free(w);
        w = next;
    }
}

void acct_user_id(const struct mx *mx, const char *localpart, char *out, size_t cap)
{
    snprintf(out, cap, "@%s:%s", localpart, mx->cfg.server_name);
}

static bool is_verified(struct mx *mx, const char *user_id)
{
    for (struct mx_verified *v = mx->verified; v; v = v->next)
        if (!strcmp(v->user_id, user_id)) return true;
    return false;
}

static void set_verified(struct mx *mx, const char *user_id, bool on)
{
    for (struct mx_verified **pp = &mx->verified; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->user_id, user_id)) {
            if (!on) {
                struct mx_verified *v = *pp;
                *pp = v->next;
                free(v);
            }
            return;
        }
    if (!on) return;
    struct mx_verified *v = calloc(1, sizeof *v);
    if (!v) return;
    snprintf(v->user_id, sizeof v->user_id, "%s", user_id);
    v->next = mx->verified;
    mx->verified = v;
}

/* the user's login record, made when create is set (NULL when none, or out of memory) */
static struct mx_login *login_entry(struct mx *mx, const char *user_id, bool create)
{
    struct mx_login *l = mx->logins;
    while (l && strcmp(l->user_id, user_id)) l = l->next;
    if (l || !create) return l;
    l = calloc(1, sizeof *l);
    if (!l) return NULL;
    snprintf(l->user_id, sizeof l->user_id, "%s", user_id);
    l->next = mx->logins;
    mx->logins = l;
    return l;
}

static bool token_refused(struct mx *mx, const char *user_id)
{
    struct mx_login *l = login_entry(mx, user_id, false);
    return l && l->refused;
}

void acct_refused(struct mx *mx, const char *user_id)
{
    set_verified(mx, user_id, false);
    struct mx_login *l = login_entry(mx, user_id, true);
    if (l) l->refused = true;
    if (!strcmp(user_id, mx->admin_id)) mx->admin_ready = false;
}

/* may this user log in now? Arms the next backoff step when it may. */
static bool login_allowed(struct mx *mx, const char *user_id, int64_t *wait_ms)
{
    int64_t now = mx->H->now_ms(mx->self);
    struct mx_login *l = login_entry(mx, user_id, true);
    if (!l) return false;
    if (now < l->next_ms) {
        *wait_ms = l->next_ms - now;
        return false;
    }
    l->delay_ms = l->delay_ms ? l->delay_ms * 2 : 1000;
    if (l->delay_ms > 300000) l->delay_ms = 300000;
    l->next_ms = now + l->delay_ms;
    return true;
}

void acct_free_memory(struct mx *mx)
{
    while (mx->verified) {
        struct mx_verified *v = mx->verified;
        mx->verified = v->next;
        free(v);
    }
    while (mx->logins) {
        struct mx_login *l = mx->logins;
        mx->logins = l->next;
        free(l);
    }
}

/* ---- the store ---- */

static bool acct_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    struct mx_account *a = arg;
    snprintf(a->user_id, sizeof a->user_id, "%s", v[0].p ? (const char *)v[0].p : "");
    snprintf(a->password, sizeof a->password, "%s", v[1].p ? (const char *)v[1].p : "");
    snprintf(a->token, sizeof a->token, "%s", v[2].p ? (const char *)v[2].p : "");
    snprintf(a->device_id, sizeof a->device_id, "%s", v[3].p ? (const char *)v[3].p : "");
    snprintf(a->tenant, sizeof a->tenant, "%s", v[4].p ? (const char *)v[4].p : "");
    return false;
}

bool acct_load(struct mx *mx, const char *user_id, struct mx_account *out)
{
    memset(out, 0, sizeof *out);
    struct berth_value p[] = {BERTH_TEXT(user_id)};
    mx->H->store_query(mx->self, "SELECT user_id,password,token,device_id,tenant FROM "
                       "matrix_accounts WHERE user_id=?1", p, 1, acct_row, out);
    return out->user_id[0] != 0;
}

static int acct_insert(struct mx *mx, const char *tenant, const char *localpart,
                       const struct mx_account *a)
{
    struct berth_value p[] = {BERTH_TEXT(tenant), BERTH_TEXT(localpart),
                              BERTH_TEXT(a->user_id), BERTH_TEXT(a->password),
                              BERTH_INT(mx->H->now_ms(mx->self))};
    return mx->H->store_query(mx->self, "INSERT INTO matrix_accounts(tenant,localpart,user_id,"
                              "password,created_ms) VALUES(?1,?2,?3,?4,?5)", p, 5, NULL, NULL);
}

static int acct_save_token(struct mx *mx, const struct mx_account *a)
{
    struct berth_value p[] = {BERTH_TEXT(a->token), BERTH_TEXT(a->device_id),
                              BERTH_TEXT(a->user_id)};
    return mx->H->store_query(mx->self, "UPDATE matrix_accounts SET token=?1,device_id=?2 "
                              "WHERE user_id=?3", p, 3, NULL, NULL);
}

static void acct_delete(struct mx *mx, const char *user_id)
{
    struct berth_value p[] = {BERTH_TEXT(user_id)};
    mx->H->store_query(mx->self, "DELETE FROM matrix_joins WHERE user_id=?1", p, 1, NULL,
                       NULL);
    mx->H->store_query(mx->self, "DELETE FROM matrix_accounts WHERE user_id=?1", p, 1, NULL,
                       NULL);
}

static bool list_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    cJSON_AddItemToArray(arg, cJSON_CreateString(v[0].p ? (const char *)v[0].p : ""));
    return true;
}

cJSON *acct_list(struct mx *mx, const char *tenant)
{
    cJSON *a = cJSON_CreateArray();
    struct berth_value p[] = {BERTH_TEXT(tenant)};
    mx->H->store_query(mx->self, "SELECT user_id FROM matrix_accounts WHERE tenant=?1 "
                       "ORDER BY created_ms, rowid", p, 1, list_row, a);
    return a;
}

/* ---- ensure: register, adopt, verify or log in one account ---- */

struct ens {
    struct mx *mx;
    mx_cb cb;
    void *arg;
    char tenant[BERTH_HANDLE_MAX + 1], localpart[MX_LOCALPART_MAX], display[256];
    bool has_display, admin, fresh;
    int uia_steps;
    struct mx_account a;
};

static void ens_end(struct ens *e, int status, const char *msg)
{
    if (!status) set_verified(e->mx, e->a.user_id, true);
    e->cb(e->mx, status, msg, e->arg);
    free(e);
}

/* the reason of a failed call, for the tenant's status */
static void ens_fail(struct ens *e, const char *what, const struct mx_res *r)
{
    char msg[1024];
    if (r->error == BERTH_ECANCELED) {
        ens_end(e, BERTH_ECANCELED, "matrix: stopping");
        return;
    }
    if (!r->status)
        snprintf(msg, sizeof msg, "matrix: homeserver unreachable (%s %s): %s", what,
                 e->a.user_id, r->message);
    else
        snprintf(msg, sizeof msg, "matrix: %s %s: HTTP %d %s %s", what, e->a.user_id,
                 r->status, r->errcode, r->message);
    ens_end(e, r->status ? BERTH_EIO : BERTH_ECONNREFUSED, msg);
}

/* keeps the token of a 200 of register or login; NULL, or why it cannot be used */
static const char *take_token(struct ens *e, const struct mx_res *r)
{
    struct hsa_login l;
    const char *why = hsa_login_read(r->json, e->a.user_id, &l);
    if (why) return why;
    memcpy(e->a.token, l.token, sizeof e->a.token);
    memcpy(e->a.device_id, l.device_id, sizeof e->a.device_id);
    return acct_save_token(e->mx, &e->a) ? "cannot record the token in the store" : NULL;
}

/* a 200 berth cannot use: not retried sooner than the core's backoff */
static void ens_unusable(struct ens *e, const char *what, const char *why)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "matrix: %s %s: HTTP 200 but %s", what, e->a.user_id, why);
    ens_end(e, BERTH_EIO, msg);
}

static void display_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    if (r->status != 200) ens_fail(e, "set display name of", r);
    else ens_end(e, 0, NULL);
}

static void set_display(struct ens *e)
{
    char esc[MX_ID_MAX * 3], path[MX_PATH_MAX];
    hs_escape(e->a.user_id, esc, sizeof esc);
    snprintf(path, sizeof path, "/_matrix/client/v3/profile/%s/displayname", esc);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "displayname", e->display);
    hs_call(e->mx->hs, "PUT", path, e->a.token, b, display_done, e);
}

static void login_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    const char *why = r->status == 200 ? take_token(e, r) : NULL;
    if (why) {
        ens_unusable(e, "log in", why);
    } else if (r->status == 200) {
        struct mx_login *l = login_entry(e->mx, e->a.user_id, false);
        if (l) l->refused = false;
        e->mx->H->log(e->mx->self, BERTH_LOG_INFO, "logged in %s again", e->a.user_id);
        mx_event(e->mx, e->mx->ev_adopted, e->tenant, "user_id", e->a.user_id);
        if (e->has_display) set_display(e);
        else ens_end(e, 0, NULL);
    } else if (r->status == 403) {
        char msg[1024];
        snprintf(msg, sizeof msg, "matrix: %s exists but berth's password for it is refused "
                 "(%s): not berth's account", e->a.user_id, r->errcode);
        ens_end(e, BERTH_EPERM, msg);
    } else {
        ens_fail(e, "log in", r);
    }
}

static void login(struct ens *e)
{
    int64_t wait = 0;
    if (!login_allowed(e->mx, e->a.user_id, &wait)) {
        char msg[1024];
        snprintf(msg, sizeof msg, "matrix: login of %s backed off for %lld ms", e->a.user_id,
                 (long long)wait);
        ens_end(e, BERTH_EAGAIN, msg);
        return;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "type", "m.login.password");
    cJSON *id = cJSON_AddObjectToObject(b, "identifier");
    cJSON_AddStringToObject(id, "type", "m.id.user");
    cJSON_AddStringToObject(id, "user", e->localpart);
    cJSON_AddStringToObject(b, "password", e->a.password);
    if (e->a.device_id[0]) cJSON_AddStringToObject(b, "device_id", e->a.device_id);
    cJSON_AddStringToObject(b, "initial_device_display_name", "berth");
    hs_call(e->mx->hs, "POST", "/_matrix/client/v3/login", NULL, b, login_done, e);
}

/* M_USER_IN_USE: ours if the row predates this attempt */
static void in_use(struct ens *e)
{
    if (!e->fresh) {
        login(e);
        return;
    }
    acct_delete(e->mx, e->a.user_id);
    char msg[1024];
    snprintf(msg, sizeof msg, "matrix: %s already exists and was not created by berth",
             e->a.user_id);
    ens_end(e, BERTH_EPERM, msg);
}

static void register_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    const char *why = r->status == 200 ? take_token(e, r) : NULL;
    if (why) {
        ens_unusable(e, "register", why);
    } else if (r->status == 200) {
        e->mx->H->log(e->mx->self, BERTH_LOG_INFO, "registered %s", e->a.user_id);
        mx_event(e->mx, e->mx->ev_registered, e->tenant, "user_id", e->a.user_id);
        /* shared-secret registration sets the display name itself */
        if (e->has_display && !e->mx->cfg.registration.shared_secret) set_display(e);
        else ens_end(e, 0, NULL);
    } else if (r->status == 400 && !strcmp(r->errcode, "M_USER_IN_USE")) {
        in_use(e);
    } else {
        ens_fail(e, "register", r);
    }
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

/* Synapse's shared-secret registration: HMAC-SHA1 over nonce\0user\0password\0admin */
static void nonce_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    const char *nonce = hsa_nonce(r->json);
    if (r->status != 200 || !nonce) {
        ens_fail(e, "get a registration nonce for", r);
        return;
    }
    const char *secret = e->mx->cfg.registration.shared_secret;
    const char *kind = e->admin ? "admin" : "notadmin";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t ln = strlen(nonce), lu = strlen(e->localpart), lp = strlen(e->a.password);
    size_t len = ln + lu + lp + strlen(kind) + 3;
    unsigned char *msg = malloc(len);
    if (!msg) {
        ens_end(e, BERTH_ENOMEM, "matrix: out of memory");
        return;
    }
    unsigned char *p = msg;
    memcpy(p, nonce, ln + 1), p += ln + 1;
    memcpy(p, e->localpart, lu + 1), p += lu + 1;
    memcpy(p, e->a.password, lp + 1), p += lp + 1;
    memcpy(p, kind, strlen(kind));
    HMAC(EVP_sha1(), secret, (int)strlen(secret), msg, len, mac, &maclen);
    free(msg);
    char machex[2 * EVP_MAX_MD_SIZE + 1];
    hex(mac, maclen, machex);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "nonce", nonce);
    cJSON_AddStringToObject(b, "username", e->localpart);
    cJSON_AddStringToObject(b, "password", e->a.password);
    if (e->has_display) cJSON_AddStringToObject(b, "displayname", e->display);
    cJSON_AddBoolToObject(b, "admin", e->admin);
    cJSON_AddStringToObject(b, "mac", machex);
    hs_call(e->mx->hs, "POST", "/_synapse/admin/v1/register", NULL, b, register_done, e);
}

/* the registration-token flow: a first POST opens the UIA session, the second completes its
 * two stages (m.login.registration_token, then m.login.dummy) */
static void uia_post(struct ens *e, const char *session, const char *stage);

static void uia_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    if (r->status == 200) {
        register_done(r, arg);
        return;
    }
    if (r->status == 400 && !strcmp(r->errcode, "M_USER_IN_USE")) {
        in_use(e);
        return;
    }
    const char *session, *stage;
    enum hsa_uia_step step = hsa_uia_read(r->json, r->errcode, &session, &stage);
    if (r->status != 401 || step == HSA_UIA_NO_SESSION) {
        ens_fail(e, "register", r);
        return;
    }
    if (++e->uia_steps > 4) {
        ens_fail(e, "register (UIA did not finish)", r);
        return;
    }
    if (step == HSA_UIA_REFUSED)
        ens_fail(e, "register (registration token refused)", r);
    else if (step == HSA_UIA_NO_FLOW)
        ens_fail(e, "register (no registration flow berth can follow)", r);
    else
        uia_post(e, session, stage);   /* of the first flow berth can follow, the next stage */
}

static void uia_post(struct ens *e, const char *session, const char *stage)
{
    cJSON *b = cJSON_CreateObject();
    cJSON_AddStringToObject(b, "username", e->localpart);
    cJSON_AddStringToObject(b, "password", e->a.password);
    cJSON_AddStringToObject(b, "initial_device_display_name", "berth");
    cJSON_AddBoolToObject(b, "inhibit_login", false);
    if (session) {
        cJSON *auth = cJSON_AddObjectToObject(b, "auth");
        cJSON_AddStringToObject(auth, "type", stage);
        cJSON_AddStringToObject(auth, "session", session);
        if (!strcmp(stage, "m.login.registration_token"))
            cJSON_AddStringToObject(auth, "token", e->mx->cfg.registration.token);
    }
    hs_call(e->mx->hs, "POST", "/_matrix/client/v3/register", NULL, b, uia_done, e);
}

static void do_register(struct ens *e)
{
    if (e->mx->cfg.registration.shared_secret)
        hs_call(e->mx->hs, "GET", "/_synapse/admin/v1/register", NULL, NULL, nonce_done, e);
    else
        uia_post(e, NULL, NULL);
}

static void whoami_done(const struct mx_res *r, void *arg)
{
    struct ens *e = arg;
    if (r->status == 200) {
        ens_end(e, 0, NULL);
    } else if (r->status == 401 && !strcmp(r->errcode, "M_UNKNOWN_TOKEN")) {
        acct_refused(e->mx, e->a.user_id);
        login(e);
    } else {
        ens_fail(e, "check the token of", r);
    }
}

static void random_password(char *out)
{
    unsigned char b[24];
    if (RAND_bytes(b, sizeof b) != 1) {
        out[0] = 0;
        return;
    }
    hex(b, sizeof b, out);
}

void acct_ensure(struct mx *mx, const char *tenant, const char *localpart,
                 const char *display, bool admin, mx_cb cb, void *arg)
{
    struct ens *e = calloc(1, sizeof *e);
    if (!e) {
        cb(mx, BERTH_ENOMEM, "matrix: out of memory", arg);
        return;
    }
    *e = (struct ens){.mx = mx, .cb = cb, .arg = arg, .admin = admin,
                      .has_display = display != NULL};
    snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
    snprintf(e->localpart, sizeof e->localpart, "%s", localpart);
    if (display) snprintf(e->display, sizeof e->display, "%s", display);
    char uid[MX_ID_MAX];
    acct_user_id(mx, localpart, uid, sizeof uid);
    if (acct_load(mx, uid, &e->a)) {
        if (strcmp(e->a.tenant, tenant)) {
            char msg[1024];
            snprintf(msg, sizeof msg, "matrix: %s belongs to %s%s", uid,
                     e->a.tenant[0] ? "tenant " : "", e->a.tenant[0] ? e->a.tenant : "berth");
            ens_end(e, BERTH_EPERM, msg);
        } else if (e->a.token[0] && is_verified(mx, uid)) {
            ens_end(e, 0, NULL);
        } else if (e->a.token[0] && token_refused(mx, uid)) {
            login(e);
        } else if (e->a.token[0]) {
            hs_call(mx->hs, "GET", "/_matrix/client/v3/account/whoami", e->a.token, NULL,
                    whoami_done, e);
        } else {
            do_register(e);
        }
        return;
    }
    snprintf(e->a.user_id, sizeof e->a.user_id, "%s", uid);
    random_password(e->a.password);
    if (!e->a.password[0] || acct_insert(mx, tenant, localpart, &e->a)) {
        ens_end(e, BERTH_EIO, "matrix: cannot record the account in the store");
        return;
    }
    e->fresh = true;
    do_register(e);
}

void acct_live(struct mx *mx, const struct mx_account *a, mx_cb cb, void *arg)
{
    if (!token_refused(mx, a->user_id)) {
        cb(mx, 0, NULL, arg);
        return;
    }
    char lp[MX_LOCALPART_MAX];
    snprintf(lp, sizeof lp, "%.*s", (int)strcspn(a->user_id + 1, ":"), a->user_id + 1);
    acct_ensure(mx, a->tenant, lp, NULL, false, cb, arg);
}

/* ---- berth's admin account ---- */

static void override_done(const struct mx_res *r, void *arg)
{
    struct mx *mx = arg;
    if (r->error == BERTH_ECANCELED) return;
    if (r->status != 200)
        mx->H->log(mx->self, BERTH_LOG_WARN, "cannot lift the rate limits of %s: HTTP %d %s "
                   "(429s are waited out instead)", mx->admin_id, r->status, r->errcode);
}

static void admin_done(struct mx *mx, int status, const char *msg, void *arg)
{
    (void)arg;
    mx->admin_busy = false;
    struct mx_account a;
    if (!status && !acct_load(mx, mx->admin_id, &a)) {
        status = BERTH_EIO;
        msg = "matrix: the admin account vanished from the store";
    }
    if (status) {
        snprintf(mx->admin_error, sizeof mx->admin_error, "%s", msg ? msg : "failed");
        if (status != BERTH_ECANCELED)
            mx->H->log(mx->self, BERTH_LOG_WARN, "admin account: %s", mx->admin_error);
        waiter_fire(mx, &mx->admin_waiters, status, mx->admin_error);
        return;
    }
    free(mx->admin_token);
    mx->admin_token = strdup(a.token);
    mx->admin_ready = mx->admin_token != NULL;
    mx->admin_error[0] = 0;
    if (mx->cfg.registration.shared_secret) {
        /* berth is infrastructure: its invites into shared rooms must not queue behind the
         * per-room limits meant for people (a 429 would still be waited out) */
        char esc[MX_ID_MAX * 3], path[MX_PATH_MAX];
        hs_escape(mx->admin_id, esc, sizeof esc);
        snprintf(path, sizeof path, "/_synapse/admin/v1/users/%s/override_ratelimit", esc);
        cJSON *b = cJSON_CreateObject();
        cJSON_AddNumberToObject(b, "messages_per_second", 0);
        cJSON_AddNumberToObject(b, "burst_count", 0);
        hs_call(mx->hs, "POST", path, mx->admin_token, b, override_done, mx);
    }
    waiter_fire(mx, &mx->admin_waiters, 0, NULL);
}

void admin_ensure(struct mx *mx, mx_cb cb, void *arg)
{
    if (mx->admin_ready) {
        cb(mx, 0, NULL, arg);
        return;
    }
    waiter_add(&mx->admin_waiters, cb, arg);
    if (mx->admin_busy) return;
    mx->admin_busy = true;
    acct_user_id(mx, mx->cfg.admin.user, mx->admin_id, sizeof mx->admin_id);
    acct_ensure(mx, "", mx->cfg.admin.user, "berth", mx->cfg.registration.shared_secret != NULL,
                admin_done, NULL);
}

/* ---- deactivation ---- */

struct deact {
    struct mx *mx;
    mx_cb cb;
    void *arg;
    char tenant[BERTH_HANDLE_MAX + 1];
    struct mx_account a;
};

static void deact_end(struct deact *d, int status, const char *msg)
{
    d->cb(d->mx, status, msg, d->arg);
    free(d);
}

static void deact_next(struct deact *d);

static void deact_done(const struct mx_res *r, void *arg)
{
    struct deact *d = arg;
    struct mx *mx = d->mx;
    /* 404: never registered (a row written before a registration that did not happen) */
    if (r->status == 200 || r->status == 404) {
        mx->H->log(mx->self, BERTH_LOG_INFO, "deactivated %s", d->a.user_id);
        mx_event(mx, mx->ev_deactivated, d->tenant, "user_id", d->a.user_id);
        set_verified(mx, d->a.user_id, false);
        acct_delete(mx, d->a.user_id);
        deact_next(d);
        return;
    }
    char msg[1024];
    if (r->error == BERTH_ECANCELED) {
        deact_end(d, BERTH_ECANCELED, "matrix: stopping");
        return;
    }
    if (r->status == 401 && !strcmp(r->errcode, "M_UNKNOWN_TOKEN"))
        acct_refused(mx, mx->cfg.registration.shared_secret ? mx->admin_id : d->a.user_id);
    if (!r->status)
        snprintf(msg, sizeof msg, "matrix: homeserver unreachable (deactivate %s): %s",
                 d->a.user_id, r->message);
    else
        snprintf(msg, sizeof msg, "matrix: deactivate %s: HTTP %d %s %s", d->a.user_id,
                 r->status, r->errcode, r->message);
    deact_end(d, r->status ? BERTH_EIO : BERTH_ECONNREFUSED, msg);
}

static void deact_admin(struct mx *mx, int status, const char *msg, void *arg)
{
    struct deact *d = arg;
    if (status) {
        deact_end(d, status, msg);
        return;
    }
    char esc[MX_ID_MAX * 3], path[MX_PATH_MAX];
    hs_escape(d->a.user_id, esc, sizeof esc);
    snprintf(path, sizeof path, "/_synapse/admin/v1/deactivate/%s", esc);
    cJSON *b = cJSON_CreateObject();
    cJSON_AddBoolToObject(b, "erase", mx->cfg.erase);
    hs_call(mx->hs, "POST", path, mx->admin_token, b, deact_done, d);
}

/* without an admin API: the account deactivates itself, authenticated with its password
 * (and its token, logged in again first if that was refused) */
static void deact_self(struct mx *mx, int status, const char *msg, void *arg)
{
    struct deact *d = arg;
    if (status) {
        deact_end(d, status, msg);
        return;
    }
    char uid[MX_ID_MAX];
    snprintf(uid, sizeof uid, "%s", d->a.user_id);
    if (!acct_load(mx, uid, &d->a)) {               /* gone meanwhile */
        deact_next(d);
        return;
    }
    cJSON *b = cJSON_CreateObject();
    cJSON *auth = cJSON_AddObjectToObject(b, "auth");
    cJSON_AddStringToObject(auth, "type", "m.login.password");
    cJSON *id = cJSON_AddObjectToObject(auth, "identifier");
    cJSON_AddStringToObject(id, "type", "m.id.user");
    cJSON_AddStringToObject(id, "user", d->a.user_id);
    cJSON_AddStringToObject(auth, "password", d->a.password);
    cJSON_AddBoolToObject(b, "erase", d->mx->cfg.erase);
    hs_call(d->mx->hs, "POST", "/_matrix/client/v3/account/deactivate",
            d->a.token[0] ? d->a.token : NULL, b, deact_done, d);
}

static bool first_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    snprintf(arg, MX_ID_MAX, "%s", v[0].p ? (const char *)v[0].p : "");
    return false;
}

static void deact_next(struct deact *d)
{
    char uid[MX_ID_MAX] = "";
    struct berth_value p[] = {BERTH_TEXT(d->tenant)};
    d->mx->H->store_query(d->mx->self, "SELECT user_id FROM matrix_accounts WHERE tenant=?1 "
                          "ORDER BY created_ms, rowid LIMIT 1", p, 1, first_row, uid);
    if (!uid[0] || !acct_load(d->mx, uid, &d->a)) {
        deact_end(d, 0, NULL);
        return;
    }
    if (d->mx->cfg.registration.shared_secret) admin_ensure(d->mx, deact_admin, d);
    else acct_live(d->mx, &d->a, deact_self, d);
}

void acct_deactivate_tenant(struct mx *mx, const char *tenant, mx_cb cb, void *arg)
{
    struct deact *d = calloc(1, sizeof *d);
    if (!d) {
        cb(mx, BERTH_ENOMEM, "matrix: out of memory", arg);
        return;
    }
    *d = (struct deact){.mx = mx, .cb = cb, .arg = arg};
    snprintf(d->tenant, sizeof d->tenant, "%s", tenant);
    deact_next(d);
}
