/* lifecycle: what the plugin's files share. lifecycle.c owns the instance (struct lc), its
 * config, the idle sweep and health probes; dueq.c the one timer for everything due at a time;
 * schedule.c cron wakes; heartbeat.c heartbeats and staleness. All run on the loop thread. */
#ifndef LIFECYCLE_LC_H
#define LIFECYCLE_LC_H

#include <berth/berth.h>

#include <stdbool.h>
#include <stdint.h>

extern const struct berth_host *H;

struct cfg {
    int64_t check_interval;
    int64_t test_clock_offset;  /* ms added to the schedule's clock: tests only */
    const char *heartbeat_listen, *heartbeat_url;   /* the tenant-reachable form (hbtoken.c) */
};

struct health {
    const char *http; bool tcp;
    int64_t interval, timeout, retries, start_period;
};
struct sched_cfg { const char *cron, *tz, *catch_up; int64_t run_for; };
struct hb_cfg { int64_t expect_every; };
/* a template's block: templates.<t>.<this instance> */
struct tcfg {
    int64_t idle_timeout;
    struct health health;
    struct sched_cfg schedule;
    struct hb_cfg heartbeat;
};

/* ---- dueq.c: a min-heap of due times (wall-clock ms) behind one host timer ---- */
enum dq_kind { DQ_FIRE, DQ_RUN_END, DQ_HEARTBEAT };
struct dq_node {
    int64_t due;
    size_t pos;                 /* index + 1 in the heap; 0 when not queued */
    struct ent *ent;
    enum dq_kind kind;
};
struct dueq {
    struct dq_node **v;
    size_t n, cap;
    berth_timer *timer;
    int64_t armed;              /* the due time the timer is set for; 0 when not set */
};

/* One tenant's schedule and heartbeat state; owned by struct lc's table, freed with it. */
struct ent {
    struct ent *next;           /* hash chain */
    char handle[BERTH_HANDLE_MAX + 1];
    struct dq_node fire, run_end, hb;
    int64_t fire_sim;           /* the run `fire` stands for, on the schedule's clock */
    int64_t act0;               /* the tenant's activity right after a scheduled wake */
    int64_t hb_last;            /* last heartbeat, ms; 0: none */
    char *hb_status;            /* its JSON object, or NULL */
    bool stale;
    bool catching_up;           /* `fire` is a run missed while berthd was down (catch_up one) */
};

struct probe;
struct lc {
    berth_instance *self;
    struct cfg cfg;
    berth_timer *sweep;
    struct probe *probes;
    int64_t last_sweep_us, checked, slept_total, sweeps;
    /* schedule and heartbeats */
    struct dueq dq;
    struct ent **tab;
    size_t ntab, nent;
    int64_t last_tick;          /* schedule clock up to which runs were handled (persisted) */
    int64_t hb_base;            /* when this instance started: heartbeat clocks start here */
    int64_t wakes, skipped, missed, heartbeats, nstale;
    uint32_t ev_woke, ev_missed, ev_stale, ev_resumed;
    berth_metric *m_wakes, *m_beats, *m_stale, *m_nstale;
    /* hbtoken.c */
    unsigned char hb_key[32];
    bool hb_have_key;
    char hb_url[300];
    struct berth_provisioner hb_prov;
};

const struct tcfg *tcfg_of(const struct lc *lc, const char *template_name);
void lc_status(struct lc *lc, const char *handle);      /* publishes the tenant's status */
void lc_publish(struct lc *lc, uint32_t type, const char *handle, const char *json);
bool lc_up(enum berth_observed_state s);

void dq_set(struct lc *lc, struct dq_node *n, int64_t due);
void dq_del(struct lc *lc, struct dq_node *n);
void dq_arm(struct lc *lc);         /* after changes: the timer follows the earliest node */
void dq_free(struct lc *lc);

struct ent *ent_get(struct lc *lc, const char *handle, bool create);
void ent_drop(struct lc *lc, const char *handle);
void ents_free(struct lc *lc);

int sched_validate(const struct sched_cfg *s, char *err, size_t errlen);
int sched_start(struct lc *lc);
void sched_plan(struct lc *lc, struct ent *e, const struct tcfg *c, int64_t after_sim);
void sched_fire(struct lc *lc, struct ent *e);
void sched_run_end(struct lc *lc, struct ent *e);
void sched_reload(struct lc *lc);
void sched_tenant(struct lc *lc, const char *handle, const char *template_name);
void sched_save(struct lc *lc);      /* persists last_tick */
void sched_status(struct lc *lc, const struct ent *e, void *json_obj);

int hb_start(struct lc *lc);
void hb_changed(struct lc *lc, const char *handle, bool up);
void hb_due(struct lc *lc, struct ent *e);
void hb_reload(struct lc *lc);
void hb_status(struct lc *lc, const struct ent *e, const char *template_name, void *json_obj);
void hb_deleted(struct lc *lc, const char *handle);
void hb_answer(struct lc *lc, berth_req *r, const char *handle);  /* records, then answers */

int hbtoken_start(struct lc *lc);

#endif
