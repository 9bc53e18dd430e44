/* SQLite state: WAL, schema migrations by version, the tenants table, the event journal and
 * tables owned by plugins (their statements: store_plugin.c). Every statement here is short;
 * the loop thread runs them. The store also watches its own file: one deleted or replaced
 * under berthd turns the store unhealthy and every write after that is refused. */
#include "store_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int store_map_err(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_OK: case SQLITE_ROW: case SQLITE_DONE: return 0;
    case SQLITE_FULL: return BERTH_ENOSPC;
    case SQLITE_BUSY: case SQLITE_LOCKED: return BERTH_EBUSY;
    case SQLITE_AUTH: case SQLITE_PERM: return BERTH_EPERM;
    case SQLITE_TOOBIG: case SQLITE_RANGE: case SQLITE_MISMATCH: return BERTH_EINVAL;
    case SQLITE_CONSTRAINT:
        /* a duplicate key is "already exists"; NOT NULL, CHECK or a foreign key is bad input */
        return rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ||
                       rc == SQLITE_CONSTRAINT_ROWID
                   ? BERTH_EEXIST
                   : BERTH_EINVAL;
    default: return BERTH_EIO;
    }
}

static int exec(sqlite3 *db, const char *sql, char **errmsg)
{
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        if (errmsg) *errmsg = xstrdup(msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return store_map_err(sqlite3_extended_errcode(db));
    }
    return 0;
}

int store_exec_raw(struct store *s, const char *sql, char **errmsg)
{
    return exec(s->db, sql, errmsg);
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

/* ---- the file under the store ---- */

bool store_check(struct store *s)
{
    if (s->broken) return false;
    struct stat st;
    const char *what = NULL;
    if (stat(s->path, &st) < 0) {
        if (errno == ENOENT || errno == ENOTDIR) what = "was deleted";
    } else if (st.st_dev != s->dev || st.st_ino != s->ino) {
        what = "was replaced by another file";
    }
    if (!what) return true;
    s->broken = xasprintf("the state database %s %s while berthd had it open; writes are "
                          "refused until berthd is restarted", s->path, what);
    log_error("%s", s->broken);
    return false;
}

bool store_healthy(struct store *s, const char **why)
{
    bool ok = s && store_check(s);
    if (why) *why = ok ? NULL : s ? s->broken : "the state database is not open";
    return ok;
}

static void on_watch(uv_timer_t *t)
{
    struct store *s = container_of(t, struct store, watch);
    if (!store_check(s)) uv_timer_stop(t);
}

void store_watch(struct store *s, uv_loop_t *loop, uint64_t every_ms)
{
    s->loop = loop;
    uv_timer_init(loop, &s->watch);
    uv_unref((uv_handle_t *)&s->watch);     /* the watch alone does not keep berthd up */
    uv_timer_start(&s->watch, on_watch, every_ms, every_ms);
    s->watching = true;
    store_ckpt_start(s);
}

/* ---- commits not synced yet (BERTH_TX_NOSYNC) ----
 * Such a commit is a write() into the WAL: it survives a crash of berthd at once. For a power
 * loss, a sync of the WAL file starts at most LAZY_MS after the oldest commit not yet synced:
 * an fdatasync of our own descriptor of the -wal file in libuv's threadpool, so the loop never
 * waits for the disk. A synced commit (synchronous=FULL) syncs the earlier ones too. */
#define LAZY_MS 1000

struct store_lazy {
    uv_timer_t timer;
    uv_fs_t req;
    int fd;                     /* the -wal file, opened at the first lazy commit */
    bool armed, syncing, pending, failed;
    uint64_t oldest;            /* uv_now() of the oldest commit not synced, while pending */
    struct store *s;
};

static void lazy_arm(struct store_lazy *l);

static void lazy_synced(uv_fs_t *req)
{
    struct store_lazy *l = container_of(req, struct store_lazy, req);
    l->syncing = false;
    if (req->result < 0) {
        /* what it should have synced is still unsynced: try again after LAZY_MS (the next
         * synced commit syncs it all anyway); said once per run of failures */
        if (!l->failed) log_error("store: syncing the WAL: %s; retrying",
                                  uv_strerror((int)req->result));
        l->failed = true;
        l->oldest = uv_now(l->s->loop);     /* the retry waits LAZY_MS: no busy loop */
        l->pending = true;
    } else if (l->failed) {
        l->failed = false;
        log_info("store: the WAL is synced again");
    }
    uv_fs_req_cleanup(req);
    if (l->pending) lazy_arm(l);
}

static void lazy_fire(uv_timer_t *t)
{
    struct store_lazy *l = container_of(t, struct store_lazy, timer);
    l->armed = false;
    if (l->syncing) return;     /* lazy_synced arms again for what came meanwhile */
    l->pending = false;
    l->syncing = true;
    if (uv_fs_fdatasync(t->loop, &l->req, l->fd, lazy_synced) < 0) {
        l->syncing = false;
        fdatasync(l->fd);
    }
}

static void lazy_arm(struct store_lazy *l)
{
    if (l->armed || l->syncing || uv_is_closing((uv_handle_t *)&l->timer)) return;
    uint64_t due = l->oldest + LAZY_MS, now = uv_now(l->s->loop);
    if (uv_timer_start(&l->timer, lazy_fire, due > now ? due - now : 0, 0) == 0) l->armed = true;
}

bool store_lazy_commit(struct store *s)
{
    if (!s->loop) return false;
    struct store_lazy *l = s->lazy;
    if (!l) {
        char *wal = xasprintf("%s-wal", s->path);
        int fd = open(wal, O_RDONLY | O_CLOEXEC);
        free(wal);
        if (fd < 0) return false;
        l = s->lazy = xcalloc(1, sizeof *l);
        l->fd = fd;
        l->s = s;
        uv_timer_init(s->loop, &l->timer);
        uv_unref((uv_handle_t *)&l->timer);     /* a stop syncs anyway (the checkpoint) */
    }
    if (!l->pending) l->oldest = uv_now(s->loop);
    l->pending = true;
    lazy_arm(l);
    return true;
}

static void lazy_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct store_lazy, timer));
}

