/* sched_bench: what the lifecycle plugin's scheduler costs, each case beside its baseline.
 *
 *   build/bench/sched_bench [tenants] [runs]
 *
 * 1. 10,000 tenants' next runs planned and all due at once, through the plugin's own due-queue
 *    (dueq.c: one heap behind one timer) against a libuv timer per tenant on a real loop (what a
 *    timer per tenant costs the host before its own bookkeeping per timer).
 * 2. One next-due computation (cron_next) against the libc conversions it cannot avoid: in UTC
 *    a gmtime_r + timegm pair, in Europe/Berlin a localtime_r + mktime pair under the same TZ
 *    switch. Medians of `runs` with their spread. */
#include "cron.h"
#include "lc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

/* ---- a host that only has a clock and a (never firing) timer: dueq.c's needs ---- */
static int64_t fake_now;
static int64_t h_now(berth_instance *s) { (void)s; return fake_now; }
static berth_timer *h_timer_start(berth_instance *s, uint64_t t, uint64_t r, berth_timer_cb cb,
                                  void *arg)
{
    (void)s; (void)t; (void)r; (void)cb; (void)arg;
    static int token;
    return (berth_timer *)&token;
}
static void h_timer_stop(berth_timer *t) { (void)t; }
static void h_log(berth_instance *s, enum berth_log_level l, const char *fmt, ...)
{
    (void)s; (void)l; (void)fmt;
}
static struct berth_host host = {.now_ms = h_now, .timer_start = h_timer_start,
                                 .timer_stop = h_timer_stop, .log = h_log};
const struct berth_host *H = &host;

/* dueq.c dispatches to these; the bench pops nodes itself */
void sched_fire(struct lc *lc, struct ent *e) { (void)lc; (void)e; }
void sched_run_end(struct lc *lc, struct ent *e) { (void)lc; (void)e; }
void hb_due(struct lc *lc, struct ent *e) { (void)lc; (void)e; }
void sched_save(struct lc *lc) { (void)lc; }

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *base, double *ours, int runs, const char *unit)
{
    qsort(base, (size_t)runs, sizeof *base, cmp);
    qsort(ours, (size_t)runs, sizeof *ours, cmp);
    double mb = base[runs / 2], mo = ours[runs / 2];
    printf("%-44s baseline %9.1f %s (%.1f-%.1f)  berth %9.1f %s (%.1f-%.1f)  ratio %.2f\n",
           what, mb, unit, base[0], base[runs - 1], mo, unit, ours[0], ours[runs - 1],
           mo / mb);
}

/* plan every tenant of one template (every 15 minutes) and pop them all when due */
static double heap_case(int n)
{
    struct lc lc = {0};
    struct cron c;
    char err[160];
    int col;
    cron_parse("*/15 * * * *", &c, err, sizeof err, &col);
    struct ent *ents = calloc((size_t)n, sizeof *ents);
    fake_now = 1795300000000;
    double t0 = now_us();
    int64_t next = cron_next(&c, "UTC", fake_now / 1000) * 1000;   /* shared: one template */
    for (int i = 0; i < n; i++) {
        ents[i].fire = (struct dq_node){.ent = &ents[i], .kind = DQ_FIRE};
        dq_set(&lc, &ents[i].fire, next + i % 7);   /* a few distinct due times */
    }
    dq_arm(&lc);
    fake_now = next + 10;
    while (lc.dq.n && lc.dq.v[0]->due <= fake_now) dq_del(&lc, lc.dq.v[0]);
    dq_arm(&lc);
    double us = now_us() - t0;
    dq_free(&lc);
    free(ents);
    return us;
}

static int fired;
static void on_uv_timer(uv_timer_t *t) { (void)t; fired++; }

static double uv_case(int n)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t *timers = calloc((size_t)n, sizeof *timers);
    double t0 = now_us();
    for (int i = 0; i < n; i++) {
        uv_timer_init(&loop, &timers[i]);
        uv_timer_start(&timers[i], on_uv_timer, 0, 0);   /* all due: the loop fires them */
    }
    fired = 0;
    uv_run(&loop, UV_RUN_NOWAIT);
    double us = now_us() - t0;
    for (int i = 0; i < n; i++) uv_close((uv_handle_t *)&timers[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    free(timers);
    if (fired != n) fprintf(stderr, "only %d of %d uv timers fired\n", fired, n);
    return us;
}

static double cron_case(const char *tz, int calls, bool baseline)
{
    struct cron c;
    char err[160];
    int col;
    cron_parse("30 9 * * mon-fri", &c, err, sizeof err, &col);
    volatile int64_t sink = 0;
    double t0 = now_us();
    if (baseline && tz) {        /* the conversions under the same TZ switch */
        setenv("TZ", ":Europe/Berlin", 1);
        tzset();
    }
    for (int i = 0; i < calls; i++) {
        time_t t = (time_t)(1795300000 + i * 3607);
        if (!baseline) {
            sink += cron_next(&c, tz, (int64_t)t);
            continue;
        }
        struct tm tm;
        if (tz) {
            localtime_r(&t, &tm);
            sink += mktime(&tm);
        } else {
            gmtime_r(&t, &tm);
            sink += timegm(&tm);
        }
    }
    if (baseline && tz) {
        unsetenv("TZ");
        tzset();
    }
    (void)sink;
    return (now_us() - t0) * 1000 / calls;     /* ns per call */
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 10000, runs = argc > 2 ? atoi(argv[2]) : 9;
    if (n < 1 || runs < 1 || runs > 64) return 2;
    double b[64], o[64];
    for (int r = 0; r < runs; r++) b[r] = uv_case(n), o[r] = heap_case(n);
    char what[80];
    snprintf(what, sizeof what, "%d tenants planned + all due (us)", n);
    report(what, b, o, runs, "us");
    for (int r = 0; r < runs; r++)
        b[r] = cron_case(NULL, 20000, true), o[r] = cron_case(NULL, 20000, false);
    report("next run, UTC (ns a call)", b, o, runs, "ns");
    for (int r = 0; r < runs; r++)
        b[r] = cron_case("Europe/Berlin", 2000, true),
        o[r] = cron_case("Europe/Berlin", 2000, false);
    report("next run, Europe/Berlin (ns a call)", b, o, runs, "ns");
    printf("memory a tenant: 3 heap nodes of %zu bytes + a pointer each, against a uv_timer_t "
           "of %zu bytes per timer (before the host's own record per timer)\n",
           sizeof(struct dq_node), sizeof(uv_timer_t));
    return 0;
}
