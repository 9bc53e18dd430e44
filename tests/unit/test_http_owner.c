/* Unit tests for the counting behind req_conn_claim (core/http_owner.c): per-owner counts, the
 * cap, moves between owners, release, and a table that grows and shrinks. */
#include "http_int.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

static void cap_and_release(void)
{
    struct owner_table t = {0};
    struct conn_owner *c[4] = {0};
    CHECK(owner_claim(&t, &c[0], "alice", 2) == 0);
    CHECK(owner_claim(&t, &c[1], "alice", 2) == 0);
    CHECK(owner_count(&t, "alice") == 2);
    CHECK(owner_claim(&t, &c[2], "alice", 2) == BERTH_EBUSY);  /* a third: refused */
    CHECK(c[2] == NULL && owner_count(&t, "alice") == 2);
    CHECK(owner_claim(&t, &c[0], "alice", 2) == 0);     /* its own again: still fine */
    CHECK(owner_count(&t, "alice") == 2);
    CHECK(owner_claim(&t, &c[2], "bob", 2) == 0);       /* another owner is not held back */
    owner_release(&t, &c[1]);
    CHECK(c[1] == NULL && owner_count(&t, "alice") == 1);
    owner_release(&t, &c[1]);                           /* twice: nothing more */
    CHECK(owner_count(&t, "alice") == 1);
    CHECK(owner_claim(&t, &c[3], "alice", 2) == 0);     /* the freed place is taken */
    CHECK(owner_claim(&t, &c[0], "alice", 1) == BERTH_EBUSY);   /* a lowered cap */
    CHECK(owner_claim(&t, &c[0], NULL, 1) == 0);        /* NULL: released now */
    CHECK(c[0] == NULL && owner_count(&t, "alice") == 1);
    CHECK(owner_claim(&t, &c[3], "alice", 1) == 0);     /* down to the cap: fine again */
    owner_release(&t, &c[3]);
    owner_release(&t, &c[2]);
    CHECK(t.n == 0 && owner_count(&t, "alice") == 0 && owner_count(&t, "bob") == 0);
    owner_table_free(&t);
}

static void moves(void)
{
    struct owner_table t = {0};
    struct conn_owner *a = NULL, *b = NULL;
    CHECK(owner_claim(&t, &a, "alice", 1) == 0);
    CHECK(owner_claim(&t, &b, "bob", 1) == 0);
    CHECK(owner_claim(&t, &a, "bob", 1) == BERTH_EBUSY);    /* bob is full: a stays alice's */
    CHECK(owner_count(&t, "alice") == 1 && owner_count(&t, "bob") == 1);
    owner_release(&t, &b);
    CHECK(owner_claim(&t, &a, "bob", 1) == 0);              /* moves */
    CHECK(owner_count(&t, "alice") == 0 && owner_count(&t, "bob") == 1 && t.n == 1);
    CHECK(owner_claim(&t, &b, "carol", 0) == 0);            /* max 0: counted, no cap */
    CHECK(owner_claim(&t, &b, "carol", 0) == 0);
    owner_release(&t, &a);
    owner_release(&t, &b);
    CHECK(t.n == 0);
    owner_table_free(&t);
}

static void names(void)
{
    struct owner_table t = {0};
    struct conn_owner *c = NULL;
    char longname[300];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = 0;
    CHECK(owner_claim(&t, &c, longname, 0) == BERTH_EINVAL && c == NULL);
    longname[255] = 0;
    CHECK(owner_claim(&t, &c, longname, 0) == 0 && owner_count(&t, longname) == 1);
    char copy[300];
    strcpy(copy, longname);                     /* the name is compared, not its pointer */
    CHECK(owner_claim(&t, &c, copy, 1) == 0 && owner_count(&t, longname) == 1);
    owner_release(&t, &c);
    owner_table_free(&t);
}

static void many(void)
{
    enum { N = 2000 };
    static struct conn_owner *c[N];
    struct owner_table t = {0};
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "t%d", i % 500);
        CHECK(owner_claim(&t, &c[i], name, 4) == 0);
    }
    CHECK(t.n == 500 && t.nb >= 500);
    snprintf(name, sizeof name, "t%d", 123);
    struct conn_owner *extra = NULL;
    CHECK(owner_claim(&t, &extra, name, 4) == BERTH_EBUSY);
    for (int i = 0; i < N / 2; i++) owner_release(&t, &c[i]);   /* two of each owner's four */
    CHECK(owner_count(&t, name) == 2 && owner_count(&t, "t0") == 2 && t.n == 500);
    CHECK(owner_claim(&t, &extra, name, 4) == 0);
    owner_release(&t, &extra);
    for (int i = N / 2; i < N; i++) owner_release(&t, &c[i]);
    CHECK(t.n == 0);
    owner_table_free(&t);
}

int main(void)
{
    cap_and_release();
    moves();
    names();
    many();
    return unit_report("test_http_owner");
}
