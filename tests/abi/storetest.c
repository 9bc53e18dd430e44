/* storetest: drives the typed store API (store_query, store_tx) from control-API routes so the
 * integration tests can check transactions, isolation and typed round trips through berthd.
 * Every route answers 200 with {"rc": BERTH_E*, ...}; the test judges the code. */
#include <berth/berth.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct berth_host *H;
static berth_instance *self;
static uint32_t ev_bulk;

static const char *const steps[] = {
    "CREATE TABLE storetest_kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL)",
    "CREATE TABLE storetest_vals (id INTEGER PRIMARY KEY, v)",
};

/* ---- a small JSON writer ---- */

struct buf { char *p; size_t n, cap; };

static void put(struct buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        b->cap = (b->n + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static void put_str(struct buf *b, const char *s, size_t n)
{
    puts_(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[8];
        if (c == '"' || c == '\\' || c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", c);
            puts_(b, esc);
        } else {
            put(b, (const char *)&c, 1);
        }
    }
    puts_(b, "\"");
}

static void answer(berth_req *r, int rc, struct buf *extra)
{
    char head[96];
    snprintf(head, sizeof head, "{\"rc\":%d,\"error\":\"%s\"", rc, rc ? berth_strerror(rc) : "");
    struct buf b = {0};
    puts_(&b, head);
    if (extra && extra->n) {
        puts_(&b, ",");
        put(&b, extra->p, extra->n);
    }
    puts_(&b, "}\n");
    H->respond(r, 200, "application/json", b.p, b.n);
    free(b.p);
    if (extra) free(extra->p);
}

/* ---- transactions ---- */

struct txa { const char *key; int fail_at, publish, slow_at; int rcs[3]; };

/* Three inserts; statement fail_at (1-3) repeats the first key, a unique violation; statement
 * slow_at never ends, and the host's statement deadline interrupts it (which makes SQLite roll
 * the whole transaction back at once). Events published inside must not take the
 * transaction's rows with them into the journal. */
static int tx_body(void *arg)
{
    struct txa *t = arg;
    for (int i = 1; i <= 3; i++) {
        char k[128];
        snprintf(k, sizeof k, "%s-%d", t->key, i == t->fail_at && i > 1 ? 1 : i);
        struct berth_value p[] = {BERTH_TEXT(k), BERTH_INT(i)};
        t->rcs[i - 1] = H->store_query(self, i == t->slow_at
            ? "INSERT INTO storetest_kv(k,v) WITH RECURSIVE c(x) AS (SELECT ?2 UNION ALL"
              " SELECT x + 1 FROM c) SELECT ?1, x FROM c WHERE x < 0"
            : "INSERT INTO storetest_kv(k,v) VALUES(?1,?2)", p, 2, NULL, NULL);
        for (int e = 0; e < t->publish; e++) {
            struct berth_ev_custom ev = {sizeof ev, "{\"from\":\"tx\"}"};
            H->publish(self, ev_bulk, NULL, &ev);
        }
    }
    return 0;   /* the host must roll back on a failed statement whatever the body says */
}

static void tx(berth_req *r, void *arg)
{
    (void)arg;
    const char *f = H->req_query(r, "fail"), *pub = H->req_query(r, "publish");
    const char *fl = H->req_query(r, "flags"), *slow = H->req_query(r, "slow");
    struct txa t = {H->req_param(r, "key"), f ? atoi(f) : 0, pub ? atoi(pub) : 0,
                    slow ? atoi(slow) : 0, {0}};
    int rc = fl ? H->store_tx_flags(self, tx_body, &t, (unsigned)strtoul(fl, NULL, 0))
                : H->store_tx(self, tx_body, &t);
    struct buf x = {0};
    char s[96];
    snprintf(s, sizeof s, "\"statements\":[%d,%d,%d]", t.rcs[0], t.rcs[1], t.rcs[2]);
    puts_(&x, s);
    answer(r, rc, &x);
}

static int inner_body(void *arg) { (void)arg; return 0; }

static int nest_body(void *arg)
{
    int *inner = arg;
    *inner = H->store_tx(self, inner_body, NULL);
    return 0;
}

static void nest(berth_req *r, void *arg)
{
    (void)arg;
    int inner = 1;
    int rc = H->store_tx(self, nest_body, &inner);
    struct buf x = {0};
    char s[48];
    snprintf(s, sizeof s, "\"inner\":%d", inner);
    puts_(&x, s);
    answer(r, rc, &x);
}

/* ---- arbitrary SQL, typed rows back ---- */

static void put_value(struct buf *b, const struct berth_value *v)
{
    char s[64];
    switch (v->type) {
    case BERTH_VAL_NULL: puts_(b, "null"); break;
    case BERTH_VAL_INT: snprintf(s, sizeof s, "\"%lld\"", (long long)v->i); puts_(b, s); break;
    case BERTH_VAL_DOUBLE: snprintf(s, sizeof s, "%.17g", v->d); puts_(b, s); break;
    case BERTH_VAL_TEXT: put_str(b, v->p, v->len); break;
    case BERTH_VAL_BLOB:
        puts_(b, "{\"blob\":\"");
        for (size_t i = 0; i < v->len; i++) {
            snprintf(s, sizeof s, "%02x", ((const unsigned char *)v->p)[i]);
            puts_(b, s);
        }
        puts_(b, "\"}");
        break;
    }
}

static bool row_json(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)names;
    struct buf *b = arg;
    if (b->n && b->p[b->n - 1] != '[') puts_(b, ",");
    puts_(b, "[");
    for (int i = 0; i < n; i++) {
        if (i) puts_(b, ",");
        put_value(b, &v[i]);
    }
    puts_(b, "]");
    return true;
}

static void sql(berth_req *r, void *arg)
{
    (void)arg;
    size_t n;
    const char *body = H->req_body(r, &n);
    char *q = strndup(body ? body : "", n);
    struct buf x = {0};
    puts_(&x, "\"rows\":[");
    int rc = H->store_query(self, q, NULL, 0, row_json, &x);
    puts_(&x, "]");
    free(q);
    answer(r, rc, &x);
}

/* the 1.0 text call with several statements: all or nothing */
static void exec_multi(berth_req *r, void *arg)
{
    (void)arg;
    size_t n;
    const char *body = H->req_body(r, &n);
    char *q = strndup(body ? body : "", n);
    int rc = H->store_exec(self, q, NULL, 0, NULL, NULL);
    free(q);
    answer(r, rc, NULL);
}

/* ---- a row callback's own statement while the plugin's statement cache is full ---- */

static bool reenter_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names; (void)v;
    *(int *)arg = H->store_query(self, "SELECT 'inside a row callback'", NULL, 0, NULL, NULL);
    return false;   /* the outer statement stops after its first row */
}

