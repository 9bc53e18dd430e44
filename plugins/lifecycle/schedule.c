/* schedule: wakes a template's sleeping tenants when its cron expression is due.
 *
 * Each tenant of a template with `schedule` has one node in the due-queue (dueq.c) for its
 * next run. A run wakes the tenant if it is asleep (tenant_set_desired, single flight like any
 * wake) and publishes schedule.woke; an awake tenant is left alone. With run_for, the tenant is
 * put back to sleep that long after the wake unless something used it meanwhile (activity or
 * a busy hold); otherwise the idle timeout applies as usual.
 *
 * Runs missed while berthd was down: the schedule's clock up to which runs were handled is
 * persisted (lifecycle_sched.last_tick_ms, written after each batch of runs and at stop).
 * At start a tenant whose next run after that point is already past either runs once now
 * (catch_up: one) or skips to the next one (catch_up: none); never a burst.
 *
 * The schedule's clock is the host's wall clock plus `test_clock_offset` (tests only). */
#include "lc.h"
#include "cron.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sched_validate(const struct sched_cfg *s, char *err, size_t errlen)
{
    if (!s->cron) return 0;         /* no schedule (tz and catch_up have defaults) */
    struct cron c;
    char msg[160];
    int col = 0;
    if (cron_parse(s->cron, &c, msg, sizeof msg, &col) < 0) {
        snprintf(err, errlen, "schedule.cron: '%s': %s (at character %d)", s->cron, msg,
                 col + 1);
        return -1;
    }
    if (!cron_tz_valid(s->tz)) {
        snprintf(err, errlen, "schedule.tz: unknown time zone '%s' (a TZ database name like "
                 "Europe/Berlin, or UTC)", s->tz);
        return -1;
    }
    if (cron_next(&c, s->tz, 0) < 0) {
        snprintf(err, errlen, "schedule.cron: '%s' never matches a date", s->cron);
        return -1;
    }
    return 0;
}

static int64_t sim_now(const struct lc *lc)
{
    return H->now_ms(lc->self) + lc->cfg.test_clock_offset;
}

/* Tenants mostly share a template, and a reload or start plans them all: the last parse and
 * the last answer are kept (by value: a reload frees the strings of the old generation). */
struct plan_cache { char cron[128], tz[128]; struct cron c; int64_t after, next; bool ok; };
static struct plan_cache cache;

static int64_t next_run(const struct sched_cfg *s, int64_t after_ms)
{
    const char *tz = s->tz ? s->tz : "UTC";
    bool fits = strlen(s->cron) < sizeof cache.cron && strlen(tz) < sizeof cache.tz;
    if (!fits || strcmp(cache.cron, s->cron) || strcmp(cache.tz, tz)) {
        char err[160];
        int col;
        cache = (struct plan_cache){.after = -1};
        cache.ok = cron_parse(s->cron, &cache.c, err, sizeof err, &col) == 0;
        if (!fits) {
            int64_t n = cache.ok ? cron_next(&cache.c, tz, after_ms / 1000) : -1;
            cache.ok = false;
            return n < 0 ? -1 : n * 1000;
        }
        snprintf(cache.cron, sizeof cache.cron, "%s", s->cron);
        snprintf(cache.tz, sizeof cache.tz, "%s", tz);
    }
    if (!cache.ok) return -1;
    int64_t after = after_ms / 1000;
    if (after != cache.after) {
        cache.after = after;
        cache.next = cron_next(&cache.c, tz, after);
    }
    return cache.next < 0 ? -1 : cache.next * 1000;
}

/* The next run after `after_sim` (schedule clock, ms); none without a schedule. */
void sched_plan(struct lc *lc, struct ent *e, const struct tcfg *c, int64_t after_sim)
{
    int64_t next = c->schedule.cron ? next_run(&c->schedule, after_sim) : -1;
    e->catching_up = false;
    if (next < 0) {
        dq_del(lc, &e->fire);
        e->fire_sim = 0;
        return;
    }
    e->fire_sim = next;
    dq_set(lc, &e->fire, next - lc->cfg.test_clock_offset);
}

