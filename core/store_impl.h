/* Private to store.c and store_plugin.c (and backup.c, which copies the database): the
 * store's state and the statement runner both use. Nothing else includes this file. */
#ifndef BERTH_STORE_IMPL_H
#define BERTH_STORE_IMPL_H

#include "core.h"

#include <sqlite3.h>
#include <sys/types.h>

/* Who runs a statement: NULL for the core; a plugin's module name arms the authorizer. */
struct store_auth {
    const char *module;
    size_t mlen;
    char denied[200];           /* the first refusal, for the error message */
    bool ddl;                   /* the statement being prepared creates/drops/alters its own */
    bool create_table;          /* ... and it is a CREATE TABLE */
    bool group;                 /* SQL of several statements: take a savepoint first */
    bool grouped;               /* ... taken ("plugin_call"): the caller releases it */
    bool schema;                /* a schema step: STORE_SCHEMA_MS, not STORE_STATEMENT_MS */
};

/* A plugin's prepared statement kept for its next call with the same SQL text (one statement,
 * no schema change: what the authorizer allowed while preparing it stays allowed, and SQLite
 * re-runs the authorizer itself if the schema changes under it). Keyed by module, whose
 * tables the authorizer allowed. */
struct store_cached {
    char *module, *sql;
    const char *key;            /* the caller's pointer at the last hit; not owned, may be
                                 * stale: a match of it is confirmed by the text */
    sqlite3_stmt *st;
    uint64_t used;              /* the store's use counter at its last use (LRU) */
    bool busy;                  /* stepping now (a row callback may run the same SQL again) */
};
#define STORE_CACHE_MAX 64

struct store {
    sqlite3 *db;
    struct store_cached cache[STORE_CACHE_MAX];
    size_t ncache;              /* entries used so far; an emptied one (sql NULL) is reused */
    uint64_t uses;
    sqlite3_stmt *journal_ins;
    char *path;
    dev_t dev;                  /* the file opened, to notice it deleted or replaced */
    ino_t ino;
    char *broken;               /* why writes are refused; NULL while healthy */
    uv_timer_t watch;
    bool watching;
    uv_loop_t *loop;            /* given by store_watch; the lazy syncs run on it */
    struct store_lazy *lazy;    /* commits not synced yet (BERTH_TX_NOSYNC) */
    struct store_ckpt *ckpt;    /* checkpoints in the threadpool (store_ckpt.c) */
    /* whose statement runs now (the authorizer's view); NULL: the core's */
    struct store_auth *auth;
    int depth;                  /* plugin calls running (a row callback may make another) */
    /* a plugin transaction (store_tx) is open; tx_err: its first failed statement */
    bool in_tx;
    int tx_err;
    char *tx_owner;
    /* the core's part of a plugin transaction: before() runs inside it just before its
     * commit (the bus journals its pending events there), after() is told whether the
     * commit took (store_set_tx_hook) */
    void (*tx_before)(void);
    void (*tx_after)(bool committed);
    /* uv_hrtime() past which the plugin statement running is interrupted (0: none) */
    uint64_t deadline;
};

/* How long one plugin statement may run: berthd has one loop, and a query that never ends
 * (a recursive CTE, a join without a condition) would hold every client forever. */
#define STORE_STATEMENT_MS 2000
/* A schema step runs once per upgrade and may have to sum a whole table (the quota ledger's
 * per-model totals from its history): it blocks the loop for as long, once, and is still cut
 * short if it never ends. */
#define STORE_SCHEMA_MS 60000

/* Binds: text (the 1.0 store_exec) or typed values; rows are handed out the same way. */
struct store_binds {
    const char *const *text;
    const struct berth_value *vals;
    size_t n;
};
struct store_sink {
    berth_row_cb text;
    berth_value_row_cb typed;
    void *arg;
};

/* Runs every statement of sql in turn, each bound from b. With an authorizer the statements are
 * checked while prepared and stepped. Stops at the first failure. */
int store_run(struct store *s, struct store_auth *a, const char *sql,
              const struct store_binds *b, const struct store_sink *k, char **errmsg);
/* an SQLite result code as a BERTH_E* */
int store_map_err(int sqlite_rc);
/* false (with s->broken set and said once) when the file at s->path is not the one open */
bool store_check(struct store *s);
/* false (a->denied says why) for a plugin's statement the authorizer is never asked about */
bool store_auth_statement(struct store_auth *a, sqlite3_stmt *st);
/* around a plugin statement that changes its schema (a->ddl): a savepoint, then the check
 * that its tables' foreign keys name only its own tables (undone and BERTH_EPERM if not) */
int store_ddl_begin(struct store *s);
int store_ddl_end(struct store *s, struct store_auth *a, int ret, char **errmsg);
/* installs the authorizer (once, at open); it checks s->auth */
void store_arm_authorizer(struct store *s);
/* after a commit made without a sync: the WAL is synced within 1 s (false: it could not be
 * arranged and the caller syncs now) */
bool store_lazy_commit(struct store *s);
/* store_ckpt.c: the loop connection's busy handler (at open); checkpoints in the threadpool
 * instead of SQLite's automatic ones on the loop (once the loop is known); and back to the
 * automatic ones after the loop has stopped */
void store_ckpt_init(sqlite3 *db);
void store_ckpt_start(struct store *s);
void store_ckpt_stop(struct store *s);

#endif
