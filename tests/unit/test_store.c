/* Unit tests for the store without a loop: error mapping, the authorizer's decisions, the
 * atomicity of plugin calls (row callbacks making calls of their own included), store_tx and
 * its refusals, and the watch on the database file. */
#include "core.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct store *S;

static int q(const char *sql, const struct berth_value *p, size_t n, char **err)
{
    free(*err);
    *err = NULL;
    return store_plugin_query(S, "u", sql, p, n, NULL, NULL, err);
}

static bool count_cb(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    *(int64_t *)arg = v[0].i;
    return false;
}

static int64_t count(const char *where)
{
    char *sql = xasprintf("SELECT count(*) FROM u_t WHERE %s", where), *err = NULL;
    int64_t n = -1;
    if (store_plugin_query(S, "u", sql, NULL, 0, count_cb, &n, &err)) n = -2;
    free(sql);
    free(err);
    return n;
}

static void errors_and_refusals(void)
{
    char *err = NULL;
    struct berth_value p[] = {BERTH_TEXT("a"), BERTH_INT(1)};
    CHECK(q("INSERT INTO u_t(k,v) VALUES(?1,?2)", p, 2, &err) == 0);
    CHECK(q("INSERT INTO u_t(k,v) VALUES(?1,?2)", p, 2, &err) == BERTH_EEXIST);
    CHECK(err && strstr(err, "UNIQUE"));
    CHECK(q("INSERT INTO u_t(k,v) VALUES('b',NULL)", NULL, 0, &err) == BERTH_EINVAL);
    CHECK(q("INSER INTO u_t", NULL, 0, &err) == BERTH_EINVAL);
    CHECK(q("SELECT * FROM tenants", NULL, 0, &err) == BERTH_EPERM);
    CHECK(err && strstr(err, "tenants") && strstr(err, "u_*"));
    CHECK(q("SELECT * FROM U_T", NULL, 0, &err) == 0);         /* names are case-insensitive */
    CHECK(q("SELECT * FROM ux_t", NULL, 0, &err) != 0);        /* a prefix, not a substring */
    CHECK(q("CREATE TABLE u_(x)", NULL, 0, &err) == BERTH_EPERM);
    CHECK(q("BEGIN", NULL, 0, &err) == BERTH_EPERM);
    CHECK(q("ATTACH ':memory:' AS m", NULL, 0, &err) == BERTH_EPERM);
    CHECK(q("PRAGMA user_version=7", NULL, 0, &err) == BERTH_EPERM);
    CHECK(q("VACUUM", NULL, 0, &err) == BERTH_EPERM);
    CHECK(err && strstr(err, "VACUUM refused"));
    CHECK(q(" /* c */ -- d\n vacuum INTO '/tmp/berth-unit-vacuum.db'", NULL, 0, &err) ==
          BERTH_EPERM);
    CHECK(access("/tmp/berth-unit-vacuum.db", F_OK) != 0);
    CHECK(q("CREATE TABLE u_r(x); ALTER TABLE u_r RENAME TO other", NULL, 0, &err) ==
          BERTH_EPERM);
    CHECK(q("CREATE TABLE u_c AS SELECT sql FROM sqlite_master", NULL, 0, &err) == BERTH_EPERM);
    CHECK(err && strstr(err, "AS SELECT"));
    CHECK(q("CREATE TABLE u_r(x); ALTER TABLE u_r ADD COLUMN y; ALTER TABLE u_r RENAME x TO z;"
            "ALTER TABLE u_r DROP COLUMN y; DROP TABLE u_r", NULL, 0, &err) == 0);
    /* the core's statements are not limited */
    CHECK(store_exec_params(S, "SELECT count(*) FROM tenants", NULL, 0, NULL, NULL, NULL) == 0);
    /* a full database (here: a page limit) is ENOSPC */
    CHECK(store_exec_params(S, "PRAGMA max_page_count=40", NULL, 0, NULL, NULL, NULL) == 0);
    static char big[300000];
    struct berth_value blob[] = {BERTH_TEXT("big"), BERTH_BLOB(big, sizeof big)};
    CHECK(q("INSERT INTO u_t(k,v) VALUES(?1,?2)", blob, 2, &err) == BERTH_ENOSPC);
    CHECK(store_exec_params(S, "PRAGMA max_page_count=1000000", NULL, 0, NULL, NULL, NULL) == 0);
    free(err);
}

/* a row callback making a failing call of several statements: that call leaves nothing, the
 * outer one goes on */
static bool nested_cb(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names; (void)v;
    char *err = NULL;
    *(int *)arg = store_plugin_query(S, "u", "INSERT INTO u_t(k,v) VALUES('n1',1);"
                                     "INSERT INTO u_t(k,v) VALUES('n1',2)", NULL, 0, NULL,
                                     NULL, &err);
    free(err);
    return false;
}

static void atomic_calls(void)
{
    char *err = NULL;
    CHECK(q("INSERT INTO u_t(k,v) VALUES('m1',1); INSERT INTO u_t(k,v) VALUES('m2',1);"
            "INSERT INTO u_t(k,v) VALUES('m1',3)", NULL, 0, &err) == BERTH_EEXIST);
    CHECK(count("k LIKE 'm%'") == 0);
    int inner = 1;
    CHECK(store_plugin_query(S, "u", "SELECT 1", NULL, 0, nested_cb, &inner, &err) == 0);
    CHECK(inner == BERTH_EEXIST);
    CHECK(count("k LIKE 'n%'") == 0);
    free(err);
}