static void woke_event(struct lc *lc, const struct ent *e, const struct sched_cfg *s,
                       bool catch_up)
{
    char json[512];
    snprintf(json, sizeof json, "{\"reason\":\"schedule\",\"cron\":\"%s\",\"due_ms\":%lld,"
             "\"catch_up\":%s}", s->cron, (long long)e->fire_sim, catch_up ? "true" : "false");
    lc_publish(lc, lc->ev_woke, e->handle, json);
}

void sched_fire(struct lc *lc, struct ent *e)
{
    struct berth_tenant_info t = {.size = sizeof t};
    if (H->tenant_get(lc->self, e->handle, &t) < 0) return;
    const struct tcfg *c = tcfg_of(lc, t.template_name);
    if (!c->schedule.cron) return;
    int64_t now = sim_now(lc);
    bool catch_up = e->catching_up;     /* not guessed from lateness: a run is late for */
    e->catching_up = false;             /* other reasons, and a missed one may be recent */
    if (t.desired == BERTH_DESIRED_ASLEEP) {
        H->log(lc->self, BERTH_LOG_INFO, "tenant %s: schedule '%s' is due; waking it%s",
               e->handle, c->schedule.cron, catch_up ? " (a run missed while down)" : "");
        int rc = H->tenant_set_desired(lc->self, e->handle, BERTH_DESIRED_RUNNING, "schedule");
        if (rc < 0) {
            H->log(lc->self, BERTH_LOG_WARN, "tenant %s: scheduled wake failed: %s",
                   e->handle, berth_strerror(rc));
        } else {
            lc->wakes++;
            H->metric_add(lc->m_wakes, NULL, 1);
            woke_event(lc, e, &c->schedule, catch_up);
            struct berth_tenant_info a = {.size = sizeof a};
            if (c->schedule.run_for > 0 && H->tenant_get(lc->self, e->handle, &a) == 0) {
                e->act0 = a.last_activity_ms;
                dq_set(lc, &e->run_end, H->now_ms(lc->self) + c->schedule.run_for);
            }
        }
    } else {
        lc->skipped++;
        H->log(lc->self, BERTH_LOG_DEBUG, "tenant %s: schedule due; it is awake already",
               e->handle);
    }
    sched_plan(lc, e, c, e->fire_sim > now ? e->fire_sim : now);
    lc_status(lc, e->handle);
}

/* run_for is over: back to sleep unless something used the tenant since the wake */
void sched_run_end(struct lc *lc, struct ent *e)
{
    struct berth_tenant_info t = {.size = sizeof t};
    if (H->tenant_get(lc->self, e->handle, &t) < 0) return;
    /* used meanwhile (or put to sleep already): the idle sweep decides, as for any tenant */
    if (t.desired == BERTH_DESIRED_RUNNING && !t.busy && t.last_activity_ms <= e->act0) {
        H->log(lc->self, BERTH_LOG_INFO, "tenant %s: run_for is over and it was not used; "
               "putting it to sleep", e->handle);
        H->tenant_set_desired(lc->self, e->handle, BERTH_DESIRED_ASLEEP, "schedule");
    }
    lc_status(lc, e->handle);       /* its run_until_ms is gone */
}

void sched_save(struct lc *lc)
{
    lc->last_tick = sim_now(lc);
    struct berth_value p[] = {BERTH_INT(lc->last_tick)};
    int rc = H->store_query(lc->self, "INSERT INTO lifecycle_sched(key, value) "
                            "VALUES('last_tick_ms', ?1) ON CONFLICT(key) DO UPDATE SET "
                            "value = excluded.value", p, 1, NULL, NULL);
    if (rc < 0)
        H->log(lc->self, BERTH_LOG_WARN, "cannot record the schedule's progress: %s "
               "(a restart may repeat or miss one run)", berth_strerror(rc));
}

