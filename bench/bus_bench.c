/* Event bus throughput against a direct function call, in the same run.
 *
 *   build/bench/bus_bench [events]
 *
 * Rows: a direct call through a function pointer (the baseline), then publish+deliver through
 * the bus to 1 and 10 subscribers, without the journal and with it (SQLite WAL, batched per
 * delivery round, as berthd runs it). */
#include "core.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>


static volatile uint64_t sink;

static void handler(const struct berth_event *ev, void *arg)
{
    (void)arg;
    sink += ev->seq;
}

__attribute__((noinline)) static void direct(const struct berth_ev_tenant_activity *p, void *arg)
{
    (void)arg;
    sink += (uintptr_t)p->source;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double run_direct(long n)
{
    void (*volatile fn)(const struct berth_ev_tenant_activity *, void *) = direct;
    struct berth_ev_tenant_activity p = {sizeof p, "bench"};
    double t0 = now_s();
    for (long i = 0; i < n; i++) fn(&p, NULL);
    return (double)n / (now_s() - t0);
}

/* Publishes in rounds of 1000 and lets the loop deliver each round, as a busy berthd would. */
static double run_bus(long n, int subs)
{
    struct bus_sub *s[16];
    for (int i = 0; i < subs; i++) s[i] = bus_subscribe(BERTH_EV_TENANT_ACTIVITY, handler, NULL);
    struct berth_ev_tenant_activity p = {sizeof p, "bench"};
    double t0 = now_s();
    for (long i = 0; i < n;) {
        for (int k = 0; k < 1000 && i < n; k++, i++)
            bus_publish(BERTH_EV_TENANT_ACTIVITY, "alice", &p);
        uv_run(C.loop, UV_RUN_NOWAIT);
    }
    bus_flush();
    double rate = (double)n / (now_s() - t0);
    for (int i = 0; i < subs; i++) bus_unsubscribe(s[i]);
    return rate;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    log_configure(BERTH_LOG_WARN, false);
    C.loop = uv_default_loop();
    char dir[] = "/tmp/berth-bench-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char *db = xasprintf("%s/berth.db", dir);
    double base = run_direct(n * 10);
    printf("%-40s %14s %10s\n", "case", "events/s", "vs direct");
    printf("%-40s %14.0f %10s\n", "direct function call (baseline)", base, "1.0x");
    for (int journal = 0; journal < 2; journal++) {
        char err[256];
        if (journal && store_open(db, &C.store, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        bus_init();
        bus_set_retention(0);
        for (int subs = 1; subs <= 10; subs += 9) {
            double r = run_bus(n, subs);
            char label[64];
            snprintf(label, sizeof label, "bus, %d subscriber%s, %s", subs, subs > 1 ? "s" : "",
                     journal ? "journaled" : "no journal");
            printf("%-40s %14.0f %9.1fx slower\n", label, r, base / r);
        }
        bus_shutdown();
        uv_run(C.loop, UV_RUN_NOWAIT);
        if (journal) store_close(C.store);
        C.store = NULL;
    }
    char *cmd = xasprintf("rm -rf %s", dir);
    if (system(cmd)) {}
    free(cmd);
    free(db);
    return 0;
}
