/* plugins/matrix: shared declarations of the matrix plugin's files.
 *
 *  hs.c       the homeserver client: a queue with a concurrency limit that waits out 429s
 *  hs_answers.c  reading the homeserver's answers (no host calls; fuzzed)
 *  account.c  accounts in the plugin's store: register, adopt, verify, log in, deactivate
 *  rooms.c    the configured rooms and spaces, and tenants' joins (apply and plan)
 *  matrix.c   the descriptor, the provisioner and the control API routes
 *
 * Everything runs on the loop thread. Secrets (passwords, access tokens) live in the plugin's
 * own tables and in memory only; they are never logged nor shown by a route. */
#ifndef BERTH_MATRIX_H
#define BERTH_MATRIX_H

#include <berth/berth.h>
#include <cJSON.h>

#include "hs_answers.h"

#define MX_LOCALPART_MAX 128
#define MX_ID_MAX HSA_ID_MAX
#define MX_PATH_MAX 2048  /* two escaped ids and some words */

/* ---- configuration -------------------------------------------------------------------- */

struct mx_room_cfg {
    const char *alias, *name, *topic, *in_space;
    bool space;
    struct berth_strlist join;          /* localpart patterns ("{handle}_ai") */
};

struct mx_cfg {
    const char *homeserver, *server_name;
    struct { const char *shared_secret, *token; } registration;
    struct { const char *user; } admin;
    struct berth_structlist rooms;      /* of struct mx_room_cfg */
    int64_t max_concurrent, timeout, order;
    bool erase;
    int64_t check;                      /* how often the homeserver is probed */
    bool required;                      /* /health fails while the homeserver does */
};

struct mx_acct_cfg { const char *localpart, *display_name; };
struct mx_block { struct berth_structlist accounts; const char *env_account; };

/* ---- the homeserver client (hs.c) ------------------------------------------------------ */

struct mx_res {
    int status;                 /* HTTP status; 0 on transport failure */
    int error;                  /* BERTH_E* on transport failure or cancel */
    const char *message;        /* transport error, or the Matrix error text, or "" */
    const char *errcode;        /* "M_USER_IN_USE"..., or "" */
    cJSON *json;                /* the parsed body (borrowed for the callback), may be NULL */
};
typedef void (*mx_done)(const struct mx_res *r, void *arg);

struct mx_hs;
struct mx_hs *hs_new(const struct berth_host *h, berth_instance *self);
/* base URL and limit; the strings are copied */
int hs_configure(struct mx_hs *hs, const char *base, int64_t max_concurrent, int64_t timeout);
/* Queues a call. token may be NULL; body (may be NULL) is taken over. cb runs exactly once,
 * never from inside hs_call; on 429 the call is retried after retry_after_ms (the whole queue
 * waits), so cb never sees a 429. Returns 0. */
int hs_call(struct mx_hs *hs, const char *method, const char *path, const char *token,
            cJSON *body, mx_done cb, void *arg);
/* every queued and running call ends with BERTH_ECANCELED (in stop) */
void hs_cancel_all(struct mx_hs *hs);
void hs_free(struct mx_hs *hs);
bool hs_up(const struct mx_hs *hs);
const char *hs_last_error(const struct mx_hs *hs);
void hs_stats(const struct mx_hs *hs, cJSON *into);
/* percent-encodes s for a path segment into out; false when it does not fit */
bool hs_escape(const char *s, char *out, size_t cap);

/* ---- the plugin's state ---------------------------------------------------------------- */

struct mx_waiter;
struct mx_verified;