/* Fills the store's statement cache with distinct statements, then runs one more whose row
 * callback makes a store call of yet another SQL text (so an entry must be evicted). */
static void reenter(berth_req *r, void *arg)
{
    (void)arg;
    int rc = 0, inner = -1;
    for (int i = 0; i < 200 && !rc; i++) {
        char q[48];
        snprintf(q, sizeof q, "SELECT %d", i);
        rc = H->store_query(self, q, NULL, 0, NULL, NULL);
    }
    if (!rc)
        rc = H->store_query(self, "SELECT 1 UNION ALL SELECT 2", NULL, 0, reenter_row, &inner);
    char s[32];
    snprintf(s, sizeof s, "\"inner\":%d", inner);
    struct buf x = {0};
    puts_(&x, s);
    answer(r, rc, &x);
}

/* ---- typed round trip ---- */

static const unsigned char nul_blob[] = {0, 1, 0, 255, 0, 'x', 0};

static struct berth_value sample(int i)
{
    switch (i) {
    case 0: return BERTH_INT(INT64_MIN);
    case 1: return BERTH_INT(INT64_MAX);
    case 2: return BERTH_INT(-1);
    case 3: return BERTH_DOUBLE(0.1);
    case 4: return BERTH_DOUBLE(-1.7976931348623157e308);
    case 5: return BERTH_DOUBLE(4.9406564584124654e-324);
    case 6: return BERTH_TEXT("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac");
    case 7: return BERTH_TEXT("");
    case 8: return BERTH_BLOB(nul_blob, sizeof nul_blob);
    case 9: return BERTH_BLOB(NULL, 0);
    case 10: return BERTH_NULL;
    default: return (struct berth_value){.type = (enum berth_value_type)99};
    }
}
enum { NSAMPLES = 11 };

static bool same(const struct berth_value *a, const struct berth_value *b)
{
    if (a->type != b->type) return false;
    size_t alen = a->type == BERTH_VAL_TEXT && a->len == SIZE_MAX ? strlen(a->p) : a->len;
    switch (a->type) {
    case BERTH_VAL_NULL: return true;
    case BERTH_VAL_INT: return a->i == b->i;
    case BERTH_VAL_DOUBLE: return memcmp(&a->d, &b->d, sizeof a->d) == 0;
    case BERTH_VAL_TEXT:
        /* rows also end text with a NUL */
        return alen == b->len && !memcmp(a->p, b->p, alen) && !((const char *)b->p)[b->len];
    case BERTH_VAL_BLOB: return alen == b->len && (!alen || !memcmp(a->p, b->p, alen));
    }
    return false;
}

struct rt { struct buf *b; int i; };