/* at close: the loop has stopped, so no sync is in flight */
static void lazy_close(struct store *s)
{
    struct store_lazy *l = s->lazy;
    if (!l) return;
    if (l->pending) fdatasync(l->fd);
    close(l->fd);
    if (!uv_is_closing((uv_handle_t *)&l->timer)) uv_close((uv_handle_t *)&l->timer, lazy_closed);
    else free(l);
    s->lazy = NULL;
}

static void watch_closed(uv_handle_t *h)
{
    free(container_of((uv_timer_t *)h, struct store, watch));
}

/* Called by SQLite every 1,000 VM steps: only a plugin's statement has a deadline, and row
 * callbacks (the core's statements) run with s->auth cleared. */
static int progress(void *arg)
{
    struct store *s = arg;
    return s->auth && s->deadline && uv_hrtime() > s->deadline;
}

int store_open(const char *path, struct store **out, char *err, size_t errlen)
{
    sqlite3 *db;
    /* SQLite's memory statistics take a global mutex on every allocation; berthd never
     * reads them (SQLITE_MISUSE once SQLite is initialized: a second store keeps them) */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return BERTH_EIO;
    }
    store_ckpt_init(db);        /* waits up to 2 s for another connection's lock */
    /* more of each statement's small allocations from the connection's own slots */
    sqlite3_db_config(db, SQLITE_DBCONFIG_LOOKASIDE, NULL, 1200, 256);
    sqlite3_extended_result_codes(db, 1);
    char *msg = NULL;
    /* WAL + NORMAL: a commit costs no fsync and survives a crash of berthd, not of the kernel.
     * Plugin transactions (store_tx) commit with FULL: see docs/architecture.md. A new
     * database gets 1 KiB pages: a commit writes whole pages into the WAL, and most of ours
     * change a few small rows (an existing database keeps the size it has). */
    if (exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
             " PRAGMA foreign_keys=ON;", &msg) < 0)
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
    struct stat st;
    if (stat(path, &st) < 0) {
        msg = xasprintf("stat: %s", strerror(errno));
        goto fail;
    }
    struct store *s = xcalloc(1, sizeof *s);
    s->db = db;
    s->path = xstrdup(path);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    store_arm_authorizer(s);
    sqlite3_progress_handler(db, 1000, progress, s);
    if (sqlite3_prepare_v3(db, "INSERT INTO events(seq,time_ms,type,tenant,payload) "
                           "VALUES(?,?,?,?,?)", -1, SQLITE_PREPARE_PERSISTENT,
                           &s->journal_ins, NULL) != SQLITE_OK) {
        msg = xstrdup(sqlite3_errmsg(db));
        free(s->path);
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
    store_plugin_forget(s, NULL);
    lazy_close(s);
    store_ckpt_stop(s);
    sqlite3_finalize(s->journal_ins);
    /* Folds the WAL back so the file is self-contained after a clean stop (not into a file
     * that is no longer the state database). */
    if (store_check(s))
        sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_close(s->db);
    free(s->path);
    free(s->broken);
    free(s->tx_owner);
    if (s->watching && !uv_is_closing((uv_handle_t *)&s->watch))
        uv_close((uv_handle_t *)&s->watch, watch_closed);
    else free(s);
}

