/* Plugins' statements: each runs under SQLite's authorizer, limited to the tables (indexes,
 * triggers, views) named `<module>_...`, and each call is atomic. store_tx groups calls in one
 * transaction that commits with an fsync; it never shares a commit with the core's batches
 * (tenant activity...), which run only between plugin calls. The event journal's pending
 * rows may join its commit (store_set_tx_hook): written after the plugin's statements; one
 * that fails is undone alone (a statement's rollback) and never fails the transaction. */
#include "store_impl.h"

#include <stdlib.h>
#include <string.h>

/* ---- the authorizer ---- */

static bool owned(const struct store_auth *a, const char *name)
{
    return name && !sqlite3_strnicmp(name, a->module, (int)a->mlen) && name[a->mlen] == '_' &&
           name[a->mlen + 1];
}

/* name: the table (or index...) refused; NULL when the kind of statement is refused */
static int deny(struct store_auth *a, const char *what, const char *name)
{
    if (a->denied[0]) return SQLITE_DENY;
    if (name)
        snprintf(a->denied, sizeof a->denied, "%s %s refused: a plugin may only use tables "
                 "named %s_*", what, name, a->module);
    else
        snprintf(a->denied, sizeof a->denied, "%s refused: not allowed in a plugin's SQL", what);
    return SQLITE_DENY;
}

/* SQLite's bookkeeping of a CREATE/DROP/ALTER: SQLite itself refuses direct writes to it. */
static bool schema_table(const char *t)
{
    return t && (!sqlite3_stricmp(t, "sqlite_master") || !sqlite3_stricmp(t, "sqlite_schema") ||
                 !sqlite3_stricmp(t, "sqlite_temp_master") ||
                 !sqlite3_stricmp(t, "sqlite_temp_schema"));
}

/* Pragmas that only describe one of the plugin's own tables. */
static int pragma(struct store_auth *a, const char *name, const char *arg)
{
    static const char *const reads[] = {"table_info", "table_xinfo", "index_list",
                                        "index_info", "index_xinfo", "foreign_key_list"};
    for (size_t i = 0; i < ARRAY_LEN(reads); i++)
        if (!sqlite3_stricmp(name, reads[i]) && owned(a, arg)) return SQLITE_OK;
    return deny(a, "PRAGMA", name);
}

static int check(struct store_auth *a, int action, const char *a1, const char *a2)
{
    switch (action) {
    case SQLITE_SELECT:
        /* its SELECT would read while SQLite's schema reads are allowed: CREATE, then
         * INSERT ... SELECT */
        if (a->create_table) return deny(a, "CREATE TABLE ... AS SELECT", NULL);
        return SQLITE_OK;
    case SQLITE_RECURSIVE:
        return SQLITE_OK;
    case SQLITE_FUNCTION:
        /* ALTER TABLE ... RENAME TO: the authorizer never sees the new name */
        if (a2 && !sqlite3_stricmp(a2, "sqlite_rename_table"))
            return deny(a, "renaming a table (create the new one in a migration step)", NULL);
        return SQLITE_OK;
    case SQLITE_READ:
        /* SQLite reads its schema table to carry out the plugin's own CREATE/DROP/ALTER */
        if (owned(a, a1) || (a->ddl && schema_table(a1))) return SQLITE_OK;
        return deny(a, "reading table", a1);
    case SQLITE_INSERT: case SQLITE_UPDATE: case SQLITE_DELETE:
        return owned(a, a1) || schema_table(a1) ? SQLITE_OK : deny(a, "writing table", a1);
    case SQLITE_CREATE_TABLE: case SQLITE_CREATE_TEMP_TABLE: case SQLITE_DROP_TABLE:
    case SQLITE_DROP_TEMP_TABLE: case SQLITE_CREATE_VIEW: case SQLITE_CREATE_TEMP_VIEW:
    case SQLITE_DROP_VIEW: case SQLITE_DROP_TEMP_VIEW:
        return owned(a, a1) ? SQLITE_OK : deny(a, "creating or dropping", a1);
    case SQLITE_CREATE_INDEX: case SQLITE_CREATE_TEMP_INDEX: case SQLITE_DROP_INDEX:
    case SQLITE_DROP_TEMP_INDEX: case SQLITE_CREATE_TRIGGER: case SQLITE_CREATE_TEMP_TRIGGER:
    case SQLITE_DROP_TRIGGER: case SQLITE_DROP_TEMP_TRIGGER:
        /* a PRIMARY KEY or UNIQUE column's index is named by SQLite */
        if (!owned(a, a1) && sqlite3_strnicmp(a1 ? a1 : "", "sqlite_autoindex_", 17))
            return deny(a, "creating or dropping", a1);
        return owned(a, a2) ? SQLITE_OK : deny(a, "an index or trigger on table", a2);
    case SQLITE_REINDEX: case SQLITE_ANALYZE:
        return owned(a, a1) ? SQLITE_OK : deny(a, "indexing table", a1);
    case SQLITE_ALTER_TABLE:
        return owned(a, a2) ? SQLITE_OK : deny(a, "altering table", a2);
    case SQLITE_PRAGMA:
        return pragma(a, a1, a2);
    case SQLITE_TRANSACTION: case SQLITE_SAVEPOINT:
        /* BEGIN/COMMIT inside a plugin's SQL would take the journal's batch with it */
        return deny(a, "transaction control (use store_tx)", NULL);
    case SQLITE_ATTACH: case SQLITE_DETACH:
        return deny(a, "ATTACH and DETACH", NULL);
    default: {
        char what[48];
        snprintf(what, sizeof what, "statement kind %d (sqlite3.h SQLITE_* action)", action);
        return deny(a, what, NULL);
    }
    }
}