struct mx {
    const struct berth_host *H;
    berth_instance *self;
    struct mx_cfg cfg;
    struct mx_hs *hs;
    struct berth_provisioner prov;
    struct mx_job *jobs;                /* provisions in flight */
    /* the admin account: ready once verified this start */
    bool admin_ready, admin_busy;
    char admin_id[MX_ID_MAX];
    char *admin_token;
    struct mx_waiter *admin_waiters;
    char admin_error[256];
    /* rooms: room ids by configured index, resolved by the last apply */
    char **room_ids;
    size_t nrooms;
    bool rooms_ready, rooms_busy;
    struct mx_waiter *rooms_waiters;
    char rooms_error[256];
    struct mx_verified *verified;       /* user ids whose token was checked this start */
    struct mx_login *logins;            /* login backoff per user */
    berth_timer *probe;
    bool probing;                       /* a probe is queued or in flight */
    uint32_t ev_registered, ev_adopted, ev_deactivated, ev_room_created;
    bool stopping, started;
    uint64_t gen;                       /* bumped by every configure() */
};

/* a completion: status 0 or BERTH_E*, with a message for the tenant's reason */
typedef void (*mx_cb)(struct mx *mx, int status, const char *msg, void *arg);

/* ---- accounts (account.c) --------------------------------------------------------------- */

struct mx_account {
    char user_id[MX_ID_MAX], token[HSA_TOKEN_MAX], device_id[HSA_DEVICE_MAX], password[80];
    char tenant[BERTH_HANDLE_MAX + 1];
};

int acct_migrate(struct mx *mx);
/* user id of a localpart on the configured server */
void acct_user_id(const struct mx *mx, const char *localpart, char *out, size_t cap);
/* Registers (or adopts, or re-verifies) the account of `tenant` ("" for the admin) with that
 * localpart; cb with 0 once its token works. display may be NULL. */
void acct_ensure(struct mx *mx, const char *tenant, const char *localpart,
                 const char *display, bool admin, mx_cb cb, void *arg);
/* the stored account of a user id; false if none */
bool acct_load(struct mx *mx, const char *user_id, struct mx_account *out);
/* the tenant's stored accounts' user ids, in creation order, as a cJSON array */
cJSON *acct_list(struct mx *mx, const char *tenant);
/* Deactivates every stored account of the tenant; cb with 0 when none is left. */
void acct_deactivate_tenant(struct mx *mx, const char *tenant, mx_cb cb, void *arg);
/* the admin account, registered or verified once; cb at once when it is ready */
void admin_ensure(struct mx *mx, mx_cb cb, void *arg);
/* A call with user_id's token got M_UNKNOWN_TOKEN: the token is trusted no more, and the next
 * acct_ensure (or acct_live, or admin_ensure for berth's own) logs in again, backed off. */
void acct_refused(struct mx *mx, const char *user_id);
/* cb at once if a's token is not known to be refused, else after a's login (reload a then) */
void acct_live(struct mx *mx, const struct mx_account *a, mx_cb cb, void *arg);
void acct_free_memory(struct mx *mx);

/* ---- rooms (rooms.c) -------------------------------------------------------------------- */

/* Brings the configured rooms and spaces to their configuration and joins every stored
 * account per `join`. With plan set nothing is written: each change that apply would make is
 * added to plan (a cJSON array of strings) instead. */
void rooms_apply(struct mx *mx, cJSON *plan, mx_cb cb, void *arg);
/* the tenant's accounts invited and joined per `join` (rooms applied first when needed) */
void rooms_join_tenant(struct mx *mx, const char *tenant, mx_cb cb, void *arg);
void rooms_reset(struct mx *mx);        /* the configured rooms changed */
/* an apply in the background unless one runs; waiters of rooms_join_tenant go on after it */
void rooms_kick(struct mx *mx);
/* expands "{handle}" in pattern into out; false when it does not fit */
bool mx_expand(const char *pattern, const char *handle, char *out, size_t cap);

/* publishes a matrix.* event with {"user_id"|"alias": id} (matrix.c); tenant may be "" */
void mx_event(struct mx *mx, uint32_t type, const char *tenant, const char *key,
              const char *id);

/* ---- waiters (account.c): callers queued behind one shared operation ---------------------- */
void waiter_add(struct mx_waiter **list, mx_cb cb, void *arg);
void waiter_fire(struct mx *mx, struct mx_waiter **list, int status, const char *msg);

#endif