struct sqlite3 *store_db(struct store *s)
{
    return s->db;
}

/* ---- the core's batches (the event journal, tenant activity) ---- */

/* Commits while on sync the WAL to disk (synchronous=FULL): what the API acknowledges
 * survives a power loss. Off again, commits are ordered but not synced (NORMAL). Never
 * switched inside a transaction, where SQLite would ignore it. */
void store_durable(struct store *s, bool on)
{
    if (s && sqlite3_get_autocommit(s->db))
        exec(s->db, on ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", NULL);
}

int store_begin(struct store *s)
{
    /* A plugin transaction never shares a commit with the core's batch, either way. */
    if (s->in_tx) {
        log_error("store: a batch of the core was attempted inside %s's transaction",
                  s->tx_owner);
        return BERTH_EBUSY;
    }
    if (!store_check(s)) return BERTH_EIO;
    char *msg = NULL;
    int rc = exec(s->db, "BEGIN", &msg);
    if (rc) log_error("store: begin: %s", msg);
    free(msg);
    return rc;
}

/* A failed COMMIT (a full disk) may leave the transaction open: roll it back, or everything
 * after it would silently join it. */
int store_commit(struct store *s)
{
    char *msg = NULL;
    int rc = exec(s->db, "COMMIT", &msg);
    if (rc) {
        log_error("store: commit: %s", msg);
        if (!sqlite3_get_autocommit(s->db)) exec(s->db, "ROLLBACK", NULL);
    }
    free(msg);
    return rc;
}

/* ---- statements ---- */

static int bind_value(sqlite3_stmt *st, int i, const struct berth_value *v,
                      sqlite3_destructor_type copy)
{
    switch (v->type) {
    case BERTH_VAL_NULL: return sqlite3_bind_null(st, i);
    case BERTH_VAL_INT: return sqlite3_bind_int64(st, i, v->i);
    case BERTH_VAL_DOUBLE: return sqlite3_bind_double(st, i, v->d);
    case BERTH_VAL_TEXT:
        if (!v->p) return sqlite3_bind_null(st, i);
        return sqlite3_bind_text64(st, i, v->p, v->len == SIZE_MAX ? strlen(v->p) : v->len,
                                   copy, SQLITE_UTF8);
    case BERTH_VAL_BLOB:
        /* a NULL pointer would bind SQL NULL: an empty blob is still a blob */
        if (!v->len) return sqlite3_bind_zeroblob(st, i, 0);
        if (!v->p) return SQLITE_MISUSE;
        return sqlite3_bind_blob64(st, i, v->p, v->len, copy);
    }
    return SQLITE_MISMATCH;
}

/* Without a row callback nothing runs between the bind and the statement's reset, and the
 * caller's values live for the call: SQLite reads them in place (a copy per value was a
 * malloc and a free per text of every ledger write). A callback could change or free
 * them between two rows: then they are copied. */
static int bind_all(sqlite3_stmt *st, const struct store_binds *b, const struct store_sink *k,
                    char **errmsg)
{
    int np = sqlite3_bind_parameter_count(st);
    sqlite3_destructor_type copy = k && (k->text || k->typed) ? SQLITE_TRANSIENT : SQLITE_STATIC;
    for (int i = 0; b && i < np && (size_t)i < b->n; i++) {
        int rc = b->vals ? bind_value(st, i + 1, &b->vals[i], copy)
                         : sqlite3_bind_text(st, i + 1, b->text[i], -1, copy);
        if (rc != SQLITE_OK) {
            if (errmsg) *errmsg = xasprintf("parameter %d: %s", i + 1,
                                            rc == SQLITE_MISUSE ? "blob without data"
                                                                : sqlite3_errstr(rc));
            return rc == SQLITE_NOMEM ? BERTH_ENOMEM : BERTH_EINVAL;
        }
    }
    return 0;
}

static void column_value(sqlite3_stmt *st, int i, struct berth_value *v)
{
    *v = (struct berth_value){.type = BERTH_VAL_NULL};
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER: *v = BERTH_INT(sqlite3_column_int64(st, i)); break;
    case SQLITE_FLOAT: *v = BERTH_DOUBLE(sqlite3_column_double(st, i)); break;
    case SQLITE_TEXT:
        v->type = BERTH_VAL_TEXT;
        v->p = sqlite3_column_text(st, i);
        v->len = (size_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        v->type = BERTH_VAL_BLOB;
        v->p = sqlite3_column_blob(st, i);
        v->len = (size_t)sqlite3_column_bytes(st, i);
        break;
    default: break;
    }
}

enum { MAX_COLS = 64 };

/* Steps st to its end; rows go to the sink until it says stop. The sink runs as the core:
 * what it calls is checked as whoever makes that call. */
static int step_all(struct store *s, sqlite3_stmt *st, const struct store_sink *k)
{
    struct store_auth *who = s->auth;
    int cols = sqlite3_column_count(st);
    if (cols > MAX_COLS) cols = MAX_COLS;
    const char *names[MAX_COLS], *texts[MAX_COLS];
    struct berth_value vals[MAX_COLS];
    for (int i = 0; i < cols; i++) names[i] = sqlite3_column_name(st, i);
    bool go = k && (k->text || k->typed);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!go) continue;
        s->auth = NULL;
        if (k->typed) {
            for (int i = 0; i < cols; i++) column_value(st, i, &vals[i]);
            go = k->typed(cols, names, vals, k->arg);
        } else {
            for (int i = 0; i < cols; i++) texts[i] = (const char *)sqlite3_column_text(st, i);
            go = k->text(cols, names, texts, k->arg);
        }
        s->auth = who;
    }
    return rc;
}