static int authorize(void *arg, int action, const char *a1, const char *a2, const char *db,
                     const char *inner)
{
    (void)db; (void)inner;
    struct store *s = arg;
    struct store_auth *a = s->auth;
    if (!a) return SQLITE_OK;       /* the core's own statement */
    int rc = check(a, action, a1, a2);
    if (rc != SQLITE_OK) return rc;
    /* what SQLite's own schema reads are allowed for: see SQLITE_READ */
    if (action == SQLITE_CREATE_TABLE || action == SQLITE_CREATE_TEMP_TABLE)
        a->create_table = true;
    if (action != SQLITE_READ && action != SQLITE_SELECT && action != SQLITE_FUNCTION &&
        action != SQLITE_RECURSIVE && action != SQLITE_INSERT && action != SQLITE_UPDATE &&
        action != SQLITE_DELETE && action != SQLITE_PRAGMA)
        a->ddl = true;
    return rc;
}

/* The statement SQLite prepares without asking the authorizer. VACUUM (INTO a file) would copy
 * every table, the core's included, or hold the loop for as long as the database is big; its
 * inner ATTACH is refused anyway, this says so plainly. */
bool store_auth_statement(struct store_auth *a, sqlite3_stmt *st)
{
    const char *p = sqlite3_sql(st);
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') p++;
        if (p[0] == '-' && p[1] == '-') {
            p += strcspn(p, "\n");
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
        } else {
            break;
        }
    }
    if (sqlite3_strnicmp(p, "VACUUM", 6) || ((p[6] | 0x20) >= 'a' && (p[6] | 0x20) <= 'z'))
        return true;
    deny(a, "VACUUM", NULL);
    return false;
}

/* The authorizer is never asked about a foreign key's parent, and with foreign keys on a key
 * to a column that is not unique makes every write of the parent table fail ("foreign key
 * mismatch"): one CREATE TABLE would stop the core saving tenants, for good. So a statement
 * that changes a plugin's schema runs under a savepoint, and is undone when any of the
 * module's tables then refers to a table it does not own. */
int store_ddl_begin(struct store *s)
{
    return store_exec_raw(s, "SAVEPOINT plugin_ddl", NULL);
}

static int foreign_keys_owned(struct store *s, struct store_auth *a)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT m.name, f.\"table\" FROM sqlite_schema m, "
                           "pragma_foreign_key_list(m.name) f WHERE m.type = 'table'", -1,
                           &st, NULL) != SQLITE_OK)
        return BERTH_EIO;
    int ret = 0, rc;
    while (!ret && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *child = (const char *)sqlite3_column_text(st, 0);
        const char *parent = (const char *)sqlite3_column_text(st, 1);
        if (owned(a, child) && !owned(a, parent)) {
            deny(a, "a foreign key to table", parent ? parent : "?");
            ret = BERTH_EPERM;
        }
    }
    if (!ret && rc != SQLITE_DONE) ret = store_map_err(sqlite3_extended_errcode(s->db));
    sqlite3_finalize(st);
    return ret;
}