struct txa { int fail; int ret; int nested; int begin; int sync; };

static bool sync_cb(int n, const char *const *names, const char *const *v, void *arg)
{
    (void)n; (void)names;
    *(int *)arg = atoi(v[0]);
    return false;
}

static int sync_level(void)
{
    int v = -1;
    store_exec_params(S, "PRAGMA synchronous", NULL, 0, sync_cb, &v, NULL);
    return v;
}

static int body(void *arg)
{
    struct txa *t = arg;
    char *err = NULL;
    struct berth_value p[] = {BERTH_TEXT("t1"), BERTH_INT(1)};
    q("INSERT INTO u_t(k,v) VALUES(?1,?2)", p, 2, &err);
    if (t->fail) q("INSERT INTO u_t(k,v) VALUES(?1,?2)", p, 2, &err);
    free(err);
    err = NULL;
    t->nested = store_plugin_tx(S, "u", body, t, 0, &err);
    t->begin = store_begin(S);
    t->sync = sync_level();
    free(err);
    return t->ret;
}

static int tx(struct txa *t)
{
    char *err = NULL;
    int rc = store_plugin_tx(S, "u", body, t, 0, &err);
    free(err);
    return rc;
}

static void transactions(void)
{
    char *err = NULL;
    struct txa ok = {0}, failing = {.fail = 1}, refused = {.ret = BERTH_EINVAL};
    CHECK(tx(&failing) == BERTH_EEXIST);
    CHECK(count("k='t1'") == 0);
    CHECK(tx(&refused) == BERTH_EINVAL);
    CHECK(count("k='t1'") == 0);
    CHECK(tx(&ok) == 0);
    CHECK(count("k='t1'") == 1);
    CHECK(ok.nested == BERTH_EBUSY && ok.begin == BERTH_EBUSY);
    /* the commit of a store_tx is synced (FULL = 2); everything else runs NORMAL (1) */
    CHECK(ok.sync == 2);
    CHECK(sync_level() == 1);
    /* a plugin's call never joins the core's batch */
    CHECK(store_begin(S) == 0);
    CHECK(q("SELECT 1 FROM u_t", NULL, 0, &err) == BERTH_EBUSY);
    CHECK(tx(&ok) == BERTH_EBUSY);
    CHECK(store_commit(S) == 0);
    free(err);
}

static void deleted(const char *path)
{
    const char *why = NULL;
    char *err = NULL;
    CHECK(store_healthy(S, &why) && !why);
    CHECK(unlink(path) == 0);
    CHECK(!store_healthy(S, &why) && why && strstr(why, "was deleted"));
    CHECK(q("INSERT INTO u_t(k,v) VALUES('d',1)", NULL, 0, &err) == BERTH_EIO);
    CHECK(err && strstr(err, "was deleted"));
    CHECK(count("1") > 0);                                  /* reads go on */
    CHECK(store_begin(S) == BERTH_EIO);
    free(err);
}

/* A row callback may change the caller's bound values between rows: the statement must go on
 * with what was bound. (Without a callback they are read in place.) */
struct rows_seen {
    char *param;
    char seen[64];
};

static bool rewrite_cb(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    struct rows_seen *r = arg;
    strncat(r->seen, v[0].p, sizeof r->seen - strlen(r->seen) - 1);
    memcpy(r->param, "b3", 2);
    return true;
}

static void bound_values(void)
{
    char *err = NULL;
    CHECK(q("INSERT INTO u_t(k,v) VALUES('b1',1),('b2',2),('b3',3)", NULL, 0, &err) == 0);
    char param[] = "b2";
    struct rows_seen r = {.param = param};
    struct berth_value p[] = {BERTH_TEXT(param)};
    CHECK(store_plugin_query(S, "u", "SELECT k FROM u_t WHERE k LIKE 'b%' AND k <> ?1",
                             p, 1, rewrite_cb, &r, &err) == 0);
    CHECK(!strcmp(r.seen, "b1b3"));
    char again[] = "b1";          /* without a callback, in place: the same answers */
    struct berth_value p2[] = {BERTH_TEXT(again)};
    CHECK(q("DELETE FROM u_t WHERE k = ?1", p2, 1, &err) == 0);
    CHECK(count("k LIKE 'b%'") == 2);
    CHECK(q("DELETE FROM u_t WHERE k LIKE 'b%'", NULL, 0, &err) == 0);
    free(err);
}

int main(void)
{
    log_configure(BERTH_LOG_ERROR, false);
    char dir[] = "/tmp/berth-unit-store-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char *path = xasprintf("%s/berth.db", dir), err[256], *msg = NULL;
    CHECK(store_open(path, &S, err, sizeof err) == 0);
    const char *const steps[] = {"CREATE TABLE u_t (k TEXT PRIMARY KEY, v NOT NULL)"};
    CHECK(store_migrate_owner(S, "u", steps, 1, &msg) == 0);
    const char *const bad[] = {steps[0], "CREATE TABLE other (x)"};
    CHECK(store_migrate_owner(S, "u", bad, 2, &msg) == BERTH_EPERM);
    errors_and_refusals();
    bound_values();
    atomic_calls();
    transactions();
    deleted(path);
    store_close(S);
    free(msg);
    char *wal = xasprintf("%s-wal", path), *shm = xasprintf("%s-shm", path);
    unlink(wal);
    unlink(shm);
    rmdir(dir);
    free(wal);
    free(shm);
    free(path);
    return unit_report("test_store");
}