/* A statement that failed after the authorizer refused part of it failed for that reason,
 * whatever code SQLite chose (a refusal inside a table-valued pragma is an SQLITE_ERROR). */
static int fail(struct store *s, struct store_auth *a, int rc, char **errmsg)
{
    if (a && a->denied[0]) {
        if (errmsg && !*errmsg) *errmsg = xstrdup(a->denied);
        return BERTH_EPERM;
    }
    int ext = sqlite3_extended_errcode(s->db);
    if (errmsg && !*errmsg) *errmsg = xstrdup(sqlite3_errmsg(s->db));
    return store_map_err(ext ? ext : rc);
}

static bool more_sql(const char *tail)
{
    for (; tail && *tail; tail++)
        if (*tail != ' ' && *tail != '\t' && *tail != '\n' && *tail != '\r' && *tail != ';')
            return true;
    return false;
}

/* One prepared statement: the plugin call's savepoint if more statements follow, the health
 * check for a write, binds, steps. */
static int run_one(struct store *s, struct store_auth *a, sqlite3_stmt *st, const char *tail,
                   const struct store_binds *b, const struct store_sink *k, char **errmsg)
{
    int ret;
    if (a && a->group && !a->grouped && more_sql(tail)) {
        s->auth = NULL;
        ret = exec(s->db, "SAVEPOINT plugin_call", errmsg);
        s->auth = a;
        if (ret) return ret;
        a->grouped = true;
    }
    if (a && !store_auth_statement(a, st)) {
        if (errmsg) *errmsg = xstrdup(a->denied);
        return BERTH_EPERM;
    }
    /* a plugin transaction checked the file when it began (a stat per write was a tenth of
     * the quota proxy's system time) */
    if (!sqlite3_stmt_readonly(st) && !s->in_tx && !store_check(s)) {
        if (errmsg) *errmsg = xstrdup(s->broken);
        return BERTH_EIO;
    }
    if ((ret = bind_all(st, b, k, errmsg)) != 0) return ret;
    uint64_t outer = s->deadline;   /* a row callback's call runs inside another's */
    if (a)
        s->deadline = uv_hrtime() +
                      (uint64_t)(a->schema ? STORE_SCHEMA_MS : STORE_STATEMENT_MS) * 1000000u;
    bool ddl = a && a->ddl;     /* set by the authorizer while st was prepared */
    if (ddl) {
        s->auth = NULL;
        ret = store_ddl_begin(s);
        s->auth = a;
        if (ret) return ret;
    }
    int rc = step_all(s, st, k);
    s->deadline = outer;
    if ((rc & 0xff) == SQLITE_INTERRUPT && a) {
        if (errmsg && !*errmsg)
            *errmsg = xasprintf("the statement ran longer than %d ms and was interrupted",
                                a->schema ? STORE_SCHEMA_MS : STORE_STATEMENT_MS);
        ret = BERTH_ETIMEDOUT;
    } else {
        ret = rc == SQLITE_DONE ? 0 : fail(s, a, rc, errmsg);
    }
    return ddl ? store_ddl_end(s, a, ret, errmsg) : ret;
}

