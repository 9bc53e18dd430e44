/* SQLite state: WAL, schema migrations by version, the tenants table, the event journal and
 * tables owned by plugins. Every statement here is short; the loop thread runs them. */
#include "core.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

struct store {
    sqlite3 *db;
    sqlite3_stmt *journal_ins;
};

/* Core schema, one step per version; a step is never edited once released. */
static const char *const core_steps[] = {
    /* 1 */
    "CREATE TABLE tenants ("
    "  handle TEXT PRIMARY KEY, kind TEXT NOT NULL, template TEXT NOT NULL, driver TEXT,"
    "  desired TEXT NOT NULL, observed TEXT NOT NULL, reason TEXT, driver_id TEXT,"
    "  address TEXT, finalizers TEXT NOT NULL DEFAULT '[]',"
    "  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,"
    "  last_activity_ms INTEGER NOT NULL, restarts INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE events ("
    "  seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, type TEXT NOT NULL,"
    "  tenant TEXT, payload TEXT NOT NULL);"
    "CREATE TABLE plugin_schema (owner TEXT PRIMARY KEY, version INTEGER NOT NULL);",
    /* 2: what each provisioner did for each tenant (core/provision.c) */
    "CREATE TABLE tenant_provisioners ("
    "  tenant TEXT NOT NULL, provisioner TEXT NOT NULL, state TEXT NOT NULL, message TEXT,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_retry_ms INTEGER NOT NULL DEFAULT 0,"
    "  digest TEXT NOT NULL, env TEXT NOT NULL DEFAULT '{}',"
    "  labels TEXT NOT NULL DEFAULT '{}', applied INTEGER NOT NULL DEFAULT 0,"
    "  updated_ms INTEGER NOT NULL, PRIMARY KEY (tenant, provisioner));",
};

static int exec(sqlite3 *db, const char *sql, char **errmsg)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (errmsg) *errmsg = xstrdup(msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return BERTH_EIO;
    }
    return 0;
}

static int user_version(sqlite3 *db)
{
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
    sqlite3 *db;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return BERTH_EIO;
    }
    sqlite3_busy_timeout(db, 2000);
    char *msg = NULL;
    /* WAL + NORMAL: a committed transaction survives a crash of berthd (not of the kernel) and
     * a commit costs no fsync. */
    if (exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
             &msg) < 0)
        goto fail;
    int v = user_version(db);
    if (v < 0 || v > (int)ARRAY_LEN(core_steps)) {
        msg = xasprintf("schema version %d is newer than this berthd knows (%zu)", v,
                        ARRAY_LEN(core_steps));
        goto fail;
    }
    for (; v < (int)ARRAY_LEN(core_steps); v++) {
        char *sql = xasprintf("BEGIN; %s PRAGMA user_version=%d; COMMIT;", core_steps[v], v + 1);
        rc = exec(db, sql, &msg);
        free(sql);
        if (rc < 0) {
            exec(db, "ROLLBACK", NULL);
            goto fail;
        }
    }
    struct store *s = xcalloc(1, sizeof *s);
    s->db = db;
    if (sqlite3_prepare_v3(db, "INSERT INTO events(seq,time_ms,type,tenant,payload) "
                           "VALUES(?,?,?,?,?)", -1, SQLITE_PREPARE_PERSISTENT,
                           &s->journal_ins, NULL) != SQLITE_OK) {
        msg = xstrdup(sqlite3_errmsg(db));
        free(s);
        goto fail;
    }
    *out = s;
    return 0;
fail:
    snprintf(err, errlen, "%s: %s", path, msg ? msg : "cannot open");
    free(msg);
    sqlite3_close(db);
    return BERTH_EIO;
}

void store_close(struct store *s)
{
    if (!s) return;
    sqlite3_finalize(s->journal_ins);
    /* Folds the WAL back so the file is self-contained after a clean stop. */
    sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_close(s->db);
    free(s);
}

struct sqlite3 *store_db(struct store *s)
{
    return s->db;
}

int store_begin(struct store *s)
{
    return exec(s->db, "BEGIN", NULL);
}

int store_commit(struct store *s)
{
    return exec(s->db, "COMMIT", NULL);
}