int store_ddl_end(struct store *s, struct store_auth *a, int ret, char **errmsg)
{
    s->auth = NULL;             /* the check and the savepoint are the core's statements */
    if (!ret && (ret = foreign_keys_owned(s, a)) == BERTH_EPERM && errmsg && !*errmsg)
        *errmsg = xstrdup(a->denied);
    if (ret) store_exec_raw(s, "ROLLBACK TO plugin_ddl", NULL);
    store_exec_raw(s, "RELEASE plugin_ddl", NULL);
    s->auth = a;
    return ret;
}

void store_arm_authorizer(struct store *s)
{
    sqlite3_set_authorizer(s->db, authorize, s);
}

/* ---- one plugin call ---- */

static int raw(struct store *s, const char *sql)
{
    return store_exec_raw(s, sql, NULL);
}

/* A call of one statement is atomic by itself. A call of several is made atomic by a savepoint
 * taken before its first statement runs (store_run sets a->grouped): a transaction of its own,
 * or a part of the one a row callback's caller has open. Inside store_tx any failure dooms
 * the transaction instead. */
static int ungroup(struct store *s, int rc, char **errmsg)
{
    bool outermost = !s->depth && !s->in_tx;
    if (rc) {
        raw(s, "ROLLBACK TO plugin_call");
        raw(s, "RELEASE plugin_call");
        return rc;
    }
    if ((rc = raw(s, "RELEASE plugin_call")) != 0) {
        *errmsg = xasprintf("commit: %s", sqlite3_errmsg(s->db));
        if (outermost && !sqlite3_get_autocommit(s->db)) raw(s, "ROLLBACK");
    }
    return rc;
}

static int plugin_run(struct store *s, const char *module, const char *sql,
                      const struct store_binds *b, const struct store_sink *k, char **errmsg)
{
    if (s->in_tx && strcmp(s->tx_owner, module)) {
        *errmsg = xasprintf("%s's transaction is open", s->tx_owner);
        return BERTH_EBUSY;
    }
    if (!s->in_tx && !s->depth && !sqlite3_get_autocommit(s->db)) {
        *errmsg = xstrdup("the core's batch is open");
        return BERTH_EBUSY;
    }
    if (s->in_tx && sqlite3_get_autocommit(s->db)) {
        /* SQLite rolled the transaction back with a failed statement (interrupted, a full
         * disk): what follows would commit alone, while store_tx answers "rolled back" */
        *errmsg = xasprintf("the transaction was rolled back: a statement inside failed (%s)",
                            berth_strerror(s->tx_err ? s->tx_err : BERTH_EIO));
        return s->tx_err ? s->tx_err : BERTH_EIO;
    }
    struct store_auth a = {.module = module, .mlen = strlen(module), .group = !s->in_tx};
    s->depth++;
    int rc = store_run(s, &a, sql, b, k, errmsg);
    s->depth--;
    if (s->in_tx) {
        if (rc && !s->tx_err) s->tx_err = rc;
    } else if (a.grouped) {
        rc = ungroup(s, rc, errmsg);
    }
    return rc;
}

int store_plugin_exec(struct store *s, const char *module, const char *sql,
                      const char *const *p, size_t n, berth_row_cb cb, void *arg, char **errmsg)
{
    struct store_binds b = {.text = p, .n = n};
    struct store_sink k = {.text = cb, .arg = arg};
    return plugin_run(s, module, sql, &b, &k, errmsg);
}

int store_plugin_query(struct store *s, const char *module, const char *sql,
                       const struct berth_value *p, size_t n, berth_value_row_cb cb, void *arg,
                       char **errmsg)
{
    if (n && !p) {
        *errmsg = xstrdup("parameters missing");
        return BERTH_EINVAL;
    }
    struct store_binds b = {.vals = p, .n = n};
    struct store_sink k = {.typed = cb, .arg = arg};
    return plugin_run(s, module, sql, &b, &k, errmsg);
}

/* ---- transactions ---- */

static int tx_refused(struct store *s, char **errmsg)
{
    if (s->in_tx) *errmsg = xasprintf("transactions do not nest (%s's is open)", s->tx_owner);
    else if (s->depth) *errmsg = xstrdup("a transaction cannot start inside a statement's "
                                         "row callback");
    else if (!sqlite3_get_autocommit(s->db)) *errmsg = xstrdup("the core's batch is open");
    else return 0;
    return BERTH_EBUSY;
}

/* The commit syncs the WAL (synchronous=FULL for this commit only): a committed plugin
 * transaction survives a power loss, and so does every commit before it in the WAL. With
 * BERTH_TX_NOSYNC it is only written (NORMAL), and synced within 1 s (store_lazy_commit). */