/* ---- the plugins' statement cache ---- */

/* Plugins mostly pass the same literal for the same statement: its pointer finds the entry
 * with one compare of the text, not one per entry. */
static struct store_cached *cache_find(struct store *s, const char *module, const char *sql)
{
    for (size_t i = 0; i < s->ncache; i++) {
        struct store_cached *e = &s->cache[i];
        if (e->key == sql && e->sql && !strcmp(e->sql, sql) && !strcmp(e->module, module))
            return e;
    }
    for (size_t i = 0; i < s->ncache; i++) {
        struct store_cached *e = &s->cache[i];
        if (e->sql && !strcmp(e->sql, sql) && !strcmp(e->module, module)) {
            e->key = sql;
            return e;
        }
    }
    return NULL;
}

/* Empties the entry where it is: an entry never moves, because a call stepping one further
 * up the stack (a row callback's caller) holds a pointer to it. */
static void cache_drop(struct store_cached *e)
{
    sqlite3_finalize(e->st);
    free(e->module);
    free(e->sql);
    *e = (struct store_cached){0};
}

/* a slot for a new entry: an empty one, or the least recently used one not stepping now */
static struct store_cached *cache_slot(struct store *s)
{
    for (size_t i = 0; i < s->ncache; i++)
        if (!s->cache[i].sql) return &s->cache[i];
    if (s->ncache < STORE_CACHE_MAX) return &s->cache[s->ncache++];
    struct store_cached *victim = NULL;
    for (size_t i = 0; i < s->ncache; i++)
        if (!s->cache[i].busy && (!victim || s->cache[i].used < victim->used))
            victim = &s->cache[i];
    if (victim) cache_drop(victim);
    return victim;
}