/* A tenant's first plan: a run between the recorded progress and now was missed while
 * berthd was down; catch_up says whether it runs now. The progress is recorded when a tenant
 * with a schedule is created, so none of its runs can predate it. */
static void plan_first(struct lc *lc, const struct berth_tenant_info *t, int64_t now)
{
    const struct tcfg *c = tcfg_of(lc, t->template_name);
    if (!c->schedule.cron) return;
    struct ent *e = ent_get(lc, t->handle, true);
    if (!e) return;
    int64_t missed = lc->last_tick ? next_run(&c->schedule, lc->last_tick) : -1;
    if (missed < 0 || missed > now) {
        sched_plan(lc, e, c, now);
        return;
    }
    lc->missed++;
    if (c->schedule.catch_up && !strcmp(c->schedule.catch_up, "one")) {
        e->fire_sim = missed;
        e->catching_up = true;
        dq_set(lc, &e->fire, H->now_ms(lc->self));     /* once, now */
        return;
    }
    H->log(lc->self, BERTH_LOG_INFO, "tenant %s: a scheduled run was missed while berthd was "
           "down; catch_up is none, so the next one is awaited", t->handle);
    sched_plan(lc, e, c, now);
}

struct walk { struct lc *lc; int64_t now; };

static bool first(const struct berth_tenant_info *t, void *arg)
{
    struct walk *w = arg;
    plan_first(w->lc, t, w->now);
    return true;
}

static bool loaded(int ncols, const char *const *names, const struct berth_value *v, void *arg)
{
    (void)ncols; (void)names;
    *(int64_t *)arg = v[0].i;
    return true;
}

int sched_start(struct lc *lc)
{
    int rc = H->store_query(lc->self, "SELECT value FROM lifecycle_sched WHERE key = "
                            "'last_tick_ms'", NULL, 0, loaded, &lc->last_tick);
    if (rc < 0) return rc;
    struct walk w = {lc, sim_now(lc)};
    H->tenant_each(lc->self, first, &w);
    H->log(lc->self, BERTH_LOG_DEBUG, "schedules planned from %lld (last run up to %lld): "
           "%lld missed while down", (long long)w.now, (long long)lc->last_tick,
           (long long)lc->missed);
    sched_save(lc);
    return 0;
}

/* A reload may add, change or remove a template's schedule: every tenant is planned from now
 * (an unchanged schedule gives the same next run). A catch-up run waiting to go stays. */
static bool replan(const struct berth_tenant_info *t, void *arg)
{
    struct walk *w = arg;
    const struct tcfg *c = tcfg_of(w->lc, t->template_name);
    struct ent *e = ent_get(w->lc, t->handle, c->schedule.cron != NULL);
    if (!e || (e->fire.pos && e->fire_sim <= w->now)) return true;
    sched_plan(w->lc, e, c, w->now);
    return true;
}

void sched_reload(struct lc *lc)
{
    struct walk w = {lc, sim_now(lc)};
    H->tenant_each(lc->self, replan, &w);
}

void sched_tenant(struct lc *lc, const char *handle, const char *template_name)
{
    const struct tcfg *c = tcfg_of(lc, template_name);
    if (!c->schedule.cron) return;
    struct ent *e = ent_get(lc, handle, true);
    if (e) sched_plan(lc, e, c, sim_now(lc));
    sched_save(lc);     /* a restart must not count runs from before it existed as missed */
}

void sched_status(struct lc *lc, const struct ent *e, void *json_obj)
{
    (void)lc;
    if (!e->fire.pos) return;
    cJSON *s = cJSON_AddObjectToObject(json_obj, "schedule");
    cJSON_AddNumberToObject(s, "next_ms", (double)e->fire_sim);
    if (e->run_end.pos) cJSON_AddNumberToObject(s, "run_until_ms", (double)e->run_end.due);
}