int store_exec_params(struct store *s, const char *sql, const char *const *p, size_t n,
                      berth_row_cb cb, void *arg, char **errmsg)
{
    sqlite3_stmt *st;
    const char *tail = sql;
    int rc = 0;
    while (tail && *tail) {
        if (sqlite3_prepare_v2(s->db, tail, -1, &st, &tail) != SQLITE_OK) {
            if (errmsg) *errmsg = xstrdup(sqlite3_errmsg(s->db));
            return BERTH_EINVAL;
        }
        if (!st) break;     /* trailing whitespace or comment */
        int np = sqlite3_bind_parameter_count(st);
        for (int i = 0; i < np && (size_t)i < n; i++)
            sqlite3_bind_text(st, i + 1, p[i], -1, SQLITE_TRANSIENT);
        int cols = sqlite3_column_count(st);
        const char *names[64], *vals[64];
        if (cols > 64) cols = 64;
        for (int i = 0; i < cols; i++) names[i] = sqlite3_column_name(st, i);
        bool go = true;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (!cb || !go) continue;
            for (int i = 0; i < cols; i++) vals[i] = (const char *)sqlite3_column_text(st, i);
            go = cb(cols, names, vals, arg);
        }
        if (rc != SQLITE_DONE) {
            if (errmsg) *errmsg = xstrdup(sqlite3_errmsg(s->db));
            sqlite3_finalize(st);
            return BERTH_EIO;
        }
        sqlite3_finalize(st);
        rc = 0;
    }
    return rc;
}

static bool read_version(int n, const char *const *names, const char *const *vals, void *arg)
{
    (void)n; (void)names;
    *(int *)arg = vals[0] ? atoi(vals[0]) : 0;
    return false;
}

int store_migrate_owner(struct store *s, const char *owner, const char *const *steps, size_t n,
                        char **errmsg)
{
    int v = 0;
    const char *p[] = {owner};
    if (store_exec_params(s, "SELECT version FROM plugin_schema WHERE owner=?1", p, 1,
                          read_version, &v, errmsg) < 0)
        return BERTH_EIO;
    for (; (size_t)v < n; v++) {
        if (exec(s->db, "BEGIN", errmsg) < 0) return BERTH_EIO;
        char ver[24];
        snprintf(ver, sizeof ver, "%d", v + 1);
        const char *q[] = {owner, ver};
        if (store_exec_params(s, steps[v], NULL, 0, NULL, NULL, errmsg) < 0 ||
            store_exec_params(s, "INSERT INTO plugin_schema(owner,version) VALUES(?1,?2) "
                              "ON CONFLICT(owner) DO UPDATE SET version=?2", q, 2, NULL,
                              NULL, errmsg) < 0) {
            exec(s->db, "ROLLBACK", NULL);
            return BERTH_EIO;
        }
        if (exec(s->db, "COMMIT", errmsg) < 0) return BERTH_EIO;
    }
    return 0;
}

uint64_t store_max_seq(struct store *s)
{
    sqlite3_stmt *st;
    uint64_t v = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(seq),0) FROM events", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

int store_journal(struct store *s, uint64_t seq, int64_t t, const char *type,
                  const char *tenant, const char *json)
{
    sqlite3_stmt *st = s->journal_ins;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)seq);
    sqlite3_bind_int64(st, 2, t);
    sqlite3_bind_text(st, 3, type, -1, SQLITE_STATIC);
    if (tenant) sqlite3_bind_text(st, 4, tenant, -1, SQLITE_STATIC);
    else sqlite3_bind_null(st, 4);
    sqlite3_bind_text(st, 5, json, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        log_error("event journal: %s", sqlite3_errmsg(s->db));
        return BERTH_EIO;
    }
    return 0;
}

int store_journal_trim(struct store *s, uint64_t keep_from)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM events WHERE seq < ?", -1, &st, NULL) !=
        SQLITE_OK)
        return BERTH_EIO;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)keep_from);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : BERTH_EIO;
}

int store_events_since(struct store *s, uint64_t after, size_t limit, store_event_cb cb,
                       void *arg)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT seq,time_ms,type,tenant,payload FROM events "
                           "WHERE seq > ? ORDER BY seq LIMIT ?", -1, &st, NULL) != SQLITE_OK)
        return BERTH_EIO;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)after);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)limit);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (!cb((uint64_t)sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1),
                (const char *)sqlite3_column_text(st, 2),
                (const char *)sqlite3_column_text(st, 3),
                (const char *)sqlite3_column_text(st, 4), arg))
            break;
    }
    sqlite3_finalize(st);
    return 0;
}