/* Keeps st (prepared from the whole of sql, one statement) for the module's next call. */
static struct store_cached *cache_add(struct store *s, struct store_auth *a, const char *sql,
                                      sqlite3_stmt *st)
{
    struct store_cached *e = cache_slot(s);
    if (!e) return NULL;
    *e = (struct store_cached){.module = xstrdup(a->module), .sql = xstrdup(sql), .key = sql,
                               .st = st};
    return e;
}

static int cache_run(struct store *s, struct store_auth *a, struct store_cached *e,
                     const struct store_binds *b, const struct store_sink *k, char **errmsg)
{
    e->busy = true;
    e->used = ++s->uses;
    int ret = run_one(s, a, e->st, "", b, k, errmsg);
    sqlite3_reset(e->st);
    sqlite3_clear_bindings(e->st);
    e->busy = false;
    return ret;
}

void store_plugin_forget(struct store *s, const char *module)
{
    for (size_t i = 0; s && i < s->ncache; i++)
        if (s->cache[i].sql && !s->cache[i].busy &&
            (!module || !strcmp(s->cache[i].module, module)))
            cache_drop(&s->cache[i]);
}

int store_run(struct store *s, struct store_auth *a, const char *sql,
              const struct store_binds *b, const struct store_sink *k, char **errmsg)
{
    const char *tail = sql;
    int ret = 0;
    struct store_auth *prev = s->auth;
    s->auth = a;
    struct store_cached *hit = a ? cache_find(s, a->module, sql) : NULL;
    if (hit && !hit->busy) {
        ret = cache_run(s, a, hit, b, k, errmsg);
        s->auth = prev;
        return ret;
    }
    while (!ret && tail && *tail) {
        sqlite3_stmt *st = NULL;
        if (a) a->ddl = a->create_table = false;
        const char *head = tail;
        int rc = sqlite3_prepare_v3(s->db, tail, -1, a ? SQLITE_PREPARE_PERSISTENT : 0, &st,
                                    &tail);
        if (rc != SQLITE_OK) {
            ret = fail(s, a, rc, errmsg);
            /* a statement SQLite cannot parse is the caller's mistake */
            if (ret == BERTH_EIO && (rc & 0xff) == SQLITE_ERROR) ret = BERTH_EINVAL;
            break;
        }
        if (!st) break;     /* trailing whitespace or comment */
        /* a plugin's single statement that changes no schema is kept for next time */
        struct store_cached *e = a && !hit && head == sql && !more_sql(tail) && !a->ddl &&
                                         !a->create_table && !a->denied[0]
                                     ? cache_add(s, a, sql, st)
                                     : NULL;
        if (e) {
            ret = cache_run(s, a, e, b, k, errmsg);
            break;
        }
        ret = run_one(s, a, st, tail, b, k, errmsg);
        sqlite3_finalize(st);
    }
    s->auth = prev;
    return ret;
}

int store_exec_params(struct store *s, const char *sql, const char *const *p, size_t n,
                      berth_row_cb cb, void *arg, char **errmsg)
{
    struct store_binds b = {.text = p, .n = n};
    struct store_sink k = {.text = cb, .arg = arg};
    return store_run(s, NULL, sql, &b, &k, errmsg);
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
        return store_map_err(sqlite3_extended_errcode(s->db));
    }
    return 0;
}

int store_journal_trim(struct store *s, uint64_t keep_from)
{
    sqlite3_stmt *st;
    if (!store_check(s)) return BERTH_EIO;
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