static int tx_commit(struct store *s, unsigned flags, char **errmsg)
{
    int rc = raw(s, "COMMIT");
    if (rc) {
        *errmsg = xasprintf("commit: %s", sqlite3_errmsg(s->db));
        if (!sqlite3_get_autocommit(s->db)) raw(s, "ROLLBACK");
    } else if ((flags & BERTH_TX_NOSYNC) && !store_lazy_commit(s)) {
        /* no loop to sync it later (berthd starting or stopping): a checkpoint syncs the WAL
         * before it copies it */
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    }
    return rc;
}

static void tx_end(struct store *s, unsigned flags)
{
    if (!(flags & BERTH_TX_NOSYNC)) raw(s, "PRAGMA synchronous=NORMAL");
    free(s->tx_owner);
    s->tx_owner = NULL;
}

int store_plugin_tx(struct store *s, const char *module, berth_tx_fn fn, void *arg,
                    unsigned flags, char **errmsg)
{
    int rc = tx_refused(s, errmsg);
    if (rc) return rc;
    if (!fn) {
        *errmsg = xstrdup("no transaction body");
        return BERTH_EINVAL;
    }
    if (!store_check(s)) {
        *errmsg = xstrdup(s->broken);
        return BERTH_EIO;
    }
    if (!(flags & BERTH_TX_NOSYNC)) raw(s, "PRAGMA synchronous=FULL");
    if ((rc = raw(s, "BEGIN IMMEDIATE")) != 0) {
        *errmsg = xasprintf("begin: %s", sqlite3_errmsg(s->db));
        tx_end(s, flags);
        return rc;
    }
    s->in_tx = true;
    s->tx_err = 0;
    s->tx_owner = xstrdup(module);
    rc = fn(arg);
    s->in_tx = false;
    if (!rc && s->tx_err) {
        rc = s->tx_err;
        *errmsg = xasprintf("rolled back: a statement inside failed (%s)", berth_strerror(rc));
    } else if (rc) {
        *errmsg = xasprintf("rolled back: the body returned %s", berth_strerror(rc));
    }
    if (!rc) {
        bool hooked = s->tx_before != NULL;
        if (hooked) s->tx_before();
        rc = tx_commit(s, flags, errmsg);
        if (hooked && s->tx_after) s->tx_after(rc == 0);
    } else if (!sqlite3_get_autocommit(s->db)) {
        raw(s, "ROLLBACK");
    }
    tx_end(s, flags);
    return rc;
}

/* ---- migrations ---- */

static bool read_version(int n, const char *const *names, const char *const *vals, void *arg)
{
    (void)n; (void)names;
    *(int *)arg = vals[0] ? atoi(vals[0]) : 0;
    return false;
}

/* Each step in its own transaction with the version it reaches; the step runs as the plugin
 * (its tables only), the version row is the core's. */
int store_migrate_owner(struct store *s, const char *owner, const char *const *steps, size_t n,
                        char **errmsg)
{
    int rc = tx_refused(s, errmsg);
    if (rc) return rc;
    int v = 0;
    const char *p[] = {owner};
    if ((rc = store_exec_params(s, "SELECT version FROM plugin_schema WHERE owner=?1", p, 1,
                                read_version, &v, errmsg)) < 0)
        return rc;
    struct store_auth a = {.module = owner, .mlen = strlen(owner), .schema = true};
    for (; (size_t)v < n; v++) {
        if ((rc = store_exec_raw(s, "BEGIN", errmsg)) < 0) return rc;
        char ver[24];
        snprintf(ver, sizeof ver, "%d", v + 1);
        const char *q[] = {owner, ver};
        s->depth++;
        rc = store_run(s, &a, steps[v], NULL, NULL, errmsg);
        s->depth--;
        if (!rc)
            rc = store_exec_params(s, "INSERT INTO plugin_schema(owner,version) VALUES(?1,?2) "
                                   "ON CONFLICT(owner) DO UPDATE SET version=?2", q, 2, NULL,
                                   NULL, errmsg);
        if (!rc) rc = store_exec_raw(s, "COMMIT", errmsg);
        if (rc) {
            if (!sqlite3_get_autocommit(s->db)) raw(s, "ROLLBACK");
            return rc;
        }
    }
    return 0;
}

void store_set_tx_hook(struct store *s, void (*before)(void), void (*after)(bool committed))
{
    s->tx_before = before;
    s->tx_after = after;
}
