/* A plugin transaction of 3 statements against 3 bare statements, in the same run.
 *
 *   build/bench/store_bench [ops] [runs] [dir]
 *
 * Every case inserts 3 rows per op into a plugin table through the same calls a plugin makes
 * (authorizer on). Cases run interleaved, `runs` times each; rows show the median time per op
 * and the spread (min..max over runs), and the ratio to the baseline (median of per-run ratios).
 *   bare:      3 x store_query, each its own transaction (synchronous=NORMAL, no fsync)
 *   store_tx:  store_tx around the same 3 (one commit, synchronous=FULL: the WAL is fsynced)
 *   batch:     3 core statements in one NORMAL transaction, as the core's batches run (the
 *              grouping without the fsync)
 * dir must be on the disk being measured: a tmpfs makes every fsync free. */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct store *S;
static long seq;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int insert3(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        struct berth_value p[] = {BERTH_INT(++seq), BERTH_TEXT("a row of about forty bytes....")};
        char *err = NULL;
        int rc = store_plugin_query(S, "bench", "INSERT INTO bench_rows(id,v) VALUES(?1,?2)", p,
                                    2, NULL, NULL, &err);
        if (rc) {
            fprintf(stderr, "insert: %s\n", err);
            free(err);
            return rc;
        }
    }
    return 0;
}

static int op_bare(void) { return insert3(NULL); }

static int op_tx(void)
{
    char *err = NULL;
    int rc = store_plugin_tx(S, "bench", insert3, NULL, 0, &err);
    if (rc) fprintf(stderr, "tx: %s\n", err);
    free(err);
    return rc;
}

/* core statements (text binds, no authorizer): a plugin's cannot join the core's batch */
static int op_batch(void)
{
    int rc = store_begin(S);
    for (int i = 0; !rc && i < 3; i++) {
        char id[24];
        snprintf(id, sizeof id, "%ld", ++seq);
        const char *p[] = {id, "a row of about forty bytes...."};
        rc = store_exec_params(S, "INSERT INTO bench_rows(id,v) VALUES(?1,?2)", p, 2, NULL,
                               NULL, NULL);
    }
    return store_commit(S) || rc;
}

/* microseconds per op */
static double run(int (*op)(void), long n)
{
    double t0 = now_s();
    for (long i = 0; i < n; i++)
        if (op()) exit(1);
    return (now_s() - t0) / (double)n * 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { NCASES = 3, MAXRUNS = 64 };

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 300;
    int runs = argc > 2 ? atoi(argv[2]) : 7;
    const char *base = argc > 3 ? argv[3] : ".";
    if (runs < 1 || runs > MAXRUNS || n < 1) return 2;
    log_configure(BERTH_LOG_WARN, false);
    char *dir = xasprintf("%s/berth-store-bench-XXXXXX", base);
    if (!mkdtemp(dir)) return 1;
    char *db = xasprintf("%s/berth.db", dir), err[256];
    if (store_open(db, &S, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    const char *const steps[] = {"CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, v TEXT)"};
    char *msg = NULL;
    if (store_migrate_owner(S, "bench", steps, 1, &msg)) {
        fprintf(stderr, "%s\n", msg);
        return 1;
    }
    static const char *const names[NCASES] = {"3 bare statements (baseline)",
                                              "store_tx of 3 (FULL, fsync)",
                                              "one NORMAL transaction of 3"};
    int (*const ops[NCASES])(void) = {op_bare, op_tx, op_batch};
    double us[NCASES][MAXRUNS], ratio[NCASES][MAXRUNS];
    for (int c = 0; c < NCASES; c++) run(ops[c], n / 10 + 1);     /* warm up */
    for (int r = 0; r < runs; r++)
        for (int c = 0; c < NCASES; c++) us[c][r] = run(ops[c], n);
    printf("%d runs of %ld ops (3 inserts each) in %s\n", runs, n, base);
    printf("%-32s %12s %22s %10s\n", "case", "us/op median", "spread (min..max)", "vs bare");
    for (int c = NCASES; c-- > 0;)      /* before median() sorts the baseline's runs */
        for (int r = 0; r < runs; r++) ratio[c][r] = us[c][r] / us[0][r];
    for (int c = 0; c < NCASES; c++) {
        double rmed = median(ratio[c], runs), lo, hi;
        double med = median(us[c], runs);
        lo = us[c][0];
        hi = us[c][runs - 1];
        char spread[48];
        snprintf(spread, sizeof spread, "%.1f..%.1f", lo, hi);
        printf("%-32s %12.1f %22s %9.2fx (%.2f..%.2f)\n", names[c], med, spread, rmed,
               ratio[c][0], ratio[c][runs - 1]);
    }
    store_close(S);
    free(msg);
    char *cmd = xasprintf("rm -rf '%s'", dir);
    if (system(cmd)) {}
    free(cmd);
    free(db);
    free(dir);
    return 0;
}