static bool rt_row(int n, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)n; (void)names;
    struct rt *t = arg;
    struct berth_value want = sample(t->i++);
    static const char *const tn[] = {"null", "int", "double", "text", "blob"};
    char s[96];
    snprintf(s, sizeof s, "%s{\"type\":\"%s\",\"same\":%s,\"value\":", t->i > 1 ? "," : "",
             v[0].type <= BERTH_VAL_BLOB ? tn[v[0].type] : "?", same(&want, &v[0]) ? "true"
                                                                                   : "false");
    puts_(t->b, s);
    put_value(t->b, &v[0]);
    puts_(t->b, "}");
    return true;
}

static void roundtrip(berth_req *r, void *arg)
{
    (void)arg;
    int rc = H->store_query(self, "DELETE FROM storetest_vals", NULL, 0, NULL, NULL);
    for (int i = 0; !rc && i < NSAMPLES; i++) {
        struct berth_value p[] = {BERTH_INT(i), sample(i)};
        rc = H->store_query(self, "INSERT INTO storetest_vals(id,v) VALUES(?1,?2)", p, 2, NULL,
                            NULL);
    }
    struct buf x = {0};
    puts_(&x, "\"values\":[");
    struct rt t = {&x, 0};
    if (!rc)
        rc = H->store_query(self, "SELECT v FROM storetest_vals ORDER BY id", NULL, 0, rt_row,
                            &t);
    puts_(&x, "]");
    /* a value of no known type is refused, not stored as something else */
    struct berth_value bad[] = {BERTH_INT(99), sample(NSAMPLES)};
    char s[48];
    snprintf(s, sizeof s, ",\"bad_type\":%d",
             H->store_query(self, "INSERT INTO storetest_vals(id,v) VALUES(?1,?2)", bad, 2, NULL,
                            NULL));
    puts_(&x, s);
    answer(r, rc, &x);
}

/* ---- the journal at full rate ---- */

static void burst(berth_req *r, void *arg)
{
    (void)arg;
    int n = atoi(H->req_param(r, "n")), rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        struct berth_ev_custom ev = {sizeof ev, "{\"from\":\"burst\"}"};
        rc = H->publish(self, ev_bulk, NULL, &ev);
    }
    answer(r, rc, NULL);
}

/* ---- continuous writes: the WAL's checkpoints must keep up without a pause ---- */

struct churn { berth_req *r; int64_t left, id; int rc; };

static int churn_body(void *arg)
{
    struct churn *c = arg;
    struct berth_value p[] = {BERTH_INT(c->id)};
    int rc = H->store_query(self, "INSERT INTO storetest_vals(id, v) VALUES(?1,"
                            " zeroblob(1048576))", p, 1, NULL, NULL);
    if (!rc) rc = H->store_query(self, "DELETE FROM storetest_vals WHERE id >= 1000000000"
                                 " AND id <= ?1 - 4", p, 1, NULL, NULL);
    return rc;
}

/* one MiB committed per loop turn, back to back, until n MiB are written */
static void churn_step(berth_timer *t, void *arg)
{
    struct churn *c = arg;
    c->id++;
    c->rc = H->store_tx_flags(self, churn_body, c, BERTH_TX_NOSYNC);
    H->timer_stop(t);
    if (!c->rc && --c->left > 0 && H->timer_start(self, 0, 0, churn_step, c)) return;
    answer(c->r, c->rc, NULL);
    free(c);
}

static void churn(berth_req *r, void *arg)
{
    (void)arg;
    struct churn *c = calloc(1, sizeof *c);
    if (!c) {
        answer(r, BERTH_ENOMEM, NULL);
        return;
    }
    *c = (struct churn){r, atoi(H->req_param(r, "mb")), 1000000000, 0};
    if (c->left <= 0 || !H->timer_start(self, 0, 0, churn_step, c)) {
        free(c);
        answer(r, BERTH_EINVAL, NULL);
    }
}

static int init(const struct berth_host *host, berth_instance *me, void **state)
{
    H = host;
    self = me;
    *state = me;
    return 0;
}

static int start(void *state)
{
    (void)state;
    int rc = H->store_migrate(self, steps, sizeof steps / sizeof *steps);
    if (rc) return rc;
    ev_bulk = H->event_register(self, "storetest.bulk");
    if (!ev_bulk) return BERTH_EINVAL;
    H->route(self, "POST", "/v1/storetest/tx/{key}", tx, NULL);
    H->route(self, "POST", "/v1/storetest/nest", nest, NULL);
    H->route(self, "POST", "/v1/storetest/sql", sql, NULL);
    H->route(self, "POST", "/v1/storetest/exec", exec_multi, NULL);
    H->route(self, "POST", "/v1/storetest/roundtrip", roundtrip, NULL);
    H->route(self, "POST", "/v1/storetest/burst/{n}", burst, NULL);
    H->route(self, "POST", "/v1/storetest/reenter", reenter, NULL);
    H->route(self, "POST", "/v1/storetest/churn/{mb}", churn, NULL);
    return 0;
}

BERTH_PLUGIN(.name = "storetest", .version = "1.0", .description = "typed store for tests",
             .init = init, .start = start);
